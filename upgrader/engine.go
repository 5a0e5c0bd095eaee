package upgrader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Engine runs upgrade operations. Create it with New; it is safe for
// concurrent use. Upgrade runs one operation in the caller's goroutine and
// needs no Start; Enqueue hands operations to the workers that Start
// launches.
type Engine struct {
	store  store.Store
	reg    *Registry
	cfg    Config
	log    *slog.Logger
	events hub

	mu       sync.Mutex
	started  bool
	stopped  bool
	queue    []string        // operation IDs ready to run
	queued   map[string]bool // IDs in queue or scheduled
	timers   map[string]*time.Timer
	running  map[string]context.CancelCauseFunc // steps in flight (nil: no attempt context yet)
	waiters  map[string][]chan struct{}         // Wait calls, by operation
	wake     chan struct{}
	workCtx  context.Context
	workStop context.CancelCauseFunc
	workers  sync.WaitGroup
}

// New returns an engine over s that picks upgraders from reg. cfg may be
// nil. New starts no goroutines.
func New(s store.Store, reg *Registry, cfg *Config) (*Engine, error) {
	if s == nil {
		return nil, errors.New("upgrader: New: nil store")
	}
	if reg == nil {
		return nil, errors.New("upgrader: New: nil registry")
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Engine{
		store: s, reg: reg, cfg: c, log: c.Logger,
		queued:  map[string]bool{},
		timers:  map[string]*time.Timer{},
		running: map[string]context.CancelCauseFunc{},
		waiters: map[string][]chan struct{}{},
		wake:    make(chan struct{}, 1),
	}, nil
}

// Store returns the engine's store.
func (e *Engine) Store() store.Store { return e.store }

// Config returns the engine's configuration with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

var errStopping = errors.New("upgrader: engine stopping")

// Start launches the workers and resumes every operation of the store that
// is not terminal (pending ones, retries waiting for their time, and
// operations interrupted by a crash: those interrupted at or after flashing
// are verified, never flashed again). It returns at once; ctx only bounds
// the resumption's store reads. Calling Start again does nothing.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return nil
	}
	if e.stopped {
		e.mu.Unlock()
		return errors.New("upgrader: Start after Stop")
	}
	e.mu.Unlock()

	// Read what to resume first: if that fails, Start can be called again.
	ops, err := e.store.ListOperations(ctx, store.OperationFilter{States: []status.State{status.Pending, status.InProgress}})
	if err != nil {
		return fmt.Errorf("upgrader: resume operations: %w", err)
	}
	e.mu.Lock()
	if e.started || e.stopped {
		e.mu.Unlock()
		return nil // a concurrent Start won, or Stop came first
	}
	e.started = true
	e.workCtx, e.workStop = context.WithCancelCause(context.Background())
	for i := 0; i < e.cfg.Workers; i++ {
		e.workers.Add(1)
		go e.worker()
	}
	e.mu.Unlock()
	for _, op := range ops {
		e.schedule(op.ID, op.NextAttemptAt)
	}
	return nil
}

// Stop stops taking new work and waits for the workers' attempts in flight
// to end, until ctx ends. Then it interrupts what is left: an interrupted attempt
// before flashing is left waiting for a retry, one at or after flashing is
// left for verification, both resumed by the next Start on the same store.
// Synchronous Upgrade and Run calls are governed by their callers' contexts,
// not by Stop. Stop ends every event subscription. Calling it again does
// nothing.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil
	}
	e.stopped = true
	for id, t := range e.timers {
		t.Stop()
		delete(e.timers, id)
	}
	e.queue = nil
	started := e.started
	e.mu.Unlock()
	if started {
		close(e.wake)
	}

	done := make(chan struct{})
	go func() {
		e.workers.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		if started {
			e.workStop(errStopping) // interrupts the workers' attempts
		}
		<-done
	}
	if started {
		e.workStop(errStopping)
	}
	e.events.closeAll()
	return err
}

// schedule queues op id to run at time at (zero or past = now).
func (e *Engine) schedule(id string, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped || !e.started || e.queued[id] {
		return
	}
	e.queued[id] = true
	if d := at.Sub(e.cfg.Now()); d > 0 {
		e.timers[id] = time.AfterFunc(d, func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.stopped {
				return
			}
			delete(e.timers, id)
			e.queue = append(e.queue, id)
			e.signal()
		})
		return
	}
	e.queue = append(e.queue, id)
	e.signal()
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) next() (string, bool) {
	for {
		e.mu.Lock()
		if e.stopped {
			e.mu.Unlock()
			return "", false
		}
		if len(e.queue) > 0 {
			id := e.queue[0]
			e.queue[0] = ""
			e.queue = e.queue[1:]
			delete(e.queued, id)
			if len(e.queue) > 0 {
				e.signal() // let another idle worker take the next one
			}
			e.mu.Unlock()
			return id, true
		}
		e.mu.Unlock()
		if _, ok := <-e.wake; !ok {
			return "", false
		}
	}
}

func (e *Engine) worker() {
	defer e.workers.Done()
	for {
		id, ok := e.next()
		if !ok {
			return
		}
		op, retryAt, err := e.step(e.workCtx, id)
		switch {
		case err != nil:
			e.log.Error("operation step failed", slog.String("operation", id), slog.Any("error", err))
			if !op.State.Terminal() && !errors.Is(err, store.ErrNotFound) && e.workCtx.Err() == nil {
				e.schedule(id, e.cfg.Now().Add(time.Second))
			}
		case !op.State.Terminal():
			if !op.Deadline.IsZero() && op.Deadline.Before(retryAt) {
				retryAt = op.Deadline // time out on time, not at the next retry
			}
			e.schedule(id, retryAt)
		}
	}
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
// image does not fit the device's board, the options are invalid for the
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
	if u, ok := e.reg.Lookup(d.Connection); ok && len(req.Options) > 0 {
		if v, ok := u.(OptionsValidator); ok {
			if err := v.ValidateOptions(req.Options); err != nil {
				return store.Operation{}, fmt.Errorf("upgrader: options: %w", err)
			}
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
			"image %s belongs to organization %q, device %s to %q", im.ID, im.Organization, d.ID, d.Organization)
	}
	if !e.Fits(im, d) {
		return refuse(status.ReasonNoImageForBoard,
			"image type %q does not fit device %s (model %q, board %q)", im.Type, d.ID, d.Model, d.BoardName)
	}
	return nil
}

// Fits reports whether image im was built for device d's board: its type is
// in the image map for d's model or board name, or the boards the image
// declares itself (Image.Boards, from its metadata) include one of them. A
// device that reports neither model nor board name fits nothing.
func (e *Engine) Fits(im store.Image, d store.Device) bool {
	if strings.TrimSpace(d.Model) == "" && strings.TrimSpace(d.BoardName) == "" {
		return false
	}
	if e.cfg.ImageMap.Fits(im.Type, d.Model, d.BoardName) {
		return true
	}
	for _, b := range im.Boards {
		b = strings.TrimSpace(b)
		if b != "" && (strings.EqualFold(b, strings.TrimSpace(d.BoardName)) || strings.EqualFold(b, strings.TrimSpace(d.Model))) {
			return true
		}
	}
	return false
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
// like Upgrade.
func (e *Engine) Run(ctx context.Context, id string) (store.Operation, error) {
	for {
		op, retryAt, err := e.step(ctx, id)
		if err != nil {
			return op, err
		}
		if op.State.Terminal() {
			return op, nil
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

// Enqueue creates the operation for req (see Create) and hands it to the
// workers. Start must have been called.
func (e *Engine) Enqueue(ctx context.Context, req Request) (store.Operation, error) {
	e.mu.Lock()
	ok := e.started && !e.stopped
	e.mu.Unlock()
	if !ok {
		return store.Operation{}, errors.New("upgrader: Enqueue needs a started engine")
	}
	op, err := e.Create(ctx, req)
	if err != nil {
		return op, err
	}
	e.schedule(op.ID, time.Time{})
	return op, nil
}

// ErrNotCancellable is returned by Cancel for an operation that already
// ended or is past the point of no return (flashing has started).
var ErrNotCancellable = errors.New("upgrader: operation can no longer be cancelled")

// Cancel cancels an operation that is pending, or in progress before
// flashing, with a compare-and-set in the store: if the operation entered
// status.PhaseFlashing first, Cancel returns ErrNotCancellable and the
// upgrade goes on. A running attempt is interrupted; it restarts the
// services it stopped. Cancel returns the operation as it is afterwards.
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
		e.mu.Lock()
		if stop := e.running[id]; stop != nil {
			stop(ErrCancelled)
		}
		if t, ok := e.timers[id]; ok {
			t.Stop()
			delete(e.timers, id)
			delete(e.queued, id)
		}
		e.mu.Unlock()
		e.published(upd, EventOperationState)
		e.events.publish(Event{Kind: EventOperationLog, Time: e.cfg.Now(), OperationID: id, DeviceID: upd.DeviceID, BatchID: upd.BatchID, Line: "cancelled by user"})
		return upd, nil
	}
	return store.Operation{}, fmt.Errorf("upgrader: cancel %s: the operation kept changing", id)
}

// Wait blocks until operation id is terminal or ctx ends, and returns it.
// It is woken by this engine's own transitions and polls the store every
// half second for changes made elsewhere.
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

// published emits the event of kind for op, and a batch event when op
// belongs to a batch and kind is a state change.
func (e *Engine) published(op store.Operation, kind EventKind) {
	now := e.cfg.Now()
	if op.State.Terminal() {
		e.wakeWaiters(op.ID)
	}
	e.events.publish(opEvent(kind, op, now))
	if kind == EventOperationState && op.BatchID != "" {
		if b, err := e.store.Batch(context.Background(), op.BatchID); err == nil {
			e.events.publish(Event{Kind: EventBatchState, Time: now, BatchID: b.ID, BatchState: b.State})
		}
	}
}
