// Package upgrader is fwupgrader's engine: it turns a store and the
// Upgraders registered for each kind of device into operations that always
// end, retrying recoverable failures, enforcing deadlines and cancellation,
// and telling the host what happens through events.
//
// # Seams
//
// Hosts implement [Upgrader] (and optionally [Verifier]) for their kinds of
// device and map connection kinds (store.Device.Connection) to them in a
// [Registry]; the openwrt package provides the OpenWrt-over-SSH upgrader,
// and upgrader/upgradertest the suite a custom upgrader passes. An attempt
// reports through its [Reporter] and returns nil or an error classified with
// [Aborted], [NotNeeded], [Recoverable] or [Failed]; it says what proved
// its success with [Prover]. Image bytes live in [Files] ([MemFiles],
// [DirFiles], or the host's own). An upgrader for devices whose images are in
// no OpenWrt image map also implements [ImageMatcher]; a host may decide
// compatibility itself with Config.Compatibility ([Compatibility]).
//
// # Running operations
//
//   - [Engine.Upgrade] checks a request, creates the operation and runs it in
//     the caller's goroutine until it ends; [Engine.Create] and [Engine.Run]
//     do the two halves.
//   - [Engine.Enqueue] creates the operation and leaves it to the workers
//     [Engine.Start] launches, in this engine or in any other engine that
//     shares the store; [Engine.Wait] waits for its end, whichever engine
//     ends it; [Engine.Stop] drains the workers.
//   - [Engine.Cancel] cancels an operation that is pending or in progress
//     before flashing; from status.PhaseFlashing on it returns
//     [ErrNotCancellable]. The store's compare-and-set decides between a
//     cancel and the move into flashing: exactly one wins. An attempt running
//     in another engine learns of the cancel at its next lease renewal.
//   - [Engine.Subscribe] streams [Event] values of this engine's work; a
//     slow subscriber loses events (counted in Event.Dropped) but never slows
//     an upgrade.
//
// # Many engines, one store
//
// The store decides who runs an operation (store.Claims), not a process's
// memory, so any number of engines, in one process or on many machines, may
// share one store. The engine is three parts:
//
//   - the producer claims as many runnable operations as its engine has free
//     workers (Config.Workers): pending ones, retries whose NextAttemptAt
//     came, and operations whose engine was lost (their lease expired). It
//     wakes on Enqueue, on a freed worker, at a retry it scheduled, and every
//     Config.PollInterval (with jitter) for work from elsewhere;
//   - the executor runs one claimed step: an attempt, a verification or the
//     end of the operation. Every write it makes carries the claim's fencing
//     token, so a holder that lost its lease cannot change the operation any
//     more; the move into flashing needs a live lease and happens once per
//     operation, ever. Leases are renewed in one store call per round, every
//     third of Config.LeaseDuration; an engine that cannot renew gives its
//     claims up on its own clock before the store can hand them to another;
//   - maintenance ends, at their deadline, the operations nobody holds.
//
// A claim that finds an attempt interrupted before flashing (its engine
// crashed) counts it and starts a new one; one at or after flashing calls
// the upgrader's [Verifier], never Upgrade again.
//
// A request is refused ([RefusedError], nothing stored) when the device is
// deactivated, the image is of another organization, the image does not fit
// the device ([Engine.Fits]: Config.Compatibility, else the device's
// upgrader when it is an ImageMatcher, else Config.ImageMap or the image's
// own metadata), its options are invalid, or the device already has an
// operation under way.
//
// # Outcomes
//
// Every operation ends in a terminal state with a status.Reason, whatever
// happens: recoverable failures before flashing are retried with the
// [RetryPolicy] (exponential backoff, by default 4 retries from 60 s capped
// at 600 s); the waits do not hold a worker. Config.OperationTimeout (25
// minutes by default) bounds the whole operation: on expiry it ends failed
// (timeout), except that an operation already flashing is first verified
// with the upgrader's Verifier and ends success if the device proves it runs
// the image. Nothing is retried or cancelled once flashing started, and an
// operation found at or after flashing by a claim (after a crash) is
// verified, never flashed again. A panicking upgrader ends its operation
// failed. Missing image bytes end an operation aborted at once
// (status.ReasonImageMissing). Every attempt repeats Create's checks
// (device active, organization, board, options), so an operation created
// directly in the store cannot skip them. A store write that ends an
// operation is retried with backoff until it lands, the lease is lost or the
// engine stops; an operation left unfinished is recovered by the next claim.
// A successful operation records the device's firmware (store.DeviceFirmware)
// and OS identifier before it is marked success.
package upgrader
