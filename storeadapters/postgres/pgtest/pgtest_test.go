package pgtest_test

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func setting(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, name string) string {
	t.Helper()
	var v string
	require.NoError(t, q.QueryRow(context.Background(), "SELECT current_setting($1)", name).Scan(&v))
	return v
}

// TestShared checks the shared cluster of Start: reachable, and run with
// the settings the package documents (no TCP, fsync and synchronous
// commits off, autovacuum on).
func TestShared(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	if os.Getenv(pgtest.EnvURL) != "" {
		t.Skipf("%s is set: not a cluster of pgtest's", pgtest.EnvURL)
	}
	assert.Equal(t, "", setting(t, pool, "listen_addresses"))
	assert.Equal(t, "off", setting(t, pool, "fsync"))
	assert.Equal(t, "off", setting(t, pool, "synchronous_commit"))
	assert.Equal(t, "on", setting(t, pool, "autovacuum"))
	assert.Equal(t, "5s", setting(t, pool, "autovacuum_naptime"))
	assert.Equal(t, pgtest.URL(t), pgtest.URL(t), "one cluster")
}

// TestCluster stops a cluster of its own with each signal Stop takes and
// starts it again: once Stop returned, the process of a session it had
// runs no more, the session is gone and nothing connects; after Start, every commit acknowledged before the stop is there
// (synchronous_commit is on) and a transaction open at the stop is not.
// When the test that made it ends, the server is stopped and its files
// removed.
func TestCluster(t *testing.T) {
	t.Parallel()
	var dir, u string
	t.Run("Restarts", func(t *testing.T) {
		c := pgtest.NewCluster(t)
		u = c.URL()
		pu, err := url.Parse(u)
		require.NoError(t, err)
		dir = pu.Query().Get("host")
		require.DirExists(t, dir)
		ctx := context.Background()
		conn := connect(t, u)
		assert.Equal(t, "on", setting(t, conn, "synchronous_commit"))
		_, err = conn.Exec(ctx, "CREATE TABLE kept (n int)")
		require.NoError(t, err)
		require.NoError(t, conn.Close(ctx))

		for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
			conn := connect(t, u)
			_, err := conn.Exec(ctx, "INSERT INTO kept VALUES ($1)", i)
			require.NoError(t, err)
			var backend int
			require.NoError(t, conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend))
			if sig == syscall.SIGTERM {
				// A smart shutdown waits for the sessions to end.
				require.NoError(t, conn.Close(ctx))
			} else {
				tx, err := conn.Begin(ctx)
				require.NoError(t, err)
				_, err = tx.Exec(ctx, "INSERT INTO kept VALUES (-1)")
				require.NoError(t, err)
			}

			c.Stop(sig)
			assert.False(t, running(backend), "%v: the session's process outlived Stop", sig)
			c.Stop(sig) // stopped already: nothing to do
			if sig != syscall.SIGTERM {
				_, err = conn.Exec(ctx, "SELECT 1")
				assert.Error(t, err, "%v: the session outlived the server", sig)
				_ = conn.Close(ctx)
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = pgx.Connect(cctx, u)
			cancel()
			assert.Error(t, err, "%v: connected to a stopped server", sig)

			c.Start()
			c.Start() // running already: nothing to do
			conn = connect(t, u)
			var n, bad int
			require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FILTER (WHERE n >= 0), count(*) FILTER (WHERE n < 0) FROM kept").Scan(&n, &bad))
			assert.Equal(t, i+1, n, "%v: committed rows", sig)
			assert.Zero(t, bad, "%v: rows of a transaction open at the stop", sig)
			require.NoError(t, conn.Close(ctx))
		}

		const downtime = 100 * time.Millisecond
		took := c.Restart(syscall.SIGKILL, downtime)
		assert.GreaterOrEqual(t, took, downtime)
		conn = connect(t, u)
		var n int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM kept").Scan(&n))
		assert.Equal(t, 4, n, "after Restart")
		require.NoError(t, conn.Close(ctx))
	})
	if dir == "" {
		return // skipped or failed before the cluster existed
	}
	assert.NoDirExists(t, dir, "the cluster's files outlived its test")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, u)
	assert.Error(t, err, "the cluster's server outlived its test")
}

func connect(t *testing.T, u string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	return conn
}

// running tells whether process pid runs (exists and is not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
