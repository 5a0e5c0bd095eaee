package openwrt_test

// End-to-end tests: the engine, the memory store and the openwrt upgrader
// against simulated devices over real SSH.

import (
	"context"
	"slices"

	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

const (
	e2eType    = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	e2eRelease = "OpenWrt 23.05.3 r23809-234f1a2efa"
)

type fleet struct {
	eng   *upgrader.Engine
	st    *memory.Store
	mu    sync.Mutex
	devs  map[string]*openwrttest.Device
	image store.Image
	// credsHook, if set, runs in CredentialsFunc (e.g. to hang).
	credsHook func(ctx context.Context) error
}

type fleetOpts struct {
	engine    func(*upgrader.Config)
	upgrader  func(*openwrt.Config)
	imageSize int64
}

func newFleet(t *testing.T, o fleetOpts) *fleet {
	t.Helper()
	f := &fleet{st: memory.New(), devs: map[string]*openwrttest.Device{}}
	t.Cleanup(func() { checkMessages(t, f) }) // runs last: every operation has ended
	ocfg := &openwrt.Config{
		CredentialsFunc: func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
			if f.credsHook != nil {
				if err := f.credsHook(ctx); err != nil {
					return openwrt.Credentials{}, err
				}
			}
			f.mu.Lock()
			dev := f.devs[d.ID]
			f.mu.Unlock()
			if dev == nil {
				return openwrt.Credentials{}, fmt.Errorf("unknown device %s", d.ID)
			}
			return openwrt.Credentials{Address: dev.Addr(), User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
				HostKeyCallback: openwrt.PinnedKey(dev.HostKey())}, nil
		},
		ConnectTimeout: 2 * time.Second, CommandTimeout: 5 * time.Second, UpgradeTimeout: 5 * time.Second,
		ReconnectDelay: 50 * time.Millisecond, ReconnectRetryDelay: 50 * time.Millisecond, ReconnectWindow: 3 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	}
	if o.upgrader != nil {
		o.upgrader(ocfg)
	}
	ow, err := openwrt.New(ocfg)
	require.NoError(t, err)
	reg := upgrader.NewRegistry()
	require.NoError(t, reg.Register(openwrt.Connection, ow))
	ecfg := &upgrader.Config{
		Logger: slog.New(slog.DiscardHandler),
		Retry:  upgrader.RetryPolicy{InitialInterval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, RandomizationFactor: -1},
	}
	if o.engine != nil {
		o.engine(ecfg)
	}
	f.eng, err = upgrader.NewEngine(f.st, reg, ecfg)
	require.NoError(t, err)

	ctx := context.Background()
	cat, err := f.eng.CreateCategory(ctx, store.Category{Name: "c7"})
	require.NoError(t, err)
	build, err := f.eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3", OSIdentifier: e2eRelease})
	require.NoError(t, err)
	size := o.imageSize
	if size == 0 {
		size = 256 << 10
	}
	sim := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: e2eRelease, Size: size}
	f.image, err = f.eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: e2eType, Name: "openwrt-23.05.3-" + e2eType}, sim.Reader())
	require.NoError(t, err)
	return f
}

// device starts a simulated device and registers it.
func (f *fleet) device(t *testing.T, cfg openwrttest.Config) (store.Device, *openwrttest.Device) {
	t.Helper()
	id := uuid.NewString()
	cfg.UUID = id
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = 150 * time.Millisecond
	}
	dev, err := openwrttest.New(cfg)
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { dev.Close() })
	f.mu.Lock()
	f.devs[id] = dev
	f.mu.Unlock()
	d, err := f.eng.RegisterDevice(context.Background(), store.Device{ID: id, Model: dev.Config().Model,
		BoardName: dev.Config().BoardName, OSIdentifier: dev.Release(), Connection: openwrt.Connection, Active: true})
	require.NoError(t, err)
	return d, dev
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// didFlash reports whether the device ran a flash: a sysupgrade other than
// --test (matching command lines would also match image file names that
// contain "sysupgrade").
func didFlash(dev *openwrttest.Device) bool {
	for _, argv := range dev.Executed() {
		if len(argv) > 0 && argv[0] == "sysupgrade" && !slices.Contains(argv, "--test") {
			return true
		}
	}
	return dev.Flashed() > 0
}

func TestEngineUpgradeEndToEnd(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	d, dev := f.device(t, openwrttest.Config{RebootDelay: 2 * time.Second})
	start := time.Now()
	op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	took := time.Since(start)
	t.Logf("a full upgrade with a 2 s reboot took %s", took.Round(time.Millisecond))
	assert.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	assert.Equal(t, e2eRelease, dev.Release())
	df, err := f.st.DeviceFirmware(context.Background(), d.ID)
	require.NoError(t, err)
	assert.True(t, df.Installed)
	assert.Equal(t, f.image.ID, df.ImageID)

	// Again: the checksum file proves it is installed, nothing is uploaded.
	before := len(dev.Commands())
	op2, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op2.State)
	assert.Equal(t, status.ReasonAlreadyInstalled, op2.Reason)
	for _, c := range dev.Commands()[before:] {
		assert.NotContains(t, c, "scp")
		assert.NotContains(t, c, "cat >")
	}
}

func TestEngineRetriesThenSuccess(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	d, _ := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{RefuseConnections: 2}})
	op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	assert.Equal(t, 3, op.Attempt)
}

func TestEngineRetriesExhausted(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{engine: func(c *upgrader.Config) { c.Retry.MaxRetries = 2 }})
	d, dev := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{RefuseConnections: 100}})
	op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Failed, op.State)
	assert.Equal(t, status.ReasonMaxRetriesExceeded, op.Reason)
	assert.Equal(t, 3, op.Attempt)
	assert.False(t, didFlash(dev))
}

func TestEngineCorruptUploadRetried(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	d, dev := f.device(t, openwrttest.Config{SCP: true, Faults: openwrttest.Faults{CorruptUploads: 1}})
	op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	assert.Equal(t, 2, op.Attempt)
	assert.Equal(t, 1, dev.Flashed())
}

func TestEngineTimeoutBeforeFlashing(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{engine: func(c *upgrader.Config) { c.OperationTimeout = 300 * time.Millisecond }})
	d, dev := f.device(t, openwrttest.Config{})
	f.credsHook = func(ctx context.Context) error { // the host's credential lookup hangs
		<-ctx.Done()
		return ctx.Err()
	}
	op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Failed, op.State)
	assert.Equal(t, status.ReasonTimeout, op.Reason)
	assert.Empty(t, dev.Commands())
}

func TestEngineTimeoutAfterFlashingIsVerified(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		faults openwrttest.Faults
		state  status.State
	}{
		{"DeviceComesBack", openwrttest.Faults{}, status.Success},
		{"DeviceNeverComesBack", openwrttest.Faults{NeverComeBack: true}, status.Failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, fleetOpts{
				engine: func(c *upgrader.Config) {
					c.OperationTimeout = 2 * time.Second
					c.VerifyTimeout = 20 * time.Second
				},
				upgrader: func(c *openwrt.Config) {
					c.UpgradeTimeout = 10 * time.Second
					c.ReconnectWindow = 10 * time.Second // the 4 s reboot fits
				},
			})
			// The device takes 4 s to reboot: the operation's deadline (2 s,
			// ample for the steps before flashing even on a slow machine)
			// passes while the upgrader waits for it.
			d, dev := f.device(t, openwrttest.Config{Faults: tc.faults, RebootDelay: 4 * time.Second})
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			assert.Equal(t, tc.state, op.State, "reason %s", op.Reason)
			if tc.state == status.Failed {
				assert.Equal(t, status.ReasonTimeout, op.Reason)
			}
			assert.Equal(t, 1, dev.Flashed(), "flashed once, verified, never flashed again")
			logs, err := f.st.Logs(context.Background(), op.ID, 0, 0)
			require.NoError(t, err)
			var all []string
			for _, l := range logs {
				all = append(all, l.Line)
			}
			assert.Contains(t, strings.Join(all, "\n"), "deadline passed after flashing")
		})
	}
}

func TestEngineCancelPending(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	d, dev := f.device(t, openwrttest.Config{})
	ctx := ctxT(t)
	op, err := f.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	_, err = f.eng.Cancel(ctx, op.ID)
	require.NoError(t, err)
	end, err := f.eng.Run(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, end.State)
	assert.Empty(t, dev.Commands())
}

func TestEngineCancelWhileUploading(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		sim  openwrttest.Config
	}{{"sftp", openwrttest.Config{SFTP: true}}, {"scp", openwrttest.Config{SCP: true}}, {"cat", openwrttest.Config{}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, fleetOpts{imageSize: 24 << 20})
			sim := tc.sim
			sim.Faults.LowMemoryUntilServicesStopped = true
			d, dev := f.device(t, sim)
			ctx := ctxT(t)
			events, unsub := f.eng.Subscribe(4096)
			defer unsub()
			op, err := f.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			done := make(chan store.Operation, 1)
			go func() {
				end, _ := f.eng.Run(ctx, op.ID)
				done <- end
			}()
			// Cancel at the first progress report of the upload: most of the
			// 24 MiB are still to be sent.
			for ev := range events {
				if ev.OperationID == op.ID && ev.Kind == upgrader.EventOperationProgress &&
					ev.Progress > status.ProgressChecksum && ev.Progress < status.ProgressUploaded {
					break
				}
			}
			_, err = f.eng.Cancel(ctx, op.ID)
			require.NoError(t, err)
			end := <-done
			assert.Equal(t, status.Cancelled, end.State)
			assert.False(t, didFlash(dev))
			for svc, running := range dev.Services() {
				assert.True(t, running, "service %s restarted after the cancel", svc)
			}
			_, left := dev.File("/tmp/" + f.image.Name)
			assert.False(t, left, "the partial image is removed from the device's RAM")
			assert.Equal(t, openwrttest.DefaultRelease, dev.Release())
		})
	}
}

func TestEngineCancelRefusedWhileFlashing(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	d, dev := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{FlashHang: 500 * time.Millisecond}})
	ctx := ctxT(t)
	events, unsub := f.eng.Subscribe(4096)
	defer unsub()
	op, err := f.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	done := make(chan store.Operation, 1)
	go func() {
		end, _ := f.eng.Run(ctx, op.ID)
		done <- end
	}()
	for ev := range events {
		if ev.OperationID == op.ID && ev.Kind == upgrader.EventOperationPhase && ev.Phase == status.PhaseFlashing {
			break
		}
	}
	_, err = f.eng.Cancel(ctx, op.ID)
	require.ErrorIs(t, err, upgrader.ErrNotCancellable)
	end := <-done
	assert.Equal(t, status.Success, end.State, "reason %s", end.Reason)
	assert.Equal(t, e2eRelease, dev.Release())
}

func TestEngineManyDevicesQueued(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{engine: func(c *upgrader.Config) { c.Workers = 8 }})
	ctx := ctxT(t)
	require.NoError(t, f.eng.Start(ctx))
	defer f.eng.Stop(context.Background())
	var ids []string
	devs := map[string]*openwrttest.Device{}
	for range 24 {
		d, dev := f.device(t, openwrttest.Config{})
		op, err := f.eng.Enqueue(ctx, upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
		require.NoError(t, err)
		ids = append(ids, op.ID)
		devs[op.ID] = dev
	}
	for _, id := range ids {
		end, err := f.eng.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, status.Success, end.State, "reason %s", end.Reason)
		assert.Equal(t, e2eRelease, devs[id].Release())
	}
}

// TestOpenWrtPassesUpgraderSuite runs upgradertest.Run, the suite every
// custom upgrader passes, on the openwrt upgrader and simulated devices.
func TestOpenWrtPassesUpgraderSuite(t *testing.T) {
	upgradertest.Run(t, func(t *testing.T) upgradertest.Harness {
		var dev *openwrttest.Device
		ow, err := openwrt.New(&openwrt.Config{
			CredentialsFunc: func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
				return openwrt.Credentials{Address: dev.Addr(), User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
					HostKeyCallback: openwrt.PinnedKey(dev.HostKey())}, nil
			},
			ReconnectDelay: 50 * time.Millisecond, ReconnectRetryDelay: 50 * time.Millisecond, ReconnectWindow: 3 * time.Second,
			Logger: slog.New(slog.DiscardHandler),
		})
		require.NoError(t, err)
		return upgradertest.Harness{
			Upgrader: ow,
			NewJob: func(t *testing.T) *upgrader.Job {
				id := uuid.NewString()
				var err error
				dev, err = openwrttest.New(openwrttest.Config{UUID: id, RebootDelay: 100 * time.Millisecond})
				require.NoError(t, err)
				require.NoError(t, dev.Start())
				t.Cleanup(func() { dev.Close() })
				sim := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: e2eRelease, Size: 64 << 10}
				return &upgrader.Job{
					Operation: store.Operation{ID: store.NewID(), DeviceID: id, State: status.InProgress, Attempt: 1},
					Device:    store.Device{ID: id, Connection: openwrt.Connection, Active: true},
					Image: upgrader.Image{
						Image: store.Image{ID: "img", Name: "openwrt-" + e2eType, Size: sim.Len(), SHA256: sim.SHA256()},
						Build: store.Build{OSIdentifier: e2eRelease},
						OpenFunc: func(context.Context) (io.ReadCloser, error) {
							return sim.Open()
						},
					},
				}
			},
			Flashed: func(t *testing.T, job *upgrader.Job) bool { return dev.Flashed() > 0 },
		}
	})
}

func TestEngineRefusesInvalidOptions(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	d, dev := f.device(t, openwrttest.Config{})
	ctx := ctxT(t)
	_, err := f.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID, Options: []byte(`{"sysupgrade":"n,c"}`)})
	require.ErrorIs(t, err, openwrt.ErrInvalidOptions)
	ops, err := f.st.ListOperations(ctx, store.OperationFilter{DeviceID: d.ID})
	require.NoError(t, err)
	assert.Empty(t, ops, "no operation created")
	assert.Empty(t, dev.Commands(), "nothing reached the device")

	op, err := f.eng.Upgrade(ctx, upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID,
		Options: openwrt.Options{KeepConfig: true, Force: true}.JSON()})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State)
	require.Len(t, dev.Flashes(), 1)
	assert.Equal(t, []string{"-v", "-c", "-F", "/tmp/openwrt-23.05.3-" + e2eType}, dev.Flashes()[0].Args)
}
