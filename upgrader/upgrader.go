package upgrader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Upgrader runs one attempt of one operation against one device. It is the
// seam hosts implement for their own kinds of device; the openwrt package
// implements it for OpenWrt over SSH.
//
// Upgrade returns nil when the device runs the image. Otherwise it returns an
// error made with [Aborted], [NotNeeded], [Recoverable] or [Failed]; a plain
// error counts as Failed with [status.ReasonUpgraderError], and an error
// matching [ErrCancelled] (what the Reporter returns once a cancel won) ends
// the operation cancelled. Upgrade must honour ctx: when ctx ends it returns
// promptly (the engine classifies the outcome).
//
// Upgrade must call Job.Report.Phase before each step, and Phase with
// [status.PhaseFlashing] immediately before it modifies the device's flash:
// that call is the compare-and-set that decides between a cancel and the
// flash, and when it returns an error the upgrader must not flash.
type Upgrader interface {
	Upgrade(ctx context.Context, job *Job) error
}

// Verifier is implemented by upgraders that can prove, after the fact,
// whether a flash already started succeeded: the engine calls Verify instead
// of Upgrade for an operation found at or after status.PhaseFlashing (after a
// crash, a lost worker or a deadline). Verify returns nil when the device
// runs the image and an error classified like Upgrade's otherwise. It must
// never flash.
type Verifier interface {
	Verify(ctx context.Context, job *Job) error
}

// Restorer is implemented by upgraders that can undo what an attempt
// interrupted before flashing left on its device: services stopped to free
// memory, a partial image, the wireless brought down. The engine calls
// Restore when an operation ends before status.PhaseFlashing while
// Job.Undo holds records that no attempt reported undone (an attempt whose
// engine died or lost its claim, or whose own cleanup could not reach the
// device), and no new attempt will run: the operation was cancelled, timed
// out, ran out of attempts or was aborted.
//
// Restore works from Job.Undo alone: it must never flash, never call
// Job.Report.Phase or Progress, and it is idempotent (the same records may
// be restored twice, by an attempt's cleanup and by Restore). It returns
// nil once everything is undone (the engine then clears the records) and
// an error when something could not be; it logs what it did with
// Job.Report.Log. Restore honours ctx. The engine runs it under the
// operation's claim when it ends the operation itself, and otherwise (a
// cancel, a deadline ended by maintenance: a terminal operation cannot be
// claimed) only once the interrupted attempt's lease lapsed and while no
// other operation of the device runs.
type Restorer interface {
	Restore(ctx context.Context, job *Job) error
}

// UndoRecorder is implemented by the engine's Reporter: find it with a type
// assertion on Job.Report. An upgrader that changes the device in ways it
// must undo when the attempt ends before flashing records each change with
// RecordUndo before it makes it, so that whoever runs the operation next
// (another attempt, on any engine, or Restore) can undo it if this attempt
// is cut short: a killed engine, a lost claim, a dropped connection. The
// records are kept with the operation (its log) and come back in Job.Undo.
type UndoRecorder interface {
	// RecordUndo keeps record (the upgrader's own text, one line of at most
	// MaxUndoRecordLen characters) with the operation. When it returns an
	// error the upgrader must not make the change (the store cannot be
	// written, the claim was lost, the operation was cancelled).
	RecordUndo(ctx context.Context, record string) error
	// Undone says that everything recorded so far (this attempt's records
	// and Job.Undo) was undone on the device: no one needs to undo it again.
	Undone(ctx context.Context) error
}

// MaxUndoRecordLen bounds one undo record, in characters.
const MaxUndoRecordLen = 2048

// Job is what an attempt works on. The engine builds a new Job for every
// attempt; upgraders must not keep it after Upgrade returns.
type Job struct {
	// Operation as it was when the attempt started (Attempt counts from 1).
	Operation store.Operation
	Device    store.Device
	Image     Image
	Report    Reporter
	// WrongBoard, when set, reports whether a device that says its board
	// name is board must be refused the image: the image was chosen for
	// the board name in the device's record (Engine.Fits decides by it)
	// and does not fit board. An upgrader that reads the board name from
	// the device calls it before sending anything, so that a wrong record
	// cannot bring a wrong image to a device (an image without metadata of
	// its own to say which boards it is for).
	WrongBoard func(board string) bool
	// Undo holds the records (see UndoRecorder) that earlier attempts of
	// the operation kept and no attempt reported undone, oldest first:
	// what an interrupted attempt may have left changed on the device. An
	// upgrader that records changes undoes these too when its own attempt
	// ends before flashing, whatever its outcome (and reports it with
	// UndoRecorder.Undone); Restore undoes them when no attempt follows.
	Undo []string
}

// Image is the firmware image of a Job.
type Image struct {
	store.Image
	// Build the image belongs to; Build.OSIdentifier is what the device
	// must report after the upgrade (when not empty).
	Build store.Build
	// OpenFunc opens the image's bytes for reading. Each call returns a new
	// reader positioned at the start.
	OpenFunc func(ctx context.Context) (io.ReadCloser, error)
}

// Open opens the image's bytes for reading from the start.
func (im Image) Open(ctx context.Context) (io.ReadCloser, error) {
	if im.OpenFunc == nil {
		return nil, fmt.Errorf("upgrader: image %s has no content", im.ID)
	}
	return im.OpenFunc(ctx)
}

// Reporter is how an attempt tells the engine where it is and asks whether
// it was cancelled. Every method persists through the store at once and
// publishes an event.
type Reporter interface {
	// Phase moves the operation into phase p, compare-and-set in the store.
	// It returns an error matching ErrCancelled if a cancel won, and never
	// lets an operation back before status.PhaseFlashing once there.
	Phase(ctx context.Context, p status.Phase) error
	// Progress sets the operation's progress in percent (0-100).
	Progress(ctx context.Context, percent int) error
	// Log appends a line to the operation's log. Upgraders must keep
	// secrets out of it.
	Log(ctx context.Context, line string) error
	// Cancelled is a checkpoint: it returns an error matching ErrCancelled
	// when the operation was cancelled, and ctx.Err() when ctx ended.
	Cancelled(ctx context.Context) error
}

// ErrCancelled is returned by a Reporter once the operation was cancelled.
// An Upgrade that returns it (wrapped or not) ends the operation cancelled.
var ErrCancelled = errors.New("upgrader: operation cancelled")

// Kind classifies the outcome of an attempt.
type Kind int

// Outcome kinds of an attempt's error.
const (
	// KindFailed: the attempt failed and must not be retried; the operation
	// ends failed (or aborted, before flashing, for reasons whose
	// status.Reason.Outcome is aborted).
	KindFailed Kind = iota
	// KindAborted: the device was left untouched on purpose (wrong device,
	// not enough memory, image refused); the operation ends aborted.
	KindAborted
	// KindNotNeeded: the device already runs the image; the operation ends
	// success with nothing done.
	KindNotNeeded
	// KindRecoverable: a transient failure before flashing; the engine
	// retries with backoff while the retry policy allows.
	KindRecoverable
	// KindCancelled: the attempt stopped because the operation was cancelled.
	KindCancelled
)

func (k Kind) String() string {
	switch k {
	case KindFailed:
		return "failed"
	case KindAborted:
		return "aborted"
	case KindNotNeeded:
		return "not-needed"
	case KindRecoverable:
		return "recoverable"
	case KindCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is an attempt's classified error. Make it with Aborted, NotNeeded,
// Recoverable or Failed and find it with errors.As.
type Error struct {
	Kind   Kind
	Reason status.Reason
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("upgrader: %s (%s)", e.Kind, e.Reason)
	}
	return fmt.Sprintf("upgrader: %s (%s): %v", e.Kind, e.Reason, e.Err)
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Aborted classifies err as a deliberate stop that left the device untouched.
func Aborted(reason status.Reason, err error) error {
	return &Error{Kind: KindAborted, Reason: reason, Err: err}
}

// NotNeeded reports that the device already runs the image.
func NotNeeded(reason status.Reason, err error) error {
	return &Error{Kind: KindNotNeeded, Reason: reason, Err: err}
}

// Recoverable classifies err as transient: the engine may retry the
// operation if it happened before flashing.
func Recoverable(reason status.Reason, err error) error {
	return &Error{Kind: KindRecoverable, Reason: reason, Err: err}
}

// Failed classifies err as final.
func Failed(reason status.Reason, err error) error {
	return &Error{Kind: KindFailed, Reason: reason, Err: err}
}

// Classify returns the kind and reason of an attempt's non-nil error. An
// error matching
// ErrCancelled is KindCancelled; an unclassified error is KindFailed with
// status.ReasonUpgraderError.
func Classify(err error) (Kind, status.Reason) {
	if errors.Is(err, ErrCancelled) {
		return KindCancelled, status.ReasonCancelledByUser
	}
	var e *Error
	if errors.As(err, &e) {
		r := e.Reason
		if r == status.ReasonNone {
			r = status.ReasonUpgraderError
		}
		return e.Kind, r
	}
	return KindFailed, status.ReasonUpgraderError
}

// Registry maps a device's connection kind (store.Device.Connection) to the
// Upgrader that handles it. It is safe for concurrent use.
type Registry struct {
	mu sync.RWMutex
	m  map[string]Upgrader
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]Upgrader{}} }

// Register maps kind to u. It refuses an empty kind, a nil upgrader (a
// typed nil pointer too) and a kind registered twice.
func (r *Registry) Register(kind string, u Upgrader) error {
	if kind == "" {
		return errors.New("upgrader: register: empty connection kind")
	}
	if u == nil {
		return fmt.Errorf("upgrader: register %q: nil upgrader", kind)
	}
	if v := reflect.ValueOf(u); (v.Kind() == reflect.Pointer || v.Kind() == reflect.Map || v.Kind() == reflect.Func ||
		v.Kind() == reflect.Interface || v.Kind() == reflect.Slice || v.Kind() == reflect.Chan) && v.IsNil() {
		return fmt.Errorf("upgrader: register %q: nil upgrader (a typed nil %T)", kind, u)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[kind]; dup {
		return fmt.Errorf("upgrader: register %q: already registered", kind)
	}
	r.m[kind] = u
	return nil
}

// Lookup returns the upgrader for kind.
func (r *Registry) Lookup(kind string) (Upgrader, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	u, ok := r.m[kind]
	return u, ok
}
