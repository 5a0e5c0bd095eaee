// Package memory is the in-process fwupgrader store: every record lives in
// maps guarded by one sync.RWMutex, so it is safe for concurrent use and
// needs no setup. It is the embedded default for a single process, for
// examples and for tests; nothing survives a restart.
//
// It passes store/storetest. The engine's hot path (UpdateOperation,
// SetProgress, AppendLog, Operation, CreateOperation) is O(1) amortised:
// operations are indexed per device and per batch, and each batch keeps its
// per-state counts up to date incrementally.
//
//	s := memory.New()
//	cat, err := s.CreateCategory(ctx, store.Category{Name: "Archer C7"})
package memory
