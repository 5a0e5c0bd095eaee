package pgtest

import (
	"sync"
	"syscall"
	"testing"
	"time"
)

// Cluster is a throwaway PostgreSQL cluster of one test's own, for a test
// that stops the server under the code it tests (a crash, a shutdown, a
// restart) and checks what that code and the data make of it. Tests that
// only need a database use Start or URL, which share one cluster.
//
// It is made as the shared cluster is (the same binaries, user, socket
// directory and settings), except that synchronous_commit is on: a commit
// acknowledged before a crash is still there after it. It does not use
// FWUPGRADER_TEST_DATABASE_URL, as the test must be able to stop the server.
//
// Stop, Start and Restart are called from the test's goroutine (they end the
// test when the server fails to start); URL from any.
type Cluster struct {
	t  testing.TB
	mu sync.Mutex
	s  *server
}

// NewCluster initializes a cluster and starts its server, which stops and
// whose files are removed when t ends. Without PostgreSQL, t is skipped
// (or fails, see EnvRequire), as with Start.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	s, skip, err := newServer(true)
	switch {
	case skip != "":
		skipTest(t, skip)
	case err != nil:
		t.Fatalf("pgtest: %v", err)
	}
	c := &Cluster{t: t, s: s}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.s.remove()
	})
	c.Start()
	return c
}

// URL returns the URL of the cluster's postgres database, the same while
// the server is stopped and after it restarts.
func (c *Cluster) URL() string { return c.s.url }

// Stop stops the server with sig and waits until all of its processes
// exited:
//
//   - SIGTERM: a smart shutdown (it waits for the sessions to end);
//   - SIGINT: a fast shutdown (sessions ended, their transactions rolled
//     back, a checkpoint written);
//   - SIGQUIT: an immediate shutdown (the processes exit at once, the next
//     start recovers from the WAL);
//   - SIGKILL: a crash (every process of the server killed at once, the
//     next start recovers from the WAL).
//
// A server still up 30 s after the signal is killed as with SIGKILL. A
// server not running is left so; another signal fails the test.
func (c *Cluster) Stop(sig syscall.Signal) {
	c.t.Helper()
	if !stoppingSignals[sig] {
		c.t.Fatalf("pgtest: Cluster.Stop: %v does not stop PostgreSQL (SIGTERM, SIGINT, SIGQUIT or SIGKILL do)", sig)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.stop(sig)
}

// Start starts the server on the cluster's data again, after Stop, and
// returns once it accepts connections (after a crash, once it recovered).
// It fails the test when the server does not start; a running server is
// left so.
func (c *Cluster) Start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.s.start(); err != nil {
		c.t.Fatalf("pgtest: %v", err)
	}
}

// Restart stops the server with sig (see Stop), leaves it down for
// downtime, and starts it again (see Start). It returns how long the
// database was unavailable, from the signal until the server accepted
// connections again.
func (c *Cluster) Restart(sig syscall.Signal, downtime time.Duration) time.Duration {
	c.t.Helper()
	begin := time.Now()
	c.Stop(sig)
	time.Sleep(downtime)
	c.Start()
	return time.Since(begin)
}
