package upgrader

import (
	"log/slog"
	"time"

	"github.com/fwupgrader/fwupgrader/store"
)

// listenRetry is the pause before listening again after a store's
// notifications stopped.
const listenRetry = time.Second

// listen follows the notifications of a store that offers them
// (store.Notifier) while the engine runs: new work wakes the producer, and a
// cancel of an operation this engine holds triggers a lease renewal at once,
// which reports the cancel and interrupts the attempt. Notifications are
// hints; polling and renewals go on as without them.
func (e *Engine) listen(n store.Notifier) {
	defer e.loops.Done()
	for e.runCtx.Err() == nil {
		ch, err := n.Listen(e.runCtx)
		if err != nil {
			e.log.Debug("store notifications unavailable", slog.Any("error", err))
		} else {
			e.prod.wake() // anything missed while not listening
			for nt := range ch {
				switch nt.Kind {
				case store.NotifyWork:
					e.prod.wake()
				case store.NotifyCancel:
					// An unnamed cancel stands for many (a large batch
					// cancelled): renew whatever is held.
					if nt.OperationID == "" || e.heldClaim(nt.OperationID) != nil {
						e.kickRenewal()
					}
					e.wakeWaiters(nt.OperationID)
				}
			}
		}
		select {
		case <-e.runCtx.Done():
		case <-time.After(jitter(listenRetry)):
		}
	}
}

// kickRenewal makes the lease renewer run a round now.
func (e *Engine) kickRenewal() {
	select {
	case e.renewKick <- struct{}{}:
	default:
	}
}
