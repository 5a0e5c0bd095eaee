package upgradertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Reporter is a recording upgrader.Reporter with the engine's cancel rules:
// Cancel and entering PhaseFlashing exclude each other, exactly one wins;
// like the engine's, it refuses Phase once the caller's context has ended.
// It is also an upgrader.UndoRecorder, as the engine's Reporter is: it keeps
// the undo records (UndoRecords, PendingUndo). It is safe for concurrent
// use.
type Reporter struct {
	mu        sync.Mutex
	phases    []status.Phase // entered
	calls     []phaseCall    // every Phase call, entered or refused
	progress  []int
	invalid   []int // progress values refused as out of range
	lines     []string
	undo      []string // undo records, in order
	undone    int      // how many of them an Undone call covered
	cancelled bool
	// onPhase, when set, runs after every Phase call (without the lock held)
	// with the phase and the call's result; Run uses it to cancel an
	// attempt while the upgrader works in a phase.
	onPhase func(p status.Phase, err error)
	// CancelAt, when set, makes the Reporter cancel itself when the
	// upgrader enters that phase (the Phase call then fails).
	CancelAt status.Phase
}

// phaseCall is one call of Reporter.Phase.
type phaseCall struct {
	phase status.Phase
	err   error
}

var (
	_ upgrader.Reporter     = (*Reporter)(nil)
	_ upgrader.UndoRecorder = (*Reporter)(nil)
)

// Phase implements upgrader.Reporter. It returns an error matching
// upgrader.ErrCancelled once a cancel won, ctx.Err() when ctx has ended, and
// an error for an unknown phase or a phase before PhaseFlashing once
// flashing started; a refused phase is not entered (see Refused).
func (r *Reporter) Phase(ctx context.Context, p status.Phase) error {
	err := r.phase(ctx, p)
	r.mu.Lock()
	r.calls = append(r.calls, phaseCall{phase: p, err: err})
	hook := r.onPhase
	r.mu.Unlock()
	if hook != nil {
		hook(p, err)
	}
	return err
}

func (r *Reporter) phase(ctx context.Context, p status.Phase) error {
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
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.pastFlash() && !p.AfterPointOfNoReturn() {
		return fmt.Errorf("upgradertest: phase %s after flashing started", p)
	}
	r.phases = append(r.phases, p)
	return nil
}

func (r *Reporter) pastFlash() bool {
	return len(r.phases) > 0 && r.phases[len(r.phases)-1].AfterPointOfNoReturn()
}

// Progress implements upgrader.Reporter.
func (r *Reporter) Progress(_ context.Context, percent int) error {
	if err := status.ValidateProgress(percent); err != nil {
		r.mu.Lock()
		r.invalid = append(r.invalid, percent)
		r.mu.Unlock()
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

// RecordUndo implements upgrader.UndoRecorder with the engine's rules: it
// refuses a record that is empty, not one line of valid UTF-8 or longer than
// upgrader.MaxUndoRecordLen characters, and any record once a cancel won or
// ctx ended (the upgrader must then not make the change).
func (r *Reporter) RecordUndo(ctx context.Context, rec string) error {
	switch {
	case rec == "" || !utf8.ValidString(rec) || strings.ContainsAny(rec, "\x00\r\n"):
		return errors.New("upgradertest: an undo record is one line of valid UTF-8")
	case utf8.RuneCountInString(rec) > upgrader.MaxUndoRecordLen:
		return fmt.Errorf("upgradertest: an undo record has at most %d characters", upgrader.MaxUndoRecordLen)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled {
		return upgrader.ErrCancelled
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.undo = append(r.undo, rec)
	return nil
}

// Undone implements upgrader.UndoRecorder: every record kept so far counts
// as undone.
func (r *Reporter) Undone(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.undone = len(r.undo)
	return nil
}

// UndoRecords returns every undo record kept, in order, undone or not.
func (r *Reporter) UndoRecords() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.undo)
}

// PendingUndo returns the undo records that no Undone call covered: what
// the engine hands to the operation's next attempt (upgrader.Job.Undo), or
// to a Restorer.
func (r *Reporter) PendingUndo() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.undo[r.undone:])
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

// Refused returns the phases whose Phase call returned an error, in order.
func (r *Reporter) Refused() []status.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []status.Phase
	for _, c := range r.calls {
		if c.err != nil {
			out = append(out, c.phase)
		}
	}
	return out
}

// phaseCalls returns every Phase call, in order.
func (r *Reporter) phaseCalls() []phaseCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// setOnPhase sets the hook run after every Phase call.
func (r *Reporter) setOnPhase(f func(p status.Phase, err error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onPhase = f
}

// invalidProgress returns the progress values refused as out of range.
func (r *Reporter) invalidProgress() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.invalid)
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
