// Package store defines what fwupgrader persists and the contract every
// storage backend honours.
//
// The records ([Category], [Build], [Image], [Device], [DeviceFirmware],
// [Batch], [Operation], [LogEntry]) are plain values. The backends implement
// small role interfaces ([Categories], [Builds], [Images], [Devices],
// [DeviceFirmwares], [Batches], [Operations], [Claims]); [Store] is all of
// them.
// The in-memory adapter lives in storeadapters/memory, the PostgreSQL adapter
// in storeadapters/postgres, and store/storetest holds the conformance suite
// every adapter — including ones written by hosts — must pass. A behaviour
// with no subtest in storetest is not part of the contract.
//
// # Contract
//
// Every store:
//
//   - reports failures with the sentinel errors of this package ([ErrNotFound],
//     [ErrConflict], [ErrInvalid], [ErrInvalidTransition], [ErrDeviceBusy],
//     [ErrOrganizationMismatch], [ErrLeased], [ErrStaleToken]), matched with
//     errors.Is; invalid values are
//     reported as a *[ValidationError] naming the field;
//   - leaves itself unchanged when a call fails: no half-written records;
//   - keeps (category name, organization), (category, build version) and
//     (build, image type) unique, and a non-empty build OS identifier unique
//     per organization;
//   - keeps at most one non-terminal operation per device: a second is refused
//     with [ErrDeviceBusy] at creation;
//   - applies operation updates as compare-and-set on the state the caller
//     expects ([OperationUpdate.From]), enforcing [status.CanTransition] and the
//     point of no return (see [Operations.UpdateOperation]), so that a cancel
//     racing the move into flashing has exactly one winner;
//   - keeps terminal operations immutable except for appending log lines;
//   - applies progress and log appends as targeted updates that never
//     overwrite a concurrent state change;
//   - recomputes a batch's state from its operations on every operation
//     update, with [status.DeriveBatchState];
//   - never lets an image of one organization reach a device of another
//     (images of shared categories, with no organization, fit everyone);
//   - lists records in ascending ID order with filters and keyset pagination
//     ([Page]).
//
// Claims (see [Claims]); lease times come from the store's clock:
//
//   - a claim increments the operation's Token and Version and sets LeaseOwner
//     and LeaseExpiresAt (now + lease); its state, phase and the rest stay;
//   - [Claims.ClaimOperations] takes up to limit runnable operations (pending or
//     in progress, no live lease, NextAttemptAt come, allowed by [ClaimAllowed]:
//     a paused batch starts no pending operation), oldest NextAttemptAt first,
//     then in ID order, and answers an empty list, not an error, when none is;
//   - concurrent claims never take one operation twice while its lease lives;
//     a live lease is claimed by nobody, its owner included ([ErrLeased] from
//     [Claims.ClaimOperation]); an expired or released one is claimable again,
//     with a new token; a terminal operation never is ([ErrInvalidTransition]);
//     an operation that crashed in progress, before or after flashing, is;
//   - [Claims.ClaimOperation] ignores NextAttemptAt and the batch's policy;
//   - a write fenced with a token that is not the operation's (an update, a
//     progress, a log line, a release) is refused with [ErrStaleToken] and
//     changes nothing; token 0 is unfenced (a user's cancel) and wins before
//     flashing; a move to a terminal state ends the lease (LeaseExpiresAt zero,
//     LeaseOwner and Token kept);
//   - the move into flashing happens once per operation, ever, whoever races
//     for it; fenced, it needs a live lease ([ErrStaleToken] once the lease
//     expired or was released);
//   - [Claims.RenewLeases] answers per lease, in the order given: held (the
//     lease, even an expired one nobody took over, now ends at now + lease),
//     cancel requested (the owner's claim is the last, the operation was
//     cancelled; its lease stays ended), or lost (another claim, another owner,
//     another token, the operation ended otherwise, or no such operation);
//     renewals and releases do not change Version;
//   - [Claims.ReleaseOperation] ends a lease; a stale token is [ErrStaleToken],
//     a terminal operation is no error;
//   - [Claims.ExpireDeadlines] fails with [status.ReasonTimeout] up to limit
//     operations whose Deadline passed, before flashing and without a live
//     lease, each once however many engines call it, and updates their
//     batch's counts; it leaves alone operations at or after flashing;
//   - a claim's owner (an ID), limit and lease are validated ([ErrInvalid]).
//
// IDs are strings. A store assigns [NewID] values (UUIDv7, so ID order is
// creation order) to records created with an empty ID; devices carry the
// host's own IDs.
package store
