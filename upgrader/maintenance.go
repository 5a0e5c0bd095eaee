package upgrader

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// expireBatch is how many operations one ExpireDeadlines call ends.
const expireBatch = 500

// maintenance ends, at their deadline, the operations nobody holds
// (pending, or waiting for a retry) with the store's compare-and-set
// ExpireDeadlines, and moves batches to their next wave with
// AdvanceBatches, so several engines may run it at once. Operations whose
// engine was lost need no scan: their expired lease makes them claimable,
// and the executor that claims one starts a new attempt before flashing or
// verifies at or after it.
//
// Maintenance also runs the restores of operations this engine ended
// before flashing without a claim (see restoreLater): a deadline it expired,
// a cancel it won. Stop waits for them.
type maintenance struct {
	mu   sync.Mutex
	next time.Time
	hint chan struct{}

	restores []restoreRequest      // asked for, not started
	drained  bool                  // the last restores ran: the engine stopped
	running  sync.WaitGroup        // restores started
	sem      chan struct{}         // bounds the restores running at once
	undo     map[string]*undoState // of the operations this engine runs (see track)
}

func (m *maintenance) wakeAt(t time.Time) {
	m.mu.Lock()
	if m.next.IsZero() || t.Before(m.next) {
		m.next = t
	}
	m.mu.Unlock()
	select {
	case m.hint <- struct{}{}:
	default:
	}
}

func (e *Engine) maintain() {
	defer e.loops.Done()
	m := &e.maint
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-e.runCtx.Done():
			// A restore asked for is not dropped: its device may have
			// services stopped.
			e.drainRestores()
			return
		case <-t.C:
		case <-m.hint:
		}
		m.mu.Lock()
		if !m.next.IsZero() && !e.cfg.Now().Before(m.next) {
			m.next = time.Time{}
		}
		m.mu.Unlock()
		e.expireDeadlines(e.runCtx)
		e.advanceBatches(e.runCtx)
		e.runRestores(false)
		wait := jitter(e.cfg.MaintenanceInterval)
		m.mu.Lock()
		if !m.next.IsZero() {
			wait = min(wait, max(m.next.Sub(e.cfg.Now()), 0))
		}
		m.mu.Unlock()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// expireDeadlines ends every operation whose deadline passed and that
// nobody holds, and tells the host. An operation that had an attempt may
// have been left with changes on its device (its engine died before
// flashing): it is restored (see restoreLater).
func (e *Engine) expireDeadlines(ctx context.Context) {
	for {
		ops, err := e.store.ExpireDeadlines(ctx, expireBatch)
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn("expiring deadlines failed", slog.Any("error", err))
			}
			return
		}
		for _, op := range ops {
			e.logEvent(op, "operation timed out")
			e.published(op, EventOperationState)
			e.log.Info("operation ended", slog.String("operation", op.ID), slog.String("device", op.DeviceID),
				slog.String("state", string(op.State)), slog.String("reason", string(op.Reason)))
			if !op.StartedAt.IsZero() {
				e.restoreLater(op, e.cfg.Now())
			}
		}
		if len(ops) < expireBatch {
			return
		}
	}
}

// advanceBatches moves the batches whose current wave settled on to their
// next wave (or pauses them on their success threshold), compare-and-set
// in the store, and tells the host.
func (e *Engine) advanceBatches(ctx context.Context) {
	bs, err := e.store.AdvanceBatches(ctx, expireBatch)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("advancing batches failed", slog.Any("error", err))
		}
		return
	}
	for _, b := range bs {
		e.publishBatch(b, EventBatchWave)
		e.log.Info("batch wave", slog.String("batch", b.ID), slog.Int("wave", b.Wave+1),
			slog.Int("waves", len(b.WaveTallies)), slog.String("state", string(b.State)))
		if w := b.Rollout.WaveWait; w > 0 && !b.WaveSettledAt.IsZero() {
			e.maint.wakeAt(e.cfg.Now().Add(w))
		}
	}
	if len(bs) > 0 {
		e.prod.wake()
	}
}
