package pge2e_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// killRecord is what a killed engine process held when it died, as the
// store had it once nothing of the process could land any more, and the
// flashes of those operations' devices at that moment.
type killRecord struct {
	owner   string
	held    map[string]store.Operation
	flashed map[string]int // by operation
	done    int            // operations of the batch ended before the kill
}

// uploading and pastFlash count the held operations in the upload phase
// and at or after flashing with the device flashed.
func (k killRecord) counts() (uploading, pastFlash int) {
	for id, op := range k.held {
		switch {
		case op.Phase == status.PhaseUpload:
			uploading++
		case op.Phase.AfterPointOfNoReturn() && k.flashed[id] > 0:
			pastFlash++
		}
	}
	return uploading, pastFlash
}

// unflashedAtFlashing returns the held operations recorded in the flashing
// phase whose device had not received the flash: the process died between
// the two (then the operation cannot be proven and ends failed, by design).
func (k killRecord) unflashedAtFlashing() []string {
	var out []string
	for id, op := range k.held {
		if op.Phase.AfterPointOfNoReturn() && k.flashed[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// snapshot reads what owner holds and its devices' flashes.
func (r *rig) snapshot(batchID, owner string) killRecord {
	k := killRecord{owner: owner, held: r.held(batchID, owner), flashed: map[string]int{}}
	for id, op := range k.held {
		k.flashed[id] = r.dev(op.DeviceID).Flashed()
	}
	for _, op := range r.ops(batchID) {
		if op.State.Terminal() {
			k.done++
		}
	}
	return k
}

// killMidway kills p (SIGKILL) at a moment when, in the store, it holds
// operations in the upload phase and others at or after flashing (their
// devices flashed: rebooting or being verified), once at least minDone
// operations of the batch ended. To choose that moment on a consistent
// picture, the process is frozen (SIGSTOP) first, given time for what it
// already sent to land, and looked at again: the kill comes only if the
// picture still holds and none of its operations is recorded in the
// flashing phase without its device having received the flash (a death
// there leaves an operation that cannot be proven, which ends failed by
// design); otherwise the process goes on (SIGCONT) and the watch too.
func (r *rig) killMidway(p *proc, batchID string, minDone int) killRecord {
	t := r.t
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	freezes := 0
	for tries := 0; ; tries++ {
		require.True(t, time.Now().Before(deadline), "the moment to kill %s never came", p.owner)
		require.False(t, p.exited(), "engine process %s exited: %v\n%s", p.owner, p.err, tail(p.log, 4000))
		k := r.snapshot(batchID, p.owner)
		require.Less(t, k.done, len(r.devs), "the batch ended before the moment to kill %s came", p.owner)
		if up, past := k.counts(); k.done < minDone || up == 0 || past == 0 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		p.signal(syscall.SIGSTOP)
		freezes++
		time.Sleep(150 * time.Millisecond)
		k = r.snapshot(batchID, p.owner)
		if up, past := k.counts(); up == 0 || past == 0 || len(k.unflashedAtFlashing()) > 0 {
			// A frozen process may hold row locks (the batch's among them)
			// that the other processes' renewals wait for: let them all
			// run for a while before freezing it again.
			p.signal(syscall.SIGCONT)
			time.Sleep(time.Second)
			continue
		}
		p.kill()
		r.waitGone(p.owner)
		final := r.snapshot(batchID, p.owner)
		final.done = k.done
		up, past := final.counts()
		t.Logf("killed %s after %d looks and %d freezes, %d operations of the batch ended: it held %d (%d uploading, %d at or after flashing, flashed)",
			p.owner, tries+1, freezes, final.done, len(final.held), up, past)
		return final
	}
}

// TestKilledEngineProcesses runs one batch over three engine processes that
// share the database: at most 30 operations at once and 4 per location (of
// 10), each process having 16 workers. One process is killed (SIGKILL)
// while some of its devices upload and others reboot or are being
// verified, another later, in the same state; the last one finishes
// everything. Every operation ends in success; no device is flashed twice;
// each operation the dead held before flashing got a new attempt, each it
// held at or after flashing was verified, not flashed again; and the caps
// held across the processes, as the devices saw it (a device is busy while
// an SSH connection to it is open; a killed process's connections close as
// the kernel ends the process).
//
// FWUPGRADER_PGE2E_DEVICES sets the number of devices (default 300).
func TestKilledEngineProcesses(t *testing.T) {
	url := pgtest.URL(t)
	devices := 300
	if s := os.Getenv("FWUPGRADER_PGE2E_DEVICES"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		devices = n
	}
	const (
		locations = 10
		capAll    = 30
		capGroup  = 4
	)
	start := time.Now()
	r := newRig(t, url, rigOpts{imageSize: 256 << 10})
	meter := openwrttest.NewMeter()
	loc := func(i int) string { return fmt.Sprintf("site-%02d", i%locations) }
	devs := r.devices(devices, func(i int) openwrttest.Config {
		return openwrttest.Config{RebootDelay: 700 * time.Millisecond, Meter: meter, MeterGroup: loc(i), NoMD5: true}
	}, loc)
	t.Logf("%d devices up after %s", devices, time.Since(start).Round(time.Millisecond))

	ctx := context.Background()
	rollout := store.Rollout{MaxConcurrent: capAll, GroupLimit: capGroup, GroupBy: store.GroupByLocation}
	b, plan, err := r.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: r.build.ID, Name: "fleet", Firmwareless: true, Rollout: rollout})
	require.NoError(t, err)
	require.Len(t, plan.Selected, devices, "skipped: %+v", plan.Skipped)

	// Uploads take about half a second (the image is read at 512 KiB/s), a
	// reboot 0.7 s: the moments come often.
	var procs []*proc
	for _, owner := range []string{"engine-a", "engine-b", "engine-c"} {
		spec := r.engineSpec(owner)
		spec.ReadRate = 512 << 10
		procs = append(procs, r.spawn(spec))
	}
	recA := r.killMidway(procs[0], b.ID, 10)
	recB := r.killMidway(procs[1], b.ID, recA.done+devices/4)
	survivor := procs[2]

	end := r.waitBatch(b.ID, 3*time.Minute)
	t.Logf("batch ended %s after %s: %v", end.State, time.Since(start).Round(time.Millisecond), end.Counts)
	survivor.stop(t)
	survivor.checkClean(t)
	assert.Equal(t, status.BatchSuccess, end.State)

	all := r.ops(b.ID)
	require.Len(t, all, devices)
	final := map[string]store.Operation{}
	for _, op := range all {
		final[op.ID] = op
	}
	// What each dead process held, checked against how the operation ended.
	// An operation may be held by both (taken over by engine-b from
	// engine-a, then left by engine-b too): each death is checked.
	recs := []killRecord{recA, recB}
	exempt := map[string]bool{} // recorded flashing, never flashed, when their process died
	for _, rec := range recs {
		for _, id := range rec.unflashedAtFlashing() {
			exempt[id] = true
			t.Logf("operation %s was recorded flashing when %s died, its device not flashed: it cannot be proven", id, rec.owner)
		}
		var resumed, verified int
		for id, snap := range rec.held {
			op := final[id]
			logs := r.logText(id)
			assert.NotEqual(t, rec.owner, op.LeaseOwner, "operation %s: ended by another process than %s", id, rec.owner)
			switch {
			case exempt[id]:
			case snap.Phase.AfterPointOfNoReturn():
				verified++
				assert.Equal(t, 1, rec.flashed[id], "operation %s: its device was flashed before %s died", id, rec.owner)
				assert.Contains(t, logs, resumeVerifyLine, "operation %s: verified after %s died:\n%s", id, rec.owner, logs)
				assert.Contains(t, logs, verifierLine, "operation %s: the upgrader's Verify ran:\n%s", id, logs)
				assert.Equal(t, snap.Attempt, op.Attempt, "operation %s: verified, not attempted again", id)
			case snap.Phase != status.PhaseNone:
				resumed++
				assert.Zero(t, rec.flashed[id], "operation %s: not flashed before %s died", id, rec.owner)
				assert.Contains(t, logs, fmt.Sprintf("attempt %d was interrupted in phase %s", snap.Attempt, snap.Phase),
					"operation %s:\n%s", id, logs)
				assert.Greater(t, op.Attempt, snap.Attempt, "operation %s: a new attempt after %s died", id, rec.owner)
			}
		}
		t.Logf("%s held %d operations when it died: %d taken over with a new attempt, %d verified", rec.owner, len(rec.held), resumed, verified)
		assert.Positive(t, resumed, "%s died while uploading: a new attempt", rec.owner)
		assert.Positive(t, verified, "%s died while devices rebooted or were verified: a verification", rec.owner)
	}
	byOwner := map[string]int{}
	var busy time.Duration
	for _, op := range all {
		busy += op.FinishedAt.Sub(op.StartedAt)
		dev := r.dev(op.DeviceID)
		byOwner[op.LeaseOwner]++
		assert.True(t, op.State.Terminal(), "operation %s is %s", op.ID, op.State)
		assert.LessOrEqual(t, len(dev.Flashes()), 1, "device %s flashed more than once", op.DeviceID)
		assert.LessOrEqual(t, len(flashCommands(dev)), 1, "device %s received more than one flash command", op.DeviceID)
		if exempt[op.ID] {
			assert.Equal(t, status.Failed, op.State, "operation %s", op.ID)
			assert.Equal(t, status.ReasonWorkerLost, op.Reason, "operation %s", op.ID)
			assert.Empty(t, dev.Flashes(), "operation %s: never flashed", op.ID)
			continue
		}
		if !assert.Equal(t, status.Success, op.State, "operation %s (reason %s):\n%s", op.ID, op.Reason, r.logText(op.ID)) {
			continue
		}
		assert.Len(t, dev.Flashes(), 1, "operation %s succeeded: its device was flashed once", op.ID)
		assert.Equal(t, newRelease, dev.Release(), "operation %s", op.ID)
	}
	t.Logf("operations ended by: %v; an operation took %s on average", byOwner, (busy / time.Duration(len(all))).Round(time.Millisecond))
	for _, p := range procs {
		// Claims an engine gave up on its own clock (renewals failing for
		// three quarters of a lease, on a loaded machine): taken over
		// like the dead processes' ones.
		if n := p.logCount("giving up a claim whose lease could not be renewed in time"); n > 0 {
			t.Logf("%s gave up %d claims it could not renew in time", p.owner, n)
		}
	}
	assert.Positive(t, byOwner[survivor.owner], "the survivor ended operations")
	for _, d := range devs {
		df, err := r.st.DeviceFirmware(ctx, d.ID)
		if assert.NoError(t, err, "device %s", d.ID) {
			assert.Equal(t, r.image.ID, df.ImageID)
			assert.True(t, df.Installed)
		}
	}
	t.Logf("devices busy at once: %d (cap %d); per location (cap %d):", meter.MaxBusy(), capAll, capGroup)
	assert.LessOrEqual(t, meter.MaxBusy(), capAll, "more devices busy at once than MaxConcurrent")
	assert.Greater(t, meter.MaxBusy(), capGroup, "the processes ran more than one location's share at once")
	groups := meter.Groups()
	assert.Len(t, groups, locations)
	for _, g := range groups {
		t.Logf("  %s: %d", g, meter.MaxBusyIn(g))
		assert.LessOrEqual(t, meter.MaxBusyIn(g), capGroup, "more devices of %s busy at once than GroupLimit", g)
	}
}
