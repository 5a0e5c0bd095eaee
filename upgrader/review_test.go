package upgrader_test

// Regression tests for defects a review found in the claims engine (each
// failed before its fix; the comments describe the defect).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
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

// reviewEngine builds a second engine over st (a wrapper of b.st) sharing
// b's registry, files and image map.
func reviewEngine(t *testing.T, b *bundle, st store.Store, mod func(*upgrader.Config)) *upgrader.Engine {
	t.Helper()
	cfg := &upgrader.Config{ImageMap: testMap(t), Files: b.files, Logger: quiet(), Retry: fastRetry(), Workers: 4}
	if mod != nil {
		mod(cfg)
	}
	eng, err := upgrader.NewEngine(st, b.reg, cfg)
	require.NoError(t, err)
	return eng
}

// A worker that schedules a retry tells the producer to wake at retryAt, but
// the producer remembers only the earliest such time (producer.wakeAt keeps
// one p.next and clears it when it fires). A second retry, due later than
// the first, is forgotten once the first fires: it is claimed only at the
// next poll (Config.PollInterval), not when it is due.
func TestEveryRetryWakeUpKept(t *testing.T) {
	t.Parallel()
	rec := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("connection refused"))
	b := setup(t, &upgradertest.Fake{Results: []error{rec}}, func(c *upgrader.Config) {
		c.Retry = upgrader.RetryPolicy{InitialInterval: 2 * time.Second, RandomizationFactor: upgrader.NoRetryRandomization}
		c.PollInterval = time.Hour // work from other engines only; this engine's retries wake it themselves
		c.MaintenanceInterval = time.Hour
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, b.eng.Start(ctx))
	defer b.eng.Stop(ctx)

	first, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		op, _ := b.st.Operation(ctx, first.ID)
		return op.Attempt == 1 && !op.NextAttemptAt.IsZero()
	}, 10*time.Second, time.Millisecond)
	// The second operation fails its first attempt well after the first
	// one, so its retry is due well after the first's.
	time.Sleep(500 * time.Millisecond)
	d2 := b.addDevice(t, "dev-2")
	second, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: d2.ID, ImageID: b.image.ID})
	require.NoError(t, err)

	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second) // both retries are due after ~2.5 s
	defer wcancel()
	end1, err := b.eng.Wait(wctx, first.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Success, end1.State)
	end2, err := b.eng.Wait(wctx, second.ID)
	if err != nil {
		cur, _ := b.st.Operation(ctx, second.ID)
		t.Fatalf("the second operation's retry was due at %s (%s ago) but was not claimed: %s, attempt %d, lease owner %q: %v",
			cur.NextAttemptAt.Format(time.RFC3339Nano), time.Since(cur.NextAttemptAt).Round(time.Millisecond),
			cur.State, cur.Attempt, cur.LeaseOwner, err)
	}
	assert.Equal(t, status.Success, end2.State)
}

// renewRaceStore lets one lease renewal that was snapshotted before the
// engine let go of its claim land after the release: the renewal is in flight
// (a database round trip) while the worker releases the lease.
type renewRaceStore struct {
	*memory.Store
	armed     atomic.Bool
	entered   chan struct{} // closed when the armed renewal starts
	released  chan struct{} // closed after the first ReleaseOperation
	renewDone chan struct{} // closed after the armed renewal reached the store
	relOnce   sync.Once
}

func (s *renewRaceStore) RenewLeases(ctx context.Context, owner string, lease time.Duration, held []store.Lease) ([]store.Renewal, error) {
	if !s.armed.CompareAndSwap(true, false) {
		return s.Store.RenewLeases(ctx, owner, lease, held)
	}
	close(s.entered)
	select {
	case <-s.released:
	case <-time.After(20 * time.Second):
	}
	// The request was already sent: the store applies it even if the
	// caller's context ended meanwhile.
	rs, err := s.Store.RenewLeases(context.WithoutCancel(ctx), owner, lease, held)
	close(s.renewDone)
	return rs, err
}

func (s *renewRaceStore) ReleaseOperation(ctx context.Context, id string, token int64) error {
	err := s.Store.ReleaseOperation(ctx, id, token)
	s.relOnce.Do(func() { close(s.released) })
	return err
}

// Stop promises that the leases of interrupted attempts are released "so any
// engine sharing the store takes them over at once". But the renewer
// snapshots the held claims (lease.go renew) and renews them after unhold
// released one: RenewLeases accepts the released lease (same token, same
// owner) and leases the operation again for a whole LeaseDuration to an
// engine that has stopped. (The same race delays a retry released by
// retryLater by up to one lease.)
func TestRenewalCrossingReleaseDoesNotReLease(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	defer close(hold)
	b := setup(t, &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseUpload}, nil)
	rs := &renewRaceStore{Store: b.st, entered: make(chan struct{}), released: make(chan struct{}), renewDone: make(chan struct{})}
	eng := reviewEngine(t, b, rs, func(c *upgrader.Config) { c.LeaseDuration = 3 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, eng.Start(ctx))
	op, err := eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	waitPhase(t, b.st, op.ID, status.PhaseUpload)
	rs.armed.Store(true)
	select {
	case <-rs.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("no renewal")
	}
	sctx, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer scancel()
	assert.ErrorIs(t, eng.Stop(sctx), context.DeadlineExceeded, "the attempt is held: Stop interrupts it")
	<-rs.renewDone

	cur, err := b.st.Operation(ctx, op.ID)
	require.NoError(t, err)
	require.Equal(t, status.InProgress, cur.State)
	assert.False(t, store.LeaseLive(cur, time.Now()),
		"a stopped engine still holds the lease of %s until %s (owner %q)", op.ID, cur.LeaseExpiresAt.Format(time.RFC3339Nano), cur.LeaseOwner)
	_, err = b.st.ClaimOperation(ctx, op.ID, "another-engine", time.Second)
	assert.NoError(t, err, "another engine takes the released operation over at once")
}

// slowClaimStore is a store whose ClaimOperation takes a database round trip
// and honours its context, as PostgreSQL's does.
type slowClaimStore struct {
	*memory.Store
}

func (s *slowClaimStore) ClaimOperation(ctx context.Context, id, owner string, lease time.Duration) (store.Operation, error) {
	select {
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
		return store.Operation{}, fmt.Errorf("store: claim: %w", ctx.Err())
	}
	return s.Store.ClaimOperation(ctx, id, owner, lease)
}

// Run promises: if ctx ends first, an operation before flashing ends
// cancelled. When ctx ends while Run's ClaimOperation is in flight (engine.go
// Run: the claim uses ctx itself when ctx has not ended yet), Run returns the
// store's error and leaves the operation pending: nothing ends it (no engine
// is started: Upgrade needs no Start), and the device refuses every later
// upgrade (ErrDeviceBusy).
func TestCallerGivingUpDuringClaimEndsOperation(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	eng := reviewEngine(t, b, &slowClaimStore{Store: b.st}, nil)
	ctx := context.Background()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	end, err := eng.Upgrade(cctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err, "the operation was ended, as when the caller gives up at any other moment")
	assert.Equal(t, status.Cancelled, end.State)

	ops, err := b.st.ListOperations(ctx, store.OperationFilter{DeviceID: b.device.ID})
	require.NoError(t, err)
	require.Len(t, ops, 1)
	assert.Equal(t, status.Cancelled, ops[0].State, "the caller gave up before flashing: the operation must end cancelled")
	_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	assert.NoError(t, err, "the device takes a new upgrade")
}

// hungBatchStore's Batch hangs (a database that stopped answering) for as
// long as its context lives, once armed.
type hungBatchStore struct {
	*memory.Store
	armed   atomic.Bool
	release chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (s *hungBatchStore) Batch(ctx context.Context, id string) (store.Batch, error) {
	if s.armed.Load() {
		s.once.Do(func() { close(s.entered) })
		select {
		case <-ctx.Done():
			return store.Batch{}, ctx.Err()
		case <-s.release:
		}
	}
	return s.Store.Batch(ctx, id)
}

// Stop(ctx) promises to wait "until ctx ends" and then interrupt what is
// left. But Engine.published reads the batch with context.Background()
// (engine.go published), so a store call that hangs there holds a worker
// (or the maintenance loop) forever, and Stop never returns whatever its
// ctx says. Every other store call of the executor is bounded.
func TestStopBoundedDespiteHungBatchRead(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	hs := &hungBatchStore{Store: b.st, release: make(chan struct{}), entered: make(chan struct{})}
	eng := reviewEngine(t, b, hs, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, ops, err := b.st.CreateBatch(ctx, store.Batch{BuildID: b.build.ID, Organization: "org1", Name: "b", State: status.BatchInProgress},
		[]store.Operation{{DeviceID: b.device.ID, ImageID: b.image.ID}})
	require.NoError(t, err)
	hs.armed.Store(true)
	require.NoError(t, eng.Start(ctx))
	select {
	case <-hs.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the batch was never read")
	}
	stopped := make(chan error, 1)
	go func() {
		sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer scancel()
		stopped <- eng.Stop(sctx)
	}()
	select {
	case err := <-stopped:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Errorf("Stop(ctx with a 200 ms timeout) has not returned after 10 s: a worker is stuck in Batch(context.Background()) for operation %s", ops[0].ID)
		close(hs.release) // let the test end without leaking
		<-stopped
		return
	}
	close(hs.release)
}

// New accepts any positive PollInterval (config.go has no upper bound), but
// jitter (producer.go) computes rand.N(2*d/5+1), which overflows for
// d > MaxInt64/2 (about 146 years, e.g. 1<<62, a "never poll" value) and
// panics in the producer goroutine, killing the host process. Run in a
// child process so the panic does not end this test binary.
func TestHugePollIntervalDoesNotPanic(t *testing.T) {
	if os.Getenv("FWU_REVIEW_CHILD") == "1" {
		b := setup(t, &upgradertest.Fake{}, func(c *upgrader.Config) { c.PollInterval = 1 << 62 })
		ctx := context.Background()
		require.NoError(t, b.eng.Start(ctx))
		time.Sleep(500 * time.Millisecond) // the producer waits for its first poll
		require.NoError(t, b.eng.Stop(ctx))
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHugePollIntervalDoesNotPanic$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FWU_REVIEW_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		lines := strings.Split(string(out), "\n")
		t.Fatalf("an engine with PollInterval %s (accepted by New) crashed: %v\n%s", time.Duration(1<<62),
			err, strings.Join(lines[:min(len(lines), 6)], "\n"))
	}
}
