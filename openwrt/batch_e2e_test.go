package openwrt_test

// End-to-end tests of mass upgrades (batches) on simulated devices over real
// SSH: selection, outcomes per device, the rollout policy the store enforces
// at claim time (caps, start rate, group limits, waves and thresholds,
// schedules and windows), cancel, devices offline, and the dry run. What
// the devices saw is measured from their side (openwrttest.Meter, commands,
// flashes), never by timing the test.

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// btWrongBoard is a board the fleet's image does not fit.
const btWrongBoard = "glinet,gl-ar150"

// btEngine tunes a fleet's engine for batches: many workers, fast polls
// and maintenance, short offline waits (a device that cannot be reached
// waits as pending, tried again within a second, as long as its batch
// lasts).
func btEngine(c *upgrader.Config) {
	c.Workers = 64
	c.PollInterval = 50 * time.Millisecond
	c.MaintenanceInterval = 50 * time.Millisecond
	c.LeaseDuration = 2 * time.Second
	c.Offline = upgrader.OfflinePolicy{InitialInterval: 200 * time.Millisecond, MaxInterval: time.Second,
		RandomizationFactor: upgrader.NoRetryRandomization}
}

// btFleet is a fleet whose engine is tuned for batches (btEngine).
func btFleet(t *testing.T) *fleet {
	t.Helper()
	return newFleet(t, fleetOpts{engine: btEngine})
}

// btStart starts the fleet's engine and stops it when the test ends (before
// the devices created earlier are closed).
func btStart(t *testing.T, f *fleet) {
	t.Helper()
	require.NoError(t, f.eng.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.eng.Stop(ctx)
	})
}

// btDevices creates n devices of cfg.
func btDevices(t *testing.T, f *fleet, n int, cfg openwrttest.Config) ([]store.Device, []*openwrttest.Device) {
	t.Helper()
	ds := make([]store.Device, n)
	devs := make([]*openwrttest.Device, n)
	for i := range n {
		ds[i], devs[i] = f.device(t, cfg)
	}
	return ds, devs
}

// btSim returns the simulated device of a device ID.
func btSim(f *fleet, id string) *openwrttest.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.devs[id]
}

// btCreate creates a batch of the fleet's build over the firmwareless
// devices (all the fleet's devices), with req's other fields.
func btCreate(t *testing.T, f *fleet, req upgrader.BatchRequest) (store.Batch, upgrader.Plan) {
	t.Helper()
	req.BuildID = f.image.BuildID
	req.Firmwareless = true
	if req.Name == "" {
		req.Name = t.Name()
	}
	b, plan, err := f.eng.CreateBatch(context.Background(), req)
	require.NoError(t, err)
	return b, plan
}

// btOps returns the batch's operations by device ID.
func btOps(t *testing.T, f *fleet, batchID string) map[string]store.Operation {
	t.Helper()
	ops, err := f.st.ListOperations(context.Background(), store.OperationFilter{BatchID: batchID})
	require.NoError(t, err)
	out := make(map[string]store.Operation, len(ops))
	for _, op := range ops {
		out[op.DeviceID] = op
	}
	return out
}

// btCounts drops the zero entries of c, to compare counts.
func btCounts(c status.Counts) status.Counts {
	out := status.Counts{}
	for st, n := range c {
		if n != 0 {
			out[st] = n
		}
	}
	return out
}

// btEventually polls cond until it holds; the limit only keeps a broken
// library from hanging the test (nothing is asserted about how long it took).
func btEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	limit := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(limit) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// btStatus returns the batch's status.
func btStatus(t *testing.T, f *fleet, id string) upgrader.BatchStatus {
	t.Helper()
	s, err := f.eng.Batch(context.Background(), id)
	require.NoError(t, err)
	return s
}

// btWait waits for the batch to end and returns its status.
func btWait(t *testing.T, f *fleet, id string) upgrader.BatchStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	s, err := f.eng.WaitBatch(ctx, id)
	require.NoError(t, err, "the batch did not end: %s", s.Summary)
	require.True(t, s.State.Terminal())
	return s
}

// btAllTerminal requires every operation of the batch to have ended, and
// the batch's state to be the one derived from its counts.
func btAllTerminal(t *testing.T, f *fleet, s upgrader.BatchStatus) map[string]store.Operation {
	t.Helper()
	ops := btOps(t, f, s.ID)
	counts := status.Counts{}
	for _, op := range ops {
		assert.True(t, op.State.Terminal(), "operation %s of device %s left %s", op.ID, op.DeviceID, op.State)
		counts[op.State]++
	}
	assert.Equal(t, btCounts(counts), btCounts(s.Counts), "the batch's counts are its operations'")
	assert.Equal(t, status.DeriveBatchState(s.Counts), s.State, "the batch's state is the one derived from its counts")
	return ops
}

// btUntouched requires that the device received nothing at all.
func btUntouched(t *testing.T, dev *openwrttest.Device, msgAndArgs ...any) {
	t.Helper()
	assert.Empty(t, dev.Commands(), msgAndArgs...)
	assert.False(t, didFlash(dev), msgAndArgs...)
	assert.Equal(t, dev.Config().Release, dev.Release(), msgAndArgs...)
}

// btUpgraded requires that the device was flashed exactly once and runs the
// new release, with its services running.
func btUpgraded(t *testing.T, dev *openwrttest.Device, msgAndArgs ...any) {
	t.Helper()
	assert.Equal(t, 1, dev.Flashed(), msgAndArgs...)
	assert.Equal(t, e2eRelease, dev.Release(), msgAndArgs...)
	servicesRunning(t, dev)
}

// btNeverFlashed requires that the device was never flashed, kept its
// release and runs its services, and that no image was left in its RAM.
func btNeverFlashed(t *testing.T, f *fleet, dev *openwrttest.Device, msgAndArgs ...any) {
	t.Helper()
	assert.False(t, didFlash(dev), msgAndArgs...)
	assert.Zero(t, dev.Flashed(), msgAndArgs...)
	assert.Equal(t, openwrttest.DefaultRelease, dev.Release(), msgAndArgs...)
	servicesRunning(t, dev)
	_, left := dev.File("/tmp/" + f.image.Name)
	assert.False(t, left, "the uploaded image was removed")
}

// btSecondOfDay is t's time of day in UTC, in seconds.
func btSecondOfDay(t time.Time) int {
	h, m, s := t.UTC().Clock()
	return h*3600 + m*60 + s
}

// btWindow is a daily UTC window from now+from to now+to (seconds, wrapped
// around midnight).
func btWindow(now time.Time, from, to int) store.Window {
	s := btSecondOfDay(now)
	wrap := func(v int) store.TimeOfDay { return store.TimeOfDay(((v % 86400) + 86400) % 86400) }
	return store.Window{Start: wrap(s + from), End: wrap(s + to)}
}

// 1. A batch of 50 devices with mixed outcomes: every device ends as it
// should, the batch ends failed with the right counts. The device that is
// down for the whole test waits as pending (offline) until the batch is
// cancelled: it holds the batch open, it does not fail it.
func TestBatchMixedOutcomesEndEachDeviceRight(t *testing.T) {
	t.Parallel()
	// The fleet's ReconnectWindow (3 s) bounds how long the device that never
	// comes back is waited for; shorter, 44 devices rebooting at once on a
	// loaded machine would not all be reached again in time.
	f := btFleet(t)
	const normal, wrong = 44, 3
	_, normals := btDevices(t, f, normal, openwrttest.Config{})
	wrongDs, wrongs := btDevices(t, f, wrong, openwrttest.Config{BoardName: btWrongBoard, Model: "GL.iNet GL-AR150"})
	down, downDev := f.device(t, openwrttest.Config{})
	require.NoError(t, downDev.Close()) // unreachable for the whole test
	refusing, refusingDev := f.device(t, openwrttest.Config{RequireImageMetadata: true})
	lost, lostDev := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{NeverComeBack: true}})
	btStart(t, f)

	b, plan := btCreate(t, f, upgrader.BatchRequest{})
	assert.Len(t, plan.Selected, normal+3)
	require.Len(t, plan.Skipped, wrong)
	for _, s := range plan.Skipped {
		assert.Equal(t, upgrader.SkipNoImageForBoard, s.Skip, s.Detail)
		assert.True(t, slices.ContainsFunc(wrongDs, func(d store.Device) bool { return d.ID == s.Device.ID }), "skipped %s", s.Device.ID)
	}

	// Everything ends but the device that is down, which waits.
	btEventually(t, "every reachable device's operation to end", func() bool {
		s := btStatus(t, f, b.ID)
		return s.Done == normal+2 && s.Waiting == 1
	})
	s := btStatus(t, f, b.ID)
	assert.Equal(t, status.BatchInProgress, s.State, "a batch with a device waiting has not ended: %s", s.Summary)
	assert.Contains(t, s.Summary, "(1 offline)")
	op := btOps(t, f, b.ID)[down.ID]
	assert.Equal(t, status.Pending, op.State)
	assert.Equal(t, status.ReasonConnectionFailed, op.Reason)
	_, err := f.eng.CancelBatch(context.Background(), b.ID)
	require.NoError(t, err)

	s = btWait(t, f, b.ID)
	ops := btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchFailed, s.State, s.Summary)
	assert.Equal(t, status.Counts{status.Success: normal, status.Aborted: 1, status.Failed: 1, status.Cancelled: 1},
		btCounts(s.Counts), s.Summary)
	assert.Len(t, ops, normal+3)

	for _, dev := range normals {
		op := ops[dev.Config().UUID]
		assert.Equal(t, status.Success, op.State, "device %s: %s", op.DeviceID, op.Reason)
		btUpgraded(t, dev, "device %s", op.DeviceID)
		df, err := f.st.DeviceFirmware(context.Background(), op.DeviceID)
		if assert.NoError(t, err) {
			assert.Equal(t, f.image.ID, df.ImageID)
			assert.True(t, df.Installed)
		}
	}
	for _, dev := range wrongs {
		assert.NotContains(t, ops, dev.Config().UUID, "a device the image does not fit gets no operation")
		btUntouched(t, dev, "a skipped device")
	}

	op = ops[down.ID]
	assert.Equal(t, status.Cancelled, op.State)
	assert.Equal(t, status.ReasonCancelledByUser, op.Reason)
	assert.False(t, didFlash(downDev))

	op = ops[refusing.ID]
	assert.Equal(t, status.Aborted, op.State)
	assert.Equal(t, status.ReasonImageInvalid, op.Reason, "sysupgrade --test refused the image")
	assert.True(t, slices.ContainsFunc(refusingDev.Executed(), func(argv []string) bool {
		return len(argv) > 0 && argv[0] == "sysupgrade" && slices.Contains(argv, "--test")
	}), "the refusal came from sysupgrade --test")
	btNeverFlashed(t, f, refusingDev)

	op = ops[lost.ID]
	assert.Equal(t, status.Failed, op.State)
	assert.Equal(t, status.ReasonUnreachableAfterFlash, op.Reason)
	assert.Equal(t, 1, lostDev.Flashed(), "flashed once, never again")
}

// 2a. MaxConcurrent caps the devices busy at once, as the devices see it.
func TestBatchMaxConcurrentCapsBusyDevices(t *testing.T) {
	// Not parallel (nor 2b, 2c): the meter sees a device idle once its
	// side of the connection noticed the close, a little after the engine
	// released the lease; a loaded machine stretches that.
	f := btFleet(t)
	meter := openwrttest.NewMeter()
	_, devs := btDevices(t, f, 16, openwrttest.Config{Meter: meter})
	btStart(t, f)
	b, _ := btCreate(t, f, upgrader.BatchRequest{Rollout: store.Rollout{MaxConcurrent: 4}})
	s := btWait(t, f, b.ID)
	btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchSuccess, s.State, s.Summary)
	for _, dev := range devs {
		btUpgraded(t, dev)
	}
	assert.LessOrEqual(t, meter.MaxBusy(), 4, "devices busy at once")
	assert.GreaterOrEqual(t, meter.MaxBusy(), 2, "the devices ran in parallel (the meter measures)")
	assert.Len(t, meter.FirstBusy(), 16)
}

// 2b. The start rate holds as the devices see it: no more than Count
// devices first contacted within any Per, even when reaching a device takes
// long. Here the credentials of the first starts take 0.5 s to look up (a
// slow secret store). The store counts a start in flight from its claim
// until its attempt reaches the device, and dates it by that contact
// (found here: counting claims let 6 devices be contacted within 1 s).
func TestBatchStartRateLimitsFirstContacts(t *testing.T) {
	// Not parallel: a loaded machine would blur what the devices see.
	f := btFleet(t)
	var lookups atomic.Int32
	f.credsHook = func(ctx context.Context) error {
		if lookups.Add(1) > 3 {
			return nil
		}
		select { // the first lookups are slow
		case <-time.After(500 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	meter := openwrttest.NewMeter()
	_, devs := btDevices(t, f, 9, openwrttest.Config{Meter: meter})
	btStart(t, f)
	b, _ := btCreate(t, f, upgrader.BatchRequest{Rollout: store.Rollout{StartRate: store.Rate{Count: 3, Per: time.Second}}})
	s := btWait(t, f, b.ID)
	btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchSuccess, s.State, s.Summary)
	for _, dev := range devs {
		btUpgraded(t, dev)
	}
	first := meter.FirstBusy()
	require.Len(t, first, 9)
	var since []string
	for _, fb := range first {
		since = append(since, fb.Sub(first[0]).Round(time.Millisecond).String())
	}
	assert.LessOrEqual(t, meter.MaxFirstBusyWithin(time.Second), 3,
		"devices first contacted within 1 s with a start rate of 3 per second; first contacts after the first: %v", since)
	assert.GreaterOrEqual(t, meter.MaxFirstBusyWithin(time.Second), 2, "the meter measures")
}

// 2c. A group limit of one per location holds in every location, while
// locations run in parallel.
func TestBatchGroupLimitOnePerLocation(t *testing.T) {
	// Not parallel: see TestBatchMaxConcurrentCapsBusyDevices.
	f := btFleet(t)
	meter := openwrttest.NewMeter()
	locs := []string{"rome", "turin", "milan"}
	var devs []*openwrttest.Device
	for i := range 9 {
		loc := locs[i%3]
		d, dev := f.device(t, openwrttest.Config{Meter: meter, MeterGroup: loc})
		d.Location = loc
		_, err := f.eng.RegisterDevice(context.Background(), d)
		require.NoError(t, err)
		devs = append(devs, dev)
	}
	btStart(t, f)
	b, plan := btCreate(t, f, upgrader.BatchRequest{Rollout: store.Rollout{GroupLimit: 1, GroupBy: store.GroupByLocation}})
	require.Len(t, plan.Selected, 9)
	s := btWait(t, f, b.ID)
	btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchSuccess, s.State, s.Summary)
	for _, dev := range devs {
		btUpgraded(t, dev)
	}
	assert.Equal(t, []string{"milan", "rome", "turin"}, meter.Groups())
	for _, loc := range locs {
		assert.Equal(t, 1, meter.MaxBusyIn(loc), "devices of %s busy at once", loc)
	}
	assert.GreaterOrEqual(t, meter.MaxBusy(), 2, "locations ran in parallel")
}

// 3a. A canary that fails pauses the batch on its failure threshold before
// any other device is touched; resuming runs the rest to the end.
func TestBatchCanaryFailurePausesThenResumeFinishes(t *testing.T) {
	t.Parallel()
	f := btFleet(t)
	meter := openwrttest.NewMeter()
	canary, canaryDev := f.device(t, openwrttest.Config{Meter: meter, RequireImageMetadata: true})
	_, others := btDevices(t, f, 5, openwrttest.Config{Meter: meter})
	btStart(t, f)
	first := func(d store.Device) int {
		if d.ID == canary.ID {
			return 0
		}
		return 1
	}
	b, plan := btCreate(t, f, upgrader.BatchRequest{
		Order: func(a, b store.Device) int { return cmp.Compare(first(a), first(b)) },
		Rollout: store.Rollout{Waves: []store.WaveSize{{Count: 1}, {Percent: 100}},
			FailureThreshold: store.Ptr(0.0), MinFinished: 1},
	})
	require.Equal(t, canary.ID, plan.Selected[0].Device.ID, "the canary comes first")
	assert.Equal(t, []int{1, 5}, plan.WaveSizes)

	btEventually(t, "the batch to pause", func() bool { return btStatus(t, f, b.ID).State == status.BatchPaused })
	// The pause must hold: give the engine time to (wrongly) start more.
	time.Sleep(500 * time.Millisecond)
	s := btStatus(t, f, b.ID)
	assert.Equal(t, status.BatchPaused, s.State)
	assert.Equal(t, status.PauseFailureThreshold, s.PauseReason)
	assert.Equal(t, store.HoldPaused, s.Hold)
	assert.Equal(t, status.Counts{status.Aborted: 1, status.Pending: 5}, btCounts(s.Counts), s.Summary)
	assert.Equal(t, 0, s.Wave, "still the canary's wave")
	op := btOps(t, f, b.ID)[canary.ID]
	assert.Equal(t, status.Aborted, op.State)
	assert.Equal(t, status.ReasonImageInvalid, op.Reason)
	btNeverFlashed(t, f, canaryDev)
	for _, dev := range others {
		btUntouched(t, dev, "the next wave started after a failed canary")
	}
	assert.Len(t, meter.FirstBusy(), 1, "only the canary was contacted")

	_, err := f.eng.ResumeBatch(context.Background(), b.ID)
	require.NoError(t, err)
	s = btWait(t, f, b.ID)
	btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchFailed, s.State, "the canary's abort counts: %s", s.Summary)
	assert.Equal(t, status.Counts{status.Success: 5, status.Aborted: 1}, btCounts(s.Counts))
	for _, dev := range others {
		btUpgraded(t, dev)
	}
}

// 3b. Failures that cross the threshold in the middle of a wave pause the
// batch there: the devices not yet started stay untouched.
func TestBatchFailureThresholdPausesMidWave(t *testing.T) {
	t.Parallel()
	f := btFleet(t)
	good1, good1Dev := f.device(t, openwrttest.Config{})
	bad1, bad1Dev := f.device(t, openwrttest.Config{RequireImageMetadata: true})
	bad2, bad2Dev := f.device(t, openwrttest.Config{RequireImageMetadata: true})
	rest, restDevs := btDevices(t, f, 5, openwrttest.Config{})
	rank := map[string]int{good1.ID: 0, bad1.ID: 1, bad2.ID: 2}
	for i, d := range rest {
		rank[d.ID] = 3 + i
	}
	btStart(t, f)
	// One wave of 8, one at a time, in the batch's order (its operations
	// are due together and claimed in ID order, the order of creation).
	// 20 % of 8 is 1.6 failures: the first failure is under it, the second
	// over it.
	b, plan := btCreate(t, f, upgrader.BatchRequest{
		Order:   func(a, b store.Device) int { return cmp.Compare(rank[a.ID], rank[b.ID]) },
		Rollout: store.Rollout{MaxConcurrent: 1, FailureThreshold: store.Ptr(20.0), MinFinished: 1},
	})
	require.Equal(t, []int{8}, plan.WaveSizes)

	btEventually(t, "the batch to pause", func() bool { return btStatus(t, f, b.ID).State == status.BatchPaused })
	time.Sleep(500 * time.Millisecond) // the pause must hold
	s := btStatus(t, f, b.ID)
	assert.Equal(t, status.BatchPaused, s.State)
	assert.Equal(t, status.PauseFailureThreshold, s.PauseReason)
	assert.Equal(t, status.Counts{status.Success: 1, status.Aborted: 2, status.Pending: 5}, btCounts(s.Counts), s.Summary)
	ops := btOps(t, f, b.ID)
	assert.Equal(t, status.Success, ops[good1.ID].State)
	btUpgraded(t, good1Dev)
	for _, bad := range []store.Device{bad1, bad2} {
		assert.Equal(t, status.Aborted, ops[bad.ID].State)
		assert.Equal(t, status.ReasonImageInvalid, ops[bad.ID].Reason)
	}
	btNeverFlashed(t, f, bad1Dev)
	btNeverFlashed(t, f, bad2Dev)
	for i, dev := range restDevs {
		assert.Equal(t, status.Pending, ops[rest[i].ID].State)
		btUntouched(t, dev, "a device after the threshold tripped")
	}
}

// 4a. A batch scheduled StartAt touches no device before then, and
// completes after.
func TestBatchStartAtTouchesNoDeviceBefore(t *testing.T) {
	t.Parallel()
	f := btFleet(t)
	meter := openwrttest.NewMeter()
	_, devs := btDevices(t, f, 4, openwrttest.Config{Meter: meter})
	btStart(t, f)
	startAt := time.Now().Add(1500 * time.Millisecond)
	b, _ := btCreate(t, f, upgrader.BatchRequest{Rollout: store.Rollout{StartAt: startAt}})
	s := btStatus(t, f, b.ID)
	if time.Now().Before(startAt) {
		assert.Equal(t, store.HoldScheduled, s.Hold, s.Summary)
		assert.Contains(t, s.Summary, "held (scheduled)")
	}
	s = btWait(t, f, b.ID)
	btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchSuccess, s.State, s.Summary)
	for _, dev := range devs {
		btUpgraded(t, dev)
	}
	first := meter.FirstBusy()
	require.Len(t, first, 4)
	for _, fb := range first {
		assert.False(t, fb.Before(startAt), "a device was contacted %s before StartAt", startAt.Sub(fb))
	}
}

// 4b. A batch outside its maintenance windows starts nothing; a window
// that includes now lets it run to the end.
func TestBatchOutsideWindowHoldsUntilWindowChanged(t *testing.T) {
	t.Parallel()
	f := btFleet(t)
	_, devs := btDevices(t, f, 3, openwrttest.Config{})
	btStart(t, f)
	now := time.Now()
	b, _ := btCreate(t, f, upgrader.BatchRequest{Rollout: store.Rollout{
		Windows: []store.Window{btWindow(now, 3600, 7200)}, // from in an hour, for an hour
	}})
	time.Sleep(time.Second) // time enough to (wrongly) start
	s := btStatus(t, f, b.ID)
	assert.Equal(t, status.BatchInProgress, s.State)
	assert.Equal(t, store.HoldWindow, s.Hold, s.Summary)
	assert.Equal(t, status.Counts{status.Pending: 3}, btCounts(s.Counts))
	for _, dev := range devs {
		btUntouched(t, dev, "a device contacted outside the window")
	}

	r := s.Rollout
	r.Windows = []store.Window{btWindow(time.Now(), -3600, 3600)}
	_, err := f.eng.SetRollout(context.Background(), b.ID, r)
	require.NoError(t, err)
	s = btWait(t, f, b.ID)
	btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchSuccess, s.State, s.Summary)
	for _, dev := range devs {
		btUpgraded(t, dev)
	}
}

// 5. Cancelling a batch in the middle: every operation ends, the cancelled
// ones were never flashed, none was flashed twice, and the batch's state is
// the derived one.
func TestBatchCancelMidBatch(t *testing.T) {
	t.Parallel()
	f := btFleet(t)
	_, devs := btDevices(t, f, 10, openwrttest.Config{})
	btStart(t, f)
	b, _ := btCreate(t, f, upgrader.BatchRequest{Rollout: store.Rollout{MaxConcurrent: 2}})
	btEventually(t, "two successes", func() bool { return btStatus(t, f, b.ID).Counts[status.Success] >= 2 })
	cb, err := f.eng.CancelBatch(context.Background(), b.ID)
	require.NoError(t, err)
	assert.True(t, cb.CancelRequested)
	btEventually(t, "every operation to end", func() bool {
		for _, op := range btOps(t, f, b.ID) {
			if !op.State.Terminal() {
				return false
			}
		}
		return true
	})
	// The store ends the operations at once; their attempts end when they
	// learn it. Stop waits for the attempts in flight, so what the devices
	// show below is final.
	stopCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, f.eng.Stop(stopCtx))
	s := btWait(t, f, b.ID)
	ops := btAllTerminal(t, f, s)
	assert.Len(t, ops, 10)
	assert.GreaterOrEqual(t, s.Counts[status.Success], 2)
	assert.GreaterOrEqual(t, s.Counts[status.Cancelled], 1, s.Summary)
	assert.Zero(t, s.Counts[status.Failed]+s.Counts[status.Aborted], s.Summary)
	assert.Equal(t, status.BatchCancelled, s.State, s.Summary)
	assert.Equal(t, store.HoldCancelled, s.Hold)
	for _, op := range ops {
		dev := btSim(f, op.DeviceID)
		assert.LessOrEqual(t, dev.Flashed(), 1, "device %s flashed twice", op.DeviceID)
		switch op.State {
		case status.Success:
			btUpgraded(t, dev)
		case status.Cancelled:
			assert.Equal(t, status.ReasonCancelledByUser, op.Reason)
			btNeverFlashed(t, f, dev, "a cancelled operation's device %s", op.DeviceID)
		default:
			t.Errorf("operation %s ended %s (%s)", op.ID, op.State, op.Reason)
		}
	}
	assert.Len(t, devs, 10)
}

// 6. A device down when the batch starts waits as pending (offline), and
// is upgraded once it comes back; the batch does not fail meanwhile.
func TestBatchOfflineDeviceUpgradedWhenBack(t *testing.T) {
	t.Parallel()
	f := btFleet(t)
	_, others := btDevices(t, f, 2, openwrttest.Config{})
	d, dev := f.device(t, openwrttest.Config{})
	addr, key := dev.Addr(), dev.Signer()
	require.NoError(t, dev.Close())
	downAt := time.Now()

	events, unsub := f.eng.Subscribe(1 << 16)
	var (
		evMu   sync.Mutex
		states []status.BatchState
		lost   uint64
	)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for ev := range events {
			evMu.Lock()
			lost += ev.Dropped
			if ev.Kind == upgrader.EventBatchState {
				states = append(states, ev.BatchState)
			}
			evMu.Unlock()
		}
	}()
	btStart(t, f)
	b, _ := btCreate(t, f, upgrader.BatchRequest{})

	btEventually(t, "the offline device's operation to wait", func() bool { return btStatus(t, f, b.ID).Waiting >= 1 })
	s := btStatus(t, f, b.ID)
	assert.Equal(t, status.BatchInProgress, s.State)
	assert.GreaterOrEqual(t, s.Pending, 1)
	assert.Contains(t, s.Summary, "offline")
	op := btOps(t, f, b.ID)[d.ID]
	assert.Equal(t, status.Pending, op.State)
	assert.Equal(t, status.ReasonConnectionFailed, op.Reason)

	time.Sleep(time.Until(downAt.Add(time.Second)))
	back, err := openwrttest.New(openwrttest.Config{UUID: d.ID, Addr: addr, HostKey: key, RebootDelay: 150 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, back.Start())
	t.Cleanup(func() { back.Close() })
	f.mu.Lock()
	f.devs[d.ID] = back
	f.mu.Unlock()

	s = btWait(t, f, b.ID)
	ops := btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchSuccess, s.State, s.Summary)
	assert.Equal(t, status.Success, ops[d.ID].State, "reason %s", ops[d.ID].Reason)
	btUpgraded(t, back, "the device that came back")
	for _, o := range others {
		btUpgraded(t, o)
	}
	unsub()
	<-drained
	evMu.Lock()
	defer evMu.Unlock()
	assert.Zero(t, lost, "events dropped")
	assert.NotContains(t, states, status.BatchFailed, "the batch failed on the way")
	assert.NotContains(t, states, status.BatchPaused)
}

// 6b. A canary that is offline does not hold the rollout back: its wave
// settles with it waiting, it counts as no failure for the threshold, and
// the next wave runs.
func TestBatchOfflineCanaryDoesNotHoldTheNextWave(t *testing.T) {
	t.Parallel()
	f := btFleet(t)
	canary, canaryDev := f.device(t, openwrttest.Config{})
	require.NoError(t, canaryDev.Close())
	_, others := btDevices(t, f, 3, openwrttest.Config{})
	btStart(t, f)
	first := func(d store.Device) int {
		if d.ID == canary.ID {
			return 0
		}
		return 1
	}
	b, plan := btCreate(t, f, upgrader.BatchRequest{
		Order: func(a, b store.Device) int { return cmp.Compare(first(a), first(b)) },
		Rollout: store.Rollout{Waves: []store.WaveSize{{Count: 1}, {Percent: 100}},
			FailureThreshold: store.Ptr(0.0), MinFinished: 1},
	})
	require.Equal(t, canary.ID, plan.Selected[0].Device.ID)

	btEventually(t, "the next wave to run", func() bool {
		s := btStatus(t, f, b.ID)
		return s.Counts[status.Success] == 3 && s.Waiting == 1
	})
	s := btStatus(t, f, b.ID)
	assert.Equal(t, status.BatchInProgress, s.State, s.Summary)
	assert.Equal(t, status.PauseNone, s.PauseReason)
	assert.Equal(t, 1, s.Wave, "the second wave started")
	for _, dev := range others {
		btUpgraded(t, dev)
	}
	op := btOps(t, f, b.ID)[canary.ID]
	assert.Equal(t, status.Pending, op.State)
	assert.Equal(t, status.ReasonConnectionFailed, op.Reason)

	_, err := f.eng.CancelBatch(context.Background(), b.ID)
	require.NoError(t, err)
	s = btWait(t, f, b.ID)
	btAllTerminal(t, f, s)
	assert.Equal(t, status.BatchCancelled, s.State, s.Summary)
	assert.Equal(t, status.Counts{status.Success: 3, status.Cancelled: 1}, btCounts(s.Counts))
}

// 7. The dry run gives each device its verdict and changes nothing: no
// operation or batch is stored, and the devices only received reads.
func TestBatchDryRunVerdictsAndChangesNothing(t *testing.T) {
	t.Parallel()
	var _ upgrader.Checker = (*openwrt.Upgrader)(nil)
	f := btFleet(t)
	ready, readyDev := f.device(t, openwrttest.Config{})
	wrong, wrongDev := f.device(t, openwrttest.Config{BoardName: btWrongBoard, Model: "GL.iNet GL-AR150"})
	down, downDev := f.device(t, openwrttest.Config{})
	require.NoError(t, downDev.Close())
	// Already runs the image (its checksum file says so); the store does
	// not know.
	installed, installedDev := f.device(t, openwrttest.Config{
		Files: map[string][]byte{openwrt.ChecksumFile: []byte(f.image.SHA256 + "\n")}})
	// Already on the build, as the store knows from its OS identifier.
	onBuild, onBuildDev := f.device(t, openwrttest.Config{Release: e2eRelease})
	// Another device answers at this one's address: its UUID differs.
	stranger, strangerDev := f.device(t, openwrttest.Config{})
	impostor, err := openwrttest.New(openwrttest.Config{UUID: uuid.NewString(), RebootDelay: 150 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, impostor.Start())
	t.Cleanup(func() { impostor.Close() })
	f.mu.Lock()
	f.devs[stranger.ID] = impostor
	f.mu.Unlock()
	btStart(t, f)

	reading := []*openwrttest.Device{readyDev, installedDev, impostor}
	filesBefore := map[*openwrttest.Device][]string{}
	for _, dev := range reading {
		filesBefore[dev] = dev.Files()
	}
	plan, err := f.eng.DryRunBatch(ctxT(t), upgrader.BatchRequest{BuildID: f.image.BuildID, Firmwareless: true},
		upgrader.DryRunOptions{Check: true})
	require.NoError(t, err)

	skipped := map[string]upgrader.SkipReason{}
	for _, e := range plan.Skipped {
		skipped[e.Device.ID] = e.Skip
		assert.Nil(t, e.Check, "a skipped device is not checked")
	}
	assert.Equal(t, map[string]upgrader.SkipReason{wrong.ID: upgrader.SkipNoImageForBoard, onBuild.ID: upgrader.SkipAlreadyOnBuild}, skipped)
	verdicts := map[string]upgrader.Verdict{}
	reasons := map[string]status.Reason{}
	for _, e := range plan.Selected {
		require.NotNil(t, e.Check, "device %s not checked", e.Device.ID)
		verdicts[e.Device.ID], reasons[e.Device.ID] = e.Check.Verdict, e.Check.Reason
		t.Logf("%s: %s %s %s %+v", e.Device.ID, e.Check.Verdict, e.Check.Reason, e.Check.Error, e.Check.Checks)
	}
	assert.Equal(t, map[string]upgrader.Verdict{
		ready.ID: upgrader.VerdictReady, down.ID: upgrader.VerdictUnreachable, installed.ID: upgrader.VerdictNotNeeded,
		stranger.ID: upgrader.VerdictWouldAbort,
	}, verdicts)
	assert.Equal(t, map[string]status.Reason{
		ready.ID: status.ReasonNone, down.ID: status.ReasonConnectionFailed, installed.ID: status.ReasonAlreadyInstalled,
		stranger.ID: status.ReasonIdentityMismatch,
	}, reasons)

	ops, err := f.st.ListOperations(context.Background(), store.OperationFilter{})
	require.NoError(t, err)
	assert.Empty(t, ops, "a dry run stores no operation")
	batches, err := f.st.ListBatches(context.Background(), store.BatchFilter{})
	require.NoError(t, err)
	assert.Empty(t, batches, "a dry run stores no batch")

	btUntouched(t, wrongDev, "a skipped device")
	btUntouched(t, onBuildDev, "a skipped device")
	btUntouched(t, strangerDev, "the device whose address another one took")
	for _, dev := range reading {
		assert.NotEmpty(t, dev.Commands(), "the device was checked")
		assert.Equal(t, filesBefore[dev], dev.Files(), "no file written or removed")
		btReadsOnly(t, dev)
		assert.Zero(t, dev.Flashed())
		servicesRunning(t, dev)
	}
	assert.Equal(t, openwrttest.DefaultRelease, readyDev.Release())
}

// btReadTools are the commands a dry run may run: reads.
var btReadTools = []string{"cat", "uci", "ubus", "df", "ls", "test", "[", "echo", "command", "which", "true"}

// btReadsOnly requires that the device received nothing but reads: no
// upload, no sysupgrade (not even --test), no service stopped, no write.
func btReadsOnly(t *testing.T, dev *openwrttest.Device) {
	t.Helper()
	for _, c := range dev.Commands() {
		assert.NotContains(t, c, "sysupgrade", "command %q", c)
		assert.False(t, strings.HasPrefix(c, "sftp:") || strings.HasPrefix(c, "subsystem:"), "command %q", c)
		assert.NotContains(t, c, "scp", "command %q", c)
		assert.NotContains(t, c, "drop_caches", "command %q", c)
		assert.NotContains(t, c, ">", "a redirection (a write): %q", c)
	}
	for _, argv := range dev.Executed() {
		if !assert.NotEmpty(t, argv) {
			continue
		}
		assert.Contains(t, btReadTools, argv[0], "command %q", argv)
		switch argv[0] {
		case "uci":
			assert.True(t, slices.Contains(argv, "get") || slices.Contains(argv, "show"), "uci write %q", argv)
		case "ubus":
			assert.NotContains(t, argv, "sysupgrade", "command %q", argv)
		}
		for _, a := range argv[1:] {
			assert.NotContains(t, []string{"stop", "down", "reboot", "rm"}, a, "command %q", argv)
		}
	}
}
