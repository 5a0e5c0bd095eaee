// Package postgres is the PostgreSQL fwupgrader store (store.Store), for
// engines in one process or many sharing a database. It passes
// store/storetest.
//
//	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL")) // the host's pool
//	s, err := postgres.New(pool, postgres.WithSchema("fwupgrader"))
//	err = s.Migrate(ctx) // or apply postgres.Migrations() with your own tool
//	eng, err := upgrader.NewEngine(s, reg, nil)
//
// # Schema
//
// Every table lives in one schema (DefaultSchema unless WithSchema names
// another, so that installations share a database). Migrate creates it and
// applies the embedded migrations, recorded in schema_migrations, under a
// transaction-level advisory lock, so processes may migrate at once.
// Migrations returns the files for hosts that run migrations themselves; each
// writes SchemaPlaceholder where the quoted schema name goes.
//
// The records are real columns: a batch's rollout included (wave sizes as
// two arrays, windows as three, durations in nanoseconds), and each wave's
// tally in batch_waves, written in the transaction that changes one of the
// batch's operations, under the batch row's lock, so a batch reads in one
// statement and its counts never drift. Log lines are rows of their own
// (operation_logs, numbered per operation under the operation row's lock),
// so an append never rewrites the operation. What can be enforced by the
// database is: unique and partial unique indexes (one non-terminal
// operation per device, names per organization, OS identifiers, ...),
// foreign keys (a build's and an image's organization are their parent's
// through composite keys) and checks (states, progress, a terminal operation
// has no lease, a wave's counts add up to its size, ...). IDs are in the "C"
// collation so the database sorts them as Go does.
//
// # Rules and clock
//
// Every change locks the rows it reads (SELECT ... FOR NO KEY UPDATE), applies
// the rule functions of package store to them (ApplyUpdate, ApplyClaim,
// RenewOne, CheckRelease, Expired and ExpireUpdate, ApplyBatchState,
// CheckRolloutChange, CancelInBatch, NextWave, Tally and
// AfterOperationChange, ClaimAllowed), so this store and the memory one
// follow the same rules, and writes the result back in the same
// transaction. Times are the database's clock (clock_timestamp()), never the
// process's, stored as timestamptz truncated to the microsecond and returned
// in UTC; a zero time is NULL. Driver errors become the store's sentinels in
// one place (a unique violation of the one-operation-per-device index is
// store.ErrDeviceBusy, another store.ErrConflict, a foreign key violation
// store.ErrNotFound); a transaction that loses a deadlock (possible between
// two batches created at once over the same devices in different orders)
// runs again.
//
// Locks are taken operation rows before batch rows, several of a kind in ID
// order. See claims.go for how ClaimOperations keeps a batch's caps (live
// leases, per group, start rate) across processes without scanning a large
// capped batch.
//
// Statements of a transaction that need nothing from each other's results
// are sent together (pipelined, one round trip; see pipeline.go): an
// UpdateOperation is four round trips, BEGIN and COMMIT included.
//
// # Timeouts
//
// The store sets no server timeouts: the host owns the pool and its
// settings. A process frozen in the middle of a transaction holds the rows
// it locked (its operation, and a batch's row, which every other engine's
// changes to that batch wait for) until the server notices. Set
// idle_in_transaction_session_timeout on the pool (the store's transactions
// never wait on anything but the database) and, if wanted, lock_timeout:
//
//	cfg, _ := pgxpool.ParseConfig(url)
//	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "30s"
//	cfg.ConnConfig.RuntimeParams["lock_timeout"] = "10s"
//	pool, _ := pgxpool.NewWithConfig(ctx, cfg)
//
// A statement that times out fails its call with an error that is none of
// the store's sentinels, and changes nothing (TestServerTimeoutsAsDocumented).
//
// # Notifications and image bytes
//
// The store implements store.Notifier with LISTEN/NOTIFY on a channel of its
// schema (NotifyChannel): notices are sent inside the transaction of the
// change (new or released work, a batch started, resumed or changed, an
// operation cancelled), so none is seen before its change commits. Listen
// holds one connection of its own. Notices are hints; engines keep polling.
//
// Files (NewFiles) keeps image bytes in the database, in chunks
// (FileChunkSize), streamed both ways and readable at any offset, so a
// deployment on several machines needs nothing but PostgreSQL.
//
// # Sizes
//
// Measured on a 2-core machine against a local PostgreSQL 15 (fsync off):
// CreateBatch of 100,000 operations (COPY in one transaction) about 3 s, a
// claim with such a batch held back by its wave or capped about 1 ms,
// CancelBatch of it about 5 s.
package postgres
