package upgrader_test

// Regression tests for lifecycle bugs found in review: each asserts what the
// engine's documentation promises.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
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

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestUnsubscribeAfterStopAndSubscribeAfterStop(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ch, unsub := b.eng.Subscribe(0)
	require.NoError(t, b.eng.Stop(context.Background()))
	_, open := <-ch
	assert.False(t, open, "Stop ends subscriptions")
	assert.NotPanics(t, unsub)
	assert.NotPanics(t, unsub, "unsubscribe may be called again")
	late, unsubLate := b.eng.Subscribe(0)
	_, open = <-late
	assert.False(t, open, "a subscription after Stop is already closed")
	assert.NotPanics(t, unsubLate)
}

func TestStopUnstartedWithDoneContext(t *testing.T) {
	t.Parallel()
	for range 20 {
		b := setup(t, &upgradertest.Fake{}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.NotPanics(t, func() { _ = b.eng.Stop(ctx) })
	}
}

// A synchronous Upgrade whose caller gives up while waiting for a retry
// ends the operation cancelled, as documented, instead of leaving it in
// progress (and the device busy).
func TestCallerGivesUpDuringRetryWait(t *testing.T) {
	t.Parallel()
	rec := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("refused"))
	b := setup(t, &upgradertest.Fake{Results: []error{rec, rec}}, func(c *upgrader.Config) {
		c.Retry = upgrader.RetryPolicy{InitialInterval: time.Minute, RandomizationFactor: -1}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	op, err := b.eng.Upgrade(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, op.State)
	stored, err := b.st.Operation(context.Background(), op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, stored.State)
	_, err = b.eng.Create(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	assert.NoError(t, err, "the device is free again")
}

// Cancel wakes a synchronous Run that waits for a retry: it returns at
// once, not when the retry would have been due.
func TestCancelWakesRunWaitingForRetry(t *testing.T) {
	t.Parallel()
	rec := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("refused"))
	b := setup(t, &upgradertest.Fake{Results: []error{rec, rec}}, func(c *upgrader.Config) {
		c.Retry = upgrader.RetryPolicy{InitialInterval: time.Hour, RandomizationFactor: -1}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	done := make(chan store.Operation, 1)
	go func() {
		end, _ := b.eng.Run(ctx, op.ID)
		done <- end
	}()
	require.Eventually(t, func() bool {
		o, _ := b.st.Operation(ctx, op.ID)
		return o.Attempt == 1 && o.State == status.InProgress && o.Phase == status.PhaseNone && !o.NextAttemptAt.IsZero()
	}, 10*time.Second, time.Millisecond)
	_, err = b.eng.Cancel(ctx, op.ID)
	require.NoError(t, err)
	select {
	case end := <-done:
		assert.Equal(t, status.Cancelled, end.State)
	case <-ctx.Done():
		t.Fatal("Run still waits for an hour-long retry after Cancel")
	}
}

// A Start whose resumption fails can be called again, and then resumes.
func TestStartRetryableAfterFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	done, stop := context.WithCancel(ctx)
	stop()
	require.Error(t, b.eng.Start(done), "the store refuses a done context")
	require.NoError(t, b.eng.Start(ctx))
	defer b.eng.Stop(ctx)
	end, err := b.eng.Wait(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Success, end.State)
}

// blockingVerifier verifies only when its context ends.
type blockingVerifier struct{ upgradertest.Fake }

func (v *blockingVerifier) Verify(ctx context.Context, _ *upgrader.Job) error {
	<-ctx.Done()
	return ctx.Err()
}

// Stop interrupts a verification in progress and leaves the operation for
// the next Start, instead of waiting up to VerifyTimeout and failing it.
func TestStopInterruptsVerification(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	reg := upgrader.NewRegistry()
	require.NoError(t, reg.Register("fake", &blockingVerifier{}))
	eng, err := upgrader.NewEngine(b.st, reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, VerifyTimeout: time.Minute, Logger: quiet()})
	require.NoError(t, err)
	ctx := context.Background()
	op, err := eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	_, err = b.st.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
		Phase: store.Ptr(status.PhaseFlashing), Attempt: store.Ptr(1)})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	require.Eventually(t, func() bool { // the engine logs before it calls Verify
		logs, _ := b.st.Logs(ctx, op.ID, 0, 0)
		return len(logs) > 0
	}, 10*time.Second, time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	assert.ErrorIs(t, eng.Stop(sctx), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 30*time.Second, "Stop does not wait for the minute-long verification")
	o, err := b.st.Operation(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.InProgress, o.State, "left for the next Start to verify, not failed")
}

// racyStore moves an operation into flashing right after the engine claims
// it once: another writer winning a race.
type racyStore struct {
	*memory.Store
	mu  sync.Mutex
	arm bool
}

func (s *racyStore) ClaimOperation(ctx context.Context, id, owner string, lease time.Duration) (store.Operation, error) {
	op, err := s.Store.ClaimOperation(ctx, id, owner, lease)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.arm {
		s.arm = false
		if _, err := s.Store.UpdateOperation(context.Background(), id, store.OperationUpdate{
			From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing)}); err != nil {
			panic(err)
		}
	}
	return op, err
}

// Ending an operation that another process moved into flashing meanwhile
// ends it failed (it can no longer be cancelled), instead of retrying the
// refused cancel forever.
func TestEndWithAfterAnotherProcessFlashed(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	rs := &racyStore{Store: b.st}
	eng, err := upgrader.NewEngine(rs, b.reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, Logger: quiet()})
	require.NoError(t, err)
	ctx := context.Background()
	op, err := eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	_, err = b.st.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
		Phase: store.Ptr(status.PhaseUpload), Attempt: store.Ptr(1)})
	require.NoError(t, err)
	rs.mu.Lock()
	rs.arm = true
	rs.mu.Unlock()
	gaveUp, cancel := context.WithCancel(ctx)
	cancel()
	end, err := eng.Run(gaveUp, op.ID)
	require.NoError(t, err)
	assert.True(t, end.State.Terminal(), "ended, not looping: %s", end.State)
	assert.NotEqual(t, status.Cancelled, end.State, "past flashing it cannot be cancelled")
}
