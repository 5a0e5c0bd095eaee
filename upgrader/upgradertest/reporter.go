package upgradertest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Reporter is a recording upgrader.Reporter with the engine's cancel rules:
// Cancel and entering PhaseFlashing exclude each other, exactly one wins.
// It is safe for concurrent use.
type Reporter struct {
	mu        sync.Mutex
	phases    []status.Phase
	progress  []int
	lines     []string
	cancelled bool
	// CancelAt, when set, makes the Reporter cancel itself when the
	// upgrader enters that phase (the Phase call then fails).
	CancelAt status.Phase
}

var _ upgrader.Reporter = (*Reporter)(nil)

// Phase implements upgrader.Reporter.
func (r *Reporter) Phase(ctx context.Context, p status.Phase) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !p.Valid() || p == status.PhaseNone {
		return fmt.Errorf("upgradertest: unknown phase %q", p)
	}
	if r.CancelAt != status.PhaseNone && p == r.CancelAt && !r.pastFlash() {
		r.cancelled = true
	}
	if r.cancelled {
		return upgrader.ErrCancelled
	}
	if r.pastFlash() && !p.AfterPointOfNoReturn() {
		return fmt.Errorf("upgradertest: phase %s after flashing started", p)
	}
	r.phases = append(r.phases, p)
	return ctx.Err()
}

func (r *Reporter) pastFlash() bool {
	return len(r.phases) > 0 && r.phases[len(r.phases)-1].AfterPointOfNoReturn()
}

// Progress implements upgrader.Reporter.
func (r *Reporter) Progress(_ context.Context, percent int) error {
	if err := status.ValidateProgress(percent); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, percent)
	return nil
}

// Log implements upgrader.Reporter.
func (r *Reporter) Log(_ context.Context, line string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	return nil
}

// Cancelled implements upgrader.Reporter.
func (r *Reporter) Cancelled(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled {
		return upgrader.ErrCancelled
	}
	return ctx.Err()
}

// Cancel cancels the operation unless it already entered PhaseFlashing; it
// reports whether the cancel won.
func (r *Reporter) Cancel() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pastFlash() {
		return false
	}
	r.cancelled = true
	return true
}

// Phases returns the phases entered, in order.
func (r *Reporter) Phases() []status.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.phases)
}

// ProgressValues returns every progress value reported, in order.
func (r *Reporter) ProgressValues() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.progress)
}

// Lines returns the log lines, in order.
func (r *Reporter) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}
