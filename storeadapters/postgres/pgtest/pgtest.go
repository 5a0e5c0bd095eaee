// Package pgtest gives tests a PostgreSQL database.
//
// With FWUPGRADER_TEST_DATABASE_URL set, tests use that database (they create
// and drop their own schemas in it). Otherwise the first test that asks
// starts a throwaway cluster, once per test binary: initdb and postgres are
// looked for in /usr/lib/postgresql/*/bin (the newest version first) and on
// PATH; running as root, they run as the postgres user. The cluster listens
// only on a Unix socket in a temporary directory (no TCP), with fsync off, and
// is stopped by Stop, which the test package's TestMain calls after m.Run:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		pgtest.Stop()
//		os.Exit(code)
//	}
//
// Should the test binary die without calling Stop, the kernel stops the
// server (a parent-death signal), and the next start removes what it left.
//
// Without the binaries a test is skipped, with a message saying how to
// install them (Debian: apt-get install postgresql), unless
// FWUPGRADER_REQUIRE_POSTGRES=1, which makes it fail instead.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

const dirPrefix = "fwupgrader-pgtest-"

var (
	mu       sync.Mutex
	started  bool
	srv      *server
	startErr error
	skipMsg  string
)

type server struct {
	dir  string
	url  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the postmaster exited
}

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
		srv, skipMsg, startErr = start()
	}
	s, skip, err := srv, skipMsg, startErr
	mu.Unlock()
	switch {
	case skip != "" && os.Getenv(EnvRequire) == "1":
		t.Fatalf("pgtest: %s (%s=1)", skip, EnvRequire)
	case skip != "":
		t.Skipf("pgtest: %s", skip)
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
	srv.stop()
	srv = nil
}

// binaries returns the paths of initdb and postgres.
func binaries() (initdb, postgres string, ok bool) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		i, p := filepath.Join(d, "initdb"), filepath.Join(d, "postgres")
		if isExec(i) && isExec(p) {
			return i, p, true
		}
	}
	i, err1 := exec.LookPath("initdb")
	p, err2 := exec.LookPath("postgres")
	return i, p, err1 == nil && err2 == nil
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// start starts the cluster; it returns a skip message when PostgreSQL is not
// installed.
func start() (*server, string, error) {
	initdb, postgres, ok := binaries()
	if !ok {
		return nil, "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH: " +
			"install them (Debian: apt-get install postgresql) or set " + EnvURL, nil
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, "running as root, PostgreSQL needs a postgres user to run as (Debian's postgresql package creates it): " + err.Error(), nil
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	tmp := os.TempDir()
	if len(tmp) > 60 { // a Unix socket's path is at most 107 bytes
		tmp = "/tmp"
	}
	removeStale(tmp)
	dir, err := os.MkdirTemp(tmp, dirPrefix)
	if err != nil {
		return nil, "", err
	}
	ok = false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, "", err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, "", err
		}
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "-N")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("initdb: %v\n%s", err, out)
	}
	logFile, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return nil, "", err
	}
	defer logFile.Close() // the child keeps its own descriptor
	s := &server{dir: dir, done: make(chan struct{})}
	s.cmd = exec.Command(postgres, "-D", data, "-k", dir,
		"-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "max_connections=100",
		"-c", "shared_buffers=64MB", "-c", "autovacuum=off", "-c", "timezone=UTC",
		"-c", "log_min_messages=warning", "-c", "log_min_error_statement=panic")
	s.cmd.Dir = dir
	s.cmd.Env = append(os.Environ(), "LC_ALL=C")
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// Its own process group (a terminal's ^C does not reach it), and
	// SIGQUIT (an immediate shutdown) when this process dies. The
	// parent-death signal follows the thread that started the child, so
	// that thread stays locked to the goroutine waiting for it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	startErr := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := s.cmd.Start(); err != nil {
			startErr <- err
			close(s.done)
			return
		}
		startErr <- nil
		_ = s.cmd.Wait()
		close(s.done)
	}()
	if err := <-startErr; err != nil {
		return nil, "", fmt.Errorf("postgres: %v", err)
	}
	q := url.Values{"host": {dir}, "sslmode": {"disable"}}
	s.url = (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/postgres", RawQuery: q.Encode()}).String()
	if err := s.wait(30 * time.Second); err != nil {
		s.stop()
		return nil, "", err
	}
	ok = true
	return s, "", nil
}

// wait waits until the server accepts connections.
func (s *server) wait(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.url)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited: %v\n%s", s.cmd.ProcessState, s.logText())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within %s: %v\n%s", timeout, err, s.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) logText() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	if len(b) > 8192 {
		b = b[len(b)-8192:]
	}
	return string(b)
}

// stop shuts the server down (fast shutdown, then a kill) and removes its
// directory.
func (s *server) stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	_ = os.RemoveAll(s.dir)
}

// removeStale removes the directories of clusters whose test binary died
// without stopping them, stopping a postmaster still running there.
func removeStale(tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner"))
		if err != nil {
			continue
		}
		owner, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || alive(owner) {
			continue
		}
		if pidFile, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(pidFile), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGQUIT)
				time.Sleep(200 * time.Millisecond)
			}
		}
		_ = os.RemoveAll(d)
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
