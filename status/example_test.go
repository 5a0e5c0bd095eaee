package status_test

import (
	"fmt"

	"github.com/fwupgrader/fwupgrader/status"
)

// Operations move forward only: pending to in-progress to an outcome, and
// nothing leaves an outcome.
func ExampleCanTransition() {
	moves := []struct{ from, to status.State }{
		{status.Pending, status.InProgress},
		{status.InProgress, status.Success},
		{status.InProgress, status.Pending}, // a batch's device went offline before flashing
		{status.Pending, status.Success},
		{status.Success, status.Failed},
		{status.Cancelled, status.Pending},
	}
	for _, m := range moves {
		fmt.Printf("%s -> %s: %v\n", m.from, m.to, status.CanTransition(m.from, m.to))
	}
	// Output:
	// pending -> in-progress: true
	// in-progress -> success: true
	// in-progress -> pending: true
	// pending -> success: false
	// success -> failed: false
	// cancelled -> pending: false
}

// PhaseFlashing is the point of no return: an in-progress operation can be
// cancelled before it, never from it on.
func ExamplePhase_AfterPointOfNoReturn() {
	for _, p := range status.Phases() {
		fmt.Printf("%d %-10s after point of no return: %-5v cancellable: %v\n",
			p.Order(), p, p.AfterPointOfNoReturn(), status.Cancellable(status.InProgress, p))
	}
	// Output:
	// 1 connecting after point of no return: false cancellable: true
	// 2 identity   after point of no return: false cancellable: true
	// 3 checksum   after point of no return: false cancellable: true
	// 4 memory     after point of no return: false cancellable: true
	// 5 upload     after point of no return: false cancellable: true
	// 6 image-test after point of no return: false cancellable: true
	// 7 flashing   after point of no return: true  cancellable: false
	// 8 rebooting  after point of no return: true  cancellable: false
	// 9 verifying  after point of no return: true  cancellable: false
}

func ExampleCancellable() {
	fmt.Println(status.Cancellable(status.Pending, status.PhaseNone))
	fmt.Println(status.Cancellable(status.InProgress, status.PhaseUpload))
	fmt.Println(status.Cancellable(status.InProgress, status.PhaseFlashing))
	fmt.Println(status.Cancellable(status.Failed, status.PhaseUpload))
	// Output:
	// true
	// true
	// false
	// false
}

// A batch's state follows from its operations' states, first matching rule
// wins.
func ExampleDeriveBatchState() {
	for _, c := range []status.Counts{
		{},
		{status.Success: 8, status.Pending: 2},
		{status.Success: 9, status.Aborted: 1},
		{status.Success: 9, status.Cancelled: 1},
		{status.Success: 10},
	} {
		fmt.Printf("%d operations: %s\n", c.Total(), status.DeriveBatchState(c))
	}
	// Output:
	// 0 operations: idle
	// 10 operations: in-progress
	// 10 operations: failed
	// 10 operations: cancelled
	// 10 operations: success
}

// Every terminal outcome carries a typed reason, which says how the
// operation ends and whether the engine may retry it before flashing.
func ExampleReason_Outcome() {
	for _, r := range []status.Reason{
		status.ReasonNone,
		status.ReasonConnectionFailed,
		status.ReasonUploadCorrupt,
		status.ReasonIdentityMismatch,
		status.ReasonAlreadyInstalled,
		status.ReasonUnreachableAfterFlash,
		status.ReasonCancelledByUser,
	} {
		fmt.Printf("%-25q outcome %-9s retryable %v\n", r, r.Outcome(), r.Retryable())
	}
	// Output:
	// ""                        outcome success   retryable false
	// "connection-failed"       outcome failed    retryable true
	// "upload-corrupt"          outcome aborted   retryable true
	// "identity-mismatch"       outcome aborted   retryable false
	// "already-installed"       outcome success   retryable false
	// "unreachable-after-flash" outcome failed    retryable false
	// "cancelled-by-user"       outcome cancelled retryable false
}

// Stores persist states, phases and reasons as strings and read them back
// with the Parse functions, which refuse unknown values.
func ExampleParseState() {
	s, err := status.ParseState("in-progress")
	fmt.Println(s, err, s.Terminal())
	s, err = status.ParseState("success")
	fmt.Println(s, err, s.Terminal())
	_, err = status.ParseState("done")
	fmt.Println(err)
	// Output:
	// in-progress <nil> false
	// success <nil> true
	// status: unknown operation state "done" (want one of [pending in-progress success failed aborted cancelled])
}

// The upload fills the progress between the checksum and upload milestones.
func ExampleUploadProgress() {
	const size = 8 << 20
	for _, sent := range []int64{0, size / 4, size / 2, size} {
		fmt.Println(status.UploadProgress(sent, size))
	}
	fmt.Println(status.ProgressFlashing, status.ProgressDone)
	// Output:
	// 20
	// 30
	// 40
	// 60
	// 65 100
}
