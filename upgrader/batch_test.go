package upgrader_test

import (
	"cmp"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// scripted is an upgrader whose attempts' results are set per device: the
// n-th attempt on a device returns script[device][n-1] (nil past the end),
// after entering every phase up to flashing when it succeeds.
type scripted struct {
	mu       sync.Mutex
	script   map[string][]error
	attempts map[string]int
	flashed  map[string]int
}

func newScripted() *scripted {
	return &scripted{script: map[string][]error{}, attempts: map[string]int{}, flashed: map[string]int{}}
}

func (s *scripted) set(dev string, results ...error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script[dev] = results
}

func (s *scripted) Upgrade(ctx context.Context, job *upgrader.Job) error {
	s.mu.Lock()
	s.attempts[job.Device.ID]++
	n := s.attempts[job.Device.ID]
	var res error
	if sc := s.script[job.Device.ID]; n <= len(sc) {
		res = sc[n-1]
	}
	s.mu.Unlock()
	if err := job.Report.Phase(ctx, status.PhaseConnecting); err != nil {
		return err
	}
	if res != nil {
		return res
	}
	for _, p := range []status.Phase{status.PhaseIdentity, status.PhaseUpload, status.PhaseFlashing, status.PhaseVerifying} {
		if err := job.Report.Phase(ctx, p); err != nil {
			return err
		}
		if p == status.PhaseFlashing {
			s.mu.Lock()
			s.flashed[job.Device.ID]++
			s.mu.Unlock()
		}
	}
	return nil
}

func (s *scripted) flashes(dev string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flashed[dev]
}

// batchBundle is an engine whose "fake" connection kind runs sc, started,
// with an older build ("1.0") in the same category as b.build.
type batchBundle struct {
	*bundle
	sc  *scripted
	old store.Image
}

func setupBatch(t *testing.T, mod func(*upgrader.Config)) *batchBundle {
	t.Helper()
	sc := newScripted()
	b := setup(t, &upgradertest.Fake{}, func(c *upgrader.Config) {
		c.PollInterval = 10 * time.Millisecond
		c.MaintenanceInterval = 10 * time.Millisecond
		c.Offline = upgrader.OfflinePolicy{InitialInterval: 20 * time.Millisecond, MaxInterval: 40 * time.Millisecond,
			RandomizationFactor: upgrader.NoRetryRandomization}
		if mod != nil {
			mod(c)
		}
	})
	require.NoError(t, b.reg.Register("scripted", sc))
	ctx := context.Background()
	oldBuild, err := b.eng.CreateBuild(ctx, store.Build{CategoryID: b.build.CategoryID, Version: "1.0", OSIdentifier: "TestOS 1.0 r0"})
	require.NoError(t, err)
	old, err := b.eng.UploadImage(ctx, store.Image{BuildID: oldBuild.ID, Type: testType}, strings.NewReader("old firmware"))
	require.NoError(t, err)
	require.NoError(t, b.eng.Start(ctx))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.eng.Stop(sctx)
	})
	return &batchBundle{bundle: b, sc: sc, old: old}
}

// fleetDevice registers a device of org1 running the old build.
func (b *batchBundle) fleetDevice(t *testing.T, id string, mod func(*store.Device)) store.Device {
	t.Helper()
	ctx := context.Background()
	d := store.Device{ID: id, Organization: "org1", Model: testModel, BoardName: testBoard, Connection: "scripted", Active: true}
	if mod != nil {
		mod(&d)
	}
	d, err := b.st.PutDevice(ctx, d)
	require.NoError(t, err)
	if b.old.Organization == "" || b.old.Organization == d.Organization {
		_, err = b.st.PutDeviceFirmware(ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: b.old.ID, Installed: true})
		require.NoError(t, err)
	}
	return d
}

func skips(p upgrader.Plan) map[string]upgrader.SkipReason {
	out := map[string]upgrader.SkipReason{}
	for _, e := range p.Skipped {
		out[e.Device.ID] = e.Skip
	}
	return out
}

func selectedIDs(p upgrader.Plan) []string {
	var out []string
	for _, e := range p.Selected {
		out = append(out, e.Device.ID)
	}
	return out
}

func TestPlanSelectsTheFleetAndSaysWhySkipped(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	ctx := context.Background()
	b.fleetDevice(t, "a-old", nil)
	b.fleetDevice(t, "b-old", func(d *store.Device) { d.Location = "roof" })
	cur := b.fleetDevice(t, "current", nil)
	_, err := b.st.PutDeviceFirmware(ctx, store.DeviceFirmware{DeviceID: cur.ID, ImageID: b.image.ID, Installed: true})
	require.NoError(t, err)
	b.fleetDevice(t, "inactive", func(d *store.Device) { d.Active = false })
	b.fleetDevice(t, "wrong-board", func(d *store.Device) { d.Model, d.BoardName = "Third", "third,board" })
	// The busy device's operation is held in its first phase for the test.
	hold := &upgradertest.Fake{Hold: make(chan struct{}), HoldAt: status.PhaseConnecting}
	require.NoError(t, b.reg.Register("held", hold))
	t.Cleanup(func() { close(hold.Hold) })
	busy := b.fleetDevice(t, "busy", func(d *store.Device) { d.Connection = "held" })
	_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: busy.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	b.fleetDevice(t, "no-upgrader", func(d *store.Device) { d.Connection = "telnet" })
	// Not part of the fleet: no firmware (without Firmwareless).
	_, err = b.st.PutDevice(ctx, store.Device{ID: "bare", Organization: "org1", Model: testModel, BoardName: testBoard, Connection: "scripted", Active: true})
	require.NoError(t, err)
	_, err = b.st.PutDevice(ctx, store.Device{ID: "other-org", Organization: "org2", Model: testModel, BoardName: testBoard, Connection: "scripted", Active: true})
	require.NoError(t, err)

	plan, err := b.eng.PlanBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID})
	require.NoError(t, err)
	assert.Equal(t, []string{"a-old", "b-old"}, selectedIDs(plan), "in device ID order")
	for _, e := range plan.Selected {
		assert.Equal(t, b.image.ID, e.Image.ID, "retargeted to the build's image of the same type")
	}
	assert.Equal(t, map[string]upgrader.SkipReason{
		"current": upgrader.SkipAlreadyOnBuild, "inactive": upgrader.SkipDeactivated, "wrong-board": upgrader.SkipNoImageForBoard,
		"busy": upgrader.SkipUpgradeRunning, "no-upgrader": upgrader.SkipNoUpgrader,
	}, skips(plan))

	// Firmwareless adds devices without firmware whose board fits; the
	// build's organization keeps other organizations' devices out of the
	// plan altogether, unless asked for by ID (then by ID only).
	plan, err = b.eng.PlanBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Firmwareless: true})
	require.NoError(t, err)
	assert.Equal(t, []string{"a-old", "b-old", "bare", "dev-1"}, selectedIDs(plan))
	assert.NotContains(t, skips(plan), "other-org")
	plan, err = b.eng.PlanBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Firmwareless: true,
		DeviceIDs: []string{"bare", "other-org", "nobody"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"bare"}, selectedIDs(plan))
	assert.Equal(t, map[string]upgrader.SkipReason{"other-org": upgrader.SkipOtherOrg, "nobody": upgrader.SkipUnknownDevice}, skips(plan))
	for _, e := range plan.Skipped {
		assert.Equal(t, store.Device{ID: e.Device.ID}, e.Device, "nothing of another tenant's device but the ID asked for")
	}

	// Filters are ANDed; the host's order decides the waves.
	plan, err = b.eng.PlanBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Location: "roof"})
	require.NoError(t, err)
	assert.Equal(t, []string{"b-old"}, selectedIDs(plan))
	plan, err = b.eng.PlanBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Firmwareless: true,
		Order:   func(x, y store.Device) int { return -cmp.Compare(x.ID, y.ID) },
		Rollout: store.Rollout{Waves: []store.WaveSize{{Count: 1}, {Percent: 100}}}})
	require.NoError(t, err)
	assert.Equal(t, []string{"dev-1", "bare", "b-old", "a-old"}, selectedIDs(plan))
	assert.Equal(t, []int{1, 3}, plan.WaveSizes)
	assert.Equal(t, []int{0, 1, 1}, []int{plan.Selected[0].Wave, plan.Selected[1].Wave, plan.Selected[2].Wave})

	ops, err := b.st.ListOperations(ctx, store.OperationFilter{})
	require.NoError(t, err)
	assert.Len(t, ops, 1, "planning stores nothing (the one operation is the busy device's)")
}

func TestCreateBatchRefusesAnEmptySelection(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	ctx := context.Background()
	b.fleetDevice(t, "inactive", func(d *store.Device) { d.Active = false })
	_, plan, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID})
	require.ErrorIs(t, err, upgrader.ErrNothingSelected)
	assert.Equal(t, upgrader.SkipDeactivated, skips(plan)["inactive"], "the plan says why")
	bs, err := b.st.ListBatches(ctx, store.BatchFilter{})
	require.NoError(t, err)
	assert.Empty(t, bs, "no empty batch is created")

	_, _, err = b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID,
		Rollout: store.Rollout{Waves: []store.WaveSize{{Percent: 120}}}})
	require.ErrorIs(t, err, store.ErrInvalid, "a bad rollout is refused before anything")
}

func TestDeviceInAnActiveBatchIsNotTakenTwice(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	ctx := context.Background()
	b.fleetDevice(t, "d1", nil)
	b.fleetDevice(t, "d2", nil)
	first, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Hold: true})
	require.NoError(t, err)
	ops, err := b.st.ListOperations(ctx, store.OperationFilter{BatchID: first.ID, DeviceID: "d1"})
	require.NoError(t, err)
	_, err = b.eng.Cancel(ctx, ops[0].ID)
	require.NoError(t, err)
	plan, err := b.eng.PlanBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID})
	require.NoError(t, err)
	assert.Empty(t, plan.Selected)
	assert.Equal(t, map[string]upgrader.SkipReason{"d1": upgrader.SkipInAnotherBatch, "d2": upgrader.SkipInAnotherBatch}, skips(plan),
		"d1's operation ended but its batch is still active")
}

func TestBatchEndsAndRetryMakesANewBatch(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"d1", "d2", "d3"} {
		b.fleetDevice(t, id, nil)
	}
	b.sc.set("d2", upgrader.Aborted(status.ReasonInsufficientMemory, errors.New("no room")))
	bt, plan, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Name: "spring"})
	require.NoError(t, err)
	require.Len(t, plan.Selected, 3)
	end, err := b.eng.WaitBatch(ctx, bt.ID)
	require.NoError(t, err)
	assert.Equal(t, status.BatchFailed, end.State)
	assert.Equal(t, status.Counts{status.Success: 2, status.Aborted: 1}, end.Counts)
	assert.Equal(t, "3 of 3 done, 0 pending", end.Summary)

	retry, rplan, err := b.eng.RetryBatch(ctx, bt.ID, nil, false)
	require.NoError(t, err)
	assert.Equal(t, []string{"d2"}, selectedIDs(rplan), "only the failed and aborted devices")
	end, err = b.eng.WaitBatch(ctx, retry.ID)
	require.NoError(t, err)
	assert.Equal(t, status.BatchSuccess, end.State)
	assert.Equal(t, 1, b.sc.flashes("d2"))
	_, _, err = b.eng.RetryBatch(ctx, retry.ID, nil, false)
	require.ErrorIs(t, err, upgrader.ErrNothingSelected)
}

func TestOfflineDeviceWaitsPendingWithoutFailingTheBatch(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b.fleetDevice(t, "d1", nil)
	off := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("no route to host"))
	// More unreachable attempts than the retry policy allows: offline
	// waits are not retries.
	b.sc.set("d1", off, off, off, off, off, off, off, off)
	events, stop := b.eng.Subscribe(256)
	defer stop()
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID})
	require.NoError(t, err)
	sawPending := false
	for ev := range events {
		if ev.Kind == upgrader.EventOperationState && ev.BatchID == bt.ID && ev.State == status.Pending {
			sawPending = true
			op, err := b.st.Operation(ctx, ev.OperationID)
			require.NoError(t, err)
			if op.State == status.Pending {
				assert.Zero(t, op.Attempt, "attempts start again when the device answers")
				assert.True(t, op.Deadline.IsZero(), "the deadline bounds one attempt window")
				assert.False(t, op.NextAttemptAt.IsZero())
			}
			break
		}
	}
	require.True(t, sawPending)
	end, err := b.eng.WaitBatch(ctx, bt.ID)
	require.NoError(t, err)
	assert.Equal(t, status.BatchSuccess, end.State)
	assert.Equal(t, 1, b.sc.flashes("d1"))
	ops, err := b.st.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID})
	require.NoError(t, err)
	logs := strings.Join(logLines(t, b.st, ops[0].ID), "\n")
	assert.Equal(t, 8, strings.Count(logs, "waiting for it"), "eight offline waits")
}

func TestOfflineDeviceFailsAfterMaxWait(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, func(c *upgrader.Config) { c.Offline.MaxWait = 50 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b.fleetDevice(t, "d1", nil)
	off := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("no route to host"))
	b.sc.set("d1", off, off, off, off, off, off, off, off, off, off, off, off)
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID})
	require.NoError(t, err)
	end, err := b.eng.WaitBatch(ctx, bt.ID)
	require.NoError(t, err)
	assert.Equal(t, status.BatchFailed, end.State)
	ops, err := b.st.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID})
	require.NoError(t, err)
	assert.Equal(t, status.ReasonConnectionFailed, ops[0].Reason)
	assert.Zero(t, b.sc.flashes("d1"))
}

func TestCancelBatchLetsFlashingFinish(t *testing.T) {
	t.Parallel()
	fake := &upgradertest.Fake{Hold: make(chan struct{}), HoldAt: status.PhaseFlashing}
	b := setupBatch(t, nil)
	require.NoError(t, b.reg.Register("held", fake))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"d1", "d2", "d3"} {
		b.fleetDevice(t, id, func(d *store.Device) { d.Connection = "held" })
	}
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Rollout: store.Rollout{MaxConcurrent: 1}})
	require.NoError(t, err)
	var flashing store.Operation
	require.Eventually(t, func() bool {
		ops, err := b.st.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID, States: []status.State{status.InProgress}})
		require.NoError(t, err)
		if len(ops) == 1 && ops[0].Phase == status.PhaseFlashing {
			flashing = ops[0]
			return true
		}
		return false
	}, 10*time.Second, 5*time.Millisecond)
	got, err := b.eng.CancelBatch(ctx, bt.ID)
	require.NoError(t, err)
	assert.True(t, got.CancelRequested)
	assert.Equal(t, 2, got.Counts[status.Cancelled], "the two waiting operations are cancelled")
	_, err = b.eng.ResumeBatch(ctx, bt.ID)
	require.ErrorIs(t, err, store.ErrInvalidTransition)
	close(fake.Hold)
	end, err := b.eng.WaitBatch(ctx, bt.ID)
	require.NoError(t, err)
	assert.Equal(t, status.BatchCancelled, end.State)
	op, err := b.st.Operation(ctx, flashing.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State, "the flashing one finished")
	assert.Equal(t, 1, fake.Flashed(flashing.ID))
}

func TestSetRolloutKeepsWaves(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	ctx := context.Background()
	b.fleetDevice(t, "d1", nil)
	b.fleetDevice(t, "d2", nil)
	r := store.Rollout{Waves: []store.WaveSize{{Count: 1}}, MaxConcurrent: 1}
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Rollout: r, Hold: true})
	require.NoError(t, err)
	r.MaxConcurrent = 5
	got, err := b.eng.SetRollout(ctx, bt.ID, r)
	require.NoError(t, err)
	assert.Equal(t, 5, got.Rollout.MaxConcurrent)
	r.Waves = []store.WaveSize{{Percent: 50}}
	_, err = b.eng.SetRollout(ctx, bt.ID, r)
	require.ErrorIs(t, err, store.ErrInvalidTransition)
	st, err := b.eng.Batch(ctx, bt.ID)
	require.NoError(t, err)
	assert.Equal(t, store.HoldNotStarted, st.Hold)
	assert.Equal(t, "0 of 2 done, 2 pending, wave 1 of 2, held (not-started)", st.Summary)
	_, err = b.eng.StartBatch(ctx, bt.ID)
	require.NoError(t, err)
	end, err := b.eng.WaitBatch(context.Background(), bt.ID)
	require.NoError(t, err)
	assert.Equal(t, status.BatchSuccess, end.State)
}
