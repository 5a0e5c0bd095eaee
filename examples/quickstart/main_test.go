package main

import (
	"bytes"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// TestMain checks that the quickstart leaves no goroutine behind: the
// engine, the simulated devices and the watchers all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestQuickstart runs the quickstart end to end as `go run` does, with
// plain output into a buffer, and checks what it claims on the simulated
// devices and in the store, not only in its output. Then it checks that
// the exit code turns to 1 when a device does not end as expected.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	r, err := run(t.Context(), &out, false, members)
	require.NoError(t, err, out.String())
	var last bytes.Buffer
	code := finish(&last, r, nil)
	text := out.String() + last.String()
	require.Equal(t, 0, code, text)
	assert.True(t, strings.HasPrefix(last.String(), "OK: every device ended as expected"), last.String())
	assert.NotContains(t, text, "\x1b", "plain output has no escape codes")

	byName := map[string]result{}
	for _, d := range r.devices {
		byName[d.dev.Name] = d
	}
	require.Len(t, byName, len(members))

	// Every device that should be upgraded was flashed once, with the new
	// release, and runs it: the simulator says so, not the store.
	for _, m := range members {
		if m.Want != status.Success {
			continue
		}
		d := byName[m.Name]
		require.NotNil(t, d.op, m.Name)
		assert.Equal(t, status.Success, d.op.State, "%s: %s", m.Name, d.op.Reason)
		assert.Equal(t, targetRelease, d.dev.Sim.Release(), m.Name)
		if assert.Len(t, d.dev.Sim.Flashes(), 1, m.Name) {
			assert.Equal(t, targetRelease, d.dev.Sim.Flashes()[0].Release, m.Name)
		}
		assert.Regexp(t, `(?m)^  `+m.Name+`\s+`+ver(m.Release)+` → `+ver(targetSeries)+`\s+success\s`, text, "result row of %s", m.Name)
	}

	// The device that is not the board the inventory says: aborted before
	// anything was uploaded, never flashed, still on its release.
	roof := byName["ap-roof"]
	require.NotNil(t, roof.op)
	assert.Equal(t, status.Aborted, roof.op.State)
	assert.Equal(t, status.ReasonNoImageForBoard, roof.op.Reason)
	assert.Zero(t, roof.dev.Sim.Flashed())
	assert.Equal(t, roof.dev.Sim.Config().Release, roof.dev.Sim.Release())
	assert.False(t, slices.ContainsFunc(roof.dev.Sim.Executed(), func(argv []string) bool {
		return len(argv) > 0 && argv[0] == "sysupgrade"
	}), "sysupgrade never ran on ap-roof, not even --test")
	for _, f := range roof.dev.Sim.Files() {
		assert.False(t, strings.HasPrefix(f, "/tmp/openwrt-"), "an image was uploaded to ap-roof: %s", f)
	}

	// The device already on the build: skipped, never even contacted.
	spare := byName["ap-spare"]
	assert.Nil(t, spare.op)
	assert.Equal(t, upgrader.SkipAlreadyOnBuild, spare.skip)
	assert.Empty(t, spare.dev.Sim.Commands())
	assert.Zero(t, spare.dev.Sim.Flashed())

	// The device that was off: the batch found it unreachable, sent its
	// operation back to pending, and upgraded it once it was switched on.
	store1 := byName["ap-store"]
	require.NotNil(t, store1.op)
	assert.Equal(t, status.Success, store1.op.State)
	assert.GreaterOrEqual(t, store1.offline, 1)
	assert.Equal(t, store1.offline+1, store1.tries, "one attempt per time it was found offline, and the one that worked")
	logs, err := r.store.Logs(t.Context(), store1.op.ID, 0, 0)
	require.NoError(t, err)
	assert.True(t, slices.ContainsFunc(logs, func(l store.LogEntry) bool {
		return strings.Contains(l.Line, "device unreachable") && strings.Contains(l.Line, "waiting for it")
	}), "the engine's log shows the offline wait")
	assert.Equal(t, 1, store1.dev.Sim.Reboots(), "it came up, was flashed and rebooted once")
	assert.Regexp(t, `(?m)^  ap-store\s+`+ver("22.03")+` → `+ver(targetSeries)+`\s+success\s+\d+\s.*was offline (once|twice|\d+ times)$`, text)

	// The canary wave ended before the second wave started, by the
	// operations' own timestamps in the store.
	ops, err := r.store.ListOperations(t.Context(), store.OperationFilter{BatchID: r.batch.ID})
	require.NoError(t, err)
	var canary store.Operation
	var second []store.Operation
	for _, op := range ops {
		if op.Wave == 0 {
			canary = op
		} else {
			second = append(second, op)
		}
	}
	assert.Equal(t, byName["ap-lab"].dev.ID, canary.DeviceID, "ap-lab is the canary")
	require.Len(t, second, 6)
	for _, op := range second {
		assert.False(t, op.StartedAt.Before(canary.FinishedAt), "operation %s of wave 2 started at %s, before the canary ended at %s",
			op.DeviceID, op.StartedAt.Format(time.StampMilli), canary.FinishedAt.Format(time.StampMilli))
	}
	assert.Equal(t, status.BatchFailed, r.batch.State, "one aborted device fails the batch")
	assert.Equal(t, 6, r.batch.Counts[status.Success])
	assert.Equal(t, 1, r.batch.Counts[status.Aborted])

	// The output: the plan with its checks, the live lines, the results.
	for _, want := range []string{
		"Dry run of the upgrade to " + openwrtVersion(targetRelease),
		"7 devices selected, in 2 waves of 1 + 6 devices, at most 3 at once; 1 skipped.",
		"would-abort (no-image-for-board)",
		`board check: the image's metadata lists tplink,archer-c7-v2, not the device's board "tplink,archer-c7-v5"`,
		"unreachable (connection-failed)",
		"skipped (already-on-build)",
		"ap-lab       upload",
		"ap-store     offline (connection-failed)",
		"(simulation) ap-store was switched on",
		"wave 1 of 2 settled",
		"wave 2 of 2 started (6 devices)",
		"Results",
		"Summary: batch failed in",
	} {
		assert.Contains(t, text, want)
	}
	assert.Regexp(t, `(?m)^  1\s+ap-lab\s+`+ver("23.05")+`\s+ath79-generic-tplink_archer-c7-v2\s+ready \(8 checks passed\)$`, text)
	assert.Regexp(t, `(?m)^  ap-roof\s+`+ver("22.03")+` → `+ver("22.03")+`\s+aborted\s+no-image-for-board\s+1\s`, text)
	assert.Regexp(t, `(?m)^  ap-spare\s+`+ver(targetSeries)+` → `+ver(targetSeries)+`\s+skipped\s+already-on-build\s+-\s+-$`, text)

	// The exit code follows the devices: each of these would have failed
	// the quickstart.
	for _, tc := range []struct {
		name, want string
		tamper     func(r *rollout)
	}{
		{"wrong board flashed", "ap-roof: touched (flashes: 1", func(r *rollout) { r.device("ap-roof").flashed = 1 }},
		{"device failed", "ap-lobby: ended failed (flash-failed), want success", func(r *rollout) {
			op := *r.device("ap-lobby").op
			op.State, op.Reason = status.Failed, status.ReasonFlashFailed
			r.device("ap-lobby").op = &op
		}},
		{"old release", "ap-office: flashes: 1, runs", func(r *rollout) { r.device("ap-office").after = r.device("ap-office").before }},
		{"never offline", "ap-store: the rollout never found it offline", func(r *rollout) { r.device("ap-store").offline = 0 }},
		{"spare in the batch", "ap-spare: in the batch", func(r *rollout) { r.device("ap-spare").op = r.device("ap-lab").op }},
		{"waves overlap", "wave 2 started", func(r *rollout) {
			op := *r.device("ap-lab").op
			op.FinishedAt = op.FinishedAt.Add(time.Hour)
			r.device("ap-lab").op = &op
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := *r
			bad.devices = slices.Clone(r.devices)
			tc.tamper(&bad)
			var last bytes.Buffer
			assert.Equal(t, 1, finish(&last, &bad, nil))
			assert.True(t, strings.HasPrefix(last.String(), "FAILED: "), last.String())
			assert.Contains(t, last.String(), tc.want)
		})
	}
}

// TestCanaryFailurePausesAndFails runs the quickstart on a fleet whose
// canary is not the board the inventory says, while the fleet expects every
// device to be upgraded: the canary aborts, the failure threshold pauses the
// batch before the second wave starts, the quickstart cancels it, and the
// exit code is 1 with the reason on the last line.
func TestCanaryFailurePausesAndFails(t *testing.T) {
	t.Parallel()
	fleet := []member{
		{Name: "ap-a", Release: "22.03", Board: archerC7v2, Really: &archerC7v5, Want: status.Success},
		{Name: "ap-b", Release: "21.02", Board: archerC7v2, Want: status.Success},
		{Name: "mesh-c", Release: "23.05", Board: glMT300Nv2, Want: status.Success},
	}
	var out bytes.Buffer
	r, err := run(t.Context(), &out, false, fleet)
	require.NoError(t, err, out.String())
	var last bytes.Buffer
	code := finish(&last, r, nil)
	text := out.String() + last.String()
	assert.Equal(t, 1, code, text)
	assert.Equal(t, "FAILED: ap-a: ended aborted (no-image-for-board), want success; "+
		"ap-b: ended cancelled (cancelled-by-user), want success; "+
		"mesh-c: ended cancelled (cancelled-by-user), want success\n", last.String())
	assert.Contains(t, text, "batch paused (failure-threshold)")
	assert.Contains(t, text, "cancelling the paused batch")
	assert.NotContains(t, text, "wave 2 of 2 started")
	assert.Equal(t, status.BatchFailed, r.batch.State)
	for _, d := range r.devices {
		assert.Zero(t, d.dev.Sim.Flashed(), d.dev.Name)
		assert.Equal(t, d.before, d.after, d.dev.Name)
		if d.dev.Name != "ap-a" {
			assert.Zero(t, d.tries, "%s: the batch never started it", d.dev.Name)
		}
	}
}

// ver is the version of a series' release as the tables print it
// ("22.03.5"), quoted for a regular expression.
func ver(series string) string {
	return regexp.QuoteMeta(openwrtVersion(openwrttest.ReleaseDescription(series)))
}

// device returns the result of the device named name.
func (r *rollout) device(name string) *result {
	for i := range r.devices {
		if r.devices[i].dev.Name == name {
			return &r.devices[i]
		}
	}
	panic("no device " + name)
}

// TestLiveViewRedrawsInPlace feeds the monitor a device's events as the
// engine sends them: on a terminal it redraws its table in place (cursor
// up, erase) with the phase and the percent, and prints the other lines
// above it; without a terminal it prints plain lines.
func TestLiveViewRedrawsInPlace(t *testing.T) {
	t.Parallel()
	plan := upgrader.Plan{
		Selected: []upgrader.PlanEntry{
			{Device: store.Device{ID: "d1", Name: "ap-one", OSIdentifier: "OpenWrt 19.07.10 r11427-9ce6aa9d8d"}},
			{Device: store.Device{ID: "d2", Name: "ap-two", OSIdentifier: "OpenWrt 21.02.7 r16847-f8282da11e"}, Wave: 1},
		},
		WaveSizes: []int{1, 1},
	}
	evs := []upgrader.Event{
		{Kind: upgrader.EventOperationState, DeviceID: "d1", State: status.InProgress},
		{Kind: upgrader.EventOperationPhase, DeviceID: "d1", Phase: status.PhaseConnecting},
		{Kind: upgrader.EventOperationPhase, DeviceID: "d1", Phase: status.PhaseUpload, Progress: 20},
		{Kind: upgrader.EventOperationProgress, DeviceID: "d1", Progress: 40},
		{Kind: upgrader.EventOperationState, DeviceID: "d1", State: status.Success, Progress: 100},
		{Kind: upgrader.EventBatchWave, Wave: 1, BatchState: status.BatchInProgress},
		{Kind: upgrader.EventOperationState, DeviceID: "d2", State: status.InProgress},
		{Kind: upgrader.EventOperationState, DeviceID: "d2", State: status.Pending, Reason: status.ReasonConnectionFailed},
	}
	show := func(live bool, afterProgress func(m *monitor)) string {
		var out bytes.Buffer
		m := newMonitor(&out, live, plan)
		for _, ev := range evs {
			m.mu.Lock()
			m.handle(ev)
			if ev.Kind == upgrader.EventOperationProgress {
				afterProgress(m) // what the next tick does
			}
			m.mu.Unlock()
		}
		ch := make(chan upgrader.Event)
		close(ch)
		m.watch(ch) // the last redraw, when the events end
		return out.String()
	}

	live := show(true, func(m *monitor) {
		assert.True(t, m.dirty, "a progress event asks for a redraw")
		m.redraw()
	})
	assert.Contains(t, live, "\x1b[3A\x1b[J", "the three lines of the table (header and two devices) are erased before a redraw")
	assert.Regexp(t, `ap-one\s+1\s+19\.07\.10\s+upload\s+\[####\.\.\.\.\.\.\]  40%`, live, "the upload's progress")
	lastTable := live[strings.LastIndex(live, "\x1b[J")+len("\x1b[J"):]
	assert.Regexp(t, `ap-one\s+1\s+19\.07\.10\s+success\s+\[##########\] 100%`, lastTable)
	assert.Regexp(t, `ap-two\s+2\s+21\.02\.7\s+offline, waiting\s+\[\.{10}\]   0%`, lastTable)
	assert.Contains(t, live, "ap-two       offline (connection-failed)")
	assert.Contains(t, live, "wave 2 of 2 started (1 device)")
	for _, l := range strings.Split(lastTable, "\n") {
		assert.LessOrEqual(t, len([]rune(l)), 79, "a table line that wraps would break the redraw: %q", l)
	}

	plain := show(false, func(*monitor) {})
	assert.NotContains(t, plain, "\x1b")
	assert.Equal(t, []string{
		"ap-one       connecting     0%",
		"ap-one       upload        20%",
		"ap-one       success",
		"wave 2 of 2 started (1 device)",
		"ap-two       offline (connection-failed): the batch waits for it and tries again",
	}, stripTimes(plain))
}

// stripTimes returns the lines of out without their "[  0.0s] " prefix.
func stripTimes(out string) []string {
	re := regexp.MustCompile(`^\[\s*\d+\.\ds\] `)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		lines = append(lines, re.ReplaceAllString(l, ""))
	}
	return lines
}
