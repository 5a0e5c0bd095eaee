package pge2e_test

import (
	"context"
	"fmt"
	"strings"
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

// storeSnapshot is what the store holds of a batch at one moment.
type storeSnapshot struct {
	batch    store.Batch
	ops      map[string]store.Operation
	logs     map[string][]store.LogEntry
	firmware map[string]store.DeviceFirmware // by device, for those that have one
}

func (r *rig) storeSnapshot(batchID string) storeSnapshot {
	t := r.t
	t.Helper()
	ctx := context.Background()
	s := storeSnapshot{ops: map[string]store.Operation{}, logs: map[string][]store.LogEntry{}, firmware: map[string]store.DeviceFirmware{}}
	var err error
	s.batch, err = r.st.Batch(ctx, batchID)
	require.NoError(t, err)
	for _, op := range r.ops(batchID) {
		s.ops[op.ID] = op
		s.logs[op.ID], err = r.st.Logs(ctx, op.ID, 0, 0)
		require.NoError(t, err)
		df, err := r.st.DeviceFirmware(ctx, op.DeviceID)
		if err == nil {
			s.firmware[op.DeviceID] = df
		}
	}
	return s
}

// TestPostgresRestart restarts the database in the middle of a batch that
// two engine processes run (60 devices, at most 20 at once), once with a
// fast shutdown (SIGINT: sessions ended, a checkpoint written) and once
// with a crash (SIGKILL of every server process, recovered from the WAL).
// The engines reconnect on their own and the batch completes, every
// operation in success with its device flashed once; and nothing the
// store held just before the restart is lost: every operation is where it
// was or further, an operation that had ended is unchanged, every log line
// is still there (same number, time and text), every firmware record too.
//
// It found a defect, since fixed: an attempt that reached a cancel
// checkpoint while the database was down ended failed for good, never
// retried (TestTransientStoreErrorAtCancelCheckpoint).
func TestPostgresRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"FastShutdown", syscall.SIGINT}, {"Crash", syscall.SIGKILL}} {
		t.Run(tc.name, func(t *testing.T) { testRestart(t, tc.sig) })
	}
}

func testRestart(t *testing.T, sig syscall.Signal) {
	const (
		devices = 60
		capAll  = 20
	)
	start := time.Now()
	c := pgtest.NewCluster(t)
	r := newRig(t, c.URL(), rigOpts{imageSize: 256 << 10})
	devs := r.devices(devices, func(int) openwrttest.Config {
		return openwrttest.Config{RebootDelay: 700 * time.Millisecond, NoMD5: true}
	}, nil)
	ctx := context.Background()
	b, plan, err := r.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: r.build.ID, Name: "fleet", Firmwareless: true,
		Rollout: store.Rollout{MaxConcurrent: capAll}})
	require.NoError(t, err)
	require.Len(t, plan.Selected, devices)
	var procs []*proc
	for _, owner := range []string{"engine-a", "engine-b"} {
		spec := r.engineSpec(owner)
		spec.ReadRate = 512 << 10
		procs = append(procs, r.spawn(spec))
	}

	// Restart once a quarter of the batch ended and operations are running
	// on both sides of the point of no return.
	var before storeSnapshot
	deadline := time.Now().Add(90 * time.Second)
	for {
		require.True(t, time.Now().Before(deadline), "the moment to restart never came")
		before = r.storeSnapshot(b.ID)
		var done, preFlash, postFlash int
		for _, op := range before.ops {
			switch {
			case op.State.Terminal():
				done++
			case op.State == status.InProgress && op.Phase.AfterPointOfNoReturn():
				postFlash++
			case op.State == status.InProgress && op.Phase != status.PhaseNone:
				preFlash++
			}
		}
		require.Less(t, done, devices, "the batch ended before the moment to restart came")
		if done >= devices/4 && preFlash > 0 && postFlash > 0 {
			t.Logf("restarting with %d operations ended, %d running before flashing, %d after", done, preFlash, postFlash)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Down for a second, as a real restart or a fail-over is at least:
	// shorter than the engines' give-up time (three quarters of their
	// 3 s leases), so no claim needs to be lost.
	took := c.Restart(sig, time.Second)
	restarted := time.Now()
	t.Logf("database restarted (%s) in %s, %s after the start", sig, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	end := r.waitBatch(b.ID, 2*time.Minute)
	t.Logf("batch ended %s after %s: %v", end.State, time.Since(start).Round(time.Millisecond), end.Counts)
	for _, p := range procs {
		p.stop(t)
		p.checkClean(t)
	}
	after := r.storeSnapshot(b.ID)
	assert.Equal(t, status.BatchSuccess, end.State)

	// Nothing recorded before the restart is lost.
	require.Len(t, after.ops, len(before.ops))
	for id, was := range before.ops {
		now, ok := after.ops[id]
		if !assert.True(t, ok, "operation %s lost", id) {
			continue
		}
		assert.GreaterOrEqual(t, now.Version, was.Version, "operation %s went back", id)
		assert.GreaterOrEqual(t, now.Attempt, was.Attempt, "operation %s: attempts went back", id)
		if was.State.Terminal() {
			assert.Equal(t, was, now, "operation %s had ended before the restart", id)
		}
		wasLogs, nowLogs := before.logs[id], after.logs[id]
		if assert.GreaterOrEqual(t, len(nowLogs), len(wasLogs), "operation %s lost log lines", id) {
			assert.Equal(t, wasLogs, nowLogs[:len(wasLogs)], "operation %s: the log lines from before the restart", id)
		}
	}
	for dev, was := range before.firmware {
		now, ok := after.firmware[dev]
		if assert.True(t, ok, "firmware record of device %s lost", dev) {
			assert.Equal(t, was.ImageID, now.ImageID, "device %s", dev)
			assert.True(t, !was.Installed || now.Installed, "device %s: installed before the restart", dev)
		}
	}
	assert.Equal(t, before.batch.ID, after.batch.ID)

	// Both engine processes reconnected: each ended operations afterwards.
	endedAfter := map[string]int{}
	for _, op := range after.ops {
		if op.FinishedAt.After(restarted) {
			endedAfter[op.LeaseOwner]++
		}
	}
	t.Logf("operations ended after the restart, by engine: %v", endedAfter)
	for _, p := range procs {
		assert.Positive(t, endedAfter[p.owner], "%s ended operations after the restart", p.owner)
	}

	// The batch completed: every device flashed once.
	for _, op := range after.ops {
		dev := r.dev(op.DeviceID)
		assert.LessOrEqual(t, len(dev.Flashes()), 1, "device %s flashed more than once", op.DeviceID)
		logs := logLines(after.logs[op.ID])
		if !assert.Equal(t, status.Success, op.State, "operation %s (%s %s):\n%s", op.ID, op.State, op.Reason, logs) {
			if op.Reason == status.ReasonUpgraderError && strings.Contains(logs, "failed (upgrader-error): store/postgres") {
				t.Errorf("operation %s failed for good on a transient store error during the restart (see TestTransientStoreErrorAtCancelCheckpoint)", op.ID)
			}
			continue
		}
		assert.Len(t, dev.Flashes(), 1, "operation %s succeeded: its device was flashed once", op.ID)
		assert.Equal(t, newRelease, dev.Release())
	}
	assert.Len(t, devs, devices)
}

func logLines(ls []store.LogEntry) string {
	var s string
	for _, l := range ls {
		s += fmt.Sprintf("%d %s %s\n", l.Seq, l.Time.Format("15:04:05.000"), l.Line)
	}
	return s
}
