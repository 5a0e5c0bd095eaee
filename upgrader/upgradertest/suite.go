package upgradertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Harness is what Run needs to exercise an Upgrader.
type Harness struct {
	// Upgrader under test.
	Upgrader upgrader.Upgrader
	// NewJob returns a job for a fresh, reachable device that succeeds when
	// run to the end. Run sets the job's Report.
	NewJob func(t *testing.T) *upgrader.Job
	// Flashed reports whether the job's device was flashed. Optional: when
	// nil, Run checks only the phases the upgrader reported.
	Flashed func(t *testing.T, job *upgrader.Job) bool
	// Timeout bounds each attempt of the suite (and how long an upgrader
	// may take to notice a cancelled context). Defaults to 2 minutes.
	Timeout time.Duration
}

// Run is the conformance suite for an Upgrader: every line of the
// upgrader.Upgrader contract is a subtest. newHarness is called once per
// subtest, which runs in parallel with the others.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Helper()
	run := func(t *testing.T, h Harness, rep *Reporter, ctx context.Context) (*upgrader.Job, error) {
		t.Helper()
		timeout := h.Timeout
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		job := h.NewJob(t)
		job.Report = rep
		err := h.Upgrader.Upgrade(ctx, job)
		if err != nil {
			kind, reason := upgrader.Classify(err)
			if kind < upgrader.KindFailed || kind > upgrader.KindCancelled || !reason.Valid() || reason == status.ReasonNone {
				t.Errorf("error %v classified as %v/%q: not a valid classification", err, kind, reason)
			}
		}
		return job, err
	}
	notFlashed := func(t *testing.T, h Harness, job *upgrader.Job, rep *Reporter) {
		t.Helper()
		for _, p := range rep.Phases() {
			if p.AfterPointOfNoReturn() {
				t.Errorf("entered phase %s although the operation was cancelled", p)
			}
		}
		if h.Flashed != nil && h.Flashed(t, job) {
			t.Errorf("the device was flashed although the operation was cancelled")
		}
	}

	t.Run("SuccessPhasesInOrder", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		rep := &Reporter{}
		job, err := run(t, h, rep, context.Background())
		if err != nil {
			t.Fatalf("Upgrade of a good job: %v", err)
		}
		phases := rep.Phases()
		if len(phases) == 0 {
			t.Fatal("no phase reported")
		}
		for i := 1; i < len(phases); i++ {
			if phases[i].Order() < phases[i-1].Order() {
				t.Errorf("phase %s reported after %s: phases go back", phases[i], phases[i-1])
			}
		}
		sawFlash := false
		for _, p := range phases {
			sawFlash = sawFlash || p == status.PhaseFlashing
		}
		if h.Flashed != nil && h.Flashed(t, job) && !sawFlash {
			t.Error("the device was flashed without entering PhaseFlashing first")
		}
		for _, p := range rep.ProgressValues() {
			if err := status.ValidateProgress(p); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("CancelledBeforeStart", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		rep := &Reporter{}
		rep.Cancel()
		job, err := run(t, h, rep, context.Background())
		if !errors.Is(err, upgrader.ErrCancelled) {
			t.Fatalf("Upgrade after a cancel returned %v, want an error matching ErrCancelled", err)
		}
		notFlashed(t, h, job, rep)
	})

	t.Run("CancelWinsAtEachPhaseBeforeFlashing", func(t *testing.T) {
		t.Parallel()
		ref := &Reporter{}
		if _, err := run(t, newHarness(t), ref, context.Background()); err != nil {
			t.Fatalf("reference run: %v", err)
		}
		for _, p := range ref.Phases() {
			if p.AfterPointOfNoReturn() && p != status.PhaseFlashing {
				continue
			}
			t.Run(string(p), func(t *testing.T) {
				h := newHarness(t)
				rep := &Reporter{CancelAt: p}
				job, err := run(t, h, rep, context.Background())
				if !errors.Is(err, upgrader.ErrCancelled) {
					t.Fatalf("cancel at %s: Upgrade returned %v, want an error matching ErrCancelled", p, err)
				}
				notFlashed(t, h, job, rep)
			})
			if p == status.PhaseFlashing {
				break
			}
		}
	})

	t.Run("HonoursCancelledContext", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		rep := &Reporter{}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		job, err := run(t, h, rep, ctx)
		if err == nil {
			t.Fatal("Upgrade with a cancelled context succeeded")
		}
		notFlashed(t, h, job, rep)
	})

	t.Run("VerifyAfterSuccess", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		v, ok := h.Upgrader.(upgrader.Verifier)
		if !ok {
			t.Skip("the upgrader is not a Verifier")
		}
		rep := &Reporter{}
		job, err := run(t, h, rep, context.Background())
		if err != nil {
			t.Fatalf("Upgrade: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		job.Report = &Reporter{}
		if err := v.Verify(ctx, job); err != nil {
			t.Fatalf("Verify after a successful upgrade: %v", err)
		}
	})
}
