package upgrader_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// undoFake is an Upgrader and Restorer that records what it is given: the
// undo records of each attempt (Job.Undo) and of each Restore call. Its
// attempts do what script says for the n-th attempt it runs (1-based).
type undoFake struct {
	script func(ctx context.Context, job *upgrader.Job, n int) error

	mu         sync.Mutex
	attempts   [][]string
	restores   [][]string
	restoreErr error
	onRestore  func(job *upgrader.Job)
}

var _ upgrader.Restorer = (*undoFake)(nil)

func (f *undoFake) Upgrade(ctx context.Context, job *upgrader.Job) error {
	f.mu.Lock()
	f.attempts = append(f.attempts, slices.Clone(job.Undo))
	n := len(f.attempts)
	f.mu.Unlock()
	return f.script(ctx, job, n)
}

func (f *undoFake) Restore(ctx context.Context, job *upgrader.Job) error {
	if f.onRestore != nil {
		f.onRestore(job)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores = append(f.restores, slices.Clone(job.Undo))
	return f.restoreErr
}

func (f *undoFake) seen() (attempts, restores [][]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.attempts), slices.Clone(f.restores)
}

// recordUndo records rec through the job's reporter.
func recordUndo(ctx context.Context, job *upgrader.Job, rec string) error {
	r, ok := job.Report.(upgrader.UndoRecorder)
	if !ok {
		return errors.New("the engine's reporter is no UndoRecorder")
	}
	return r.RecordUndo(ctx, rec)
}

func undone(ctx context.Context, job *upgrader.Job) error {
	return job.Report.(upgrader.UndoRecorder).Undone(ctx)
}

// failingStore stops renewing leases and claiming once cut: the engine
// over it loses its claims, as an engine that died or lost the database.
type failingStore struct {
	store.Store
	cut atomic.Bool
}

func (s *failingStore) RenewLeases(ctx context.Context, owner string, lease time.Duration, held []store.Lease) ([]store.Renewal, error) {
	if s.cut.Load() {
		return nil, errors.New("connection refused")
	}
	return s.Store.RenewLeases(ctx, owner, lease, held)
}

func (s *failingStore) ClaimOperation(ctx context.Context, id, owner string, lease time.Duration) (store.Operation, error) {
	if s.cut.Load() {
		return store.Operation{}, errors.New("connection refused")
	}
	return s.Store.ClaimOperation(ctx, id, owner, lease)
}

type undoRig struct {
	*bundle
	fake *undoFake
	dev  store.Device
}

// undoSetup is setup with undoFake registered for a device of its own.
func undoSetup(t *testing.T, fake *undoFake) *undoRig {
	t.Helper()
	b := setup(t, &upgradertest.Fake{}, nil)
	require.NoError(t, b.reg.Register("undo", fake))
	d := b.device
	d.ID, d.Connection = "dev-undo", "undo"
	d, err := b.eng.RegisterDevice(context.Background(), d)
	require.NoError(t, err)
	return &undoRig{bundle: b, fake: fake, dev: d}
}

// engine returns a new engine of the rig over st; it is stopped when the
// test ends.
func (r *undoRig) engine(t *testing.T, st store.Store, mod func(*upgrader.Config)) *upgrader.Engine {
	t.Helper()
	cfg := &upgrader.Config{ImageMap: testMap(t), Files: r.files, Logger: quiet(), Retry: fastRetry(),
		LeaseDuration: 300 * time.Millisecond, PollInterval: 20 * time.Millisecond, MaintenanceInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(cfg)
	}
	eng, err := upgrader.NewEngine(st, r.reg, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = eng.Stop(ctx)
	})
	return eng
}

// interrupted runs the first attempt of a new operation on an engine that
// dies (its store stops answering) once the attempt recorded recs, and
// returns the operation, in progress, whose lease will lapse.
func (r *undoRig) interrupted(t *testing.T, recs ...string) store.Operation {
	t.Helper()
	return r.dieAfter(t, func(ctx context.Context, job *upgrader.Job) {
		for _, rec := range recs {
			require.NoError(t, recordUndo(ctx, job, rec))
		}
	})
}

// dieAfter runs the first attempt of a new operation on an engine that dies
// (its store stops answering) once do returned, and returns the operation,
// in progress in phase memory, whose lease will lapse. do gets the attempt's
// job after the phase was recorded.
func (r *undoRig) dieAfter(t *testing.T, do func(ctx context.Context, job *upgrader.Job)) store.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fs := &failingStore{Store: r.st}
	dying := r.engine(t, fs, nil)
	op, err := dying.Create(ctx, upgrader.Request{DeviceID: r.dev.ID, ImageID: r.image.ID})
	require.NoError(t, err)
	script := r.fake.script
	r.fake.script = func(ctx context.Context, job *upgrader.Job, n int) error {
		if n > 1 {
			return script(ctx, job, n)
		}
		require.NoError(t, job.Report.Phase(ctx, status.PhaseMemory))
		do(ctx, job)
		fs.cut.Store(true)
		<-ctx.Done() // the claim is given up: the attempt stops, undoing nothing
		return ctx.Err()
	}
	_, err = dying.Run(ctx, op.ID)
	require.Error(t, err, "the dying engine cannot end the operation")
	cur, err := r.st.Operation(ctx, op.ID)
	require.NoError(t, err)
	require.Equal(t, status.InProgress, cur.State)
	require.Equal(t, status.PhaseMemory, cur.Phase)
	return cur
}

func waitEnd(t *testing.T, eng *upgrader.Engine, id string) store.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	op, err := eng.Wait(ctx, id)
	require.NoError(t, err)
	return op
}

func stop(t *testing.T, eng *upgrader.Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, eng.Stop(ctx))
}

// The attempt that takes over an interrupted one gets its undo records
// (Job.Undo); the records an attempt cleared are not among them. When it
// undoes them itself (Undone), no Restore follows.
func TestTakeoverAttemptGetsUndoRecords(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(ctx context.Context, job *upgrader.Job, n int) error {
		if err := undone(ctx, job); err != nil {
			return err
		}
		return upgrader.Aborted(status.ReasonImageInvalid, errors.New("refused"))
	}}
	r := undoSetup(t, fake)
	op := r.interrupted(t, `{"a":1}`, `{"b":2}`)
	eng := r.engine(t, r.st, nil)
	require.NoError(t, eng.Start(context.Background()))
	end := waitEnd(t, eng, op.ID)
	stop(t, eng)

	assert.Equal(t, status.Aborted, end.State)
	assert.Equal(t, status.ReasonImageInvalid, end.Reason)
	attempts, restores := fake.seen()
	require.Len(t, attempts, 2)
	assert.Empty(t, attempts[0], "the first attempt of an operation has nothing to undo")
	assert.Equal(t, []string{`{"a":1}`, `{"b":2}`}, attempts[1], "the attempt that took over")
	assert.Empty(t, restores, "the attempt undid everything itself")
}

// Records cleared by Undone are not handed on; those recorded after are.
func TestUndoneClearsEarlierRecordsOnly(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(ctx context.Context, job *upgrader.Job, n int) error {
		return upgrader.Aborted(status.ReasonImageInvalid, errors.New("refused"))
	}}
	r := undoSetup(t, fake)
	script := fake.script
	fake.script = func(ctx context.Context, job *upgrader.Job, n int) error {
		if n == 1 {
			require.NoError(t, recordUndo(ctx, job, "cleared"))
			require.NoError(t, undone(ctx, job))
		}
		return script(ctx, job, n)
	}
	op := r.interrupted(t, "kept")
	eng := r.engine(t, r.st, nil)
	require.NoError(t, eng.Start(context.Background()))
	waitEnd(t, eng, op.ID)
	stop(t, eng)
	attempts, restores := fake.seen()
	require.Len(t, attempts, 2)
	assert.Equal(t, []string{"kept"}, attempts[1])
	// The second attempt did not undo: the engine restores before the end.
	assert.Equal(t, [][]string{{"kept"}}, restores)
}

// An attempt that ends before flashing with records left (its cleanup
// failed, or it never undid what it took over) is restored under the claim
// before the operation ends, whose state and reason stay the attempt's. The
// restore's lines come before the last line.
func TestRestoreBeforeTheEnd(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(ctx context.Context, job *upgrader.Job, n int) error {
		if err := recordUndo(ctx, job, "mine"); err != nil {
			return err
		}
		return upgrader.Aborted(status.ReasonInsufficientMemory, errors.New("no room, and the cleanup failed"))
	}}
	r := undoSetup(t, fake)
	var during store.Operation
	fake.onRestore = func(job *upgrader.Job) {
		var err error
		during, err = r.st.Operation(context.Background(), job.Operation.ID)
		require.NoError(t, err)
		require.Error(t, job.Report.Phase(context.Background(), status.PhaseFlashing), "a restore cannot enter flashing")
	}
	op, err := r.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: r.dev.ID, ImageID: r.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Aborted, op.State)
	assert.Equal(t, status.ReasonInsufficientMemory, op.Reason)
	_, restores := fake.seen()
	assert.Equal(t, [][]string{{"mine"}}, restores)
	assert.Equal(t, status.InProgress, during.State, "restored before the end, under the claim")
	assert.Equal(t, r.eng.Owner(), during.LeaseOwner)
	lines := logLines(t, r.st, op.ID)
	assert.Contains(t, lines[len(lines)-1], "aborted", "the end is the last line: %q", lines)
	assert.True(t, slices.ContainsFunc(lines[:len(lines)-1], func(l string) bool { return strings.HasPrefix(l, "undo records cleared") }),
		"the records were cleared before the end: %q", lines)
}

// A Cancel of an operation whose engine died before flashing ends it at
// once; the cancelling engine's maintenance restores the device once the
// dead engine's lease lapsed, and Stop waits for it. The operation stays
// cancelled by the user.
func TestCancelRestoresInterruptedAttempt(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(context.Context, *upgrader.Job, int) error { return errors.New("no second attempt expected") }}
	r := undoSetup(t, fake)
	op := r.interrupted(t, "stopped services")
	eng := r.engine(t, r.st, nil)
	var leaseAtRestore time.Time
	fake.onRestore = func(job *upgrader.Job) { leaseAtRestore = time.Now() }
	cancelled, err := eng.Cancel(context.Background(), op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, cancelled.State)
	require.NoError(t, eng.Start(context.Background()))
	stop(t, eng)

	attempts, restores := fake.seen()
	assert.Len(t, attempts, 1, "no new attempt")
	assert.Equal(t, [][]string{{"stopped services"}}, restores)
	assert.False(t, leaseAtRestore.Before(op.LeaseExpiresAt), "restored once the dead engine's lease had lapsed")
	end, err := r.st.Operation(context.Background(), op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, end.State)
	assert.Equal(t, status.ReasonCancelledByUser, end.Reason)
	lines := logLines(t, r.st, op.ID)
	assert.True(t, strings.HasPrefix(lines[len(lines)-1], "undo records cleared"), "%q", lines)
}

// A restore that fails says so on the operation; nothing else changes.
func TestFailedRestoreIsLogged(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(context.Context, *upgrader.Job, int) error { return errors.New("no second attempt expected") },
		restoreErr: errors.New("device unreachable")}
	r := undoSetup(t, fake)
	op := r.interrupted(t, "stopped services")
	eng := r.engine(t, r.st, nil)
	_, err := eng.Cancel(context.Background(), op.ID)
	require.NoError(t, err)
	require.NoError(t, eng.Start(context.Background()))
	stop(t, eng)
	_, restores := fake.seen()
	require.Len(t, restores, 1)
	lines := logLines(t, r.st, op.ID)
	assert.Contains(t, lines[len(lines)-1], "may be left on the device (1 undo record): device unreachable")
	end, err := r.st.Operation(context.Background(), op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, end.State)
}

// claimless hides the operations from ClaimOperations: only maintenance's
// ExpireDeadlines can end them.
type claimless struct{ store.Store }

func (claimless) ClaimOperations(context.Context, string, int, time.Duration) ([]store.Operation, error) {
	return nil, nil
}

// noExpiry leaves deadlines to the claims: maintenance expires nothing.
type noExpiry struct{ store.Store }

func (noExpiry) ExpireDeadlines(context.Context, int) ([]store.Operation, error) { return nil, nil }

// An operation whose engine died before flashing and that ends at its
// deadline is restored: by maintenance after ExpireDeadlines ended it, or
// under a claim by the engine that finds the deadline passed.
func TestDeadlineRestoresInterruptedAttempt(t *testing.T) {
	t.Parallel()
	for _, byClaim := range []bool{false, true} {
		name := map[bool]string{false: "expired by maintenance", true: "found at the claim"}[byClaim]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fake := &undoFake{script: func(context.Context, *upgrader.Job, int) error { return errors.New("no second attempt expected") }}
			r := undoSetup(t, fake)
			op := r.interrupted(t, "stopped services")
			var st store.Store = claimless{r.st}
			if byClaim {
				st = noExpiry{r.st}
			}
			// The deadline passes before any engine looks again.
			deadline := time.Now().Add(time.Second)
			_, err := r.st.UpdateOperation(context.Background(), op.ID, store.OperationUpdate{From: status.InProgress,
				Deadline: &deadline})
			require.NoError(t, err)
			time.Sleep(time.Until(deadline.Add(50 * time.Millisecond)))
			eng := r.engine(t, st, nil)
			require.NoError(t, eng.Start(context.Background()))
			end := waitEnd(t, eng, op.ID)
			stop(t, eng)
			assert.Equal(t, status.Failed, end.State)
			assert.Equal(t, status.ReasonTimeout, end.Reason)
			attempts, restores := fake.seen()
			assert.Len(t, attempts, 1, "no new attempt after the deadline")
			assert.Equal(t, [][]string{{"stopped services"}}, restores)
		})
	}
}

// A restore waits while another operation of the device runs: it runs once
// that one ended before flashing.
func TestRestoreWaitsForTheDevicesNextOperation(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(context.Context, *upgrader.Job, int) error { return errors.New("no second attempt expected") }}
	r := undoSetup(t, fake)
	op := r.interrupted(t, "stopped services")
	eng := r.engine(t, r.st, nil)
	_, err := eng.Cancel(context.Background(), op.ID)
	require.NoError(t, err)
	// A new operation of the device, held by another engine (a lease that
	// outlives the test's waits).
	next, err := eng.Create(context.Background(), upgrader.Request{DeviceID: r.dev.ID, ImageID: r.image.ID})
	require.NoError(t, err)
	_, err = r.st.ClaimOperation(context.Background(), next.ID, "other-engine", time.Minute)
	require.NoError(t, err)
	var nextAtRestore status.State
	fake.onRestore = func(*upgrader.Job) {
		cur, err := r.st.Operation(context.Background(), next.ID)
		require.NoError(t, err)
		nextAtRestore = cur.State
	}
	require.NoError(t, eng.Start(context.Background()))
	time.Sleep(300 * time.Millisecond) // the restore is due: it finds the other operation
	_, err = eng.Cancel(context.Background(), next.ID)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if _, restores := fake.seen(); len(restores) > 0 {
			break
		}
		require.NoError(t, ctx.Err(), "the restore never ran")
		time.Sleep(10 * time.Millisecond)
	}
	stop(t, eng)
	assert.Equal(t, status.Cancelled, nextAtRestore, "restored once the other operation had ended")
}

// After flashing nothing is restored: the flash's reboot undoes it all.
func TestNoRestoreAfterFlashing(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(ctx context.Context, job *upgrader.Job, n int) error {
		if err := recordUndo(ctx, job, "stopped services"); err != nil {
			return err
		}
		if err := job.Report.Phase(ctx, status.PhaseFlashing); err != nil {
			return err
		}
		return upgrader.Failed(status.ReasonFlashFailed, errors.New("flash failed"))
	}}
	r := undoSetup(t, fake)
	op, err := r.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: r.dev.ID, ImageID: r.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Failed, op.State)
	_, restores := fake.seen()
	assert.Empty(t, restores)
}

// RecordUndo refuses what the log cannot keep as one record, and refuses
// once the operation was cancelled: the upgrader must then not make the
// change.
func TestRecordUndoRefusals(t *testing.T) {
	t.Parallel()
	var errs []error
	var r *undoRig
	fake := &undoFake{script: func(ctx context.Context, job *upgrader.Job, n int) error {
		for _, rec := range []string{"", "two\nlines", strings.Repeat("x", upgrader.MaxUndoRecordLen+1)} {
			errs = append(errs, recordUndo(ctx, job, rec))
		}
		require.NoError(t, recordUndo(ctx, job, strings.Repeat("y", upgrader.MaxUndoRecordLen)))
		_, err := r.eng.Cancel(ctx, job.Operation.ID)
		require.NoError(t, err)
		err = recordUndo(ctx, job, "after the cancel")
		errs = append(errs, err)
		return err
	}}
	r = undoSetup(t, fake)
	op, err := r.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: r.dev.ID, ImageID: r.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, op.State)
	require.Len(t, errs, 4)
	for _, err := range errs[:3] {
		assert.Error(t, err)
	}
	assert.ErrorIs(t, errs[3], upgrader.ErrCancelled)
	for _, l := range logLines(t, r.st, op.ID) {
		assert.NotContains(t, l, "after the cancel")
	}
}

// A panicking restorer leaves the operation as it ended, with a line.
func TestPanickingRestorer(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(ctx context.Context, job *upgrader.Job, n int) error {
		if err := recordUndo(ctx, job, "stopped services"); err != nil {
			return err
		}
		return upgrader.Aborted(status.ReasonImageInvalid, errors.New("refused"))
	}}
	fake.onRestore = func(*upgrader.Job) { panic("boom") }
	r := undoSetup(t, fake)
	op, err := r.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: r.dev.ID, ImageID: r.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Aborted, op.State)
	assert.Equal(t, status.ReasonImageInvalid, op.Reason)
	assert.True(t, slices.ContainsFunc(logLines(t, r.st, op.ID), func(l string) bool {
		return strings.Contains(l, "may be left on the device") && strings.Contains(l, "panicked")
	}))
}
