package upgrader

import (
	"container/heap"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/store"
)

// producer claims runnable operations from the store as this engine's
// worker slots free up, and starts an executor for each. It wakes on a
// local hint (Enqueue, a slot freed), at the time a retry it scheduled is
// due, or at a poll interval with jitter (work enqueued or released by other
// engines). Nothing but a claim starts an attempt.
type producer struct {
	mu     sync.Mutex
	hint   chan struct{}
	wakes  timeHeap // retries this engine scheduled, earliest on top
	active int      // executors running
}

func (p *producer) init() { p.hint = make(chan struct{}, 1) }

// wake makes the producer look for work now.
func (p *producer) wake() {
	select {
	case p.hint <- struct{}{}:
	default:
	}
}

// wakeAt makes the producer look for work at t at the latest.
func (p *producer) wakeAt(t time.Time) {
	p.mu.Lock()
	heap.Push(&p.wakes, t)
	p.mu.Unlock()
	p.wake()
}

// nextWake drops the wake-ups that passed by now and returns the earliest
// one left (zero = none).
func (p *producer) nextWake(now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.wakes) > 0 && !now.Before(p.wakes[0]) {
		heap.Pop(&p.wakes)
	}
	if len(p.wakes) == 0 {
		return time.Time{}
	}
	return p.wakes[0]
}

// timeHeap is a min-heap of times: O(log n) per retry scheduled, however
// many wait.
type timeHeap []time.Time

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i].Before(h[j]) }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(time.Time)) }
func (h *timeHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// maxJittered bounds the intervals jitter spreads, so that its arithmetic
// never overflows (about 146 years: "never", for any host).
const maxJittered = time.Duration(1 << 62)

// jitter spreads d by ±20 %, so that engines started together do not poll
// the store in step.
func jitter(d time.Duration) time.Duration {
	d = min(d, maxJittered)
	return d - d/5 + rand.N(d/5*2+1)
}

func (e *Engine) produce() {
	defer e.loops.Done()
	p := &e.prod
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		p.mu.Lock()
		free := e.cfg.Workers - p.active
		p.mu.Unlock()
		full := false
		if free > 0 {
			sent := time.Now()
			ops, err := e.store.ClaimOperations(e.runCtx, e.owner, free, e.cfg.LeaseDuration)
			if err != nil && e.runCtx.Err() == nil {
				e.log.Warn("claiming operations failed", slog.Any("error", err))
			}
			for _, op := range ops {
				e.startWorker(claimed{op, sent})
			}
			full = len(ops) == free
		}
		if full {
			continue // there may be more: look again once a slot frees
		}
		wait := jitter(e.cfg.PollInterval)
		if next := p.nextWake(e.cfg.Now()); !next.IsZero() {
			wait = min(wait, max(next.Sub(e.cfg.Now()), 0))
		}
		t.Reset(wait)
		select {
		case <-e.runCtx.Done():
			return
		case <-p.hint:
		case <-t.C:
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// claimed is an operation claimed by the producer, and when the claim was
// sent.
type claimed struct {
	op   store.Operation
	sent time.Time
}

// startWorker hands one claimed operation to an idle worker, holding one
// of the engine's worker slots until the worker is done with it.
func (e *Engine) startWorker(op claimed) {
	p := &e.prod
	p.mu.Lock()
	p.active++
	p.mu.Unlock()
	e.jobs <- op // never blocks: at most Workers are active
}

// worker runs the claimed operations the producer hands it, one at a time,
// until Stop closes the hand-over channel. Long-lived workers keep their
// grown stacks, which a goroutine per operation would grow again each time.
func (e *Engine) worker() {
	defer e.workers.Done()
	p := &e.prod
	for job := range e.jobs {
		res, retryAt, err := e.execute(e.workCtx, job.op, job.sent)
		if err != nil {
			e.log.Error("operation step failed; the operation is claimable again when its lease expires",
				slog.String("operation", job.op.ID), slog.Any("error", err))
		}
		p.mu.Lock()
		p.active--
		p.mu.Unlock()
		if !res.State.Terminal() && !retryAt.IsZero() {
			if !res.Deadline.IsZero() && res.Deadline.Before(retryAt) {
				e.maint.wakeAt(res.Deadline) // time out on time, not at the next retry
			}
			p.wakeAt(retryAt)
		} else {
			p.wake()
		}
	}
}
