package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

// onePool returns a pool of one connection on the test database, with the
// given run-time parameters, closed when t ends.
func onePool(t *testing.T, params map[string]string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	require.NoError(t, err)
	cfg.MaxConns = 1
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// backend returns the pid of the pool's only connection and whether it is
// outside any transaction.
func backend(t *testing.T, pool *pgxpool.Pool) (int32, bool) {
	t.Helper()
	c, err := pool.Acquire(t.Context())
	require.NoError(t, err)
	defer c.Release()
	var pid int32
	require.NoError(t, c.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid))
	return pid, c.Conn().PgConn().TxStatus() == 'I'
}

// The two-round-trip calls (UpdateOperation, SetProgress, AppendLog) that
// fail, in either trip, for a rule of the store, a server error in the
// middle of the first pipeline (lock_timeout on the operation's row, the
// statements after it skipped) or a cancelled context, change nothing and
// give the connection back to the pool out of any transaction; a ROLLBACK
// keeps it (the same backend) unless the context ended mid-trip.
func TestTx2FailuresLeaveTheConnectionClean(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newStore(t, pgtest.Start(t))
	cat := must(a.CreateCategory(ctx, store.Category{Organization: "org", Name: "c"}))
	build := must(a.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"}))
	im := must(a.CreateImage(ctx, store.Image{BuildID: build.ID, Type: "t", Name: "n.bin",
		SHA256: "0000000000000000000000000000000000000000000000000000000000000000"}))
	d := must(a.PutDevice(ctx, store.Device{ID: "d1", Organization: "org"}))
	_, ops, err := a.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: build.ID, State: status.BatchInProgress},
		[]store.Operation{{DeviceID: d.ID, ImageID: im.ID}})
	require.NoError(t, err)
	op := ops[0]
	claimed := must(a.ClaimOperations(ctx, "engine", 1, time.Minute))
	require.Len(t, claimed, 1)
	tok := claimed[0].Token

	pool := onePool(t, map[string]string{"lock_timeout": "300ms"})
	s, err := postgres.New(pool, postgres.WithSchema(a.Schema()))
	require.NoError(t, err)
	pid, idle := backend(t, pool)
	require.True(t, idle)

	// Refused after the first trip: the rules of the store.
	require.ErrorIs(t, s.AppendLog(ctx, op.ID, tok+1, "stale"), store.ErrStaleToken)
	require.ErrorIs(t, s.SetProgress(ctx, op.ID, tok, 5), store.ErrInvalidTransition, "pending: no progress")
	require.ErrorIs(t, s.SetProgress(ctx, "nope", tok, 5), store.ErrNotFound)
	_, err = s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: status.Failed, Token: tok})
	require.ErrorIs(t, err, store.ErrInvalidTransition)
	got, idle := backend(t, pool)
	assert.True(t, idle)
	assert.Equal(t, pid, got, "ROLLBACK kept the connection")

	// A server error in the middle of the first trip: the row is held.
	holder, err := pgtest.Start(t).Begin(ctx)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT 1 FROM `+a.Schema()+`.operations WHERE id = $1 FOR UPDATE`, op.ID)
	require.NoError(t, err)
	_, err = s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Token: tok,
		Log: []string{"must not be written"}})
	require.Error(t, err, "lock_timeout")
	got, idle = backend(t, pool)
	assert.True(t, idle)
	assert.Equal(t, pid, got, "ROLLBACK kept the connection")

	// A context that ends while the first trip waits for the row.
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err = s.AppendLog(cctx, op.ID, tok, "must not be written either")
	cancel()
	require.Error(t, err)
	_, idle = backend(t, pool)
	assert.True(t, idle, "a connection cut off mid-trip is not handed out in a transaction")
	require.NoError(t, holder.Rollback(ctx))

	// Nothing was written, and the store works on.
	cur := must(s.Operation(ctx, op.ID))
	assert.Equal(t, status.Pending, cur.State)
	logs := must(s.Logs(ctx, op.ID, 0, 0))
	for _, l := range logs {
		assert.NotContains(t, l.Line, "must not be written")
	}
	next, err := s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Token: tok})
	require.NoError(t, err)
	assert.Equal(t, status.InProgress, next.State)
	assert.Equal(t, 1, must(s.Batch(ctx, op.BatchID)).Counts[status.InProgress])
}
