package pge2e_test

// The parent's side: the store, the catalog, the simulated devices, and the
// engine processes it starts, pauses, kills and stops.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const (
	connKind   = openwrt.Connection
	imageType  = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	newRelease = "OpenWrt 23.05.3 r23809-234f1a2efa"
)

// Log lines of an operation taken over at or after flashing: the engine
// verifies it, the openwrt upgrader's Verify runs.
const (
	resumeVerifyLine = "resuming an operation interrupted after flashing started: verifying"
	verifierLine     = "Verifying the outcome of an earlier flash"
)

// rig is one test's store (a schema of its own), image storage, catalog,
// devices and engine processes.
type rig struct {
	t      *testing.T
	url    string
	pool   *pgxpool.Pool
	st     *postgres.Store
	schema string
	dir    string // the test's work directory
	files  string // the shared image directory
	eng    *upgrader.Engine
	build  store.Build
	image  store.Image

	mu      sync.Mutex
	devs    map[string]*openwrttest.Device
	devFile string
}

type rigOpts struct {
	imageSize int64
}

func randomSchema() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "pge2e_" + hex.EncodeToString(b)
}

// newRig migrates a new schema of the database at url (dropped when the
// test ends) and creates the catalog: one build with one image.
func newRig(t *testing.T, url string, o rigOpts) *rig {
	t.Helper()
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	pcfg.MaxConns = 8
	pcfg.ConnConfig.RuntimeParams["application_name"] = "pge2e-parent"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	r := &rig{t: t, url: url, pool: pool, schema: randomSchema(), dir: t.TempDir(), devs: map[string]*openwrttest.Device{}}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(cctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{r.schema}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", r.schema, err)
		}
		pool.Close()
	})
	r.st, err = postgres.New(pool, postgres.WithSchema(r.schema))
	require.NoError(t, err)
	require.NoError(t, r.st.Migrate(ctx))
	r.files = filepath.Join(r.dir, "images")
	require.NoError(t, os.Mkdir(r.files, 0o755))
	r.devFile = filepath.Join(r.dir, "devices.json")
	files, err := upgrader.NewDirFiles(r.files)
	require.NoError(t, err)
	// The parent's engine validates and creates; it is never started, so
	// it runs nothing.
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(context.Context, store.Device) (openwrt.Credentials, error) {
			return openwrt.Credentials{}, errors.New("the parent's engine runs no operation")
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	reg := upgrader.NewRegistry()
	require.NoError(t, reg.Register(connKind, ow))
	r.eng, err = upgrader.NewEngine(r.st, reg, &upgrader.Config{Files: files, Logger: slog.New(slog.DiscardHandler), Owner: "pge2e-parent"})
	require.NoError(t, err)

	cat, err := r.eng.CreateCategory(ctx, store.Category{Name: "c7"})
	require.NoError(t, err)
	r.build, err = r.eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3", OSIdentifier: newRelease})
	require.NoError(t, err)
	size := o.imageSize
	if size == 0 {
		size = 256 << 10
	}
	sim := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: size}
	r.image, err = r.eng.UploadImage(ctx, store.Image{BuildID: r.build.ID, Type: imageType, Name: "openwrt-23.05.3-" + imageType}, sim.Reader())
	require.NoError(t, err)
	return r
}

// devices starts n simulated devices made by cfg(i) (UUID set here),
// registers them with location loc(i) (nil: none), a few at a time, and
// writes the file the engine processes read their addresses and host keys
// from. The devices are closed when the test ends, after the engine
// processes started later.
func (r *rig) devices(n int, cfg func(i int) openwrttest.Config, loc func(i int) string) []store.Device {
	t := r.t
	t.Helper()
	t.Cleanup(r.closeDevices)
	out := make([]store.Device, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i], errs[i] = r.device(cfg(i), loc, i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	refs := map[string]childDevice{}
	r.mu.Lock()
	for id, d := range r.devs {
		refs[id] = childDevice{Addr: d.Addr(), HostKey: string(ssh.MarshalAuthorizedKey(d.HostKey()))}
	}
	r.mu.Unlock()
	b, err := json.Marshal(refs)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(r.devFile, b, 0o644))
	return out
}

func (r *rig) device(cfg openwrttest.Config, loc func(int) string, i int) (store.Device, error) {
	id := uuid.NewString()
	cfg.UUID = id
	dev, err := openwrttest.New(cfg)
	if err != nil {
		return store.Device{}, err
	}
	r.mu.Lock()
	r.devs[id] = dev
	r.mu.Unlock()
	if err := dev.Start(); err != nil {
		return store.Device{}, err
	}
	d := store.Device{ID: id, Model: dev.Config().Model, BoardName: dev.Config().BoardName, OSIdentifier: dev.Release(),
		Connection: connKind, Active: true}
	if loc != nil {
		d.Location = loc(i)
	}
	return r.eng.RegisterDevice(context.Background(), d)
}

func (r *rig) dev(id string) *openwrttest.Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.devs[id]
}

func (r *rig) closeDevices() {
	r.mu.Lock()
	devs := make([]*openwrttest.Device, 0, len(r.devs))
	for _, d := range r.devs {
		devs = append(devs, d)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() { d.Close() })
	}
	wg.Wait()
}

// engineSpec is the spec of an engine process named owner, with the
// settings the tests share.
func (r *rig) engineSpec(owner string) childSpec {
	return childSpec{
		Role: roleEngine, DatabaseURL: r.url, Schema: r.schema, FilesDir: r.files, DevicesFile: r.devFile,
		Owner: owner, Workers: 16, Lease: 3 * time.Second, Poll: 150 * time.Millisecond, Maintenance: 200 * time.Millisecond,
		CredsDelay: 30 * time.Millisecond,
	}
}

// ---------------------------------------------------------------------------
// Engine processes.

// proc is a child process.
type proc struct {
	owner string
	log   string
	cmd   *exec.Cmd
	done  chan struct{} // closed when it exited
	err   error         // its exit, once done is closed
}

// spawn starts a child process with spec. It is killed when the test ends
// if still running, and dies with the parent (a parent-death signal).
func (r *rig) spawn(spec childSpec) *proc {
	t := r.t
	t.Helper()
	name := spec.Owner
	if spec.Role != roleEngine {
		name += "-" + spec.Role
	}
	specFile := filepath.Join(r.dir, name+".json")
	b, err := json.Marshal(spec)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(specFile, b, 0o644))
	p := &proc{owner: spec.Owner, log: filepath.Join(r.dir, name+".log"), done: make(chan struct{})}
	logFile, err := os.Create(p.log)
	require.NoError(t, err)
	defer logFile.Close() // the child has its own descriptor
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestEngineProcess$", "-test.count=1", "-test.v", "-test.timeout=10m")
	p.cmd.Env = append(os.Environ(), envChild+"="+specFile)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// The parent-death signal follows the thread that started the child:
	// that thread stays locked to the goroutine waiting for it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	require.NoError(t, <-started)
	t.Cleanup(func() {
		if !p.exited() {
			p.signal(syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- log of %s (%s):\n%s", name, p.log, tail(p.log, 6000))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill kills the process (SIGKILL) and waits for it.
func (p *proc) kill() {
	p.signal(syscall.SIGCONT) // a stopped process dies as well, but be plain
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the process to stop its engine and exit (SIGTERM), and waits
// for it.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.signal(syscall.SIGKILL)
		<-p.done
		t.Errorf("engine process %s did not stop within a minute of SIGTERM", p.owner)
	}
}

// checkClean asserts that the process exited on its own with status 0
// and that the race detector reported nothing.
func (p *proc) checkClean(t *testing.T) {
	t.Helper()
	<-p.done
	if p.err != nil {
		t.Errorf("engine process %s: %v; its log:\n%s", p.owner, p.err, tail(p.log, 6000))
	}
	b, _ := os.ReadFile(p.log)
	if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
		t.Errorf("engine process %s: the race detector reported a race; see %s", p.owner, p.log)
	}
}

// logCount counts the lines of the process's log that contain s.
func (p *proc) logCount(s string) int {
	b, _ := os.ReadFile(p.log)
	return bytes.Count(b, []byte(s))
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitGone waits until the database has no connection of owner left (a
// killed process's transaction rolled back, a commit it sent landed):
// nothing of it changes the store afterwards.
func (r *rig) waitGone(owner string) {
	t := r.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		err := r.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, owner).Scan(&n)
		require.NoError(t, err)
		if n == 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "the killed process %s still has %d database connections", owner, n)
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Reading the store.

func (r *rig) ops(batchID string) []store.Operation {
	r.t.Helper()
	var out []store.Operation
	p := store.Page{Limit: 1000}
	for {
		ops, err := r.st.ListOperations(context.Background(), store.OperationFilter{BatchID: batchID, Page: p})
		require.NoError(r.t, err)
		out = append(out, ops...)
		if len(ops) < p.Limit {
			return out
		}
		p.After = ops[len(ops)-1].ID
	}
}

// held returns the operations whose lease owner holds them (in progress,
// under a lease not released).
func (r *rig) held(batchID, owner string) map[string]store.Operation {
	out := map[string]store.Operation{}
	for _, op := range r.ops(batchID) {
		if op.State == status.InProgress && op.LeaseOwner == owner && !op.LeaseExpiresAt.IsZero() {
			out[op.ID] = op
		}
	}
	return out
}

func (r *rig) logText(id string) string {
	r.t.Helper()
	logs, err := r.st.Logs(context.Background(), id, 0, 0)
	require.NoError(r.t, err)
	var b strings.Builder
	for _, l := range logs {
		b.WriteString(l.Line)
		b.WriteByte('\n')
	}
	return b.String()
}

// waitBatch polls the store until the batch ended, and returns it.
func (r *rig) waitBatch(id string, timeout time.Duration) store.Batch {
	t := r.t
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := r.st.Batch(context.Background(), id)
		if err == nil && b.State.Terminal() {
			return b
		}
		if time.Now().After(deadline) {
			var left []string
			for _, op := range r.ops(id) {
				if !op.State.Terminal() {
					left = append(left, fmt.Sprintf("%s (%s %s, lease %s until %s)", op.ID, op.State, op.Phase,
						op.LeaseOwner, op.LeaseExpiresAt.Format("15:04:05.000")))
				}
			}
			t.Fatalf("batch %s not ended after %s (%v, err %v); %d operations not terminal: %s", id, timeout,
				b.Counts, err, len(left), strings.Join(left[:min(len(left), 10)], "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// flashCommands returns the flash commands the device ran: a sysupgrade
// other than --test.
func flashCommands(dev *openwrttest.Device) [][]string {
	var out [][]string
	for _, argv := range dev.Executed() {
		if len(argv) > 0 && argv[0] == "sysupgrade" && !slices.Contains(argv, "--test") {
			out = append(out, argv)
		}
	}
	return out
}
