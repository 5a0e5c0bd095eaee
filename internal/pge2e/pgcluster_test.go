package pge2e_test

// A throwaway PostgreSQL cluster of this package's own, for the test that
// restarts the database (pgtest's cluster cannot be restarted from
// outside). It is started as pgtest starts its own: initdb and postgres
// from /usr/lib/postgresql/*/bin or PATH, as the postgres user when root,
// listening only on a Unix socket in a temporary directory. Unlike pgtest's
// it keeps synchronous_commit on, so that a commit acknowledged before a
// crash (SIGQUIT) is still there after it; fsync stays off (the machine
// does not crash, only the server).

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

type cluster struct {
	t        *testing.T
	postgres string
	dir      string
	data     string
	url      string
	cred     *syscall.Credential
	cmd      *exec.Cmd
	done     chan struct{}
}

// pgBinaries returns the paths of initdb and postgres.
func pgBinaries() (initdb, postgres string, ok bool) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		i, p := filepath.Join(d, "initdb"), filepath.Join(d, "postgres")
		if _, err := os.Stat(i); err == nil {
			if _, err := os.Stat(p); err == nil {
				return i, p, true
			}
		}
	}
	i, err1 := exec.LookPath("initdb")
	p, err2 := exec.LookPath("postgres")
	return i, p, err1 == nil && err2 == nil
}

// newCluster initializes and starts a cluster, stopped and removed when
// the test ends. Without PostgreSQL the test is skipped (or fails with
// FWUPGRADER_REQUIRE_POSTGRES=1), as with pgtest.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	initdb, postgres, ok := pgBinaries()
	if !ok {
		if os.Getenv(pgtest.EnvRequire) == "1" {
			t.Fatal("PostgreSQL server binaries (initdb, postgres) not found")
		}
		t.Skip("PostgreSQL server binaries (initdb, postgres) not found: install them (Debian: apt-get install postgresql)")
	}
	c := &cluster{t: t, postgres: postgres}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root, PostgreSQL needs a postgres user to run as: %v", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	tmp := os.TempDir()
	if len(tmp) > 60 { // a Unix socket's path is at most 107 bytes
		tmp = "/tmp"
	}
	var err error
	c.dir, err = os.MkdirTemp(tmp, "fwupgrader-pge2e-")
	require.NoError(t, err)
	t.Cleanup(func() {
		c.stop(syscall.SIGINT)
		_ = os.RemoveAll(c.dir)
	})
	if c.cred != nil {
		require.NoError(t, os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)))
	}
	c.data = filepath.Join(c.dir, "data")
	cmd := exec.Command(initdb, "-D", c.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "-N")
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "initdb: %s", out)
	q := url.Values{"host": {c.dir}, "sslmode": {"disable"}}
	c.url = (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/postgres", RawQuery: q.Encode()}).String()
	c.start()
	return c
}

// start starts the server on the cluster's socket and waits until it
// accepts connections.
func (c *cluster) start() {
	t := c.t
	t.Helper()
	logFile, err := os.OpenFile(filepath.Join(c.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	defer logFile.Close()
	c.done = make(chan struct{})
	c.cmd = exec.Command(c.postgres, "-D", c.data, "-k", c.dir,
		"-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=100", "-c", "shared_buffers=64MB", "-c", "autovacuum=off", "-c", "timezone=UTC",
		"-c", "log_min_messages=warning", "-c", "log_min_error_statement=panic")
	c.cmd.Dir = c.dir
	c.cmd.Env = append(os.Environ(), "LC_ALL=C")
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	started := make(chan error, 1)
	cmd, done := c.cmd, c.done
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(done)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	require.NoError(t, <-started)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return
		}
		select {
		case <-done:
			t.Fatalf("postgres exited: %v\n%s", cmd.ProcessState, tail(filepath.Join(c.dir, "postgres.log"), 4000))
		default:
		}
		require.True(t, time.Now().Before(deadline), "postgres did not accept connections: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops the server with sig (SIGINT: a fast shutdown, every session
// ended and a checkpoint written; SIGQUIT: an immediate shutdown, a crash
// recovered from the WAL at the next start) and waits for it.
func (c *cluster) stop(sig syscall.Signal) {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	// The postmaster is gone; with SIGQUIT its children may linger a moment.
	if sig == syscall.SIGQUIT {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// restart stops the server with sig, leaves it down for downtime, and
// starts it again on the same data directory and socket. It returns how
// long the database was unavailable.
func (c *cluster) restart(sig syscall.Signal, downtime time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.stop(sig)
	time.Sleep(downtime)
	c.start()
	return time.Since(start)
}

func (c *cluster) String() string { return fmt.Sprintf("cluster at %s", c.dir) }
