package pgtest

import (
	"bytes"
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
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const dirPrefix = "fwupgrader-pgtest-"

const (
	readyTimeout = 60 * time.Second // for the server to accept connections
	stopTimeout  = 30 * time.Second // for the postmaster to exit before it is killed
)

// server is one throwaway cluster: a directory holding the data directory,
// the server's Unix socket, its log and the pid of the test binary that owns
// it. Both the shared cluster of URL and Start and a Cluster are one; the
// server can be stopped and started again on the same data.
type server struct {
	postgres string
	dir      string
	url      string
	cred     *syscall.Credential // nil unless running as root
	durable  bool                // synchronous_commit on

	cmd  *exec.Cmd     // the running postmaster, nil before the first start
	done chan struct{} // closed when cmd exited (or failed to start)
}

// newServer finds the binaries, makes the server's directory and runs
// initdb in it; it does not start the server. Without the binaries or the
// postgres user to run them as, it returns no server and skip says why.
func newServer(durable bool) (s *server, skip string, err error) {
	initdb, postgres, ok := binaries()
	if !ok {
		return nil, "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH: " +
			"install them (Debian: apt-get install postgresql)", nil
	}
	s = &server{postgres: postgres, durable: durable}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, "running as root, PostgreSQL needs a postgres user to run as (Debian's postgresql package creates it): " + err.Error(), nil
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	tmp := os.TempDir()
	if len(tmp) > 60 { // a Unix socket's path is at most 107 bytes
		tmp = "/tmp"
	}
	removeStale(tmp)
	if s.dir, err = os.MkdirTemp(tmp, dirPrefix); err != nil {
		return nil, "", err
	}
	ok = false
	defer func() {
		if !ok {
			_ = os.RemoveAll(s.dir)
		}
	}()
	if err := os.WriteFile(filepath.Join(s.dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, "", err
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, "", err
		}
	}
	cmd := exec.Command(initdb, "-D", s.data(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "-N")
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("initdb: %v\n%s", err, out)
	}
	q := url.Values{"host": {s.dir}, "sslmode": {"disable"}}
	s.url = (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/postgres", RawQuery: q.Encode()}).String()
	ok = true
	return s, "", nil
}

func (s *server) data() string { return filepath.Join(s.dir, "data") }

// args are the postmaster's arguments: only the Unix socket, nothing
// written to disk that a test does not need. synchronous_commit stays on
// in a durable server, so that a commit acknowledged before a crash is
// still there after it; fsync is off in both, as the machine does not
// crash, only the server.
func (s *server) args() []string {
	commit := "off"
	if s.durable {
		commit = "on"
	}
	return []string{"-D", s.data(), "-k", s.dir,
		"-c", "listen_addresses=",
		"-c", "fsync=off", "-c", "synchronous_commit=" + commit, "-c", "full_page_writes=off",
		"-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "max_connections=100",
		"-c", "shared_buffers=64MB", "-c", "autovacuum_naptime=5s", "-c", "timezone=UTC",
		"-c", "log_min_messages=warning", "-c", "log_min_error_statement=panic"}
}

func (s *server) running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// start starts the postmaster and waits until it accepts connections;
// should it not, it stops it and says why, with the end of its log.
func (s *server) start() error {
	if s.running() {
		return nil
	}
	logFile, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child keeps its own descriptor
	cmd, done := exec.Command(s.postgres, s.args()...), make(chan struct{})
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group (a terminal's ^C does not reach it), and
	// SIGQUIT (an immediate shutdown) when this process dies. The
	// parent-death signal follows the thread that started the child, so
	// that thread stays locked to the goroutine waiting for it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
	started := make(chan error, 1)
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
	if err := <-started; err != nil {
		return fmt.Errorf("postgres: %v", err)
	}
	s.cmd, s.done = cmd, done
	if err := s.wait(); err != nil {
		s.stop(syscall.SIGQUIT)
		return err
	}
	return nil
}

// wait waits until the server accepts connections.
func (s *server) wait() error {
	deadline := time.Now().Add(readyTimeout)
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
			return fmt.Errorf("postgres did not accept connections within %s: %v\n%s", readyTimeout, err, s.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) logText() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	if len(b) > 8192 {
		b = b[len(b)-8192:]
	}
	return string(b)
}

// stoppingSignals are the signals stop accepts.
var stoppingSignals = map[syscall.Signal]bool{
	syscall.SIGTERM: true, // smart shutdown
	syscall.SIGINT:  true, // fast shutdown
	syscall.SIGQUIT: true, // immediate shutdown
	syscall.SIGKILL: true, // a crash
}

// stop stops a running server with sig, one of stoppingSignals, and waits
// until its processes exited. The postmaster's children are not in its
// process group (each has a session of its own), so SIGKILL, a crash that
// ends them all at once, goes to each (see kill); the other signals go to
// the postmaster, which ends its children itself before it exits. A
// postmaster still there after stopTimeout is killed.
func (s *server) stop(sig syscall.Signal) {
	if !s.running() {
		return
	}
	if sig == syscall.SIGKILL {
		s.kill()
		return
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.kill()
	}
}

// kill kills the postmaster and its children. It stops the postmaster
// first, so that no child is started between the look for them and the
// kill, and waits until they all exited: a new postmaster does not start
// while a process of the old one is still attached to its shared memory.
func (s *server) kill() {
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	kids := children(pid)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-s.done
	deadline := time.Now().Add(stopTimeout)
	for _, k := range kids {
		for live(k) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// remove stops the server (fast shutdown) and removes its directory.
func (s *server) remove() {
	s.stop(syscall.SIGINT)
	_ = os.RemoveAll(s.dir)
}

// children returns the processes whose parent is pid.
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		k, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(k); ok && ppid == pid {
			kids = append(kids, k)
		}
	}
	return kids
}

// live tells whether process pid runs (exists and is not a zombie, whose
// memory is released already).
func live(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != "Z" && state != "X"
}

// procStat reads the state and parent of process pid from /proc.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...; comm may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0], ppid, err == nil
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
