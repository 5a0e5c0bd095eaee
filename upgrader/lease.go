package upgrader

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/store"
)

// ErrLeaseLost is the cause (context.Cause) of an attempt's context when
// the engine lost its claim on the operation: another engine took it over
// after the lease expired, or the lease could not be renewed in time. The
// attempt must stop and leave the device alone (no cleanup: the engine that
// took over may be working on it); the store refuses its writes anyway.
// Reporter methods return errors matching it once the claim is lost.
var ErrLeaseLost = errors.New("upgrader: lease lost: another engine may run the operation")

// claim is an operation this engine holds a lease on, while a worker or a
// synchronous Run works on it.
type claim struct {
	id    string
	token int64

	// wctx bounds the claim's writes: it ends when the lease is lost (a hung
	// store call gives up then) or the claim is let go.
	wctx    context.Context
	wcancel context.CancelFunc

	mu        sync.Mutex
	cancel    context.CancelCauseFunc // the attempt's context, while one runs
	lost      chan struct{}           // closed when the lease is lost
	isLost    bool
	cancelled bool // a cancel was requested
	// watchdog gives the claim up giveUpAfter after the latest claim or
	// renewal that succeeded was sent (this machine's monotonic clock: the
	// store's lease runs at least LeaseDuration from then), unless another
	// renewal succeeds first, however long a hung store call takes.
	watchdog *time.Timer
}

// giveUpAfter is how long after the last successful renewal was sent an
// engine gives a claim up on its own: three quarters of the lease, so one
// failed renewal round (every third of the lease) is survived, and the
// attempt stops a quarter of a lease before the store can hand the
// operation to another engine.
func giveUpAfter(lease time.Duration) time.Duration { return lease * 3 / 4 }

// setCancel installs the cancel function of the running attempt's context;
// a cancel or a loss already seen cancels it at once.
func (c *claim) setCancel(f context.CancelCauseFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cancel = f
	switch {
	case f == nil:
	case c.isLost:
		f(ErrLeaseLost)
	case c.cancelled:
		f(ErrCancelled)
	}
}

// markLost records that the lease is gone and interrupts the attempt.
func (c *claim) markLost() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isLost {
		return
	}
	c.isLost = true
	close(c.lost)
	c.wcancel()
	if c.cancel != nil {
		c.cancel(ErrLeaseLost)
	}
}

// markCancelled records a user's cancel and interrupts the attempt.
func (c *claim) markCancelled() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cancelled = true
	if c.cancel != nil {
		c.cancel(ErrCancelled)
	}
}

func (c *claim) gone() bool {
	select {
	case <-c.lost:
		return true
	default:
		return false
	}
}

// hold registers a claimed operation so that the renewer keeps its lease
// alive, and starts the renewer if it is not running.
func (e *Engine) hold(op store.Operation, sent time.Time) *claim {
	c := &claim{id: op.ID, token: op.Token, lost: make(chan struct{})}
	c.wctx, c.wcancel = context.WithCancel(context.Background())
	c.watchdog = time.AfterFunc(time.Until(sent.Add(giveUpAfter(e.cfg.LeaseDuration))), func() {
		e.log.Warn("giving up a claim whose lease could not be renewed in time", slog.String("operation", c.id))
		c.markLost() // before the store can give it to someone else
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	e.held[op.ID] = c
	if !e.renewing {
		e.renewing = true
		e.renewWG.Add(1)
		go e.renew()
	}
	return c
}

// unhold forgets c and releases its lease when release is set (the operation
// did not end: it becomes claimable again at its NextAttemptAt).
func (e *Engine) unhold(c *claim, release bool) {
	e.mu.Lock()
	if e.held[c.id] == c {
		delete(e.held, c.id)
	}
	if len(e.held) == 0 {
		select { // let the renewer see there is nothing left and return
		case e.renewKick <- struct{}{}:
		default:
		}
	}
	e.mu.Unlock()
	c.watchdog.Stop()
	defer c.wcancel()
	if !release || c.gone() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := e.store.ReleaseOperation(ctx, c.id, c.token); err != nil && !errors.Is(err, store.ErrStaleToken) {
		// Not fatal: the lease expires on its own.
		e.log.Warn("releasing a lease failed", slog.String("operation", c.id), slog.Any("error", err))
	}
}

// renew keeps the leases of every held claim alive, in one store call per
// round, every third of Config.LeaseDuration. A lease reported lost
// interrupts its attempt, and so does a cancel reported through the
// renewal. When the store cannot be reached, the engine gives up a claim on
// its own clock, three quarters of a lease after the last renewal that
// succeeded was sent (see giveUpAfter): before the store's lease can end and
// another engine take the operation over, so two engines never work on one
// device at once. It returns when nothing is held.
func (e *Engine) renew() {
	defer e.renewWG.Done()
	every := e.cfg.LeaseDuration / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-e.renewKick:
		}
		e.mu.Lock()
		if len(e.held) == 0 {
			e.renewing = false
			e.mu.Unlock()
			return
		}
		claims := make([]*claim, 0, len(e.held))
		leases := make([]store.Lease, 0, len(e.held))
		for _, c := range e.held {
			claims = append(claims, c)
			leases = append(leases, store.Lease{OperationID: c.id, Token: c.token})
		}
		e.mu.Unlock()
		e.renewOnce(claims, leases)
	}
}

func (e *Engine) renewOnce(claims []*claim, leases []store.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.LeaseDuration/6)
	defer cancel()
	sent := time.Now()
	rs, err := e.store.RenewLeases(ctx, e.owner, e.cfg.LeaseDuration, leases)
	if err != nil || len(rs) != len(leases) {
		e.log.Warn("renewing leases failed", slog.Int("leases", len(leases)), slog.Any("error", err))
		rs = nil
	}
	if rs == nil {
		return // each claim's watchdog gives it up in time
	}
	for i, c := range claims {
		switch rs[i].Status {
		case store.LeaseHeld:
			c.mu.Lock()
			if !c.isLost {
				c.watchdog.Reset(time.Until(sent.Add(giveUpAfter(e.cfg.LeaseDuration))))
			}
			c.mu.Unlock()
		case store.LeaseCancelRequested:
			c.markCancelled()
		default:
			e.log.Warn("lease lost", slog.String("operation", c.id), slog.Int64("token", c.token))
			c.markLost()
		}
	}
}

// heldClaim returns this engine's claim on operation id, if any.
func (e *Engine) heldClaim(id string) *claim {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.held[id]
}
