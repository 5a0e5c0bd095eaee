// Package upgradertest helps people who write their own upgraders and test
// code that uses the engine.
//
// [Run] is the conformance suite a custom [upgrader.Upgrader] (and its
// optional [upgrader.Verifier]) passes; it is given a [Harness] that makes
// jobs for fresh simulated or real devices. [Fake] is a scriptable Upgrader
// (and Verifier) for tests of the engine and of hosts; [Reporter] is a
// recording upgrader.Reporter, with the engine's cancel rules, for calling
// an Upgrader without an engine.
//
// # What Run checks
//
// Each line is a subtest of Run, run in parallel on a fresh harness; a
// failure starts with "contract: " and names the line it broke. A behaviour
// with no subtest is not part of the contract.
//
//   - SuccessPhasesInOrder: the upgrade of a fresh device (Harness.NewJob)
//     returns nil, reports known phases in order, reports at least one phase
//     before [status.PhaseFlashing] and enters PhaseFlashing (a fresh device
//     needs a flash), stops when a Phase call before flashing fails, reports
//     progress from 0 to 100, and (with Harness.Flashed) did flash the
//     device: a success without a flash is a false success.
//   - CancelledBeforeStart, CancelWinsAtEachPhaseBeforeFlashing (the Phase
//     call for that phase is refused) and CancelWhileInEachPhaseBeforeFlashing
//     (the cancel comes from another goroutine once the upgrader entered
//     that phase): Upgrade returns an error matching [upgrader.ErrCancelled]
//     and does not flash: it never enters PhaseFlashing, never goes on to a
//     later phase after Phase(PhaseFlashing) failed, and (with
//     Harness.Flashed) leaves the device unflashed.
//   - HonoursCancelledContext and ContextEndsInEachPhaseBeforeFlashing: with
//     ctx ended before the start or while in a phase before flashing, Upgrade
//     returns an error (never nil) within Harness.Timeout and does not flash.
//     Like the engine's, the suite's Reporter refuses Phase once ctx ended.
//   - UnreachableDeviceIsRecoverable (with Harness.UnreachableFunc): an
//     unreachable device gives an error classified [upgrader.KindRecoverable],
//     not a plain error, and no flash.
//   - VerifyAfterSuccess (Verifiers): after a successful Upgrade, Verify
//     returns nil, never calls Phase(PhaseFlashing) and (with
//     Harness.FlashCountFunc) does not change the device's flash count.
//   - VerifyOnUntouchedDeviceFails (Verifiers): Verify of a device that was
//     never upgraded returns an error (not nil, not NotNeeded: a false
//     success), never calls Phase(PhaseFlashing) and (with Harness.Flashed
//     or Harness.FlashCountFunc) leaves the device unflashed.
//   - VerifyHonoursCancelledContext (Verifiers): Verify of a device that was
//     never upgraded, with ctx ended, returns an error within
//     Harness.Timeout and does not flash.
//   - RestoreUndoesAnInterruptedAttempt (Restorers): given every undo
//     record an attempt cancelled as it entered PhaseFlashing kept (as if
//     it had died before its own cleanup), Restore returns nil, calls
//     neither Job.Report.Phase nor Progress and (with Harness.Flashed or
//     Harness.FlashCountFunc) does not flash; a second Restore of the same
//     records returns nil too (restores are idempotent).
//   - RestoreHonoursCancelledContext (Restorers): with ctx ended, Restore
//     returns within Harness.Timeout, does not return nil when there were
//     records to undo, calls neither Phase nor Progress and does not flash.
//
// The suite's [Reporter] is an [upgrader.UndoRecorder], as the engine's
// Reporter is: it refuses a record once a cancel won or ctx ended.
//
// In every subtest, Upgrade, Verify and Restore return within
// Harness.Timeout of the end of their context, do not panic, and classify
// their errors with a known [status.Reason].
//
// The suite is itself tested against broken upgraders (a Verify that always
// succeeds or that flashes, an Upgrade that ignores cancels and its context,
// skips phases or returns plain errors, a Restore that flashes, is not
// idempotent or ignores its context), each of which it must fail.
package upgradertest
