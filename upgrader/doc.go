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
// [Aborted], [NotNeeded], [Recoverable] or [Failed]. Image bytes live in
// [Files] ([MemFiles], [DirFiles], or the host's own).
//
// # Running operations
//
//   - [Engine.Upgrade] checks a request, creates the operation and runs it in
//     the caller's goroutine until it ends; [Engine.Create] and [Engine.Run]
//     do the two halves.
//   - [Engine.Enqueue] hands the operation to the workers [Engine.Start]
//     launches; [Engine.Wait] waits for its end; [Engine.Stop] drains them.
//   - [Engine.Cancel] cancels an operation that is pending or in progress
//     before flashing; from status.PhaseFlashing on it returns
//     [ErrNotCancellable]. The store's compare-and-set decides between a
//     cancel and the move into flashing: exactly one wins.
//   - [Engine.Subscribe] streams [Event] values; a slow subscriber loses
//     events (counted in Event.Dropped) but never slows an upgrade.
//
// A request is refused ([RefusedError], nothing stored) when the device is
// deactivated, the image is of another organization, the image does not fit
// the device's board (Config.ImageMap or the image's own metadata), its
// options are invalid, or the device already has an operation under way.
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
// operation found at or after flashing by [Engine.Start] (after a crash) is
// verified, never flashed again. A panicking upgrader ends its operation
// failed. A successful operation records the device's firmware
// (store.DeviceFirmware) and OS identifier.
package upgrader
