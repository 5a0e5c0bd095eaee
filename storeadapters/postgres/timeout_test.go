package postgres_test

import (
	"errors"
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

// poolWith returns a pool on the test database with the given run-time
// parameters on every connection, closed when t ends.
func poolWith(t *testing.T, params map[string]string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	require.NoError(t, err)
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// TestServerTimeoutsAsDocumented checks the package documentation's
// advice on timeouts: with lock_timeout, a change that waits too long for
// a batch row fails with an error that is none of the store's sentinels and
// changes nothing; with idle_in_transaction_session_timeout, a process
// frozen in a transaction holding that row loses it, and the change then
// goes through.
func TestServerTimeoutsAsDocumented(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a := newStore(t, pgtest.Start(t))
	cat := must(a.CreateCategory(ctx, store.Category{Organization: "org", Name: "c"}))
	build := must(a.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"}))
	im := must(a.CreateImage(ctx, store.Image{BuildID: build.ID, Type: "t", Name: "n.bin", SHA256: "0000000000000000000000000000000000000000000000000000000000000000"}))
	d := must(a.PutDevice(ctx, store.Device{ID: "d1", Organization: "org"}))
	bt, ops, err := a.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: build.ID, State: status.BatchInProgress},
		[]store.Operation{{DeviceID: d.ID, ImageID: im.ID}})
	require.NoError(t, err)
	claimed := must(a.ClaimOperations(ctx, "engine", 1, time.Minute))
	require.Len(t, claimed, 1)
	start := store.OperationUpdate{From: status.Pending, State: status.InProgress, Token: claimed[0].Token}

	// A "frozen process": a transaction holding the batch's row, idle.
	frozen := poolWith(t, map[string]string{"idle_in_transaction_session_timeout": "1500ms"})
	tx, err := frozen.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM `+a.Schema()+`.batches WHERE id = $1 FOR UPDATE`, bt.ID)
	require.NoError(t, err)

	impatient, err := postgres.New(poolWith(t, map[string]string{"lock_timeout": "200ms"}), postgres.WithSchema(a.Schema()))
	require.NoError(t, err)
	_, err = impatient.UpdateOperation(ctx, ops[0].ID, start)
	require.Error(t, err, "the batch row is held: lock_timeout must end the wait")
	for _, sentinel := range []error{store.ErrNotFound, store.ErrConflict, store.ErrInvalid, store.ErrInvalidTransition,
		store.ErrDeviceBusy, store.ErrOrganizationMismatch, store.ErrLeased, store.ErrStaleToken} {
		assert.False(t, errors.Is(err, sentinel), "a timeout is not %v: %v", sentinel, err)
	}
	got := must(a.Operation(ctx, ops[0].ID))
	assert.Equal(t, status.Pending, got.State, "nothing changed")
	assert.Equal(t, 0, must(a.Batch(ctx, bt.ID)).Counts[status.InProgress])

	// Without lock_timeout the change waits, until the server ends the
	// frozen transaction.
	next, err := a.UpdateOperation(ctx, ops[0].ID, start)
	require.NoError(t, err)
	assert.Equal(t, status.InProgress, next.State)
	assert.Equal(t, 1, must(a.Batch(ctx, bt.ID)).Counts[status.InProgress])
	assert.Error(t, tx.Commit(ctx), "the server ended the idle transaction")
}
