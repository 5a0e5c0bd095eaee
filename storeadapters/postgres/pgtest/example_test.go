package pgtest_test

import (
	"context"
	"crypto/rand"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

// A test package that needs PostgreSQL stops the throwaway cluster after its
// tests in TestMain, and each test takes a pool and works in a schema of its
// own, so tests run in parallel on one cluster.
//
// pgtest needs a *testing.T (it skips a test when PostgreSQL is not
// installed), so this example is only compiled, not run: the two functions
// below are what goes into the test package.
func ExampleStart() {
	TestMain := func(m *testing.M) {
		code := m.Run()
		pgtest.Stop() // the cluster the first test started, if any
		os.Exit(code)
	}

	TestDevices := func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Start(t) // closed when t ends
		schema := "t_" + strings.ToLower(rand.Text())
		st, err := postgres.New(pool, postgres.WithSchema(schema))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = pool.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		})

		d, err := st.PutDevice(t.Context(), store.Device{ID: "ap-1", Connection: "openwrt-ssh", Active: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := st.Device(t.Context(), d.ID); err != nil || got.ID != "ap-1" {
			t.Fatalf("Device: %+v, %v", got, err)
		}
	}

	_, _ = TestMain, TestDevices
}

// URL gives the database's URL, for code that opens its own connections (a
// pool with other settings, a child process under test). Set
// FWUPGRADER_TEST_DATABASE_URL to use an existing database instead of a
// throwaway cluster. Only compiled, not run: it needs a *testing.T.
func ExampleURL() {
	TestOwnPool := func(t *testing.T) {
		conn, err := pgx.Connect(t.Context(), pgtest.URL(t))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var one int
		if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("SELECT 1: %d, %v", one, err)
		}
	}
	_ = TestOwnPool
}

// A test that crashes or restarts the database under the code it tests
// takes a cluster of its own: NewCluster starts it, Stop, Start and Restart
// act on its server, and it is removed when the test ends. Only compiled,
// not run: it needs a *testing.T.
func ExampleNewCluster() {
	TestCommitSurvivesCrash := func(t *testing.T) {
		c := pgtest.NewCluster(t)
		ctx := t.Context()
		conn, err := pgx.Connect(ctx, c.URL())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)"); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)

		// SIGKILL: every server process killed at once; back after
		// 100 ms, once it recovered from the WAL.
		down := c.Restart(syscall.SIGKILL, 100*time.Millisecond)
		t.Logf("database down for %s", down)

		conn, err = pgx.Connect(ctx, c.URL()) // the same URL
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(ctx, "SELECT n FROM kept").Scan(&n); err != nil || n != 42 {
			t.Fatalf("after the crash: %d, %v", n, err)
		}
	}
	_ = TestCommitSurvivesCrash
}
