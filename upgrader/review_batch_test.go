package upgrader_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// A batch paused by its failure threshold is the usual reason to retry its
// failed devices: the batch being retried is still active, but its own
// devices are not "in another batch" (found in review: every one was
// skipped so, and RetryBatch gave ErrNothingSelected).
func TestRetryBatchOfAPausedBatchRetriesItsFailedDevices(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"d1", "d2", "d3"} {
		b.fleetDevice(t, id, nil)
	}
	b.sc.set("d1", upgrader.Aborted(status.ReasonInsufficientMemory, errors.New("no room")))
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Name: "spring",
		Rollout: store.Rollout{Waves: []store.WaveSize{{Count: 1}}, FailureThreshold: store.Ptr(0.0)}})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s, err := b.eng.Batch(ctx, bt.ID)
		require.NoError(t, err)
		return s.State == status.BatchPaused
	}, 10*time.Second, 5*time.Millisecond, "d1, the canary, aborts: the failure threshold pauses the batch")

	_, plan, err := b.eng.RetryBatch(ctx, bt.ID, nil, true)
	for _, e := range plan.Skipped {
		t.Logf("skipped %s: %s (%s)", e.Device.ID, e.Skip, e.Detail)
	}
	require.NoError(t, err, "d1 ended aborted: RetryBatch makes a new batch of it")
	assert.Equal(t, []string{"d1"}, selectedIDs(plan))
}

// RetryBatch names the new batch "<old name> (retry)" unless that is over
// the name limit, counted in characters as store.Batch.Validate does (found
// in review: bytes were counted).
func TestRetryBatchNameFitsInCharacters(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b.fleetDevice(t, "d1", nil)
	b.sc.set("d1", upgrader.Aborted(status.ReasonInsufficientMemory, errors.New("no room")))
	name := strings.Repeat("é", 61) // 61 characters, 122 bytes
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Name: name})
	require.NoError(t, err)
	_, err = b.eng.WaitBatch(ctx, bt.ID)
	require.NoError(t, err)
	retry, _, err := b.eng.RetryBatch(ctx, bt.ID, nil, true)
	require.NoError(t, err)
	assert.Equal(t, name+" (retry)", retry.Name, "69 characters, well under the limit of %d", store.MaxNameLen)
}

// concurrency counts how many attempts run at once, in all and per device
// location, on top of scripted.
type concurrency struct {
	*scripted
	mu  sync.Mutex
	now int
	max int
}

func (c *concurrency) Upgrade(ctx context.Context, job *upgrader.Job) error {
	c.mu.Lock()
	c.now++
	c.max = max(c.max, c.now)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.now--
		c.mu.Unlock()
	}()
	time.Sleep(10 * time.Millisecond)
	return c.scripted.Upgrade(ctx, job)
}

// CancelBatch while two engines run a capped batch with offline devices
// going back to pending: every operation ends, none cancelled was flashed,
// none flashed twice, and the cap held throughout.
func TestCancelBatchUnderLoadEndsEverythingAndFlashesNothingCancelled(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	cc := &concurrency{scripted: newScripted()}
	require.NoError(t, b.reg.Register("counted", cc))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	off := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("no route to host"))
	for i := range 40 {
		id := fmt.Sprintf("d%02d", i)
		b.fleetDevice(t, id, func(d *store.Device) { d.Connection = "counted" })
		if i%3 == 0 {
			cc.set(id, off, off)
		}
	}
	// A second engine on the same store.
	eng2, err := upgrader.NewEngine(b.st, b.reg, &upgrader.Config{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Retry: fastRetry(), ImageMap: testMap(t), Files: b.files,
		Workers: 4, PollInterval: 10 * time.Millisecond, MaintenanceInterval: 10 * time.Millisecond,
		Offline: upgrader.OfflinePolicy{InitialInterval: 20 * time.Millisecond, MaxInterval: 40 * time.Millisecond,
			RandomizationFactor: upgrader.NoRetryRandomization},
	})
	require.NoError(t, err)
	require.NoError(t, eng2.Start(ctx))
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = eng2.Stop(sctx)
	}()
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Rollout: store.Rollout{MaxConcurrent: 3}})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s, err := b.eng.Batch(ctx, bt.ID)
		require.NoError(t, err)
		return s.Done >= 10
	}, 20*time.Second, time.Millisecond)
	_, err = b.eng.CancelBatch(ctx, bt.ID)
	require.NoError(t, err)
	end, err := b.eng.WaitBatch(ctx, bt.ID)
	require.NoError(t, err)
	assert.True(t, end.State.Terminal())
	t.Logf("end: %s %v", end.State, end.Counts)
	ops, err := b.st.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID})
	require.NoError(t, err)
	for _, op := range ops {
		assert.True(t, op.State.Terminal(), "%s is %s", op.DeviceID, op.State)
		n := cc.flashes(op.DeviceID)
		assert.LessOrEqual(t, n, 1, "%s flashed %d times", op.DeviceID, n)
		if op.State == status.Cancelled {
			assert.Zero(t, n, "%s was cancelled but flashed", op.DeviceID)
		}
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	assert.LessOrEqual(t, cc.max, 3, "MaxConcurrent")
}

// slow runs scripted with a pause before each attempt.
type slow struct {
	*scripted
	d time.Duration
}

func (s *slow) Upgrade(ctx context.Context, job *upgrader.Job) error {
	select {
	case <-time.After(s.d):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.scripted.Upgrade(ctx, job)
}

// In a batch capped at one at a time, d0's first attempt fails with a
// recoverable error and is due again 5 ms later. Operations in progress are
// claimed before pending ones, so the retry does not wait behind the whole
// batch until its deadline passes (found in review: with "longest due
// first" alone, every pending operation came first and d0 timed out).
func TestCappedBatchDoesNotStarveARetryIntoATimeout(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, func(c *upgrader.Config) { c.OperationTimeout = 400 * time.Millisecond })
	sl := &slow{scripted: newScripted(), d: 60 * time.Millisecond}
	require.NoError(t, b.reg.Register("slow", sl))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 10 {
		b.fleetDevice(t, fmt.Sprintf("d%d", i), func(d *store.Device) { d.Connection = "slow" })
	}
	sl.set("d0", upgrader.Recoverable(status.ReasonUploadFailed, errors.New("upload interrupted")))
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID, Rollout: store.Rollout{MaxConcurrent: 1}})
	require.NoError(t, err)
	end, err := b.eng.WaitBatch(ctx, bt.ID)
	require.NoError(t, err)
	ops, err := b.st.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID, DeviceID: "d0"})
	require.NoError(t, err)
	require.Len(t, ops, 1)
	assert.Equal(t, status.Success, ops[0].State, "d0's retry (due 5 ms after its first attempt) ended %s/%s; batch %v",
		ops[0].State, ops[0].Reason, end.Counts)
}

// The engine's view of the same: a batch whose first wave settled with one
// device offline (its waits, 20-40 ms, are shorter than WaveWait, 300 ms)
// reaches its second wave although the device stays offline (found in
// review: every try of the offline device restarted the wave wait).
func TestOfflineDeviceDoesNotHoldTheNextWaveBack(t *testing.T) {
	t.Parallel()
	b := setupBatch(t, nil)
	sl := &slow{scripted: newScripted(), d: 20 * time.Millisecond} // a connection attempt takes a while
	require.NoError(t, b.reg.Register("slow", sl))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"d0", "d1", "d2"} {
		b.fleetDevice(t, id, func(d *store.Device) { d.Connection = "slow" })
	}
	off := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("no route to host"))
	var offs []error
	for range 10000 {
		offs = append(offs, off)
	}
	sl.set("d1", offs...)
	bt, _, err := b.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: b.build.ID,
		Rollout: store.Rollout{Waves: []store.WaveSize{{Count: 2}}, WaveWait: 300 * time.Millisecond}})
	require.NoError(t, err)
	assert.Eventually(t, func() bool {
		ops, err := b.st.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID, DeviceID: "d2"})
		require.NoError(t, err)
		return ops[0].State == status.Success
	}, 5*time.Second, 10*time.Millisecond, "d2, of wave 1, is upgraded WaveWait after wave 0 settled; d1 offline does not hold it back")
	_, err = b.eng.CancelBatch(ctx, bt.ID)
	require.NoError(t, err)
}
