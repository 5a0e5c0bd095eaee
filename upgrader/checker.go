package upgrader

import (
	"context"

	"github.com/fwupgrader/fwupgrader/status"
)

// Checker is implemented by upgraders that can check a device without
// changing it, for a batch's dry run (Engine.DryRunBatch with checks). Check
// runs the read-only part of an attempt: connect (verifying the host key),
// identity, board, free memory for the image, whether the device's release
// supports the operation's options, compat_version, and whether the image is
// already installed. It must not write to the device (no upload, no stopped
// service, no file created) and must not call Job.Report.Phase: the dry run
// changes nothing in the store either, and its Reporter only collects log
// lines.
//
// Check returns every check it ran, in order, and a verdict classified like
// Upgrade's errors: nil when an upgrade would proceed, [NotNeeded] when the
// image is already installed, [Aborted] with the reason an upgrade would
// abort, [Recoverable] when the device cannot be reached now.
type Checker interface {
	Check(ctx context.Context, job *Job) ([]Check, error)
}

// Check is the result of one read-only check of a dry run.
type Check struct {
	// Name is the check's name, one of the Check* constants for the
	// openwrt upgrader (other upgraders may add their own).
	Name string `json:"name"`
	// OK reports whether the device passed it.
	OK bool `json:"ok"`
	// Detail says what was found, for people ("free memory 54.2 MiB,
	// the image needs 6.0 MiB").
	Detail string `json:"detail,omitempty"`
	// Reason is what an upgrade would end with when the check failed.
	Reason status.Reason `json:"reason,omitempty"`
}

// Names of the checks of a dry run.
const (
	CheckReachable = "reachable"
	CheckHostKey   = "host-key"
	CheckIdentity  = "identity"
	CheckBoard     = "board"
	CheckMemory    = "memory"
	CheckOptions   = "options"
	CheckCompat    = "compat-version"
	CheckInstalled = "installed"
)
