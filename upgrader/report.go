package upgrader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Prover is implemented by the engine's Reporter; find it with a type
// assertion on Job.Report (other Reporters, a test's, may not have it).
//
// An upgrader that proved the device runs the image calls Proved with what
// it proved, just before Upgrade or Verify returns nil, for example
// `the device runs "OpenWrt 23.05.3 r23809-234f1a2efa" (boot id changed)`.
// The engine ends the operation with one success line saying it:
// "success: " followed by proof. It must not log a success line of its
// own then. An upgrader that does not call Proved gets a generic success
// line; one whose Upgrade returns an error has its proof ignored.
type Prover interface {
	Proved(proof string)
}

// reporter is the engine's Reporter for one attempt.
type reporter struct {
	e         *Engine
	c         *claim          // the claim the attempt runs under: its token fences every write
	op        store.Operation // as the attempt started
	verifying bool            // a Verify call: phases stay at or after flashing

	mu    sync.Mutex
	proof string // what the upgrader proved (Proved)
}

var (
	_ Reporter = (*reporter)(nil)
	_ Prover   = (*reporter)(nil)
)

func (r *reporter) Proved(proof string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.proof = strings.TrimSpace(proof)
}

// proved returns what the upgrader said it proved, "" when it said nothing.
func (r *reporter) proved() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proof
}

func (r *reporter) Phase(ctx context.Context, p status.Phase) error {
	if !p.Valid() || p == status.PhaseNone {
		return fmt.Errorf("upgrader: unknown phase %q", p)
	}
	if err := r.Cancelled(ctx); err != nil {
		return err
	}
	u := store.OperationUpdate{From: status.InProgress, Phase: &p, Token: r.c.token}
	if p == status.PhaseFlashing {
		u.Progress = store.Ptr(status.ProgressFlashing) // the milestone, in the same CAS
	}
	wctx, cancel := writeContext(ctx)
	defer cancel()
	op, err := r.e.store.UpdateOperation(wctx, r.op.ID, u)
	if errors.Is(err, store.ErrInvalidTransition) || errors.Is(err, store.ErrStaleToken) {
		return r.why(wctx, err)
	}
	if err != nil {
		// The store failed: the phase is not recorded, so the attempt
		// must stop (never flash unrecorded), and may be retried.
		return Recoverable(status.ReasonUpgraderError, fmt.Errorf("upgrader: recording phase %s: %w", p, err))
	}
	r.e.published(op, EventOperationPhase)
	return nil
}

// why turns a refused update into ErrCancelled when a cancel won, and into
// ErrLeaseLost when the claim was lost.
func (r *reporter) why(ctx context.Context, err error) error {
	if errors.Is(err, store.ErrStaleToken) {
		r.c.markLost()
		return fmt.Errorf("%w: %v", ErrLeaseLost, err)
	}
	cur, gerr := r.e.store.Operation(ctx, r.op.ID)
	if gerr == nil && cur.State == status.Cancelled {
		return fmt.Errorf("%w (%v)", ErrCancelled, err)
	}
	if gerr == nil && cur.State.Terminal() {
		return fmt.Errorf("upgrader: operation %s already ended %s: %w", r.op.ID, cur.State, err)
	}
	return err
}

func (r *reporter) Progress(ctx context.Context, percent int) error {
	if err := status.ValidateProgress(percent); err != nil {
		return err
	}
	wctx, cancel := writeContext(ctx)
	defer cancel()
	err := r.e.store.SetProgress(wctx, r.op.ID, r.c.token, percent)
	if errors.Is(err, store.ErrInvalidTransition) || errors.Is(err, store.ErrStaleToken) {
		return r.why(wctx, err)
	}
	if err != nil {
		return err
	}
	r.e.events.publish(Event{Kind: EventOperationProgress, Time: r.e.cfg.Now(), OperationID: r.op.ID,
		DeviceID: r.op.DeviceID, BatchID: r.op.BatchID, State: status.InProgress, Progress: percent})
	return nil
}

func (r *reporter) Log(ctx context.Context, line string) error {
	wctx, cancel := writeContext(ctx)
	defer cancel()
	line = ordinaryLine(line)
	if err := r.e.store.AppendLog(wctx, r.op.ID, r.c.token, line); err != nil {
		if errors.Is(err, store.ErrStaleToken) {
			return r.why(wctx, err)
		}
		return err
	}
	r.e.logEvent(r.op, store.TruncateLogLine(line))
	return nil
}

func (r *reporter) Cancelled(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), ErrCancelled) {
		return ErrCancelled
	}
	if r.c.gone() {
		return ErrLeaseLost
	}
	if r.verifying {
		return ctx.Err()
	}
	op, err := r.e.store.Operation(ctx, r.op.ID)
	if err != nil {
		// The store could not be read: as far as this checkpoint knows,
		// nothing was cancelled. The attempt goes on, and the next phase it
		// records (the move into flashing above all, a compare-and-set)
		// meets the failure or the cancel; failing the operation here
		// would end it for good over a passing store outage.
		if ctx.Err() == nil {
			r.e.log.Warn("checking for a cancel failed; going on", slog.String("operation", r.op.ID), slog.Any("error", err))
		}
		return ctx.Err()
	}
	if op.State == status.Cancelled {
		return ErrCancelled
	}
	if op.Token != r.c.token {
		r.c.markLost()
		return ErrLeaseLost
	}
	return ctx.Err()
}
