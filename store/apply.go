package store

import (
	"fmt"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
)

// Validate checks u on its own, before any store is consulted.
func (u OperationUpdate) Validate() error {
	if !u.From.Valid() {
		return invalid("operation update", "From", "unknown state %q", u.From)
	}
	if u.State != "" && !u.State.Valid() {
		return invalid("operation update", "State", "unknown state %q", u.State)
	}
	if !u.Reason.Valid() {
		return invalid("operation update", "Reason", "unknown reason %q", u.Reason)
	}
	if u.Phase != nil && !u.Phase.Valid() {
		return invalid("operation update", "Phase", "unknown phase %q", *u.Phase)
	}
	if u.Progress != nil {
		if err := status.ValidateProgress(*u.Progress); err != nil {
			return invalid("operation update", "Progress", "%d is outside 0-100", *u.Progress)
		}
	}
	if u.Attempt != nil && *u.Attempt < 0 {
		return invalid("operation update", "Attempt", "is negative (%d)", *u.Attempt)
	}
	if u.RetryAfter != nil && *u.RetryAfter < 0 {
		return invalid("operation update", "RetryAfter", "is negative (%s)", *u.RetryAfter)
	}
	if u.DeadlineAfter != nil && *u.DeadlineAfter < 0 {
		return invalid("operation update", "DeadlineAfter", "is negative (%s)", *u.DeadlineAfter)
	}
	return nil
}

// ApplyUpdate returns op changed by u at time now, or an error (wrapping
// ErrInvalid or ErrInvalidTransition) if the contract of
// Operations.UpdateOperation forbids it. It is pure: adapters call it on the
// record they hold (or locked) so every store applies the same rules.
func ApplyUpdate(op Operation, u OperationUpdate, now time.Time) (Operation, error) {
	if err := u.Validate(); err != nil {
		return op, err
	}
	if op.State != u.From {
		return op, fmt.Errorf("%w: operation %s is %s, not %s", ErrInvalidTransition, op.ID, op.State, u.From)
	}
	if op.State.Terminal() {
		return op, fmt.Errorf("%w: operation %s is %s, which is final", ErrInvalidTransition, op.ID, op.State)
	}
	if err := CheckToken(op, u.Token); err != nil {
		return op, err
	}
	next := op
	if u.State != "" && u.State != op.State {
		if !status.CanTransition(op.State, u.State) {
			return op, fmt.Errorf("%w: operation %s cannot go from %s to %s", ErrInvalidTransition, op.ID, op.State, u.State)
		}
		if op.Phase.AfterPointOfNoReturn() && (u.State == status.Cancelled || u.State == status.Aborted || u.State == status.Pending) {
			return op, fmt.Errorf("%w: operation %s is %s, past the point of no return: it can no longer be %s",
				ErrInvalidTransition, op.ID, op.Phase, u.State)
		}
		if u.State == status.Pending { // back to waiting: no phase, no progress
			next.Phase, next.Progress = status.PhaseNone, 0
		}
		next.State = u.State
		next.Reason = u.Reason
		if u.State == status.InProgress && op.StartedAt.IsZero() {
			next.StartedAt = now
		}
		if u.State.Terminal() {
			next.FinishedAt = now
			next.LeaseExpiresAt = time.Time{} // the lease ends with the operation
		}
	}
	if u.Phase != nil && *u.Phase != next.Phase {
		if next.State != status.InProgress {
			return op, fmt.Errorf("%w: operation %s would be %s; only in-progress operations change phase",
				ErrInvalidTransition, op.ID, next.State)
		}
		if op.Phase.AfterPointOfNoReturn() && !u.Phase.AfterPointOfNoReturn() {
			return op, fmt.Errorf("%w: operation %s is %s and cannot go back to %q",
				ErrInvalidTransition, op.ID, op.Phase, *u.Phase)
		}
		next.Phase = *u.Phase
	}
	if u.Phase != nil && *u.Phase == status.PhaseFlashing {
		if op.Phase.AfterPointOfNoReturn() {
			return op, fmt.Errorf("%w: operation %s already entered %s: the move into flashing happens once",
				ErrInvalidTransition, op.ID, status.PhaseFlashing)
		}
		if u.Token != 0 && !LeaseLive(op, now) {
			return op, fmt.Errorf("%w: operation %s: the lease of token %d expired before flashing",
				ErrStaleToken, op.ID, u.Token)
		}
	}
	if u.Progress != nil {
		if next.State != status.InProgress && next.State != status.Success {
			return op, fmt.Errorf("%w: operation %s would be %s; progress is only set while in progress (or at success)",
				ErrInvalidTransition, op.ID, next.State)
		}
		next.Progress = *u.Progress
	}
	if u.Attempt != nil {
		next.Attempt = *u.Attempt
	}
	if u.NextAttemptAt != nil {
		next.NextAttemptAt = *u.NextAttemptAt
	}
	if u.Deadline != nil {
		next.Deadline = *u.Deadline
	}
	if u.RetryAfter != nil {
		next.NextAttemptAt = now.Add(*u.RetryAfter)
	}
	if u.DeadlineAfter != nil {
		next.Deadline = now.Add(*u.DeadlineAfter)
	}
	onlyLog := (u.State == "" || u.State == op.State) && u.Phase == nil && u.Progress == nil &&
		u.Attempt == nil && u.NextAttemptAt == nil && u.Deadline == nil && u.RetryAfter == nil && u.DeadlineAfter == nil
	if !onlyLog { // Version counts changes of the record; logs excepted
		next.Version++
		next.UpdatedAt = now
	}
	return next, nil
}

// CheckProgress validates a SetProgress call against the operation's
// current state, for adapters.
func CheckProgress(op Operation, token int64, percent int) error {
	if err := status.ValidateProgress(percent); err != nil {
		return invalid("operation", "Progress", "%d is outside 0-100", percent)
	}
	if err := CheckToken(op, token); err != nil {
		return err
	}
	if op.State != status.InProgress {
		return fmt.Errorf("%w: operation %s is %s; progress is only set while in progress", ErrInvalidTransition, op.ID, op.State)
	}
	return nil
}

// NextBatchState returns the state a batch in state cur moves to when its
// operations are counted as c: the derived state, except that a paused batch
// stays paused and an idle batch (not started) stays idle while operations
// remain to run.
func NextBatchState(cur status.BatchState, c status.Counts) status.BatchState {
	d := status.DeriveBatchState(c)
	if (cur == status.BatchPaused || cur == status.BatchIdle) && d == status.BatchInProgress {
		return cur
	}
	return d
}

// CheckBatchJoin validates adding an operation to an existing batch with
// CreateOperation: a batch that ended takes no more operations.
func CheckBatchJoin(b Batch) error {
	if b.State.Terminal() || b.CancelRequested {
		return fmt.Errorf("%w: batch %s is %s and takes no more operations", ErrInvalidTransition, b.ID, b.State)
	}
	return nil
}

// CheckBatchStateChange validates an explicit SetBatchState call.
func CheckBatchStateChange(b Batch, from, to status.BatchState) error {
	if !from.Valid() {
		return invalid("batch", "State", "unknown state %q", from)
	}
	if !to.Valid() {
		return invalid("batch", "State", "unknown state %q", to)
	}
	if b.State != from {
		return fmt.Errorf("%w: batch %s is %s, not %s", ErrInvalidTransition, b.ID, b.State, from)
	}
	ok := (from == status.BatchInProgress && to == status.BatchPaused) ||
		(from == status.BatchPaused && to == status.BatchInProgress) ||
		(from == status.BatchIdle && to == status.BatchInProgress)
	if !ok {
		return fmt.Errorf("%w: batch %s cannot be set from %s to %s", ErrInvalidTransition, b.ID, from, to)
	}
	if b.CancelRequested {
		return fmt.Errorf("%w: batch %s is being cancelled", ErrInvalidTransition, b.ID)
	}
	return nil
}

// ApplyBatchState returns b after a SetBatchState call CheckBatchStateChange
// accepted: a pause is an operator's; starting or resuming clears the pause
// reason, and resuming a batch paused by its success threshold accepts the
// settled wave and starts the next one.
func ApplyBatchState(b Batch, to status.BatchState, now time.Time) Batch {
	from := b.State
	b.State, b.UpdatedAt = to, now
	switch {
	case to == status.BatchPaused:
		b.PauseReason = status.PauseOperator
	case from == status.BatchPaused:
		if b.PauseReason == status.PauseSuccessThreshold && b.Wave < len(b.WaveTallies)-1 {
			b.Wave++
			b.WaveSettledAt = time.Time{}
		}
		b.PauseReason = status.PauseNone
	}
	return b
}

// ImageFitsOrganization reports whether an image of organization imageOrg
// may be used on a device of organization deviceOrg: the image is shared
// (no organization) or both are the same.
func ImageFitsOrganization(imageOrg, deviceOrg string) bool {
	return imageOrg == "" || imageOrg == deviceOrg
}

// Ptr returns a pointer to v, for OperationUpdate's optional fields.
func Ptr[T any](v T) *T { return &v }

// CheckOperationFits validates a new operation's device (of organization
// deviceOrg) against its image (of organization imageOrg and build
// imageBuild) and, when it joins one, its batch b: the image must be shared
// or of the device's organization (ErrOrganizationMismatch), of the
// batch's build (a *ValidationError on "ImageID"), and a batch with an
// organization takes only devices of that organization
// (ErrOrganizationMismatch). Adapters call it for CreateOperation and
// CreateBatch.
func CheckOperationFits(op Operation, deviceOrg, imageOrg, imageBuild string, b *Batch) error {
	if !ImageFitsOrganization(imageOrg, deviceOrg) {
		return fmt.Errorf("%w: image %s of organization %q, device %q of organization %q",
			ErrOrganizationMismatch, op.ImageID, imageOrg, op.DeviceID, deviceOrg)
	}
	if b == nil {
		return nil
	}
	if imageBuild != b.BuildID {
		return &ValidationError{Record: "operation", Field: "ImageID",
			Problem: fmt.Sprintf("image %s is of build %s, not of the batch's build %s", op.ImageID, imageBuild, b.BuildID)}
	}
	if b.Organization != "" && deviceOrg != b.Organization {
		return fmt.Errorf("%w: device %q of organization %q in a batch of organization %q",
			ErrOrganizationMismatch, op.DeviceID, deviceOrg, b.Organization)
	}
	return nil
}
