package status

import (
	"fmt"
	"slices"
)

// Reason is the typed cause of an operation's terminal outcome (or of a
// failed attempt). Persisted as these exact strings; the empty Reason means
// "none" and is what a successful upgrade carries.
type Reason string

// Reasons. The comment of each says which terminal state it normally ends in.
const (
	ReasonNone Reason = ""
	// ReasonConnectionFailed: the device could not be reached before
	// flashing. Retryable; failed when retries run out.
	ReasonConnectionFailed Reason = "connection-failed"
	// ReasonUploadFailed: the image transfer broke off. Retryable.
	ReasonUploadFailed Reason = "upload-failed"
	// ReasonUploadCorrupt: the uploaded file's checksum on the device differs
	// from the image's. Retryable; aborted when retries run out.
	ReasonUploadCorrupt Reason = "upload-corrupt"
	// ReasonIdentityMismatch: the device is not the one the operation is for,
	// or its identity could not be read. Aborted.
	ReasonIdentityMismatch Reason = "identity-mismatch"
	// ReasonHostKeyMismatch: the device's SSH host key is not the expected
	// one. Aborted.
	ReasonHostKeyMismatch Reason = "host-key-mismatch"
	// ReasonAuthFailed: the device refused the credentials (SSH login)
	// before anything was sent to it: trying again with the same ones
	// would not help. Aborted.
	ReasonAuthFailed Reason = "auth-failed"
	// ReasonInsufficientMemory: the image does not fit in the device's free
	// memory even after stopping services. Aborted.
	ReasonInsufficientMemory Reason = "insufficient-memory"
	// ReasonImageInvalid: the device's image test (sysupgrade --test)
	// refused the image. Aborted.
	ReasonImageInvalid Reason = "image-invalid"
	// ReasonAlreadyInstalled: the device already runs the image. Success,
	// nothing done.
	ReasonAlreadyInstalled Reason = "already-installed"
	// ReasonFlashFailed: the flash command failed for real. Failed.
	ReasonFlashFailed Reason = "flash-failed"
	// ReasonUnreachableAfterFlash: the device did not come back after the
	// flash. Failed.
	ReasonUnreachableAfterFlash Reason = "unreachable-after-flash"
	// ReasonOldFirmwareAfterReboot: the device came back but did not reboot,
	// or runs the old firmware. Failed.
	ReasonOldFirmwareAfterReboot Reason = "old-firmware-after-reboot"
	// ReasonTimeout: the operation's deadline passed. Failed.
	ReasonTimeout Reason = "timeout"
	// ReasonCancelledByUser: cancelled before flashing. Cancelled.
	ReasonCancelledByUser Reason = "cancelled-by-user"
	// ReasonNoImageForBoard: no image of the build fits the device's board.
	// Aborted.
	ReasonNoImageForBoard Reason = "no-image-for-board"
	// ReasonAnotherUpgradeInProgress: the device already has an operation
	// that is not terminal. Aborted.
	ReasonAnotherUpgradeInProgress Reason = "another-upgrade-in-progress"
	// ReasonDeviceDeactivated: the device is deactivated. Aborted.
	ReasonDeviceDeactivated Reason = "device-deactivated"
	// ReasonMaxRetriesExceeded: recoverable failures repeated until the retry
	// policy gave up. Failed.
	ReasonMaxRetriesExceeded Reason = "max-retries-exceeded"
	// ReasonUnknownConnection: no upgrader is registered for the device's
	// connection kind. Aborted.
	ReasonUnknownConnection Reason = "unknown-connection"
	// ReasonOrganizationMismatch: the image belongs to another organization
	// than the device. Aborted.
	ReasonOrganizationMismatch Reason = "organization-mismatch"
	// ReasonInvalidOptions: the operation's options are not valid for its
	// upgrader. Aborted.
	ReasonInvalidOptions Reason = "invalid-options"
	// ReasonUpgraderError: the upgrader failed in a way it did not classify
	// (or panicked). Failed.
	ReasonUpgraderError Reason = "upgrader-error"
	// ReasonWorkerLost: the worker running the operation vanished and the
	// outcome could not be proven. Failed.
	ReasonWorkerLost Reason = "worker-lost"
	// ReasonImageMissing: the image's bytes are not in the image storage
	// (never stored, or removed). Aborted, at once: waiting does not bring
	// them back.
	ReasonImageMissing Reason = "image-missing"
)

type reasonInfo struct {
	retryable bool
	outcome   State
}

var reasons = map[Reason]reasonInfo{
	ReasonConnectionFailed:         {true, Failed},
	ReasonUploadFailed:             {true, Failed},
	ReasonUploadCorrupt:            {true, Aborted},
	ReasonIdentityMismatch:         {false, Aborted},
	ReasonHostKeyMismatch:          {false, Aborted},
	ReasonAuthFailed:               {false, Aborted},
	ReasonInsufficientMemory:       {false, Aborted},
	ReasonImageInvalid:             {false, Aborted},
	ReasonAlreadyInstalled:         {false, Success},
	ReasonFlashFailed:              {false, Failed},
	ReasonUnreachableAfterFlash:    {false, Failed},
	ReasonOldFirmwareAfterReboot:   {false, Failed},
	ReasonTimeout:                  {false, Failed},
	ReasonCancelledByUser:          {false, Cancelled},
	ReasonNoImageForBoard:          {false, Aborted},
	ReasonAnotherUpgradeInProgress: {false, Aborted},
	ReasonDeviceDeactivated:        {false, Aborted},
	ReasonMaxRetriesExceeded:       {false, Failed},
	ReasonUnknownConnection:        {false, Aborted},
	ReasonOrganizationMismatch:     {false, Aborted},
	ReasonInvalidOptions:           {false, Aborted},
	ReasonUpgraderError:            {false, Failed},
	ReasonWorkerLost:               {false, Failed},
	ReasonImageMissing:             {false, Aborted},
}

// Reasons returns every non-empty reason, sorted. The slice is a fresh copy.
func Reasons() []Reason {
	out := make([]Reason, 0, len(reasons))
	for r := range reasons {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Valid reports whether r is ReasonNone or a known reason.
func (r Reason) Valid() bool {
	if r == ReasonNone {
		return true
	}
	_, ok := reasons[r]
	return ok
}

// Retryable reports whether a failure with this reason, found before
// flashing, may be retried by the engine's retry policy. After flashing
// nothing is retried, whatever the reason.
func (r Reason) Retryable() bool { return reasons[r].retryable }

// Outcome returns the terminal state an operation ends in when it stops for
// this reason (for retryable reasons: the state when retries are not possible
// or exhausted is given by the engine; Outcome reports the state used when the
// failure is final). ReasonNone maps to Success.
func (r Reason) Outcome() State {
	if r == ReasonNone {
		return Success
	}
	if info, ok := reasons[r]; ok {
		return info.outcome
	}
	return Failed
}

// ParseReason converts a persisted string into a Reason.
func ParseReason(s string) (Reason, error) {
	r := Reason(s)
	if !r.Valid() {
		return "", fmt.Errorf("status: unknown reason %q", s)
	}
	return r, nil
}
