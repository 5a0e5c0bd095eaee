// Package store defines what fwupgrader persists and the contract every
// storage backend honours.
//
// The records ([Category], [Build], [Image], [Device], [DeviceFirmware],
// [Batch], [Operation], [LogEntry]) are plain values. The backends implement
// small role interfaces ([Categories], [Builds], [Images], [Devices],
// [DeviceFirmwares], [Batches], [Operations]); [Store] is all of them.
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
//     [ErrOrganizationMismatch]), matched with errors.Is; invalid values are
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
// IDs are strings. A store assigns [NewID] values (UUIDv7, so ID order is
// creation order) to records created with an empty ID; devices carry the
// host's own IDs.
package store
