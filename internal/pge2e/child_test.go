package pge2e_test

// The engine processes: this test binary run again with
// -test.run=^TestEngineProcess$ and envChild naming a JSON file (childSpec)
// that says what to do. A process of role "engine" runs one upgrader.Engine
// under its own Owner until SIGTERM (then it stops the engine and exits) or
// SIGKILL; one of role "cancel" cancels one operation through its engine
// (never started) and writes the outcome.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// envChild names the spec file of an engine process.
const envChild = "FWUPGRADER_PGE2E_CHILD"

// Roles of a child process.
const (
	roleEngine = "engine"
	roleCancel = "cancel"
)

// childSpec is what a child process is told.
type childSpec struct {
	Role        string
	DatabaseURL string
	Schema      string
	FilesDir    string
	// DevicesFile holds the devices' addresses and host keys
	// (map[string]childDevice), written by the parent.
	DevicesFile string
	Owner       string
	Workers     int
	Lease       time.Duration
	Poll        time.Duration
	Maintenance time.Duration
	// ReadRate, when positive, throttles every read of an image's bytes
	// to about this many bytes a second: uploads take long enough to be
	// seen (and interrupted) in their phase.
	ReadRate int64
	// CredsDelay is how long the host's credential lookup takes.
	CredsDelay time.Duration
	// Role cancel: the operation to cancel and where to write the outcome
	// (a cancelResult).
	OperationID string
	ResultFile  string
}

// childDevice is how a child reaches one simulated device.
type childDevice struct {
	Addr    string
	HostKey string // authorized_keys format
}

// cancelResult is what a child of role cancel reports.
type cancelResult struct {
	State status.State
	Phase status.Phase
	Err   string
}

// TestEngineProcess is the body of a child process; it skips in a normal
// test run.
func TestEngineProcess(t *testing.T) {
	path := os.Getenv(envChild)
	if path == "" {
		t.Skip("runs only as an engine process started by the other tests of this package")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec childSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).
		With(slog.String("owner", spec.Owner))
	eng, pool, err := childEngine(spec, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := context.Background()
	switch spec.Role {
	case roleEngine:
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		if err := eng.Start(ctx); err != nil {
			t.Fatal(err)
		}
		log.Warn("engine started")
		<-sig
		log.Warn("stopping")
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := eng.Stop(sctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	case roleCancel:
		op, err := eng.Cancel(ctx, spec.OperationID)
		res := cancelResult{State: op.State, Phase: op.Phase}
		if err != nil {
			res.Err = err.Error()
		}
		out, _ := json.Marshal(res)
		if err := os.WriteFile(spec.ResultFile, out, 0o644); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown role %q", spec.Role)
	}
}

// childEngine builds a child's engine over the shared database; wrap, when
// set, wraps the store the engine uses.
func childEngine(spec childSpec, log *slog.Logger, wrap func(store.Store) store.Store) (*upgrader.Engine, *pgxpool.Pool, error) {
	devs, err := readDevices(spec.DevicesFile)
	if err != nil {
		return nil, nil, err
	}
	pcfg, err := pgxpool.ParseConfig(spec.DatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	pcfg.MaxConns = 8
	// The parent finds this process's connections by it (pg_stat_activity).
	pcfg.ConnConfig.RuntimeParams["application_name"] = spec.Owner
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return nil, nil, err
	}
	st, err := postgres.New(pool, postgres.WithSchema(spec.Schema))
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	dir, err := upgrader.NewDirFiles(spec.FilesDir)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	var files upgrader.Files = dir
	if spec.ReadRate > 0 {
		files = slowFiles{DirFiles: dir, rate: spec.ReadRate}
	}
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
			dev, ok := devs[d.ID]
			if !ok {
				return openwrt.Credentials{}, fmt.Errorf("unknown device %s", d.ID)
			}
			if spec.CredsDelay > 0 {
				if err := sleepCtx(ctx, spec.CredsDelay); err != nil {
					return openwrt.Credentials{}, err
				}
			}
			return openwrt.Credentials{Address: dev.addr, User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
				HostKeyCallback: openwrt.PinnedKey(dev.key)}, nil
		},
		ConnectTimeout: 10 * time.Second, CommandTimeout: 20 * time.Second, UpgradeTimeout: 20 * time.Second,
		ReconnectDelay: 100 * time.Millisecond, ReconnectRetryDelay: 100 * time.Millisecond, ReconnectWindow: 30 * time.Second,
		Logger: log,
	})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(connKind, ow); err != nil {
		pool.Close()
		return nil, nil, err
	}
	var es store.Store = st
	if wrap != nil {
		es = wrap(st)
	}
	eng, err := upgrader.NewEngine(es, reg, &upgrader.Config{
		Logger: log, Owner: spec.Owner, Workers: spec.Workers, Files: files,
		LeaseDuration: spec.Lease, PollInterval: spec.Poll, MaintenanceInterval: spec.Maintenance,
		// Every attempt a killed process (or a lease lost on a loaded
		// machine) interrupted counts against the retries: the budget is
		// set so that these tests are about take-overs, not about it.
		Retry: upgrader.RetryPolicy{MaxRetries: 10, InitialInterval: 100 * time.Millisecond, MaxInterval: 500 * time.Millisecond,
			RandomizationFactor: upgrader.NoRetryRandomization},
		Offline: upgrader.OfflinePolicy{InitialInterval: 200 * time.Millisecond, MaxInterval: time.Second,
			RandomizationFactor: upgrader.NoRetryRandomization},
		OperationTimeout: 5 * time.Minute, VerifyTimeout: time.Minute,
	})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return eng, pool, nil
}

type deviceRef struct {
	addr string
	key  ssh.PublicKey
}

func readDevices(path string) (map[string]deviceRef, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]childDevice
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	out := make(map[string]deviceRef, len(m))
	for id, d := range m {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(d.HostKey))
		if err != nil {
			return nil, fmt.Errorf("device %s: host key: %w", id, err)
		}
		out[id] = deviceRef{addr: d.Addr, key: key}
	}
	return out, nil
}

// slowFiles reads images at about rate bytes a second (ReadAt, used for
// the image's metadata, is not throttled).
type slowFiles struct {
	*upgrader.DirFiles
	rate int64
}

func (s slowFiles) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := s.DirFiles.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	f, ok := rc.(*os.File)
	if !ok {
		rc.Close()
		return nil, errors.New("pge2e: DirFiles.Open did not return a file")
	}
	return &slowReader{ctx: ctx, f: f, rate: s.rate}, nil
}

type slowReader struct {
	ctx   context.Context
	f     *os.File
	rate  int64
	mu    sync.Mutex
	start time.Time
	n     int64
}

func (r *slowReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start.IsZero() {
		r.start = time.Now()
	}
	chunk := max(r.rate/20, 512) // about 20 reads a second
	if int64(len(p)) > chunk {
		p = p[:chunk]
	}
	// Wait until the bytes read so far are due.
	if d := time.Until(r.start.Add(time.Duration(float64(r.n) / float64(r.rate) * float64(time.Second)))); d > 0 {
		if err := sleepCtx(r.ctx, d); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Read(p)
	r.n += int64(n)
	return n, err
}

func (r *slowReader) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *slowReader) Close() error                            { return r.f.Close() }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
