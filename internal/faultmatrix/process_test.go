package faultmatrix_test

// Engine processes: this test binary run again with
// -test.run=^TestFaultMatrixProcess$ and envProcess naming a JSON file (a
// processSpec). The process runs one engine over the row's PostgreSQL schema
// until SIGTERM (it stops its engine and exits) or SIGKILL (it dies, holding
// what it held). The row's test process keeps the devices, so that they
// outlive the engine it kills and record everything they received.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

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

// envProcess names the spec file of an engine process.
const envProcess = "FWUPGRADER_FAULTMATRIX_PROCESS"

// processSpec is what an engine process is told.
type processSpec struct {
	DatabaseURL string
	Schema      string
	Owner       string
	Lease       time.Duration
	// OperationTimeout is the engine's Config.OperationTimeout.
	OperationTimeout time.Duration
	// Devices are the addresses and host keys (authorized_keys format)
	// of the devices, by ID.
	Devices map[string]processDevice
}

type processDevice struct {
	Addr    string
	HostKey string
}

// TestFaultMatrixProcess is the body of an engine process; it skips in a
// normal test run.
func TestFaultMatrixProcess(t *testing.T) {
	path := os.Getenv(envProcess)
	if path == "" {
		t.Skip("runs only as an engine process started by TestFaultMatrix")
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var spec processSpec
	require.NoError(t, json.Unmarshal(b, &spec))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With(slog.String("owner", spec.Owner))

	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(spec.DatabaseURL)
	require.NoError(t, err)
	pcfg.MaxConns = 4
	// The row's test process finds this process's connections by it.
	pcfg.ConnConfig.RuntimeParams["application_name"] = spec.Owner
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	defer pool.Close()
	st, err := postgres.New(pool, postgres.WithSchema(spec.Schema))
	require.NoError(t, err)
	files, err := postgres.NewFiles(pool, postgres.WithSchema(spec.Schema))
	require.NoError(t, err)
	keys := map[string]ssh.PublicKey{}
	for id, d := range spec.Devices {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(d.HostKey))
		require.NoError(t, err)
		keys[id] = k
	}
	ocfg := baseUpgrader()
	ocfg.Logger = log
	ocfg.CredentialsFunc = func(_ context.Context, d store.Device) (openwrt.Credentials, error) {
		dev, ok := spec.Devices[d.ID]
		if !ok {
			return openwrt.Credentials{}, fmt.Errorf("faultmatrix: unknown device %s", d.ID)
		}
		return openwrt.Credentials{Address: dev.Addr, User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
			HostKeyCallback: openwrt.PinnedKey(keys[d.ID])}, nil
	}
	ow, err := openwrt.New(&ocfg)
	require.NoError(t, err)
	reg := upgrader.NewRegistry()
	require.NoError(t, reg.Register(openwrt.Connection, ow))
	ecfg := baseEngine()
	ecfg.Logger, ecfg.Owner, ecfg.LeaseDuration, ecfg.Files = log, spec.Owner, spec.Lease, files
	ecfg.OperationTimeout = spec.OperationTimeout
	eng, err := upgrader.NewEngine(st, reg, &ecfg)
	require.NoError(t, err)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	require.NoError(t, eng.Start(ctx))
	log.Warn("engine started")
	<-sig
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, eng.Stop(sctx))
}

// proc is an engine process.
type proc struct {
	owner string
	log   string
	cmd   *exec.Cmd
	done  chan struct{}
}

// spawn starts an engine process named owner over the row's schema, with
// leases of lease, reaching the devices at the addresses addr gives. It is
// killed when the row ends if still running, and dies with this process
// (a parent-death signal).
func (h *harness) spawn(owner string, lease time.Duration, addr func(*node) string) *proc {
	t := h.t
	t.Helper()
	spec := processSpec{DatabaseURL: h.url, Schema: h.schema, Owner: owner, Lease: lease,
		OperationTimeout: h.ecfg.OperationTimeout, Devices: map[string]processDevice{}}
	h.mu.Lock()
	for _, n := range h.nodes {
		spec.Devices[n.d.ID] = processDevice{Addr: addr(n), HostKey: string(ssh.MarshalAuthorizedKey(n.key))}
	}
	h.mu.Unlock()
	dir := t.TempDir()
	specFile := filepath.Join(dir, owner+".json")
	b, err := json.Marshal(spec)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(specFile, b, 0o600))
	p := &proc{owner: owner, log: filepath.Join(dir, owner+".log"), done: make(chan struct{})}
	out, err := os.Create(p.log)
	require.NoError(t, err)
	defer out.Close()
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestFaultMatrixProcess$", "-test.count=1", "-test.timeout=5m")
	p.cmd.Env = append(os.Environ(), envProcess+"="+specFile)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// Pdeathsig follows the thread that started the child: it stays locked
	// to the goroutine that waits for it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer close(p.done)
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = p.cmd.Wait()
	}()
	require.NoError(t, <-started)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("--- log of engine process %s:\n%s", owner, b[max(0, len(b)-4000):])
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

// kill kills the process (SIGKILL) and waits for it to be gone.
func (p *proc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// raced reports whether the race detector reported something in the
// process.
func (p *proc) raced() bool {
	b, _ := os.ReadFile(p.log)
	return bytes.Contains(b, []byte("WARNING: DATA RACE"))
}

// waitGone waits until the database has no connection of owner left: a
// killed process's transaction rolled back, a commit it sent landed, and
// nothing of it changes the store any more.
func (h *harness) waitGone(owner string) {
	h.t.Helper()
	h.eventually("the killed process's database connections to close", func() bool {
		var n int
		err := h.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, owner).Scan(&n)
		require.NoError(h.t, err)
		return n == 0
	})
}

// killMoment says when an engine process is killed.
type killMoment int

const (
	beforeFlash killMoment = iota // while it uploads
	afterFlash                    // while the device reboots on its flash
)

// afterKill is what happens once the engine process is dead.
type afterKill int

const (
	// takeOver: an engine of the row's process starts at once and takes
	// the operation over when the lease expired.
	takeOver afterKill = iota
	// cancelThenStart: the operation is cancelled (Engine.Cancel), then an
	// engine of the row's process starts.
	cancelThenStart
	// deadlineThenStart: no engine runs until the operation's deadline passed,
	// then one starts.
	deadlineThenStart
)

// actKill has an engine process run the row's one operation and kills it
// (SIGKILL) at the moment m, holding the operation under a lease. Then, as
// then says, an engine of the row's own process takes the operation over
// once the lease expired (a new attempt before flashing, a verification
// after), possibly after a cancel or the operation's deadline. Before
// flashing, the process reaches the device through a slow link, so that it
// is still uploading when it is killed.
func actKill(m killMoment, then afterKill) action {
	return action{name: "kill an engine process", run: func(h *harness) result {
		n := h.only()
		addr := func(n *node) string { return n.address() }
		if m == beforeFlash {
			l := newLink(h.t, n.sim().Addr, 64<<10, 0)
			addr = func(*node) string { return l.Addr() }
		}
		op, err := h.eng.Create(h.ctx, h.request(n))
		require.NoError(h.t, err)
		owner := "faultmatrix-process-" + op.ID[len(op.ID)-8:]
		p := h.spawn(owner, 3*time.Second, addr)

		var held store.Operation
		h.eventually("the moment to kill the engine process", func() bool {
			require.False(h.t, p.exited(), "the engine process exited")
			held = h.operation(op.ID)
			require.False(h.t, held.State.Terminal(), "the operation ended %s (%s) before the kill:\n%s", held.State, held.Reason, h.logText(op.ID))
			if held.LeaseOwner != owner || held.State != status.InProgress {
				return false
			}
			if m == beforeFlash {
				return held.Phase == status.PhaseUpload && held.Progress > status.ProgressChecksum
			}
			return held.Phase.AfterPointOfNoReturn() && n.sim().Flashed() == 1
		})
		p.kill()
		h.waitGone(owner)
		require.False(h.t, p.raced(), "the race detector reported a race in the engine process")
		held = h.operation(op.ID)
		require.Equal(h.t, owner, held.LeaseOwner, "the killed process held the operation")
		require.False(h.t, held.LeaseExpiresAt.IsZero(), "the killed process held a lease")
		h.t.Logf("killed %s holding attempt %d in phase %s", owner, held.Attempt, held.Phase)

		o := outcome{node: n, opID: op.ID}
		switch then {
		case cancelThenStart:
			h.cancel(&o)
		case deadlineThenStart:
			require.False(h.t, held.Deadline.IsZero())
			time.Sleep(time.Until(held.Deadline.Add(100 * time.Millisecond)))
		}
		h.startEngine()
		end, err := h.eng.Wait(h.ctx, op.ID)
		require.NoError(h.t, err)
		if then == takeOver {
			require.NotEqual(h.t, owner, end.LeaseOwner, "another engine ended the operation")
			if m == beforeFlash {
				require.Equal(h.t, held.Attempt+1, end.Attempt, "a new attempt after the kill")
			} else {
				require.Equal(h.t, held.Attempt, end.Attempt, "verified, not attempted again")
			}
		}
		settle() // whatever the engine would still do to the device, it does now
		return result{outs: []outcome{o}}
	}}
}
