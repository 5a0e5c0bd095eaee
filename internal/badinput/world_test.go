package badinput_test

// The Go API's world: one engine over the memory store with its image bytes
// in a directory, the openwrt upgrader over real SSH, simulated devices of
// two boards, two releases and two organizations, and a catalog. Each Go
// row gets a world of its own.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const (
	c7Model, c7Board = "TP-Link Archer C7 v2", "tplink,archer-c7-v2"
	glModel, glBoard = "GL.iNet GL-AR300M", "glinet,gl-ar300m"
	// newSeries is what the worlds' builds install.
	newSeries = "23.05"
	orgA      = "acme"
	orgB      = "globex" // the other tenant
	// maxImage is the worlds' Config.MaxImageSize.
	maxImage = 256 << 10
	// imageSize is the size of the worlds' good images.
	imageSize = 16 << 10
	// rowTimeout bounds a row's waits, so that a broken library fails a
	// row instead of hanging the package (nothing is asserted about time).
	rowTimeout = 90 * time.Second
)

// quiet is a logger that drops everything: the rows assert on results.
func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sim is one simulated device and its record in the store.
type sim struct {
	dev *openwrttest.Device
	rec store.Device
}

// goWorld is a Go row's world.
type goWorld struct {
	t        *testing.T
	ctx      context.Context
	st       store.Store
	filesDir string
	eng      *upgrader.Engine
	reg      *upgrader.Registry

	// c7 and gl are devices of orgA of two boards on 22.03; other is a c7
	// of orgB. add adds a device (in a row's setup).
	c7, gl, other *sim
	devices       []*sim
	add           func(org, model, board, release string) *sim

	// build (shared) holds image, a 23.05 image for the c7 board with
	// fwtool metadata. otherBuild and otherImage are orgB's.
	cat, otherCat     store.Category
	build, otherBuild store.Build
	buildOfA          store.Build // a second build of cat, made on demand
	image, otherImage store.Image
	sim               openwrttest.Image // image's content

	startOnce sync.Once
}

// newGoWorld builds a world; nothing has contacted its devices yet.
func newGoWorld(t *testing.T) *goWorld {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rowTimeout)
	t.Cleanup(cancel)
	w := &goWorld{t: t, ctx: ctx, st: memory.New(), filesDir: t.TempDir()}
	files, err := upgrader.NewDirFiles(w.filesDir)
	require.NoError(t, err)

	byID := map[string]*openwrttest.Device{}
	var mu sync.Mutex
	w.add = func(org, model, board, release string) *sim {
		t.Helper()
		id := uuid.NewString()
		dev, err := openwrttest.New(openwrttest.Config{UUID: id, Model: model, BoardName: board,
			Release: release, RebootDelay: 100 * time.Millisecond})
		require.NoError(t, err)
		require.NoError(t, dev.Start())
		t.Cleanup(func() { dev.Close() })
		mu.Lock()
		byID[id] = dev
		mu.Unlock()
		rec, err := w.eng.RegisterDevice(ctx, store.Device{ID: id, Organization: org, Name: "dev-" + id[:8],
			Model: model, BoardName: board, OSIdentifier: dev.Release(), Connection: openwrt.Connection,
			Address: dev.Addr(), Active: true})
		require.NoError(t, err)
		s := &sim{dev: dev, rec: rec}
		w.devices = append(w.devices, s)
		return s
	}
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(_ context.Context, d store.Device) (openwrt.Credentials, error) {
			mu.Lock()
			dev := byID[d.ID]
			mu.Unlock()
			if dev == nil {
				return openwrt.Credentials{}, errors.New("no such simulated device")
			}
			return openwrt.Credentials{Address: dev.Addr(), User: openwrttest.DefaultUser,
				Password: openwrttest.DefaultPassword, HostKeyCallback: dev.HostKeyCallback()}, nil
		},
		ReconnectDelay:      50 * time.Millisecond,
		ReconnectRetryDelay: 50 * time.Millisecond,
		UpgradeTimeout:      20 * time.Second,
		Logger:              quiet(),
	})
	require.NoError(t, err)
	w.reg = upgrader.NewRegistry()
	require.NoError(t, w.reg.Register(openwrt.Connection, ow))
	w.eng, err = upgrader.NewEngine(w.st, w.reg, &upgrader.Config{
		Logger: quiet(), Files: files, MaxImageSize: maxImage,
		Retry:        upgrader.RetryPolicy{MaxRetries: -1},
		PollInterval: 20 * time.Millisecond, MaintenanceInterval: 20 * time.Millisecond,
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = w.eng.Stop(sctx)
	})

	w.c7 = w.add(orgA, c7Model, c7Board, openwrttest.DefaultRelease)
	w.gl = w.add(orgA, glModel, glBoard, openwrttest.DefaultRelease)
	w.other = w.add(orgB, c7Model, c7Board, openwrttest.DefaultRelease)

	w.sim = openwrttest.NewImage(newSeries, c7Board, imageSize)
	w.cat, err = w.eng.CreateCategory(ctx, store.Category{Name: "routers"})
	require.NoError(t, err)
	w.build, err = w.eng.CreateBuild(ctx, store.Build{CategoryID: w.cat.ID, Version: newSeries, OSIdentifier: w.sim.Release})
	require.NoError(t, err)
	w.image, err = w.eng.UploadImage(ctx, store.Image{BuildID: w.build.ID, Name: w.sim.FileName()}, w.sim.Reader())
	require.NoError(t, err)
	w.otherCat, err = w.eng.CreateCategory(ctx, store.Category{Name: "globex routers", Organization: orgB})
	require.NoError(t, err)
	w.otherBuild, err = w.eng.CreateBuild(ctx, store.Build{CategoryID: w.otherCat.ID, Version: "g1"})
	require.NoError(t, err)
	w.otherImage, err = w.eng.UploadImage(ctx, store.Image{BuildID: w.otherBuild.ID, Name: "globex-secret-build.bin"},
		openwrttest.Image{Boards: []string{c7Board}, Release: w.sim.Release, Size: imageSize, Fwtool: true}.Reader())
	require.NoError(t, err)
	return w
}

// start starts the engine's workers (for Enqueue and batches).
func (w *goWorld) start() {
	w.startOnce.Do(func() { require.NoError(w.t, w.eng.Start(w.ctx)) })
}

// upload stores an image in the world's build.
func (w *goWorld) upload(name string, im openwrttest.Image) (store.Image, error) {
	return w.eng.UploadImage(w.ctx, store.Image{BuildID: w.build.ID, Name: name}, im.Reader())
}

// snapshot is everything a store and its Files hold.
type snapshot struct {
	Categories []store.Category
	Builds     []store.Build
	Images     []store.Image
	Devices    []store.Device
	Firmware   []store.DeviceFirmware
	Operations []store.Operation
	Batches    []store.Batch
	Logs       map[string][]string // operation ID → log lines
	Files      map[string]string   // file name in the Files directory → SHA-256
}

func (w *goWorld) snapshot() snapshot {
	t, ctx := w.t, w.ctx
	t.Helper()
	var s snapshot
	var err error
	s.Categories, err = w.st.ListCategories(ctx, store.CategoryFilter{})
	require.NoError(t, err)
	s.Builds, err = w.st.ListBuilds(ctx, store.BuildFilter{})
	require.NoError(t, err)
	s.Images, err = w.st.ListImages(ctx, store.ImageFilter{})
	require.NoError(t, err)
	s.Devices, err = w.st.ListDevices(ctx, store.DeviceFilter{})
	require.NoError(t, err)
	for _, d := range s.Devices {
		df, err := w.st.DeviceFirmware(ctx, d.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		require.NoError(t, err)
		s.Firmware = append(s.Firmware, df)
	}
	s.Operations, err = w.st.ListOperations(ctx, store.OperationFilter{})
	require.NoError(t, err)
	s.Batches, err = w.st.ListBatches(ctx, store.BatchFilter{})
	require.NoError(t, err)
	s.Logs = map[string][]string{}
	for _, op := range s.Operations {
		logs, err := w.st.Logs(ctx, op.ID, 0, 0)
		require.NoError(t, err)
		for _, l := range logs {
			s.Logs[op.ID] = append(s.Logs[op.ID], l.Line)
		}
	}
	s.Files = filesIn(t, w.filesDir)
	return s
}

// filesIn returns every file under dir (temporary ones included) with the
// SHA-256 of its content.
func filesIn(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	require.NoError(t, err)
	return out
}

// requireSame fails when the store or the files changed.
func requireSame(t *testing.T, before, after snapshot, what string) {
	t.Helper()
	if d := cmp.Diff(before, after); d != "" {
		t.Fatalf("%s: the store or its files changed (-before +after):\n%s", what, d)
	}
}

// deviceMark is what a device had received when it was marked.
type deviceMark struct {
	commands int
	files    []string
}

func markDevices(devs []*sim) []deviceMark {
	out := make([]deviceMark, len(devs))
	for i, d := range devs {
		out[i] = deviceMark{commands: len(d.dev.Commands()), files: d.dev.Files()}
	}
	return out
}

// contact says what a row lets reach the devices.
type contact int

const (
	// contactNone: no device receives anything.
	contactNone contact = iota
	// contactReadOnly: devices may be read (identity, release, board,
	// memory) but receive no file, no change and no flash.
	contactReadOnly
)

// requireUntouched fails when a device was flashed, or got more than c
// allows since marks were taken.
func requireUntouched(t *testing.T, devs []*sim, marks []deviceMark, c contact) {
	t.Helper()
	if c == contactAccepted {
		return // the row checks what reached the devices
	}
	for i, d := range devs {
		name := d.rec.Name + " (" + d.rec.BoardName + ", " + d.dev.Release() + ")"
		require.Zerof(t, d.dev.Flashed(), "%s was flashed", name)
		cmds := d.dev.Commands()[marks[i].commands:]
		switch c {
		case contactNone:
			require.Emptyf(t, cmds, "%s received commands", name)
		case contactReadOnly:
			for _, c := range cmds {
				require.Truef(t, readOnlyCommand(c), "%s received a command that is not read-only: %q", name, c)
			}
		}
		require.Equalf(t, marks[i].files, d.dev.Files(), "%s: files written", name)
	}
}

// readOnlyCommand reports whether a command line, as a device received it,
// only reads: the reads an attempt or a dry run starts with, no
// redirection, no subsystem (an upload).
func readOnlyCommand(line string) bool {
	if strings.Contains(line, ">") || strings.HasPrefix(line, "subsystem:") || strings.HasPrefix(line, "sftp:") {
		return false
	}
	for _, p := range []string{"'cat' '", "'uci' 'get' '", "'uci' '-q' 'get' '", "'ubus' 'call' 'system' 'board'",
		"'df' '", "'ls' '", "'sha256sum' '/etc/", "'md5sum' '/etc/"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// argvWith returns the argument vectors the device ran that hold s in one
// of their words.
func argvWith(dev *openwrttest.Device, s string) [][]string {
	var out [][]string
	for _, argv := range dev.Executed() {
		if slices.ContainsFunc(argv, func(a string) bool { return strings.Contains(a, s) }) {
			out = append(out, argv)
		}
	}
	return out
}
