package upgrader_test

// Regression tests for defects found when the engine moved onto store
// claims. Each failed on the engine as it was before.

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// slowFirmwareStore takes its time writing device firmware records.
type slowFirmwareStore struct {
	*memory.Store
}

func (s slowFirmwareStore) PutDeviceFirmware(ctx context.Context, df store.DeviceFirmware) (store.DeviceFirmware, error) {
	time.Sleep(150 * time.Millisecond)
	return s.Store.PutDeviceFirmware(ctx, df)
}

// Wait returns (and the success event is published) only after the
// device's firmware record names the new image.
func TestWaitSeesDeviceFirmware(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	eng, err := upgrader.NewEngine(slowFirmwareStore{b.st}, b.reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, Logger: quiet()})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, eng.Start(ctx))
	defer eng.Stop(ctx)
	events, unsub := eng.Subscribe(0)
	defer unsub()
	op, err := eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	sawSuccess := make(chan store.DeviceFirmware, 1)
	go func() {
		for ev := range events {
			if ev.Kind == upgrader.EventOperationState && ev.OperationID == op.ID && ev.State == status.Success {
				df, _ := b.st.DeviceFirmware(ctx, b.device.ID)
				sawSuccess <- df
				return
			}
		}
	}()
	end, err := eng.Wait(ctx, op.ID)
	require.NoError(t, err)
	require.Equal(t, status.Success, end.State)
	df, err := b.st.DeviceFirmware(ctx, b.device.ID)
	require.NoError(t, err)
	assert.Equal(t, b.image.ID, df.ImageID, "right after Wait the firmware record names the new image")
	select {
	case df := <-sawSuccess:
		assert.Equal(t, b.image.ID, df.ImageID, "at the success event the firmware record names the new image")
	case <-time.After(10 * time.Second):
		t.Fatal("no success event")
	}
}

// An operation created directly in the store (here through CreateBatch,
// which does not know about boards) never skips the engine's checks: every
// attempt start checks device, organization, board and options.
func TestAttemptStartRepeatsCreateChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("board", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &upgradertest.Fake{}, nil)
		_, ops, err := b.st.CreateBatch(ctx, store.Batch{Organization: "org1", BuildID: b.build.ID},
			[]store.Operation{{DeviceID: b.device.ID, ImageID: b.other.ID}})
		require.NoError(t, err)
		end, err := b.eng.Run(ctx, ops[0].ID)
		require.NoError(t, err)
		assert.Equal(t, status.Aborted, end.State)
		assert.Equal(t, status.ReasonNoImageForBoard, end.Reason)
		assert.Zero(t, b.fake.Attempts(end.ID), "the upgrader never ran")
	})
	t.Run("deactivated", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &upgradertest.Fake{}, nil)
		op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
		require.NoError(t, err)
		d := b.device
		d.Active = false
		_, err = b.st.PutDevice(ctx, d)
		require.NoError(t, err)
		end, err := b.eng.Run(ctx, op.ID)
		require.NoError(t, err)
		assert.Equal(t, status.Aborted, end.State)
		assert.Equal(t, status.ReasonDeviceDeactivated, end.Reason)
		assert.Zero(t, b.fake.Attempts(end.ID))
	})
	t.Run("options", func(t *testing.T) {
		t.Parallel()
		b := setup(t, &upgradertest.Fake{}, nil)
		require.NoError(t, b.reg.Register("picky", pickyUpgrader{}))
		d := b.addDevice(t, "picky-1")
		d.Connection = "picky"
		_, err := b.st.PutDevice(ctx, d)
		require.NoError(t, err)
		op, err := b.st.CreateOperation(ctx, store.Operation{DeviceID: d.ID, ImageID: b.image.ID, Options: json.RawMessage(`{"bad":true}`)})
		require.NoError(t, err)
		end, err := b.eng.Run(ctx, op.ID)
		require.NoError(t, err)
		assert.Equal(t, status.Aborted, end.State)
		assert.Equal(t, status.ReasonInvalidOptions, end.Reason)
	})
}

// pickyUpgrader refuses options holding "bad" and panics on "panic".
type pickyUpgrader struct{}

func (pickyUpgrader) Upgrade(context.Context, *upgrader.Job) error { return nil }

func (pickyUpgrader) ValidateOptions(o json.RawMessage) error {
	if strings.Contains(string(o), "panic") {
		panic("validator bug")
	}
	if strings.Contains(string(o), "bad") {
		return errors.New("bad option")
	}
	return nil
}

// Invalid options are a *RefusedError with reason invalid-options, and a
// validator that panics refuses instead of crashing the host.
func TestInvalidOptionsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	require.NoError(t, b.reg.Register("picky", pickyUpgrader{}))
	d := b.addDevice(t, "picky-1")
	d.Connection = "picky"
	_, err := b.st.PutDevice(context.Background(), d)
	require.NoError(t, err)
	for _, opts := range []string{`{"bad":1}`, `{"panic":1}`} {
		_, err := b.eng.Create(context.Background(), upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID, Options: json.RawMessage(opts)})
		var re *upgrader.RefusedError
		require.ErrorAs(t, err, &re, opts)
		assert.Equal(t, status.ReasonInvalidOptions, re.Reason, opts)
	}
	ops, err := b.st.ListOperations(context.Background(), store.OperationFilter{DeviceID: d.ID})
	require.NoError(t, err)
	assert.Empty(t, ops, "nothing stored")
}

// Missing image bytes end the operation aborted at once, not after 15
// minutes of retries.
func TestMissingImageBytesAbortAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, func(c *upgrader.Config) {
		c.Retry = upgrader.RetryPolicy{InitialInterval: time.Hour, RandomizationFactor: upgrader.NoRetryRandomization}
	})
	ctx := context.Background()
	// An image record created through the store, without bytes.
	im, err := b.st.CreateImage(ctx, store.Image{BuildID: b.build.ID, Type: testType + ".v2", Name: "x.bin",
		SHA256: strings.Repeat("ab", 32), Boards: []string{testBoard}})
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	end, err := b.eng.Upgrade(cctx, upgrader.Request{DeviceID: b.device.ID, ImageID: im.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Aborted, end.State)
	assert.Equal(t, status.ReasonImageMissing, end.Reason)
	assert.Equal(t, 0, end.Attempt, "no attempt started")

	// Bytes removed after the image was stored.
	d2 := b.addDevice(t, "dev-2")
	require.NoError(t, b.files.Remove(ctx, b.image.ID))
	end, err = b.eng.Upgrade(cctx, upgrader.Request{DeviceID: d2.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.ReasonImageMissing, end.Reason)
}

// flakyStore fails the first n terminal writes, as a database restarting
// would.
type flakyStore struct {
	*memory.Store
	n atomic.Int32
}

func (s *flakyStore) UpdateOperation(ctx context.Context, id string, u store.OperationUpdate) (store.Operation, error) {
	if u.State.Terminal() && s.n.Add(-1) >= 0 {
		return store.Operation{}, errors.New("connection reset by peer")
	}
	return s.Store.UpdateOperation(ctx, id, u)
}

// One failed store write while ending an operation no longer leaves it in
// progress forever (which then refused every later upgrade of the device).
func TestFailedEndWriteIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	fs := &flakyStore{Store: b.st}
	fs.n.Store(3)
	eng, err := upgrader.NewEngine(fs, b.reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, Logger: quiet()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	end, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, end.State)
	assert.Less(t, fs.n.Load(), int32(0), "the failing writes were tried")
	// And the device takes the next upgrade.
	_, err = eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
}

// An engine whose ending write cannot land (the store is down for good)
// lets go of the operation when its lease cannot be renewed; another engine
// then recovers it.
func TestStrandedOperationRecoveredByAnotherEngine(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	fs := &flakyStore{Store: b.st}
	fs.n.Store(math.MaxInt32)
	deadStore := &downStore{flakyStore: fs}
	eng, err := upgrader.NewEngine(deadStore, b.reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, Logger: quiet(),
		LeaseDuration: 150 * time.Millisecond})
	require.NoError(t, err)
	ctx := context.Background()
	op, err := eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	deadStore.failRenew.Store(true)
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = eng.Run(rctx, op.ID) // cannot end it: gives up when the lease is gone
	require.Error(t, err)
	cur, err := b.st.Operation(ctx, op.ID)
	require.NoError(t, err)
	require.Equal(t, status.InProgress, cur.State, "the first engine could not write the end")

	eng2, err := upgrader.NewEngine(b.st, b.reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, Logger: quiet(),
		LeaseDuration: 150 * time.Millisecond, PollInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, eng2.Start(ctx))
	defer eng2.Stop(ctx)
	end, err := eng2.Wait(rctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Success, end.State, "recovered: verified after flashing, not re-flashed")
	assert.Equal(t, 1, b.fake.Flashed(op.ID), "flashed once")
	assert.Equal(t, 1, b.fake.Verified(op.ID), "the second engine verified")
}

// downStore fails lease renewals and claims once failRenew is set.
type downStore struct {
	*flakyStore
	failRenew atomic.Bool
	claimed   atomic.Bool
}

func (s *downStore) RenewLeases(ctx context.Context, owner string, lease time.Duration, held []store.Lease) ([]store.Renewal, error) {
	if s.failRenew.Load() {
		return nil, errors.New("connection refused")
	}
	return s.flakyStore.RenewLeases(ctx, owner, lease, held)
}

func (s *downStore) ClaimOperation(ctx context.Context, id, owner string, lease time.Duration) (store.Operation, error) {
	if s.failRenew.Load() && s.claimed.Swap(true) {
		return store.Operation{}, errors.New("connection refused")
	}
	return s.flakyStore.ClaimOperation(ctx, id, owner, lease)
}

func TestStartAfterStopIsAnError(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ctx := context.Background()
	require.NoError(t, b.eng.Start(ctx))
	require.NoError(t, b.eng.Stop(ctx))
	assert.ErrorIs(t, b.eng.Start(ctx), upgrader.ErrStopped)
	_, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	assert.ErrorIs(t, err, upgrader.ErrStopped)
}

// typedNil is an Upgrader whose nil pointer would panic when called.
type typedNil struct{ x int }

func (u *typedNil) Upgrade(context.Context, *upgrader.Job) error { u.x++; return nil }

func TestValuesThatMakeNoSense(t *testing.T) {
	t.Parallel()
	st := memory.New()
	reg := upgrader.NewRegistry()
	var tn *typedNil
	assert.Error(t, reg.Register("x", tn), "a typed nil upgrader")
	_, ok := reg.Lookup("x")
	assert.False(t, ok)

	for name, cfg := range map[string]upgrader.Config{
		"NaN multiplier":         {Retry: upgrader.RetryPolicy{Multiplier: math.NaN()}},
		"Inf multiplier":         {Retry: upgrader.RetryPolicy{Multiplier: math.Inf(1)}},
		"negative multiplier":    {Retry: upgrader.RetryPolicy{Multiplier: -2}},
		"NaN randomization":      {Retry: upgrader.RetryPolicy{RandomizationFactor: math.NaN()}},
		"negative randomization": {Retry: upgrader.RetryPolicy{RandomizationFactor: -0.5}},
		"huge event buffer":      {EventBuffer: math.MaxInt},
		"negative lease":         {LeaseDuration: -time.Second},
		"tiny lease":             {LeaseDuration: time.Millisecond},
		"negative poll":          {PollInterval: -time.Second},
		"owner with spaces":      {Owner: " me "},
	} {
		_, err := upgrader.NewEngine(st, reg, &cfg)
		assert.Error(t, err, name)
	}
	for _, p := range []upgrader.RetryPolicy{{Multiplier: -3}, {Multiplier: math.NaN()}, {RandomizationFactor: math.NaN()}} {
		for n := 1; n < 6; n++ {
			assert.Positive(t, p.Delay(n), "%+v: a policy that makes no sense still waits a positive time", p)
		}
	}

	b := setup(t, &upgradertest.Fake{}, nil)
	ch, unsub := b.eng.Subscribe(math.MaxInt) // capped, not an allocation failure
	unsub()
	_, open := <-ch
	assert.False(t, open)
	_, err := b.eng.UploadImage(context.Background(), store.Image{BuildID: b.build.ID, Type: testType + ".nil"}, nil)
	assert.Error(t, err, "a nil reader")
}

// Cancel reaches an attempt that another engine runs, through its lease
// renewal, and Wait in one engine sees the end made by the other.
func TestCancelAcrossEngines(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	fake := &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseUpload}
	b := setup(t, fake, func(c *upgrader.Config) {
		c.LeaseDuration = 300 * time.Millisecond
		c.PollInterval = 20 * time.Millisecond
	})
	defer close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	other, err := upgrader.NewEngine(b.st, b.reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, Logger: quiet(),
		LeaseDuration: 300 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, b.eng.Start(ctx))
	defer b.eng.Stop(ctx)
	op, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		o, _ := b.st.Operation(ctx, op.ID)
		return o.Phase == status.PhaseUpload
	}, 10*time.Second, 5*time.Millisecond)
	_, err = other.Cancel(ctx, op.ID)
	require.NoError(t, err)
	end, err := other.Wait(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, end.State)
	// The holder's attempt learns it and stops: no flash.
	require.Eventually(t, func() bool {
		o, _ := b.st.Operation(ctx, op.ID)
		return slicesContains(logLines(t, b.st, o.ID), "cancelled by user")
	}, 10*time.Second, 10*time.Millisecond)
	assert.Zero(t, fake.Flashed(op.ID))
}

func slicesContains(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// Two engines over one store never run one operation twice, and every
// operation ends.
func TestTwoEnginesShareWork(t *testing.T) {
	t.Parallel()
	fake := &upgradertest.Fake{StepDelay: time.Millisecond}
	b := setup(t, fake, func(c *upgrader.Config) { c.PollInterval = 10 * time.Millisecond })
	other, err := upgrader.NewEngine(b.st, b.reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, Logger: quiet(),
		Workers: 4, PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, b.eng.Start(ctx))
	require.NoError(t, other.Start(ctx))
	var ids []string
	for i := range 60 {
		d := b.addDevice(t, "share-"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
		op, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
		require.NoError(t, err)
		ids = append(ids, op.ID)
	}
	owners := map[string]bool{}
	var mu sync.Mutex
	for _, id := range ids {
		end, err := other.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, status.Success, end.State)
		assert.Equal(t, 1, fake.Attempts(id), "one attempt")
		assert.Equal(t, 1, fake.Flashed(id), "one flash")
		mu.Lock()
		owners[end.LeaseOwner] = true
		mu.Unlock()
	}
	require.NoError(t, b.eng.Stop(ctx))
	require.NoError(t, other.Stop(ctx))
	assert.Len(t, owners, 2, "both engines took work")
}

// A second Stop, concurrent with the first, returns only once the engine is
// drained (it returned at once while the first was still waiting).
func TestConcurrentStopWaitsForTheFirst(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	fake := &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseUpload}
	b := setup(t, fake, nil)
	ctx := context.Background()
	require.NoError(t, b.eng.Start(ctx))
	op, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		o, _ := b.st.Operation(ctx, op.ID)
		return o.Phase == status.PhaseUpload
	}, 10*time.Second, 5*time.Millisecond)
	first := make(chan error, 1)
	go func() { first <- b.eng.Stop(ctx) }() // waits for the held attempt
	require.Eventually(t, func() bool {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		return errors.Is(b.eng.Stop(sctx), context.DeadlineExceeded)
	}, 10*time.Second, 10*time.Millisecond, "a second Stop waits while the first drains")
	close(hold)
	require.NoError(t, <-first)
	require.NoError(t, b.eng.Stop(ctx), "after the first returned, Stop returns at once")
}
