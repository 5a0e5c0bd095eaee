package upgradertest

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// DefaultTimeout is the default of Harness.Timeout.
const DefaultTimeout = 2 * time.Minute

// Harness is what Run needs to exercise an Upgrader. Run makes a new
// Harness for every subtest (and for the reference run of the per-phase
// subtests) and calls its NewJob exactly once, so a harness may keep the
// state of its one device in the closure. Upgrade and Verify run on a
// goroutine of their own (so that a call that ignores its context can be
// detected); the harness's functions run on the subtest's goroutine.
type Harness struct {
	// Upgrader under test. When it also implements upgrader.Verifier, Run
	// checks Verify too.
	Upgrader upgrader.Upgrader
	// NewJob returns a job for a fresh, reachable device that does not run
	// the job's image yet and that succeeds when run to the end: its
	// upgrade needs a flash. Run sets the job's Report.
	NewJob func(t *testing.T) *upgrader.Job
	// Flashed reports whether the job's device was flashed. Optional: when
	// nil (and FlashCountFunc is nil too), Run checks only the phases the
	// upgrader reported.
	Flashed func(t *testing.T, job *upgrader.Job) bool
	// FlashCountFunc returns how many times the job's device was flashed.
	// Optional: when set, Run also checks that Verify does not flash a
	// device that was already upgraded, and uses it in place of a nil
	// Flashed (flashed when the count is above zero).
	FlashCountFunc func(t *testing.T, job *upgrader.Job) int
	// UnreachableFunc makes the job's device unreachable; Run calls it
	// after NewJob, before Upgrade. Optional: when nil, the subtest that
	// checks how the error for an unreachable device is classified is
	// skipped.
	UnreachableFunc func(t *testing.T, job *upgrader.Job)
	// Timeout bounds each Upgrade and Verify call of the suite, and how
	// long an upgrader may take to return once its context ended. Defaults
	// to DefaultTimeout.
	Timeout time.Duration
}

// Run is the conformance suite for an Upgrader (and its Verifier): every
// line of the upgrader.Upgrader and upgrader.Verifier contracts is a
// subtest, listed in the package documentation. Each subtest gets a Harness
// of its own from newHarness and runs in parallel with the others. Every
// failure starts with "contract: " and names the rule that was broken.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()

	t.Run("SuccessPhasesInOrder", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		if err := s.upgrade(context.Background()); err != nil {
			t.Fatalf("contract: Upgrade returns nil when the device runs the image: the upgrade of a fresh, reachable device (Harness.NewJob) failed: %v", err)
		}
		calls := s.rep.phaseCalls()
		if len(calls) == 0 {
			t.Error("contract: Upgrade must call Job.Report.Phase before each step: a successful upgrade reported no phase")
		}
		for i, c := range calls {
			if !c.phase.Valid() || c.phase == status.PhaseNone {
				t.Errorf("contract: Upgrade must report only the phases of status.Phases: it called Phase(%q)", c.phase)
				continue
			}
			if i > 0 && c.phase.Order() < calls[i-1].phase.Order() {
				t.Errorf("contract: Upgrade must report phases in order: Phase(%s) came after Phase(%s)", c.phase, calls[i-1].phase)
			}
			if c.err != nil && c.phase.Order() <= status.PhaseFlashing.Order() {
				t.Errorf("contract: when Job.Report.Phase returns an error before flashing, Upgrade must stop with an error: Phase(%s) returned %v, yet Upgrade succeeded", c.phase, c.err)
			}
		}
		phases := s.rep.Phases()
		switch i := slices.Index(phases, status.PhaseFlashing); {
		case i < 0:
			t.Error("contract: Upgrade must call Job.Report.Phase(PhaseFlashing) immediately before it modifies the flash: a successful upgrade of a fresh device never entered PhaseFlashing")
		case i == 0:
			t.Error("contract: Upgrade must call Job.Report.Phase before each step: no phase was reported before PhaseFlashing")
		}
		if flashed, known := s.flashed(); known && !flashed {
			t.Error("contract: Upgrade returns nil only when the device runs the image: it succeeded without flashing a fresh device (a false success)")
		}
		for _, p := range s.rep.invalidProgress() {
			t.Errorf("contract: Job.Report.Progress takes a percentage from 0 to 100: Upgrade reported %d", p)
		}
	})

	t.Run("CancelledBeforeStart", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		s.rep.Cancel()
		err := s.upgrade(context.Background())
		s.checkCancelled(err, "before Upgrade started")
	})

	t.Run("CancelWinsAtEachPhaseBeforeFlashing", func(t *testing.T) {
		t.Parallel()
		for _, p := range referencePhases(t, newHarness, true) {
			t.Run(string(p), func(t *testing.T) {
				t.Parallel()
				s := setup(t, newHarness)
				s.rep.CancelAt = p
				err := s.upgrade(context.Background())
				s.checkCancelled(err, fmt.Sprintf("as Upgrade entered %s", p))
			})
		}
	})

	t.Run("CancelWhileInEachPhaseBeforeFlashing", func(t *testing.T) {
		t.Parallel()
		for _, p := range referencePhases(t, newHarness, false) {
			t.Run(string(p), func(t *testing.T) {
				t.Parallel()
				s := setup(t, newHarness)
				var won atomic.Bool
				s.rep.setOnPhase(onceAfterEntering(p, func() {
					// The cancel comes from another goroutine, as the engine's
					// does, while the upgrader works in phase p.
					done := make(chan bool)
					go func() { done <- s.rep.Cancel() }()
					won.Store(<-done)
				}))
				err := s.upgrade(context.Background())
				if !won.Load() {
					t.Fatalf("contract: Upgrade must call Job.Report.Phase before each step: it did not enter %s this time, which a successful upgrade of a fresh device entered, so no cancel could be made in that phase (Upgrade returned %v)", p, err)
				}
				s.checkCancelled(err, fmt.Sprintf("while Upgrade was in %s", p))
			})
		}
	})

	t.Run("HonoursCancelledContext", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := s.upgrade(ctx)
		s.checkContextEnded(err, "before Upgrade started")
	})

	t.Run("ContextEndsInEachPhaseBeforeFlashing", func(t *testing.T) {
		t.Parallel()
		for _, p := range referencePhases(t, newHarness, false) {
			t.Run(string(p), func(t *testing.T) {
				t.Parallel()
				s := setup(t, newHarness)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var ended atomic.Bool
				s.rep.setOnPhase(onceAfterEntering(p, func() {
					ended.Store(true)
					cancel()
				}))
				err := s.upgrade(ctx)
				if !ended.Load() {
					t.Fatalf("contract: Upgrade must call Job.Report.Phase before each step: it did not enter %s this time, which a successful upgrade of a fresh device entered, so ctx could not end in that phase (Upgrade returned %v)", p, err)
				}
				s.checkContextEnded(err, fmt.Sprintf("while Upgrade was in %s", p))
			})
		}
	})

	t.Run("UnreachableDeviceIsRecoverable", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		if s.h.UnreachableFunc == nil {
			t.Skip("Harness.UnreachableFunc is nil")
		}
		s.h.UnreachableFunc(t, s.job)
		err := s.upgrade(context.Background())
		if kind, reason := upgrader.Classify(err); err == nil || kind != upgrader.KindRecoverable {
			what := "nil"
			if err != nil {
				what = fmt.Sprintf("%v (classified %s, %s)", err, kind, reason)
			}
			t.Errorf("contract: Upgrade must classify the failure to reach a device with upgrader.Recoverable (a transient failure before flashing, which the engine retries), not a plain error: got %s", what)
		}
		s.checkNotFlashed("Upgrade must not flash a device it cannot reach")
	})

	t.Run("VerifyAfterSuccess", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		v := s.verifier()
		if err := s.upgrade(context.Background()); err != nil {
			t.Fatalf("contract: Upgrade returns nil when the device runs the image: the upgrade of a fresh, reachable device (Harness.NewJob) failed: %v", err)
		}
		before, counted := s.flashCount()
		rep := &Reporter{}
		if err := s.verify(context.Background(), v, rep); err != nil {
			t.Errorf("contract: Verify must return nil when the device runs the image (after a successful Upgrade): %v", err)
		}
		s.checkVerifyDidNotFlash(rep)
		if after, _ := s.flashCount(); counted && after != before {
			t.Errorf("contract: Verify must never flash: the device's flash count went from %d to %d during Verify", before, after)
		}
	})

	t.Run("VerifyOnUntouchedDeviceFails", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		v := s.verifier()
		rep := &Reporter{}
		err := s.verify(context.Background(), v, rep)
		if err == nil {
			t.Error("contract: Verify must not return nil for a device that was never upgraded (a false success)")
		} else if kind, _ := upgrader.Classify(err); kind == upgrader.KindNotNeeded {
			t.Errorf("contract: Verify must not claim that a device that was never upgraded runs the image (a false success): it returned %v, classified %s", err, kind)
		}
		s.checkVerifyDidNotFlash(rep)
		if flashed, known := s.flashed(); known && flashed {
			t.Error("contract: Verify must never flash: the device was flashed during Verify")
		}
	})

	t.Run("RestoreUndoesAnInterruptedAttempt", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		r := s.restorer()
		recs := s.interruptedRecords()
		for call := 1; call <= 2; call++ {
			rep := &Reporter{}
			if err := s.restore(context.Background(), r, rep, recs); err != nil {
				t.Errorf("contract: Restore must undo what an attempt cancelled as it entered flashing recorded (%d undo records), on a reachable device, and return nil (call %d: restores are idempotent): %v",
					len(recs), call, err)
			}
			s.checkRestoreReportedNothing(rep)
		}
	})

	t.Run("RestoreHonoursCancelledContext", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		r := s.restorer()
		recs := s.interruptedRecords()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rep := &Reporter{}
		if err := s.restore(ctx, r, rep, recs); err == nil && len(recs) > 0 {
			t.Errorf("contract: Restore must honour ctx: it returned nil (all undone) although ctx ended before it started, with %d undo records to undo", len(recs))
		}
		s.checkRestoreReportedNothing(rep)
	})

	t.Run("VerifyHonoursCancelledContext", func(t *testing.T) {
		t.Parallel()
		s := setup(t, newHarness)
		v := s.verifier()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rep := &Reporter{}
		if err := s.verify(ctx, v, rep); err == nil {
			t.Error("contract: Verify must honour ctx: with ctx ended it returned nil for a device that was never upgraded (a false success)")
		}
		s.checkVerifyDidNotFlash(rep)
		if flashed, known := s.flashed(); known && flashed {
			t.Error("contract: Verify must never flash: the device was flashed during Verify")
		}
	})
}

// subject is one subtest's harness, job and reporter.
type subject struct {
	t       *testing.T
	h       Harness
	job     *upgrader.Job
	rep     *Reporter
	timeout time.Duration
}

// setup makes a harness and its one job.
func setup(t *testing.T, newHarness func(t *testing.T) Harness) *subject {
	t.Helper()
	h := newHarness(t)
	if h.Upgrader == nil || h.NewJob == nil {
		t.Fatal("upgradertest: Harness.Upgrader and Harness.NewJob are required")
	}
	s := &subject{t: t, h: h, rep: &Reporter{}, timeout: h.Timeout}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	s.job = h.NewJob(t)
	if s.job == nil {
		t.Fatal("upgradertest: Harness.NewJob returned nil")
	}
	return s
}

// referencePhases runs a successful upgrade on a harness of its own and
// returns the phases it entered before PhaseFlashing, each once, with
// PhaseFlashing itself when withFlashing is set.
func referencePhases(t *testing.T, newHarness func(t *testing.T) Harness, withFlashing bool) []status.Phase {
	t.Helper()
	s := setup(t, newHarness)
	if err := s.upgrade(context.Background()); err != nil {
		t.Fatalf("contract: Upgrade returns nil when the device runs the image: the upgrade of a fresh, reachable device (Harness.NewJob) failed: %v", err)
	}
	var out []status.Phase
	for _, p := range s.rep.Phases() {
		if slices.Contains(out, p) || p.AfterPointOfNoReturn() && (p != status.PhaseFlashing || !withFlashing) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// onceAfterEntering returns a Reporter hook that runs f once, right after
// the upgrader entered phase p.
func onceAfterEntering(p status.Phase, f func()) func(status.Phase, error) {
	var once sync.Once
	return func(got status.Phase, err error) {
		if got == p && err == nil {
			once.Do(f)
		}
	}
}

// upgrade runs Upgrade on the subject's job, bounded by the harness's
// Timeout.
func (s *subject) upgrade(parent context.Context) error {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(parent, s.timeout)
	defer cancel()
	s.job.Report = s.rep
	job := s.job
	err := s.call(ctx, "Upgrade", func(ctx context.Context) error { return s.h.Upgrader.Upgrade(ctx, job) })
	s.checkClassified("Upgrade", err)
	return err
}

// verifier returns the upgrader's Verifier or skips the subtest.
func (s *subject) verifier() upgrader.Verifier {
	s.t.Helper()
	v, ok := s.h.Upgrader.(upgrader.Verifier)
	if !ok {
		s.t.Skip("the upgrader is not an upgrader.Verifier")
	}
	return v
}

// restorer returns the upgrader's Restorer or skips the subtest.
func (s *subject) restorer() upgrader.Restorer {
	s.t.Helper()
	r, ok := s.h.Upgrader.(upgrader.Restorer)
	if !ok {
		s.t.Skip("the upgrader is not an upgrader.Restorer")
	}
	return r
}

// interruptedRecords runs an Upgrade cancelled as it enters PhaseFlashing
// (it made every change it makes before flashing) and returns every undo
// record it kept, undone or not: what an engine that died before the
// attempt's own cleanup would hand to Restore.
func (s *subject) interruptedRecords() []string {
	s.t.Helper()
	s.rep.CancelAt = status.PhaseFlashing
	err := s.upgrade(context.Background())
	s.checkCancelled(err, "as Upgrade entered flashing")
	return s.rep.UndoRecords()
}

// restore runs Restore on the subject's job with rep as its reporter and
// recs as its undo records.
func (s *subject) restore(parent context.Context, r upgrader.Restorer, rep *Reporter, recs []string) error {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(parent, s.timeout)
	defer cancel()
	job := *s.job
	job.Report, job.Undo = rep, slices.Clone(recs)
	before, counted := s.flashCount()
	err := s.call(ctx, "Restore", func(ctx context.Context) error { return r.Restore(ctx, &job) })
	s.checkClassified("Restore", err)
	if after, _ := s.flashCount(); counted && after != before {
		s.t.Errorf("contract: Restore must never flash: the device's flash count went from %d to %d during Restore", before, after)
	} else if flashed, known := s.flashed(); !counted && known && flashed {
		s.t.Error("contract: Restore must never flash: the device was flashed during Restore")
	}
	return err
}

// checkRestoreReportedNothing checks that Restore called neither Phase nor
// Progress: a restore is no attempt.
func (s *subject) checkRestoreReportedNothing(rep *Reporter) {
	s.t.Helper()
	if calls := rep.phaseCalls(); len(calls) > 0 {
		s.t.Errorf("contract: Restore must never call Job.Report.Phase (a restore is no attempt, and never flashes): it called Phase(%s)", calls[0].phase)
	}
	if p := rep.ProgressValues(); len(p) > 0 {
		s.t.Errorf("contract: Restore must never call Job.Report.Progress (a restore is no attempt): it reported %v", p)
	}
}

// verify runs Verify on the subject's job with rep as its reporter.
func (s *subject) verify(parent context.Context, v upgrader.Verifier, rep *Reporter) error {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(parent, s.timeout)
	defer cancel()
	job := *s.job
	job.Report = rep
	err := s.call(ctx, "Verify", func(ctx context.Context) error { return v.Verify(ctx, &job) })
	s.checkClassified("Verify", err)
	return err
}

// call runs fn on a goroutine of its own and waits for it: fn must return
// within the harness's Timeout once ctx ended.
func (s *subject) call(ctx context.Context, name string, fn func(context.Context) error) error {
	s.t.Helper()
	done := make(chan error, 1)
	go func() {
		returned := false
		defer func() {
			if r := recover(); r != nil {
				done <- &panicError{value: r, stack: debug.Stack()}
			} else if !returned {
				done <- errGoexit
			}
		}()
		err := fn(ctx)
		returned = true
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t := time.NewTimer(s.timeout)
		defer t.Stop()
		select {
		case err = <-done:
		case <-t.C:
			s.t.Fatalf("contract: %s must honour ctx: it did not return within %s (Harness.Timeout) after ctx ended", name, s.timeout)
		}
	}
	if pe, ok := err.(*panicError); ok {
		s.t.Fatalf("contract: %s must return an error, not panic: %v\n%s", name, pe.value, pe.stack)
	}
	if err == errGoexit {
		s.t.Fatalf("contract: %s must return: it ended its goroutine with runtime.Goexit (did a harness function call t.FailNow? Upgrade and Verify run on a goroutine of their own)", name)
	}
	return err
}

// errGoexit stands for an Upgrade or Verify that never returned because its
// goroutine called runtime.Goexit.
var errGoexit = errors.New("upgradertest: runtime.Goexit")

type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// checkClassified checks that a non-nil error has a valid classification.
func (s *subject) checkClassified(name string, err error) {
	s.t.Helper()
	if err == nil {
		return
	}
	kind, reason := upgrader.Classify(err)
	if kind < upgrader.KindFailed || kind > upgrader.KindCancelled || !reason.Valid() || reason == status.ReasonNone {
		s.t.Errorf("contract: %s classifies its errors with upgrader.Aborted, NotNeeded, Recoverable or Failed and a known status.Reason: %v is classified %v/%q", name, err, kind, reason)
	}
}

// checkCancelled checks an Upgrade after a cancel won: an error matching
// ErrCancelled, and no flash.
func (s *subject) checkCancelled(err error, when string) {
	s.t.Helper()
	if !errors.Is(err, upgrader.ErrCancelled) {
		got := "nil"
		if err != nil {
			got = fmt.Sprintf("%v (classified %s)", err, kindOf(err))
		}
		s.t.Errorf("contract: Upgrade must return an error matching upgrader.ErrCancelled once the Reporter reports a cancel (cancelled %s): got %s", when, got)
	}
	s.checkNotFlashed("Upgrade must not flash once a cancel won (cancelled " + when + ")")
}

// checkContextEnded checks an Upgrade whose ctx ended before flashing: an
// error, and no flash.
func (s *subject) checkContextEnded(err error, when string) {
	s.t.Helper()
	if err == nil {
		s.t.Errorf("contract: Upgrade must honour ctx: it returned nil although ctx ended %s, before flashing (a false success)", when)
	}
	s.checkNotFlashed("Upgrade must not flash once ctx has ended (ctx ended " + when + ")")
}

// checkNotFlashed checks that the subject's Upgrade did not flash, with
// the phases it reported and with the harness's Flashed.
func (s *subject) checkNotFlashed(rule string) {
	s.t.Helper()
	refused := false
	for _, c := range s.rep.phaseCalls() {
		switch {
		case !c.phase.AfterPointOfNoReturn():
		case c.phase == status.PhaseFlashing && c.err == nil:
			s.t.Errorf("contract: %s: it entered PhaseFlashing", rule)
		case c.phase == status.PhaseFlashing:
			refused = true
		case refused:
			s.t.Errorf("contract: when Job.Report.Phase(PhaseFlashing) returns an error, Upgrade must not flash: it went on to Phase(%s) after Phase(flashing) was refused", c.phase)
		default:
			s.t.Errorf("contract: %s: it went on to Phase(%s), a phase after the flash", rule, c.phase)
		}
	}
	if flashed, known := s.flashed(); known && flashed {
		s.t.Errorf("contract: %s: the device was flashed", rule)
	}
}

// checkVerifyDidNotFlash checks the phases Verify reported.
func (s *subject) checkVerifyDidNotFlash(rep *Reporter) {
	s.t.Helper()
	for _, c := range rep.phaseCalls() {
		if c.phase == status.PhaseFlashing {
			s.t.Error("contract: Verify must never flash: it called Job.Report.Phase(PhaseFlashing), the call that decides a flash")
			return
		}
	}
}

// flashed reports whether the job's device was flashed, and whether the
// harness can tell.
func (s *subject) flashed() (flashed, known bool) {
	switch {
	case s.h.Flashed != nil:
		return s.h.Flashed(s.t, s.job), true
	case s.h.FlashCountFunc != nil:
		return s.h.FlashCountFunc(s.t, s.job) > 0, true
	}
	return false, false
}

// flashCount returns how many times the job's device was flashed, and
// whether the harness can tell.
func (s *subject) flashCount() (n int, known bool) {
	if s.h.FlashCountFunc == nil {
		return 0, false
	}
	return s.h.FlashCountFunc(s.t, s.job), true
}

func kindOf(err error) upgrader.Kind {
	k, _ := upgrader.Classify(err)
	return k
}
