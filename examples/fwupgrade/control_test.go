package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

// pgEnv is a PostgreSQL database with a schema of the test's own, and the
// flags that name it.
type pgEnv struct {
	pool   *pgxpool.Pool
	schema string
	flags  []string
	store  *postgres.Store
}

// newPG skips the test (pgtest decides, and fails instead in CI) when
// PostgreSQL is not available.
func newPG(t *testing.T) *pgEnv {
	t.Helper()
	pool := pgtest.Start(t)
	schema := "fwcli_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16]
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	st, err := postgres.New(pool, postgres.WithSchema(schema))
	require.NoError(t, err)
	return &pgEnv{pool: pool, schema: schema, flags: []string{"--store", pgtest.URL(t), "--schema", schema}, store: st}
}

func (p *pgEnv) schemaExists(t *testing.T) bool {
	t.Helper()
	var n int
	require.NoError(t, p.pool.QueryRow(t.Context(), "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", p.schema).Scan(&n))
	return n > 0
}

func (p *pgEnv) batch(t *testing.T, id string) store.Batch {
	t.Helper()
	b, err := p.store.Batch(t.Context(), id)
	require.NoError(t, err)
	return b
}

func (p *pgEnv) ops(t *testing.T, id string) []store.Operation {
	t.Helper()
	ops, err := p.store.ListOperations(t.Context(), store.OperationFilter{BatchID: id})
	require.NoError(t, err)
	return ops
}

// control runs a control command on batch id and decodes its summary.
func (p *pgEnv) control(t *testing.T, cmd, id string, extra ...string) (int, batchSummary, string) {
	t.Helper()
	args := append(append([]string{cmd, "--batch", id, "--json"}, p.flags...), extra...)
	code, stdout, stderr := cli(t, args, nil)
	var sum batchSummary
	if code == exitSuccess {
		sum = decode[batchSummary](t, stdout, stderr)
	} else {
		assert.Empty(t, stdout, "%s: nothing on stdout when it fails", cmd)
	}
	return code, sum, stderr
}

func oneLineWith(t *testing.T, stderr string, want ...string) {
	t.Helper()
	msg := strings.TrimSpace(stderr)
	assert.NotContains(t, msg, "\n", "one line")
	for _, w := range want {
		assert.Contains(t, msg, w)
	}
}

func TestControlCommandsOnPostgres(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	f := newFleet(t,
		spec{name: "a", model: c7Model, board: c7Board},
		spec{name: "b", model: c7Model, board: c7Board},
	)

	// A bad inventory creates nothing, not even the schema.
	args := append(f.args("batch", "--image", f.c7Image, "--hold"), pg.flags...)
	args[2] = f.writeInventory(t, "empty.json", map[string]any{"devices": []any{}})
	code, _, stderr := cli(t, args, nil)
	require.Equal(t, exitUsage, code, stderr)
	assert.False(t, pg.schemaExists(t), "nothing created in the store")

	// batch --hold: the batch is stored, nothing starts.
	code, stdout, stderr := cli(t, append(f.args("batch", "--image", f.c7Image, "--hold", "--json"), pg.flags...), nil)
	require.Equal(t, exitSuccess, code, "stdout: %s\nstderr: %s", stdout, stderr)
	held := decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, "idle", held.State)
	assert.Equal(t, "postgres", held.Store)
	assert.Equal(t, 2, held.Counts.Pending)
	assert.Contains(t, stderr, "fwupgrade resume --store")
	id := held.BatchID
	assert.Equal(t, status.BatchIdle, pg.batch(t, id).State)
	assert.Empty(t, f.contacted())

	code, sum, stderr := pg.control(t, "status", id)
	require.Equal(t, exitSuccess, code, stderr)
	assert.Equal(t, id, sum.BatchID)
	assert.Equal(t, "idle", sum.State)
	assert.Equal(t, summaryCounts{Total: 2, Pending: 2}, sum.Counts)
	names := []string{sum.Operations[0].Name, sum.Operations[1].Name}
	assert.ElementsMatch(t, []string{"a", "b"}, names, "status names the devices from the store")

	code, _, stderr = pg.control(t, "pause", id)
	assert.Equal(t, exitError, code)
	oneLineWith(t, stderr, "never started")

	// resume without --inventory starts it; nobody runs it yet.
	code, sum, stderr = pg.control(t, "resume", id)
	require.Equal(t, exitSuccess, code, stderr)
	assert.Equal(t, "in-progress", sum.State)
	assert.Equal(t, status.BatchInProgress, pg.batch(t, id).State)

	code, sum, stderr = pg.control(t, "pause", id)
	require.Equal(t, exitSuccess, code, stderr)
	assert.Equal(t, "paused", sum.State)
	b := pg.batch(t, id)
	assert.Equal(t, status.BatchPaused, b.State)
	assert.Equal(t, status.PauseOperator, b.PauseReason)
	code, _, stderr = pg.control(t, "pause", id)
	assert.Equal(t, exitSuccess, code, "pausing a paused batch is no error")
	assert.Contains(t, stderr, "already paused")
	assert.Empty(t, f.contacted(), "no process ran the batch")

	// resume --inventory runs it here.
	resume := append(f.args("resume", "--batch", id, "--json"), pg.flags...)
	code, stdout, stderr = cli(t, resume, nil)
	require.Equal(t, exitSuccess, code, "stdout: %s\nstderr: %s", stdout, stderr)
	sum = decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, "success", sum.State)
	assert.Equal(t, summaryCounts{Total: 2, Success: 2}, sum.Counts)
	assert.Equal(t, status.BatchSuccess, pg.batch(t, id).State)
	for _, d := range f.devices {
		assert.Equal(t, 1, d.dev.Flashed(), d.name)
		assert.Equal(t, newRelease, d.dev.Release(), d.name)
	}

	code, _, stderr = pg.control(t, "cancel", id)
	assert.Equal(t, exitError, code)
	oneLineWith(t, stderr, "already ended")
	code, _, stderr = pg.control(t, "status", uuid.NewString())
	assert.Equal(t, exitError, code)
	oneLineWith(t, stderr, "not found", pg.schema)
	code, _, stderr = cli(t, []string{"status", "--store", pg.flags[1], "--schema", "no_such_schema", "--batch", id}, nil)
	assert.Equal(t, exitError, code)
	oneLineWith(t, stderr, "no_such_schema", "no fwupgrader tables")

	// The same images again: the build is found again and the devices
	// already run it, so there is nothing to do, and that is a success.
	code, stdout, stderr = cli(t, append(f.args("batch", "--image", f.c7Image, "--hold", "--json"), pg.flags...), nil)
	require.Equal(t, exitSuccess, code, "stdout: %s\nstderr: %s", stdout, stderr)
	again := decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, "nothing-selected", again.State)
	require.Len(t, again.Skipped, 2)
	for _, s := range again.Skipped {
		assert.Equal(t, "already-on-build", s.Reason)
	}

	// A newer image: a new batch, held, then cancelled before it starts.
	newer := writeImage(t, f.dir, "openwrt-23.05.4-"+c7Type,
		openwrttest.Image{Boards: []string{c7Board}, Release: "OpenWrt 23.05.4 r24012-d8dd03c46f", Size: 256 << 10})
	code, stdout, stderr = cli(t, append(f.args("batch", "--image", newer, "--hold", "--json"), pg.flags...), nil)
	require.Equal(t, exitSuccess, code, "stdout: %s\nstderr: %s", stdout, stderr)
	second := decode[batchSummary](t, stdout, stderr).BatchID
	require.NotEqual(t, id, second)
	code, sum, stderr = pg.control(t, "cancel", second)
	require.Equal(t, exitSuccess, code, stderr)
	assert.Equal(t, "cancelled", sum.State)
	assert.Equal(t, status.BatchCancelled, pg.batch(t, second).State)
	for _, op := range pg.ops(t, second) {
		assert.Equal(t, status.Cancelled, op.State)
	}
	code, _, stderr = pg.control(t, "resume", second)
	assert.Equal(t, exitError, code)
	oneLineWith(t, stderr, "nothing to resume")
	for _, d := range f.devices {
		assert.Equal(t, 1, d.dev.Flashed(), "%s: the cancelled batch flashed nothing", d.name)
	}
}

func TestBatchOnPostgresCtrlCThenResumeElsewhere(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	f := newFleet(t,
		spec{name: "a", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
		spec{name: "b", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
		spec{name: "c", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
	)
	sig := make(chan os.Signal, 1)
	go func() {
		if eventually(func() bool { return len(f.contacted()) > 0 }) {
			sig <- os.Interrupt
		}
	}()
	code, stdout, stderr := cli(t, append(f.args("batch", "--image", f.c7Image, "--concurrency", "1", "--json"), pg.flags...), sig)
	require.Equal(t, exitCancelled, code, "stdout: %s\nstderr: %s", stdout, stderr)
	sum := decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, "paused", sum.State)
	assert.Equal(t, 1, sum.Counts.Success)
	assert.Equal(t, 2, sum.Counts.Pending)
	assert.Contains(t, stderr, "fwupgrade resume --store ")
	assert.Contains(t, stderr, "--schema "+pg.schema+" --batch "+sum.BatchID+" --inventory ")
	assert.Contains(t, stderr, "fwupgrade cancel --store ")
	assert.NotContains(t, stderr, "lived only in this process")
	b := pg.batch(t, sum.BatchID)
	assert.Equal(t, status.BatchPaused, b.State)
	assert.Len(t, f.contacted(), 1)

	// Another process (another operator) resumes it and runs the rest.
	code, stdout, stderr = cli(t, append(f.args("resume", "--batch", sum.BatchID, "--json"), pg.flags...), nil)
	require.Equal(t, exitSuccess, code, "stdout: %s\nstderr: %s", stdout, stderr)
	done := decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, summaryCounts{Total: 3, Success: 3}, done.Counts)
	assert.Equal(t, status.BatchSuccess, pg.batch(t, sum.BatchID).State)
	for _, d := range f.devices {
		assert.Equal(t, 1, d.dev.Flashed(), "%s is flashed exactly once", d.name)
	}
}

func TestResumeNeedsEveryDeviceInTheInventory(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	f := newFleet(t,
		spec{name: "a", model: c7Model, board: c7Board},
		spec{name: "b", model: c7Model, board: c7Board},
	)
	code, stdout, stderr := cli(t, append(f.args("batch", "--image", f.c7Image, "--hold", "--json"), pg.flags...), nil)
	require.Equal(t, exitSuccess, code, stderr)
	id := decode[batchSummary](t, stdout, stderr).BatchID
	partial := f.writeInventory(t, "partial.json", map[string]any{
		"defaults": map[string]any{"identity_file": "id_ed25519", "known_hosts": "known_hosts"},
		"devices":  []any{f.devices[0].entry},
	})
	args := append(f.args("resume", "--batch", id), pg.flags...)
	args[2] = partial
	code, stdout, stderr = cli(t, args, nil)
	assert.Equal(t, exitUsage, code)
	assert.Empty(t, stdout)
	oneLineWith(t, stderr, "lacks 1 devices", f.devices[1].id, "nothing was resumed")
	assert.Equal(t, status.BatchIdle, pg.batch(t, id).State, "the batch was not started")
	assert.Empty(t, f.contacted())
}

func TestBatchWaitsWhilePausedByAnotherOperator(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	f := newFleet(t,
		spec{name: "a", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
		spec{name: "b", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
		spec{name: "c", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
	)
	var stdout, stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		done <- run(ctx, append(f.args("batch", "--image", f.c7Image, "--concurrency", "1", "--wait-paused",
			"--name", "waits", "--json"), pg.flags...), &stdout, &stderr, make(chan os.Signal))
	}()
	require.True(t, eventually(func() bool { return len(f.contacted()) > 0 }), "a device is contacted")
	// The batch's id, from the store: the only batch of the schema.
	var id string
	require.True(t, eventually(func() bool {
		bs, err := pg.store.ListBatches(t.Context(), store.BatchFilter{})
		if err == nil && len(bs) == 1 {
			id = bs[0].ID
		}
		return id != ""
	}))
	code, _, msg := pg.control(t, "pause", id)
	require.Equal(t, exitSuccess, code, msg)
	// The running device finishes; the command says it waits, and does.
	for !strings.Contains(stderr.String(), "is paused (operator): waiting for fwupgrade resume") {
		select {
		case code := <-done:
			t.Fatalf("batch ended while paused: %d\n%s\n%s", code, stdout.String(), stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	b := pg.batch(t, id)
	assert.Equal(t, status.BatchPaused, b.State)
	assert.Equal(t, 1, b.Counts[status.Success])
	assert.Len(t, f.contacted(), 1)
	code, _, msg = pg.control(t, "resume", id)
	require.Equal(t, exitSuccess, code, msg)
	require.Equal(t, exitSuccess, <-done, "stdout: %s\nstderr: %s", stdout.String(), stderr.String())
	sum := decode[batchSummary](t, stdout.String(), stderr.String())
	assert.Equal(t, "waits", sum.Name)
	assert.Equal(t, summaryCounts{Total: 3, Success: 3}, sum.Counts)
	for _, d := range f.devices {
		assert.Equal(t, 1, d.dev.Flashed(), d.name)
	}
}

// lockedBuffer is a bytes.Buffer that a command writes while a test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
