package store

import (
	"context"
	"fmt"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
)

// Lease names one claim an owner believes it holds: the operation and the
// fencing token its claim returned.
type Lease struct {
	OperationID string
	Token       int64
}

// LeaseStatus is what RenewLeases found for one lease.
type LeaseStatus string

// Lease statuses.
const (
	// LeaseHeld: the lease is still the owner's and now runs to ExpiresAt.
	LeaseHeld LeaseStatus = "held"
	// LeaseLost: another claim took the operation (its token moved on), the
	// operation ended, or it no longer exists. The holder must stop at once:
	// its writes are refused with ErrStaleToken or ErrInvalidTransition.
	LeaseLost LeaseStatus = "lost"
	// LeaseCancelRequested: the owner's claim is the operation's last one,
	// but a user cancelled the operation (which ended its lease). The holder stops its attempt
	// before flashing; at or after flashing a cancel cannot win, so this
	// status is never reported for such an operation.
	LeaseCancelRequested LeaseStatus = "cancel-requested"
)

// Renewal is the answer of RenewLeases for one lease.
type Renewal struct {
	Lease
	Status LeaseStatus
	// ExpiresAt is the new end of the lease (zero when lost).
	ExpiresAt time.Time
}

// Claims is the role that decides who runs an operation. Every store
// implements it: the engine's producer claims work through it, every write a
// worker makes carries the fencing token of its claim, and so any number of
// engines (in one process or many) can share a store without two of them
// running one operation.
//
// Times (lease ends, "now" for NextAttemptAt and deadlines) come from the
// store's clock, never the caller's: for a database, the database's.
type Claims interface {
	// ClaimOperations claims up to limit runnable operations for owner, each
	// with a lease of the given length, and returns them (fewer, or none,
	// when fewer are runnable): operations in progress (retries, take-overs,
	// verifications) before pending ones, each the longest due first (see
	// DueAt), then in ID order. An operation is runnable when it is pending or in progress,
	// holds no live lease (none, or an expired one), its NextAttemptAt has
	// come, and its batch's rollout lets it start now (ClaimAllowed, checked
	// in the same atomic step as the claim, so the rollout holds however many
	// engines claim). Every claim
	// increments the operation's Token, sets LeaseOwner and LeaseExpiresAt
	// and counts as a change of the record (Version). Concurrent calls never
	// return the same operation twice while its lease lives. limit must be
	// positive, lease positive, owner a valid ID (ErrInvalid otherwise).
	ClaimOperations(ctx context.Context, owner string, limit int, lease time.Duration) ([]Operation, error)
	// ClaimOperation claims one operation by ID, whatever its NextAttemptAt
	// and its batch's policy (a synchronous run the caller asked for); its
	// lease counts as running in its batch like any other. It
	// fails with ErrLeased when a live lease is held (by anyone, the same
	// owner included: a holder never claims its own operation twice),
	// ErrInvalidTransition when the operation is terminal, ErrNotFound when
	// there is no such operation.
	ClaimOperation(ctx context.Context, id, owner string, lease time.Duration) (Operation, error)
	// RenewLeases extends, in one call, every lease in held that is still
	// owner's (same token, operation not terminal, not released) to
	// now+lease, expired ones included as long as no other claim took the
	// operation. A released lease is lost: a renewal that crossed the
	// release never leases the operation again. It
	// answers for every lease of held, in the same order: LeaseHeld,
	// LeaseCancelRequested (the owner's claim is the operation's last, but
	// the operation was cancelled: its lease stays ended, nothing is
	// renewed), or LeaseLost.
	RenewLeases(ctx context.Context, owner string, lease time.Duration, held []Lease) ([]Renewal, error)
	// ReleaseOperation ends the lease of token on operation id, so that the
	// operation is claimable again as soon as its NextAttemptAt comes. A
	// token that is no longer the operation's is ErrStaleToken; releasing a
	// terminal operation (whose lease ended with it) is not an error.
	ReleaseOperation(ctx context.Context, id string, token int64) error
	// ExpireDeadlines ends, failed with status.ReasonTimeout, up to limit
	// operations whose Deadline has passed, that are before
	// status.PhaseFlashing and hold no live lease (pending, or waiting for
	// a retry), and returns them. Operations at or after flashing are left
	// alone: they must be verified by a claim, never ended unproven. Each
	// change is compare-and-set, so several engines may call it at once. A
	// limit that is not positive is ErrInvalid.
	ExpireDeadlines(ctx context.Context, limit int) ([]Operation, error)
}

// ValidateClaim checks the arguments of a claim.
func ValidateClaim(owner string, limit int, lease time.Duration) error {
	if err := checkID("claim", "Owner", owner, true); err != nil {
		return err
	}
	if limit <= 0 {
		return invalid("claim", "Limit", "must be positive, got %d", limit)
	}
	if lease <= 0 {
		return invalid("claim", "Lease", "must be positive, got %s", lease)
	}
	return nil
}

// LeaseLive reports whether op holds a lease that has not expired at now.
func LeaseLive(op Operation, now time.Time) bool {
	return op.LeaseOwner != "" && now.Before(op.LeaseExpiresAt)
}

// DueAt is when op became due to run: its NextAttemptAt, or its CreatedAt
// when it was never scheduled. Claims take the longest due first, so a
// retry that came due is not starved by a flood of new operations.
func DueAt(op Operation) time.Time {
	if op.NextAttemptAt.IsZero() {
		return op.CreatedAt
	}
	return op.NextAttemptAt
}

// Runnable reports whether op may be claimed by ClaimOperations at now, its
// batch aside (see ClaimAllowed).
func Runnable(op Operation, now time.Time) bool {
	return (op.State == status.Pending || op.State == status.InProgress) &&
		!LeaseLive(op, now) && !now.Before(op.NextAttemptAt)
}

// ApplyClaim returns op claimed by owner at now for lease: the next token,
// the lease, a new version.
func ApplyClaim(op Operation, owner string, now time.Time, lease time.Duration) Operation {
	op.Token++
	op.LeaseOwner = owner
	op.LeaseExpiresAt = now.Add(lease)
	op.Version++
	op.UpdatedAt = now
	return op
}

// CheckClaimOne validates ClaimOperation against the operation as stored.
func CheckClaimOne(op Operation, now time.Time) error {
	if op.State.Terminal() {
		return fmt.Errorf("%w: operation %s is %s and can no longer be claimed", ErrInvalidTransition, op.ID, op.State)
	}
	if LeaseLive(op, now) {
		return fmt.Errorf("%w: operation %s is leased by %q until %s", ErrLeased, op.ID, op.LeaseOwner,
			op.LeaseExpiresAt.Format(time.RFC3339Nano))
	}
	return nil
}

// RenewOne decides RenewLeases for one lease of owner on op (found = false
// when the operation does not exist) and returns the renewal and the
// operation with its lease extended (only when held or cancel requested).
func RenewOne(op Operation, found bool, l Lease, owner string, now time.Time, lease time.Duration) (Renewal, Operation) {
	r := Renewal{Lease: l, Status: LeaseLost}
	if !found || op.Token != l.Token || op.LeaseOwner != owner {
		return r, op
	}
	if op.LeaseExpiresAt.IsZero() && !op.State.Terminal() {
		// Released: a release is final. A renewal racing it (sent before
		// the release, arriving after) must not lease the operation again.
		return r, op
	}
	switch {
	case op.State == status.Cancelled:
		r.Status = LeaseCancelRequested
		return r, op // the lease ended with the operation: nothing to extend
	case op.State.Terminal():
		return r, op
	}
	op.LeaseExpiresAt = now.Add(lease)
	r.Status, r.ExpiresAt = LeaseHeld, op.LeaseExpiresAt
	return r, op
}

// CheckRelease validates ReleaseOperation: the token must still be the
// operation's. It reports whether there is a lease to clear.
func CheckRelease(op Operation, token int64) (bool, error) {
	if op.State.Terminal() {
		return false, nil
	}
	if op.Token != token {
		return false, fmt.Errorf("%w: operation %s has token %d, not %d", ErrStaleToken, op.ID, op.Token, token)
	}
	return op.LeaseOwner != "", nil
}

// Expired reports whether ExpireDeadlines ends op at now.
func Expired(op Operation, now time.Time) bool {
	return !op.State.Terminal() && !op.Deadline.IsZero() && !now.Before(op.Deadline) &&
		!op.Phase.AfterPointOfNoReturn() && !LeaseLive(op, now)
}

// ExpireUpdate is the update ExpireDeadlines applies to op.
func ExpireUpdate(op Operation) OperationUpdate {
	return OperationUpdate{From: op.State, State: status.Failed, Reason: status.ReasonTimeout,
		Log: []string{fmt.Sprintf("operation timed out (deadline %s)", op.Deadline.Format(time.RFC3339))}}
}

// CheckToken refuses a write fenced by token when token is not the
// operation's current one. Token 0 is an unfenced write (a host's or a
// user's), always accepted here.
func CheckToken(op Operation, token int64) error {
	if token != 0 && token != op.Token {
		return fmt.Errorf("%w: operation %s has token %d, the write carries %d", ErrStaleToken, op.ID, op.Token, token)
	}
	return nil
}
