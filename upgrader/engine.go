package upgrader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Engine runs upgrade operations. Create it with New; it is safe for
// concurrent use, and any number of engines (in one process or many) may
// share one store: the store decides who runs each operation (see
// store.Claims), so an operation never runs twice at once, and a lost
// engine's operations are taken over when their leases expire.
//
// Upgrade and Run run one operation in the caller's goroutine and need no
// Start; Enqueue leaves the operation to the workers that Start launches,
// in this engine or any other sharing the store.
type Engine struct {
	store  store.Store
	reg    *Registry
	cfg    Config
	log    *slog.Logger
	owner  string // this engine's name in leases
	events hub

	mu        sync.Mutex
	started   bool
	stopped   bool
	held      map[string]*claim          // operations this engine holds a lease on
	waiters   map[string][]chan struct{} // Wait calls, by operation
	renewing  bool                       // the renewer runs
	renewKick chan struct{}
	renewWG   sync.WaitGroup

	prod     producer
	maint    maintenance
	runCtx   context.Context // ends when Stop begins: no new claims, no maintenance
	runStop  context.CancelCauseFunc
	workCtx  context.Context // ends when Stop gives up waiting: interrupts attempts
	workStop context.CancelCauseFunc
	dead     context.Context // done when Stop gives up waiting: no more write retries
	killDead context.CancelFunc
	stopDone chan struct{} // closed when the first Stop returns
	deadOnce sync.Once
	loops    sync.WaitGroup // producer, maintenance, notifications, batch events

	// Batches whose operations changed state, for the batch events (see
	// batchEvents).
	batchMu    sync.Mutex
	batchDirty map[string]struct{}
	batchKick  chan struct{}
	jobs       chan claimed // claimed operations, from the producer to the workers
	workers    sync.WaitGroup
}

// New is NewEngine.
//
// Deprecated: use NewEngine, whose name says what it returns.
func New(s store.Store, reg *Registry, cfg *Config) (*Engine, error) {
	return NewEngine(s, reg, cfg)
}

// NewEngine returns an engine over s that picks upgraders from reg. cfg may
// be nil. NewEngine starts no goroutines; Start does.
func NewEngine(s store.Store, reg *Registry, cfg *Config) (*Engine, error) {
	if s == nil {
		return nil, errors.New("upgrader: NewEngine: nil store")
	}
	if reg == nil {
		return nil, errors.New("upgrader: NewEngine: nil registry")
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		store: s, reg: reg, cfg: c, log: c.Logger, owner: c.Owner,
		held:      map[string]*claim{},
		waiters:   map[string][]chan struct{}{},
		renewKick: make(chan struct{}, 1),
		batchKick: make(chan struct{}, 1),
		stopDone:  make(chan struct{}),
	}
	e.dead, e.killDead = context.WithCancel(context.Background())
	e.prod.init()
	e.maint.hint = make(chan struct{}, 1)
	return e, nil
}

// Store returns the engine's store.
func (e *Engine) Store() store.Store { return e.store }

// Config returns the engine's configuration with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// Owner returns the name this engine claims operations under
// (store.Operation.LeaseOwner).
func (e *Engine) Owner() string { return e.owner }

var errStopping = errors.New("upgrader: engine stopping")

// ErrStopped is returned by Start and Enqueue on an engine that was
// stopped: an engine runs once; make a new one (over the same store) to run
// again.
var ErrStopped = errors.New("upgrader: engine stopped")

// Start launches the engine's producer (it claims runnable operations from
// the store as workers are free: pending ones, retries whose time came, and
// operations whose engine was lost — those at or after flashing are
// verified, never flashed again), its renewal of leases and its maintenance
// (deadlines). It returns at once; ctx is not used after Start returns.
// Calling Start again does nothing; Start after Stop is ErrStopped.
func (e *Engine) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return ErrStopped
	}
	if e.started {
		return nil
	}
	e.started = true
	e.runCtx, e.runStop = context.WithCancelCause(context.Background())
	e.workCtx, e.workStop = context.WithCancelCause(context.Background())
	e.jobs = make(chan claimed, e.cfg.Workers)
	e.workers.Add(e.cfg.Workers)
	for range e.cfg.Workers {
		go e.worker()
	}
	e.loops.Add(3)
	go e.produce()
	go e.maintain()
	go e.batchEvents()
	if n, ok := e.store.(store.Notifier); ok {
		e.loops.Add(1)
		go e.listen(n)
	}
	return nil
}

// Stop stops claiming new work and waits for the attempts in flight to end,
// until ctx ends. Then it interrupts what is left: an interrupted attempt
// before flashing is left for a new attempt, one at or after flashing for
// verification; their leases are released, so any engine sharing the store
// (or the next one started) takes them over at once. Synchronous Upgrade
// and Run calls are governed by their callers' contexts, not by Stop. Stop
// ends every event subscription. Calling it again (or concurrently) waits
// for the first call to finish, or for its own ctx.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		// Another Stop runs or ran: wait for it (or for ctx), so that every
		// Stop returns with the engine drained.
		select {
		case <-e.stopDone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e.stopped = true
	started := e.started
	e.mu.Unlock()
	defer close(e.stopDone)
	if !started {
		e.kill()
		e.events.closeAll()
		return nil
	}
	e.runStop(errStopping)
	done := make(chan struct{})
	go func() {
		e.loops.Wait() // the producer hands out nothing after this
		close(e.jobs)
		e.workers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		e.kill() // interrupts the attempts and the store calls made for events
		<-done
	}
	e.kill()
	e.events.closeAll()
	return err
}

// kill interrupts every worker's attempt and stops write retries.
func (e *Engine) kill() {
	e.deadOnce.Do(func() {
		if e.workStop != nil {
			e.workStop(errStopping)
		}
		e.killDead()
	})
}

// Request asks for the upgrade of one device to one image.
type Request struct {
	DeviceID string
	ImageID  string
	// Options for the device's upgrader, as a JSON object (e.g. the openwrt
	// package's sysupgrade options). Empty means the upgrader's defaults.
	Options json.RawMessage
}

// ErrRefused matches (errors.Is) every *RefusedError.
var ErrRefused = errors.New("upgrader: upgrade refused")

// RefusedError says why an upgrade was refused before any operation was
// created.
type RefusedError struct {
	Reason status.Reason
	Err    error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("upgrader: upgrade refused (%s): %v", e.Reason, e.Err)
}

// Unwrap returns the cause.
func (e *RefusedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

func refuse(r status.Reason, format string, args ...any) error {
	return &RefusedError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// OptionsValidator is implemented by upgraders that can check an
// operation's options before the operation is created.
type OptionsValidator interface {
	ValidateOptions(opts json.RawMessage) error
}

// Create checks req and stores a new pending operation for it, without
// running it. It refuses (a *RefusedError, nothing stored) when the device is
// deactivated, the image is of another organization than the device, the
// image does not fit the device (Engine.Fits), the options are invalid for the
// device's upgrader, or the device has an operation that is not terminal.
// A device whose connection kind has no upgrader is not refused here: its
// operation ends aborted with status.ReasonUnknownConnection when it runs.
func (e *Engine) Create(ctx context.Context, req Request) (store.Operation, error) {
	d, err := e.store.Device(ctx, req.DeviceID)
	if err != nil {
		return store.Operation{}, fmt.Errorf("upgrader: device %q: %w", req.DeviceID, err)
	}
	im, err := e.store.Image(ctx, req.ImageID)
	if err != nil {
		return store.Operation{}, fmt.Errorf("upgrader: image %q: %w", req.ImageID, err)
	}
	if err := e.checkFit(d, im); err != nil {
		return store.Operation{}, err
	}
	if u, ok := e.reg.Lookup(d.Connection); ok {
		if err := validateOptions(u, req.Options); err != nil {
			return store.Operation{}, &RefusedError{Reason: status.ReasonInvalidOptions, Err: fmt.Errorf("options: %w", err)}
		}
	}
	op, err := e.store.CreateOperation(ctx, store.Operation{DeviceID: d.ID, ImageID: im.ID, Options: req.Options})
	switch {
	case errors.Is(err, store.ErrDeviceBusy):
		return store.Operation{}, &RefusedError{Reason: status.ReasonAnotherUpgradeInProgress, Err: err}
	case errors.Is(err, store.ErrOrganizationMismatch):
		return store.Operation{}, &RefusedError{Reason: status.ReasonOrganizationMismatch, Err: err}
	case err != nil:
		return store.Operation{}, err
	}
	e.events.publish(opEvent(EventOperationCreated, op, e.cfg.Now()))
	return op, nil
}

// checkFit refuses an image that must not reach the device.
func (e *Engine) checkFit(d store.Device, im store.Image) error {
	if !d.Active {
		return refuse(status.ReasonDeviceDeactivated, "device %s is deactivated", d.ID)
	}
	if !store.ImageFitsOrganization(im.Organization, d.Organization) {
		return refuse(status.ReasonOrganizationMismatch,
			"image %s is not available to organization %q (device %s)", im.ID, d.Organization, d.ID)
	}
	if fits, rule := e.fit(im, d); !fits {
		return refuse(status.ReasonNoImageForBoard,
			"image type %q does not fit device %s (model %q, board %q), as %s decided", im.Type, d.ID, d.Model, d.BoardName, rule)
	}
	return nil
}

// Upgrade creates the operation for req (see Create) and runs it in the
// caller's goroutine, retries and their waits included, until it ends. It
// returns the terminal operation. If ctx ends first, an operation before
// flashing ends cancelled; one at or after flashing is verified (within
// Config.VerifyTimeout) and ends success or failed. Upgrade does not need
// Start.
func (e *Engine) Upgrade(ctx context.Context, req Request) (store.Operation, error) {
	op, err := e.Create(ctx, req)
	if err != nil {
		return op, err
	}
	return e.Run(ctx, op.ID)
}

// Run runs an existing operation in the caller's goroutine until it ends,
// like Upgrade. It claims the operation in the store for each attempt; when
// another engine (or this engine's workers) holds it, Run waits for that
// holder to end it, or for its lease to lapse and then takes over. If ctx
// ends while another engine holds the operation, Run asks for a cancel
// (which wins only before flashing) and returns the operation as it is with
// ctx's error.
func (e *Engine) Run(ctx context.Context, id string) (store.Operation, error) {
	gaveUpClaims := 0 // claims tried after the caller gave up
	for {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if ctx.Err() != nil {
			gaveUpClaims++
			// The caller gave up: still claim, to end it or leave it resumable.
			rctx, cancel = writeContext(ctx)
		}
		sent := time.Now()
		op, err := e.store.ClaimOperation(rctx, id, e.owner, e.cfg.LeaseDuration)
		cancel()
		switch {
		case errors.Is(err, store.ErrLeased):
			if op, err := e.awaitHolder(ctx, id); err != nil || op.State.Terminal() {
				return op, err
			}
			continue
		case errors.Is(err, store.ErrInvalidTransition):
			rctx, cancel := writeContext(ctx)
			op, err := e.store.Operation(rctx, id) // it ended
			cancel()
			return op, err
		case err != nil && ctx.Err() != nil && gaveUpClaims < 2:
			// The caller gave up while claiming: claim again with a
			// context of its own, to end the operation (cancelled before
			// flashing, verified after) instead of stranding it.
			gaveUpClaims++
			continue
		case err != nil:
			return op, err
		}
		op, retryAt, err := e.execute(ctx, op, sent)
		if err != nil {
			return op, err
		}
		if op.State.Terminal() {
			return op, nil
		}
		if ctx.Err() != nil {
			return op, ctx.Err() // given up, and the end could not be written: left to maintenance
		}
		if retryAt.IsZero() {
			continue // the claim was lost: look again
		}
		wait := retryAt.Sub(e.cfg.Now())
		if !op.Deadline.IsZero() {
			if dl := op.Deadline.Sub(e.cfg.Now()); dl < wait {
				wait = dl
			}
		}
		if wait > 0 {
			woken := e.waiter(id) // closed when the operation ends here, e.g. by Cancel
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-woken:
			case <-ctx.Done():
				// the loop's next step sees ctx done and ends the operation
			}
			t.Stop()
			e.dropWaiter(id, woken)
		}
	}
}

// awaitHolder waits while someone else holds operation id: until it ends,
// its lease lapses, or ctx ends (then it asks for a cancel).
func (e *Engine) awaitHolder(ctx context.Context, id string) (store.Operation, error) {
	if ctx.Err() != nil {
		wctx, cancel := writeContext(ctx)
		defer cancel()
		op, err := e.Cancel(wctx, id)
		if err != nil && !errors.Is(err, ErrNotCancellable) {
			return op, err
		}
		return op, ctx.Err()
	}
	op, err := e.store.Operation(ctx, id)
	if err != nil || op.State.Terminal() {
		return op, err
	}
	wait := min(max(op.LeaseExpiresAt.Sub(time.Now()), 10*time.Millisecond), 500*time.Millisecond)
	woken := e.waiter(id)
	defer e.dropWaiter(id, woken)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-woken:
	case <-ctx.Done():
	}
	return op, nil
}

// Enqueue creates the operation for req (see Create) and wakes this
// engine's producer; any started engine sharing the store may run it.
// Start must have been called.
func (e *Engine) Enqueue(ctx context.Context, req Request) (store.Operation, error) {
	e.mu.Lock()
	started, stopped := e.started, e.stopped
	e.mu.Unlock()
	if stopped {
		return store.Operation{}, ErrStopped
	}
	if !started {
		return store.Operation{}, errors.New("upgrader: Enqueue needs a started engine")
	}
	op, err := e.Create(ctx, req)
	if err != nil {
		return op, err
	}
	e.prod.wake()
	return op, nil
}

// ErrNotCancellable is returned by Cancel for an operation that already
// ended or is past the point of no return (flashing has started).
var ErrNotCancellable = errors.New("upgrader: operation can no longer be cancelled")

// Cancel cancels an operation that is pending, or in progress before
// flashing, with a compare-and-set in the store: if the operation entered
// status.PhaseFlashing first, Cancel returns ErrNotCancellable and the
// upgrade goes on. A running attempt is interrupted: at once when this
// engine runs it, within one lease renewal (Config.LeaseDuration/3) when
// another engine sharing the store does; it restarts the services it
// stopped. When no attempt runs it (its engine died, or it waits for a
// retry), what its last attempt left changed on the device is undone by this
// engine's maintenance once that attempt's lease lapsed (see Restorer): the
// engine must be started for that, and Stop waits for it. Cancel returns
// the operation as it is afterwards.
func (e *Engine) Cancel(ctx context.Context, id string) (store.Operation, error) {
	for range 5 {
		op, err := e.store.Operation(ctx, id)
		if err != nil {
			return op, err
		}
		if op.State.Terminal() {
			return op, fmt.Errorf("%w: operation %s already ended %s", ErrNotCancellable, id, op.State)
		}
		if !status.Cancellable(op.State, op.Phase) {
			return op, fmt.Errorf("%w: operation %s is %s, past the point of no return", ErrNotCancellable, id, op.Phase)
		}
		upd, err := e.store.UpdateOperation(ctx, id, store.OperationUpdate{
			From: op.State, State: status.Cancelled, Reason: status.ReasonCancelledByUser,
			Log: []string{"cancelled by user"},
		})
		if errors.Is(err, store.ErrInvalidTransition) {
			continue // it moved on meanwhile: look again
		}
		if err != nil {
			return op, err
		}
		e.afterCancel(op)
		e.published(upd, EventOperationState)
		e.events.publish(Event{Kind: EventOperationLog, Time: e.cfg.Now(), OperationID: id, DeviceID: upd.DeviceID, BatchID: upd.BatchID, Line: "cancelled by user"})
		return upd, nil
	}
	return store.Operation{}, fmt.Errorf("upgrader: cancel %s: the operation kept changing", id)
}

// Wait blocks until operation id is terminal or ctx ends, and returns it,
// whichever engine ends it: it is woken by this engine's own transitions and
// polls the store every half second for changes made elsewhere. When the
// operation ended in success, its device's firmware record
// (store.DeviceFirmware) is already written.
func (e *Engine) Wait(ctx context.Context, id string) (store.Operation, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		done := e.waiter(id)
		op, err := e.store.Operation(ctx, id)
		if err != nil || op.State.Terminal() {
			e.dropWaiter(id, done)
			return op, err
		}
		select {
		case <-ctx.Done():
			e.dropWaiter(id, done)
			return op, ctx.Err()
		case <-done:
		case <-t.C:
			e.dropWaiter(id, done)
		}
	}
}

// waiter returns a channel closed when operation id next reaches a
// terminal state through this engine.
func (e *Engine) waiter(id string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch := make(chan struct{})
	e.waiters[id] = append(e.waiters[id], ch)
	return ch
}

func (e *Engine) dropWaiter(id string, ch chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ws := e.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(e.waiters, id)
	} else {
		e.waiters[id] = ws
	}
}

func (e *Engine) wakeWaiters(id string) {
	e.mu.Lock()
	ws := e.waiters[id]
	delete(e.waiters, id)
	e.mu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
}

// eventContext bounds the store reads made only to tell the host (a batch
// event): a few seconds, and not past a Stop that gave up waiting.
func (e *Engine) eventContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.dead, eventReadTimeout)
}

// eventReadTimeout bounds a store read made for an event.
const eventReadTimeout = 5 * time.Second

// published emits the event of kind for op, and a batch event when op
// belongs to a batch and kind is a state change.
func (e *Engine) published(op store.Operation, kind EventKind) {
	now := e.cfg.Now()
	if op.State.Terminal() {
		e.wakeWaiters(op.ID)
	}
	e.events.publish(opEvent(kind, op, now))
	if kind == EventOperationState && op.BatchID != "" {
		if op.State.Terminal() || op.State == status.Pending {
			e.maint.wakeAt(now) // its wave may have settled
		}
		e.batchChanged(op.BatchID)
	}
}

// batchCoalesce is how long batch events wait to gather the changes of
// several operations into one read of the batch.
const batchCoalesce = 50 * time.Millisecond

// batchChanged publishes a batch event for batch id: soon, from the
// batchEvents loop, when the engine runs (one store read per batch for
// the changes of many operations), at once otherwise.
func (e *Engine) batchChanged(id string) {
	e.mu.Lock()
	running := e.started && e.runCtx.Err() == nil
	e.mu.Unlock()
	if !running {
		e.publishBatchOf(id)
		return
	}
	e.batchMu.Lock()
	if e.batchDirty == nil {
		e.batchDirty = map[string]struct{}{}
	}
	e.batchDirty[id] = struct{}{}
	e.batchMu.Unlock()
	select {
	case e.batchKick <- struct{}{}:
	default:
	}
}

// batchEvents publishes the batch events of the batches batchChanged
// marked, each read once per round.
func (e *Engine) batchEvents() {
	defer e.loops.Done()
	for {
		stopping := false
		select {
		case <-e.batchKick:
			select {
			case <-time.After(batchCoalesce):
			case <-e.runCtx.Done():
				stopping = true
			}
		case <-e.runCtx.Done():
			stopping = true
		}
		e.batchMu.Lock()
		dirty := e.batchDirty
		e.batchDirty = nil
		e.batchMu.Unlock()
		for id := range dirty {
			e.publishBatchOf(id)
		}
		if stopping {
			return
		}
	}
}

// publishBatchOf reads batch id and publishes its EventBatchState.
func (e *Engine) publishBatchOf(id string) {
	ctx, cancel := e.eventContext()
	defer cancel()
	if b, err := e.store.Batch(ctx, id); err == nil {
		e.publishBatch(b, EventBatchState)
	}
}
