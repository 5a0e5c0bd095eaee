package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Stores wrap them with %w and callers match them with
// errors.Is.
var (
	// ErrNotFound: no record with that ID (or none visible).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a uniqueness rule would be broken.
	ErrConflict = errors.New("store: conflict")
	// ErrInvalid: a value is not acceptable. The error is a *ValidationError.
	ErrInvalid = errors.New("store: invalid value")
	// ErrInvalidTransition: the operation or batch is not in the state the
	// change expects, the change is not allowed from that state (terminal
	// states never change), or it would cross the point of no return.
	ErrInvalidTransition = errors.New("store: invalid transition")
	// ErrDeviceBusy: the device already has an operation that is not
	// terminal.
	ErrDeviceBusy = errors.New("store: device has an operation in progress")
	// ErrOrganizationMismatch: a record of one organization was combined with
	// a record of another.
	ErrOrganizationMismatch = errors.New("store: organization mismatch")
	// ErrLeased: the operation holds a live lease, so it cannot be claimed.
	ErrLeased = errors.New("store: operation is leased")
	// ErrStaleToken: a write carried a fencing token that is no longer the
	// operation's (another claim took it over), or tried to enter
	// status.PhaseFlashing after its lease expired. The writer lost its
	// claim and must stop.
	ErrStaleToken = errors.New("store: stale fencing token: the claim was lost")
)

// ValidationError reports an invalid value of one field of one record. It
// matches ErrInvalid with errors.Is.
type ValidationError struct {
	Record  string // "category", "build", "operation", ...
	Field   string // the Go field name, e.g. "Version"
	Problem string // what is wrong, e.g. `longer than 32 characters`
}

// Error implements error: "store: invalid <record> <field>: <problem>".
func (e *ValidationError) Error() string {
	return fmt.Sprintf("store: invalid %s %s: %s", e.Record, e.Field, e.Problem)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(record, field, format string, args ...any) error {
	return &ValidationError{Record: record, Field: field, Problem: fmt.Sprintf(format, args...)}
}
