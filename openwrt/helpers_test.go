package openwrt

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testUUID    = "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e"
	newRelease  = "OpenWrt 23.05.3 r23809-234f1a2efa"
	testImgSize = 256 << 10
)

// testReporter records what an attempt reports. cancel makes the next
// Phase and Cancelled calls return upgrader.ErrCancelled unless the
// operation already entered flashing: like a store, exactly one of the cancel
// and the move into flashing wins.
type testReporter struct {
	mu         sync.Mutex
	phases     []status.Phase
	progress   []int
	logs       []string
	cancelled  bool
	flashing   bool
	onPhase    func(p status.Phase) // called before the phase is recorded, without the lock
	onProgress func(pct int)        // called before the progress is recorded, without the lock
}

func (r *testReporter) Phase(ctx context.Context, p status.Phase) error {
	if r.onPhase != nil {
		r.onPhase(p)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled {
		return upgrader.ErrCancelled
	}
	if p == status.PhaseFlashing {
		r.flashing = true
	}
	r.phases = append(r.phases, p)
	return nil
}

func (r *testReporter) Progress(_ context.Context, pct int) error {
	if r.onProgress != nil {
		r.onProgress(pct)
	}
	if err := status.ValidateProgress(pct); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, pct)
	return nil
}

func (r *testReporter) Log(_ context.Context, line string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, line)
	return nil
}

func (r *testReporter) Cancelled(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancelled {
		return upgrader.ErrCancelled
	}
	return nil
}

// cancel asks for a cancel; it reports whether it won (false once the
// operation is flashing).
func (r *testReporter) cancel() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flashing {
		return false
	}
	r.cancelled = true
	return true
}

func (r *testReporter) Phases() []status.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.phases)
}

func (r *testReporter) Progresses() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.progress)
}

func (r *testReporter) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.logs, "\n")
}

// bundle is what setup returns.
type bundle struct {
	dev  *openwrttest.Device
	img  openwrttest.Image
	u    *Upgrader
	cfg  *Config
	rep  *testReporter
	job  *upgrader.Job
	addr func() string // the address CredentialsFunc returns
}

type setupOpts struct {
	sim     openwrttest.Config
	noUUID  bool // the device has no openwisp.http.uuid
	img     *openwrttest.Image
	name    string          // image file name
	options json.RawMessage // operation options
	config  func(*Config)   // changes the upgrader's config
	creds   func(b *bundle, c *Credentials)
}

// setup starts a simulated device with the test UUID and short delays, and
// builds an upgrader and a job for it.
func setup(t testing.TB, o setupOpts) *bundle {
	t.Helper()
	sim := o.sim
	if sim.UUID == "" && !o.noUUID {
		sim.UUID = testUUID
	}
	if sim.RebootDelay == 0 {
		sim.RebootDelay = 150 * time.Millisecond
	}
	dev, err := openwrttest.New(sim)
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { require.NoError(t, dev.Close()) })

	img := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: testImgSize}
	if o.img != nil {
		img = *o.img
	}
	b := &bundle{dev: dev, img: img, rep: &testReporter{}}
	b.addr = dev.Addr
	cfg := &Config{
		CredentialsFunc: func(ctx context.Context, d store.Device) (Credentials, error) {
			c := Credentials{
				Address:         b.addr(),
				User:            openwrttest.DefaultUser,
				Password:        openwrttest.DefaultPassword,
				HostKeyCallback: PinnedKey(dev.HostKey()),
			}
			if o.creds != nil {
				o.creds(b, &c)
			}
			return c, nil
		},
		ConnectTimeout:      2 * time.Second,
		CommandTimeout:      5 * time.Second,
		UpgradeTimeout:      5 * time.Second,
		ReconnectDelay:      50 * time.Millisecond,
		ReconnectRetryDelay: 50 * time.Millisecond,
		ReconnectWindow:     2 * time.Second,
		Logger:              slog.New(slog.DiscardHandler),
	}
	if o.config != nil {
		o.config(cfg)
	}
	b.cfg = cfg
	b.u, err = New(cfg)
	require.NoError(t, err)
	name := o.name
	if name == "" {
		name = "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	}
	b.job = newJob(img, name, o.options, b.rep)
	return b
}

// newJob builds the job of an operation upgrading the test device to img.
func newJob(img openwrttest.Image, name string, options json.RawMessage, rep upgrader.Reporter) *upgrader.Job {
	return &upgrader.Job{
		Operation: store.Operation{ID: "op-1", DeviceID: testUUID, ImageID: "img-1", State: status.InProgress, Attempt: 1, Options: options},
		Device:    store.Device{ID: testUUID, Name: "ap-1", Connection: "openwrt-ssh", Active: true},
		Image: upgrader.Image{
			Image: store.Image{ID: "img-1", BuildID: "build-1", Name: name, Size: img.Len(), SHA256: img.SHA256()},
			Build: store.Build{ID: "build-1", Version: "23.05.3", OSIdentifier: img.Release},
			OpenFunc: func(context.Context) (io.ReadCloser, error) {
				return img.Open()
			},
		},
		Report: rep,
	}
}

func (b *bundle) upgrade(t testing.TB) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return b.u.Upgrade(ctx, b.job)
}

// requireKind checks an attempt's classification.
func requireKind(t testing.TB, err error, kind upgrader.Kind, reason status.Reason) {
	t.Helper()
	require.Error(t, err)
	k, r := upgrader.Classify(err)
	require.Equal(t, kind.String(), k.String(), "kind of %v", err)
	require.Equal(t, reason, r, "reason of %v", err)
}

// executed returns the argument vectors the device ran whose first word
// has the given base name.
func executed(dev *openwrttest.Device, name string) [][]string {
	var out [][]string
	for _, argv := range dev.Executed() {
		if len(argv) > 0 && (argv[0] == name || strings.HasSuffix(argv[0], "/"+name)) {
			out = append(out, argv)
		}
	}
	return out
}

// ran reports whether the device ran exactly argv.
func ran(dev *openwrttest.Device, argv ...string) bool {
	for _, a := range dev.Executed() {
		if slices.Equal(a, argv) {
			return true
		}
	}
	return false
}

// flashed reports whether a "sysupgrade -v" ran.
func flashCommands(dev *openwrttest.Device) [][]string {
	var out [][]string
	for _, a := range executed(dev, "sysupgrade") {
		if slices.Contains(a, "-v") {
			out = append(out, a)
		}
	}
	return out
}

// uploads returns the upload commands and SFTP writes the device received.
func uploads(dev *openwrttest.Device) []string {
	var out []string
	for _, c := range dev.Commands() {
		if strings.HasPrefix(c, "sftp:put") || strings.Contains(c, "'scp'") || strings.HasPrefix(c, "'cat' >") {
			out = append(out, c)
		}
	}
	return out
}

// allRunning requires every service of the device to be running.
func allRunning(t testing.TB, dev *openwrttest.Device) {
	t.Helper()
	for svc, running := range dev.Services() {
		require.True(t, running, "service %s is stopped", svc)
	}
}
