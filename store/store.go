package store

import (
	"context"
	"fmt"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
)

// Page selects one page of a listing. Records come in ascending ID order;
// After is the last ID of the previous page ("" = from the start) and Limit
// the page size (0 = no limit).
type Page struct {
	After string
	Limit int
}

// Validate refuses a negative limit.
func (p Page) Validate() error {
	if p.Limit < 0 {
		return invalid("page", "Limit", "is negative (%d)", p.Limit)
	}
	return nil
}

// CategoryFilter selects categories. Empty fields match everything.
type CategoryFilter struct {
	// Organization selects the categories of that organization; with
	// IncludeShared, shared ones (no organization) too.
	Organization  string
	IncludeShared bool
	Name          string
	Page
}

// BuildFilter selects builds. Empty fields match everything.
type BuildFilter struct {
	Organization  string
	IncludeShared bool
	CategoryID    string
	OSIdentifier  string
	Page
}

// ImageFilter selects images. Empty fields match everything.
type ImageFilter struct {
	Organization  string
	IncludeShared bool
	BuildID       string
	Type          string
	Page
}

// DeviceFilter selects devices. Empty fields match everything.
type DeviceFilter struct {
	Organization string
	Group        string
	Location     string
	OSIdentifier string
	Page
}

// BatchFilter selects batches. Empty fields match everything.
type BatchFilter struct {
	Organization string
	BuildID      string
	States       []status.BatchState
	Page
}

// OperationFilter selects operations. Empty fields match everything; Group
// and Location match the operation's device.
type OperationFilter struct {
	Organization string
	BuildID      string
	ImageID      string
	BatchID      string
	DeviceID     string
	States       []status.State
	Group        string
	Location     string
	Page
}

// Categories stores firmware categories.
type Categories interface {
	// CreateCategory stores a new category and returns it with ID and
	// timestamps set. A duplicate (organization, name) is ErrConflict.
	CreateCategory(ctx context.Context, c Category) (Category, error)
	Category(ctx context.Context, id string) (Category, error)
	ListCategories(ctx context.Context, f CategoryFilter) ([]Category, error)
}

// Builds stores firmware builds.
type Builds interface {
	// CreateBuild stores a new build of an existing category (ErrNotFound
	// otherwise). A duplicate (category, version), or an OS identifier
	// already used in the organization, is ErrConflict.
	CreateBuild(ctx context.Context, b Build) (Build, error)
	Build(ctx context.Context, id string) (Build, error)
	ListBuilds(ctx context.Context, f BuildFilter) ([]Build, error)
}

// Images stores the descriptions of firmware images.
type Images interface {
	// CreateImage stores a new image of an existing build. A duplicate
	// (build, type) is ErrConflict.
	CreateImage(ctx context.Context, im Image) (Image, error)
	Image(ctx context.Context, id string) (Image, error)
	ListImages(ctx context.Context, f ImageFilter) ([]Image, error)
}

// Catalog is the firmware catalog: categories, builds and images.
type Catalog interface {
	Categories
	Builds
	Images
}

// Devices stores what fwupgrader knows of the host's devices.
type Devices interface {
	// PutDevice creates the device or replaces the one with the same ID,
	// keeping CreatedAt. Moving a device to another organization while it
	// has a non-terminal operation or a firmware record is
	// ErrOrganizationMismatch.
	PutDevice(ctx context.Context, d Device) (Device, error)
	Device(ctx context.Context, id string) (Device, error)
	ListDevices(ctx context.Context, f DeviceFilter) ([]Device, error)
}

// DeviceFirmwares records which image each device runs.
type DeviceFirmwares interface {
	// PutDeviceFirmware creates or replaces the device's record. The device
	// and image must exist (ErrNotFound) and the image must be shared or of
	// the device's organization (ErrOrganizationMismatch).
	PutDeviceFirmware(ctx context.Context, df DeviceFirmware) (DeviceFirmware, error)
	// DeviceFirmware returns the device's record, or ErrNotFound.
	DeviceFirmware(ctx context.Context, deviceID string) (DeviceFirmware, error)
}

// DeviceFirmwareLister is an optional capability of a store, found by type
// assertion: the device firmware records of many devices in one call, so
// that planning a batch of 100,000 devices is not 100,000 round trips. The
// engine falls back on DeviceFirmware, device by device, without it.
type DeviceFirmwareLister interface {
	// ListDeviceFirmware returns the records of the devices deviceIDs that
	// have one, in device ID order; unknown devices and devices without a
	// record are left out (no error). At most MaxDeviceFirmwareList IDs per
	// call: more is a *ValidationError.
	ListDeviceFirmware(ctx context.Context, deviceIDs []string) ([]DeviceFirmware, error)
}

// MaxDeviceFirmwareList bounds the IDs of one ListDeviceFirmware call.
const MaxDeviceFirmwareList = 10000

// CheckDeviceFirmwareList refuses a ListDeviceFirmware call over
// MaxDeviceFirmwareList IDs.
func CheckDeviceFirmwareList(deviceIDs []string) error {
	if len(deviceIDs) > MaxDeviceFirmwareList {
		return &ValidationError{Record: "device firmware", Field: "DeviceIDs",
			Problem: fmt.Sprintf("at most %d per call, got %d", MaxDeviceFirmwareList, len(deviceIDs))}
	}
	return nil
}

// Batches stores mass upgrades.
type Batches interface {
	// CreateBatch stores a batch together with its operations, atomically:
	// all or nothing. A batch needs at least one operation (a
	// *ValidationError on field "Operations"). Each operation is checked as
	// by CreateOperation (a device may appear once: ErrDeviceBusy) and gets
	// BatchID set; the operations come back in the order given. The
	// batch's build must be shared or of the batch's organization, and a
	// batch with an organization takes only devices of that organization
	// (ErrOrganizationMismatch otherwise); every image must belong to the
	// batch's build (a *ValidationError on field "ImageID" otherwise). The
	// batch starts in b.State, idle when empty; an idle batch starts no
	// operation until SetBatchState starts it. The operations are split
	// into waves in the order given (WaveSizes of b.Rollout.Waves): each
	// gets its Wave, and the batch its WaveTallies. An operation that
	// CreateOperation adds later joins the last wave.
	CreateBatch(ctx context.Context, b Batch, ops []Operation) (Batch, []Operation, error)
	Batch(ctx context.Context, id string) (Batch, error)
	ListBatches(ctx context.Context, f BatchFilter) ([]Batch, error)
	// SetBatchState changes a batch's state explicitly, compare-and-set on
	// from: only idle → in-progress (start), in-progress → paused (an
	// operator's pause, status.PauseOperator) and paused → in-progress
	// (resume) are allowed, and none once CancelBatch was called; every
	// other change is derived from the operations. Otherwise
	// ErrInvalidTransition. The change follows ApplyBatchState.
	SetBatchState(ctx context.Context, id string, from, to status.BatchState) (Batch, error)
	// SetRollout replaces the rollout of a batch that has not ended and
	// was not cancelled (ErrInvalidTransition otherwise), keeping its waves
	// (a change of Rollout.Waves is ErrInvalidTransition): see
	// CheckRolloutChange. The new limits apply from the next claim. An
	// unknown batch is ErrNotFound.
	SetRollout(ctx context.Context, id string, r Rollout) (Batch, error)
	// CancelBatch cancels a batch atomically: it sets CancelRequested (no
	// operation of the batch starts again) and cancels every operation
	// that is pending or in progress before status.PhaseFlashing, as
	// CancelInBatch says; the holders of those learn it at their next
	// renewal or write. Operations at or after flashing finish and are
	// verified. It returns the batch and the operations it cancelled
	// (none when called again). A batch that ended is
	// ErrInvalidTransition.
	CancelBatch(ctx context.Context, id string) (Batch, []Operation, error)
	// AdvanceBatches applies NextWave, compare-and-set, to up to limit
	// batches in progress, on the store's clock, and returns the batches
	// it changed (a wave that settled, a wave started, a pause for the
	// success threshold). Several engines may call it at once. A limit
	// that is not positive is ErrInvalid.
	AdvanceBatches(ctx context.Context, limit int) ([]Batch, error)
}

// OperationUpdate is a compare-and-set change of an operation: it applies
// only if the operation is in state From. Nil pointer fields and an empty
// State leave those fields unchanged.
type OperationUpdate struct {
	// From is the state the caller expects the operation to be in.
	From status.State
	// State is the new state; it must pass status.CanTransition(From,
	// State). Empty, or equal to From, leaves the state unchanged.
	State status.State
	// Reason is set whenever State changes (and cleared when it is empty).
	Reason status.Reason
	// Phase is the new phase. Phases belong to in-progress operations, and
	// once an operation is at or after status.PhaseFlashing it never goes
	// back to an earlier phase.
	Phase         *status.Phase
	Progress      *int
	Attempt       *int
	NextAttemptAt *time.Time
	Deadline      *time.Time
	// RetryAfter sets NextAttemptAt to the store's now plus this delay, and
	// DeadlineAfter sets Deadline the same way: due times measured on the
	// clock that claims compare them with, whatever the writer's clock
	// says. Each wins over its absolute twin when both are set.
	RetryAfter    *time.Duration
	DeadlineAfter *time.Duration
	// Log lines appended in the same atomic change.
	Log []string
	// Token is the fencing token of the writer's claim (see Claims): the
	// update is refused with ErrStaleToken when it is not the operation's
	// current token. 0 is an unfenced write, for hosts and users (a
	// cancel): it is checked against the state only.
	Token int64
}

// Operations stores upgrade operations and their logs.
type Operations interface {
	// CreateOperation stores a new pending operation. The device and image
	// must exist (ErrNotFound); the image must be shared or of the device's
	// organization (ErrOrganizationMismatch); a device with a non-terminal
	// operation is ErrDeviceBusy. With a BatchID the operation joins that
	// batch, checked as by CreateBatch; a batch that ended takes no more
	// operations (ErrInvalidTransition).
	CreateOperation(ctx context.Context, op Operation) (Operation, error)
	Operation(ctx context.Context, id string) (Operation, error)
	ListOperations(ctx context.Context, f OperationFilter) ([]Operation, error)
	// UpdateOperation applies u if the operation is in state u.From, and
	// returns the updated operation. It refuses with ErrInvalidTransition,
	// changing nothing, when the operation is not in u.From, is terminal,
	// when u.State is not reachable from u.From, when u would cancel or
	// abort an operation at or after status.PhaseFlashing, or move it back
	// before that phase, or move it into status.PhaseFlashing a second time
	// (the move into flashing happens once per operation, ever). A fenced
	// update (u.Token) with a token that is not the operation's, or one that
	// enters flashing after its lease expired, is ErrStaleToken. A move to a
	// terminal state ends the lease. After the change the batch's state is
	// recomputed.
	UpdateOperation(ctx context.Context, id string, u OperationUpdate) (Operation, error)
	// SetProgress sets the progress of an in-progress operation and nothing
	// else (ErrInvalidTransition if it is not in progress). A non-zero token
	// fences the write (ErrStaleToken when it is not the operation's).
	SetProgress(ctx context.Context, id string, token int64, percent int) error
	// AppendLog appends lines to the operation's log, in any state. Lines
	// longer than MaxLogLineLen are truncated. A non-zero token fences the
	// write (ErrStaleToken when it is not the operation's).
	AppendLog(ctx context.Context, id string, token int64, lines ...string) error
	// Logs returns the operation's log entries with Seq > afterSeq, oldest
	// first, at most limit of them (0 = all).
	Logs(ctx context.Context, id string, afterSeq int64, limit int) ([]LogEntry, error)
}

// Store is every role together: what the engine needs.
type Store interface {
	Catalog
	Devices
	DeviceFirmwares
	Batches
	Operations
	Claims
}
