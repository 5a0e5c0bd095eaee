// Package status defines the vocabulary every other fwupgrader package speaks:
// the states of an upgrade operation and of a batch, the phases an operation
// goes through while it runs, the progress milestones, and the typed reasons
// that explain every terminal outcome.
//
// The package is a leaf: it imports nothing of fwupgrader, so stores written
// by hosts can depend on it without pulling in the engine.
//
// # Operation states
//
//	pending ──► in-progress ──► success | failed | aborted | cancelled
//	   └──────────────────────► cancelled | aborted
//
// The four outcomes are terminal: [CanTransition] refuses every move out of
// them, and stores enforce that with store.ErrInvalidTransition.
//
// # Phases and the point of no return
//
// While in progress, an operation is in one [Phase] (connecting, identity,
// checksum, memory, upload, image-test, flashing, rebooting, verifying).
// [PhaseFlashing] is the point of no return: from there on the operation can no
// longer be cancelled or retried ([Cancellable], [Phase.AfterPointOfNoReturn]).
//
// # Batches
//
// A batch's state is derived from the states of its operations by
// [DeriveBatchState]; [BatchPaused] is only ever set explicitly, when a rollout's
// failure threshold trips.
package status
