// Package pgtest gives tests a PostgreSQL database.
//
// With FWUPGRADER_TEST_DATABASE_URL set, tests use that database (they create
// and drop their own schemas in it). Otherwise the first test that asks
// starts a throwaway cluster, once per test binary: initdb and postgres are
// looked for in /usr/lib/postgresql/*/bin (the newest version first) and on
// PATH; running as root, they run as the postgres user. The cluster listens
// only on a Unix socket in a temporary directory (no TCP), with fsync off, and
// is stopped by Stop, which the test package's TestMain calls after m.Run;
// Main does that, and also checks that the tests left no goroutine running:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Should the test binary die without calling Stop, the kernel stops the
// server (a parent-death signal), and the next start removes what it left.
//
// A test that stops the server under the code it tests (a crash, a
// shutdown, a restart) gets a cluster of its own from NewCluster, started
// the same way and removed when the test ends.
//
// Without the binaries a test is skipped, with a message saying how to
// install them (Debian: apt-get install postgresql), unless
// FWUPGRADER_REQUIRE_POSTGRES=1, which makes it fail instead.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
)

// Environment variables.
const (
	// EnvURL names a database to use instead of starting a cluster.
	EnvURL = "FWUPGRADER_TEST_DATABASE_URL"
	// EnvRequire set to 1 makes a missing PostgreSQL a failure, not a skip.
	EnvRequire = "FWUPGRADER_REQUIRE_POSTGRES"
)

// MaxConns is the size of the pools Start returns.
const MaxConns = 8

var (
	mu       sync.Mutex
	started  bool
	srv      *server
	startErr error
	skipMsg  string
)

// URL returns the URL of the test database, starting the cluster on first
// use; it skips (or fails, see EnvRequire) t when PostgreSQL is not
// installed.
func URL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	mu.Lock()
	if !started {
		started = true
		srv, skipMsg, startErr = startShared()
	}
	s, skip, err := srv, skipMsg, startErr
	mu.Unlock()
	switch {
	case skip != "":
		skipTest(t, skip+", or set "+EnvURL)
	case err != nil:
		t.Fatalf("pgtest: %v", err)
	case s == nil:
		t.Fatal("pgtest: the server was stopped")
	}
	return s.url
}

// Start returns a pool of at most MaxConns connections to the test database
// (see URL), closed when t ends.
func Start(t testing.TB) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(URL(t))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cfg.MaxConns = MaxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Stop stops the cluster started by URL or Start, if any, and removes its
// files. Later calls of URL fail.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	started = true
	if srv == nil {
		return
	}
	srv.remove()
	srv = nil
}

// Main runs a test package's tests, stops the cluster (Stop), then fails the
// run when a goroutine the tests started is still running (goleak.Find with
// opts: a Listen not ended, a pool not closed, an engine not stopped), and
// exits. Call it from TestMain.
func Main(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	Stop()
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: goroutines left running after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startShared starts the cluster of URL and Start.
func startShared() (*server, string, error) {
	s, skip, err := newServer(false)
	if s == nil {
		return nil, skip, err
	}
	if err := s.start(); err != nil {
		s.remove()
		return nil, "", err
	}
	return s, "", nil
}

// skipTest skips t because PostgreSQL is not available, or fails it with
// EnvRequire=1.
func skipTest(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("pgtest: %s (%s=1)", why, EnvRequire)
	}
	t.Skipf("pgtest: %s", why)
}
