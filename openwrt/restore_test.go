package openwrt

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// recordingReporter is a testReporter that is also an UndoRecorder, as the
// engine's Reporter is: it keeps the records, and how many service stops
// the device had run when each was made.
type recordingReporter struct {
	*testReporter
	dev *openwrttest.Device

	mu          sync.Mutex
	records     []undoRecord
	stopsBefore []int
	undone      int
}

func (r *recordingReporter) RecordUndo(ctx context.Context, rec string) error {
	if err := r.Cancelled(ctx); err != nil {
		return err
	}
	var u undoRecord
	if err := json.Unmarshal([]byte(rec), &u); err != nil {
		return err
	}
	stops := len(stopsRun(r.dev))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, u)
	r.stopsBefore = append(r.stopsBefore, stops)
	return nil
}

func (r *recordingReporter) Undone(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.undone++
	return nil
}

// stopsRun returns the services the device was asked to stop, in order.
func stopsRun(dev *openwrttest.Device) []string {
	var out []string
	for _, a := range dev.Executed() {
		if len(a) == 2 && strings.HasPrefix(a[0], initDir+"/") && a[1] == "stop" {
			out = append(out, strings.TrimPrefix(a[0], initDir+"/"))
		}
	}
	return out
}

// onDevice runs cmd on dev over SSH, as an operator would.
func onDevice(t *testing.T, dev *openwrttest.Device, cmd string) {
	t.Helper()
	c, err := ssh.Dial("tcp", dev.Addr(), dev.ClientConfig())
	require.NoError(t, err)
	defer c.Close()
	s, err := c.NewSession()
	require.NoError(t, err)
	defer s.Close()
	_ = s.Run(cmd) // a service that is not installed exits 127: no matter
}

// isUndo reports whether a is one of the commands that undo an attempt.
func isUndo(a []string, image string) bool {
	switch {
	case slices.Equal(a, []string{"rm", "-f", image}), slices.Equal(a, []string{"wifi", "up"}):
		return true
	case len(a) == 2 && strings.HasPrefix(a[0], initDir+"/") && a[1] == "start":
		return true
	}
	return false
}

// A device left as an interrupted attempt left it (services stopped, the
// wireless down, a partial image in /tmp) is put back by Restore from the
// undo records alone: it reads nothing from the device and runs only the
// commands that undo.
func TestRestoreUndoesRecords(t *testing.T) {
	t.Parallel()
	name := "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	path := DefaultRemoteDir + "/" + name
	b := setup(t, setupOpts{name: name, sim: openwrttest.Config{Files: map[string][]byte{path: []byte("partial")}}})
	onDevice(t, b.dev, "/etc/init.d/dnsmasq stop; /etc/init.d/uhttpd stop; wifi down")
	require.False(t, b.dev.Services()["dnsmasq"])
	before := len(b.dev.Executed())
	b.job.Undo = []string{`{"services":["dnsmasq","uhttpd"]}`, `{"wifi":true}`, `{"image":"` + path + `"}`}

	require.NoError(t, b.u.Restore(context.Background(), b.job))

	allRunning(t, b.dev)
	_, left := b.dev.File(path)
	assert.False(t, left, "the partial image was removed")
	ran := b.dev.Executed()[before:]
	assert.True(t, slices.ContainsFunc(ran, func(a []string) bool { return slices.Equal(a, []string{"wifi", "up"}) }), "%q", ran)
	for _, a := range ran {
		assert.True(t, isUndo(a, path), "Restore ran %q", a)
	}
	assert.Zero(t, b.dev.Flashed())
	assert.Empty(t, b.rep.Phases(), "a restore reports no phase")
	assert.Contains(t, b.rep.Logs(), "Device put back as the interrupted attempt found it")
}

// Records that name what this package would never change are set aside:
// a path as a service, another file than the image's. A record that cannot
// be read is taken at its worst: every configured service, the wireless,
// the image.
func TestRestoreRecordsItDoesNotTrust(t *testing.T) {
	t.Parallel()
	name := "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	path := DefaultRemoteDir + "/" + name
	t.Run("set aside", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{name: name, sim: openwrttest.Config{Files: map[string][]byte{"/etc/config/network": []byte("config")}}})
		onDevice(t, b.dev, "/etc/init.d/dnsmasq stop")
		before := len(b.dev.Executed())
		b.job.Undo = []string{`{"services":["../../bin/sh","dnsmasq","a b"],"image":"/etc/config/network"}`}
		require.NoError(t, b.u.Restore(context.Background(), b.job))
		_, kept := b.dev.File("/etc/config/network")
		assert.True(t, kept, "another file than the image's is never removed")
		assert.Equal(t, [][]string{{initDir + "/dnsmasq", "start"}}, b.dev.Executed()[before:])
		logs := b.rep.Logs()
		assert.Contains(t, logs, `"../../bin/sh", which is no service name`)
		assert.Contains(t, logs, `"a b", which is no service name`)
		assert.Contains(t, logs, `the file "/etc/config/network", not where this upgrader puts the image`)
	})
	t.Run("unreadable", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{name: name})
		before := len(b.dev.Executed())
		b.job.Undo = []string{`{"services":[`}
		require.NoError(t, b.u.Restore(context.Background(), b.job))
		ran := b.dev.Executed()[before:]
		want := [][]string{{"rm", "-f", path}}
		for _, s := range b.u.cfg.Services {
			want = append(want, []string{initDir + "/" + s, "start"})
		}
		want = append(want, []string{"wifi", "up"})
		assert.Equal(t, want, ran)
		assert.Contains(t, b.rep.Logs(), "not understood")
	})
	t.Run("nothing to undo", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{name: name})
		b.job.Undo = []string{`{}`}
		require.NoError(t, b.u.Restore(context.Background(), b.job))
		assert.Empty(t, b.dev.Commands(), "nothing to undo: the device is not contacted")
	})
}

// Restore tries new connections until its budget is spent: refused
// connections are tried again; a device that never answers gives a
// recoverable error, and Restore honours ctx.
func TestRestoreConnections(t *testing.T) {
	t.Parallel()
	t.Run("refused twice", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{RefuseConnections: 2}}})
		b.job.Undo = []string{`{"services":["dnsmasq"]}`}
		require.NoError(t, b.u.Restore(context.Background(), b.job))
		assert.True(t, ran(b.dev, initDir+"/dnsmasq", "start"))
	})
	t.Run("never answers", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{config: func(c *Config) { c.ConnectTimeout, c.CommandTimeout = 300*time.Millisecond, 100*time.Millisecond }})
		require.NoError(t, b.dev.Close())
		b.job.Undo = []string{`{"services":["dnsmasq"]}`}
		err := b.u.Restore(context.Background(), b.job)
		requireKind(t, err, upgrader.KindRecoverable, status.ReasonConnectionFailed)
		assert.Contains(t, err.Error(), "could not undo on the device (started dnsmasq)")
	})
	t.Run("ctx ended", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{})
		require.NoError(t, b.dev.Close())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		b.job.Undo = []string{`{"services":["dnsmasq"]}`}
		require.Error(t, b.u.Restore(ctx, b.job))
	})
}

// An attempt records each change before it makes it: the services before
// the first stop, the wireless before "wifi down", the image before the
// upload; its cleanup, once everything is undone, says so (Undone).
func TestAttemptRecordsBeforeChanging(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{sim: openwrttest.Config{RequireImageMetadata: true, Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}})
	rep := &recordingReporter{testReporter: b.rep, dev: b.dev}
	b.job.Report = rep
	err := b.upgrade(t) // the image has no metadata: refused by sysupgrade --test
	requireKind(t, err, upgrader.KindAborted, status.ReasonImageInvalid)

	path := DefaultRemoteDir + "/" + b.job.Image.Name
	require.Equal(t, []undoRecord{{Services: b.u.cfg.Services}, {Wifi: true}, {Image: path}}, rep.records)
	stopped := stopsRun(b.dev)
	require.NotEmpty(t, stopped)
	assert.Equal(t, []int{0, len(stopped), len(stopped)}, rep.stopsBefore, "each record before the change")
	assert.Equal(t, 1, rep.undone, "the cleanup cleared the records")
	allRunning(t, b.dev)
	_, left := b.dev.File(path)
	assert.False(t, left)
}

// An attempt whose record cannot be kept makes no change.
func TestAttemptWithoutRecordChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}})
	b.job.Report = &refusingRecorder{testReporter: b.rep}
	err := b.upgrade(t)
	requireKind(t, err, upgrader.KindRecoverable, status.ReasonUpgraderError)
	assert.Empty(t, stopsRun(b.dev), "no service stopped without a record")
	assert.Empty(t, uploads(b.dev))
}

type refusingRecorder struct{ *testReporter }

func (*refusingRecorder) RecordUndo(context.Context, string) error {
	return errors.New("store unreachable")
}

func (*refusingRecorder) Undone(context.Context) error { return nil }

// The attempt that takes over an interrupted one (Job.Undo) undoes the
// interrupted one's changes with its own when it ends before flashing,
// whatever its own outcome; one that never reached the device leaves them
// to the engine (Restore).
func TestAttemptUndoesWhatTheInterruptedOneLeft(t *testing.T) {
	t.Parallel()
	name := "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	path := DefaultRemoteDir + "/" + name
	records := []string{`{"services":["dnsmasq","uhttpd","odhcpd"]}`, `{"wifi":true}`, `{"image":"` + path + `"}`}
	t.Run("reached the device", func(t *testing.T) {
		t.Parallel()
		// A device that refuses the image: the new attempt aborts at its
		// image test, having stopped nothing itself (the memory is free).
		b := setup(t, setupOpts{name: name, sim: openwrttest.Config{RequireImageMetadata: true}})
		onDevice(t, b.dev, "/etc/init.d/dnsmasq stop; /etc/init.d/uhttpd stop; /etc/init.d/odhcpd stop; wifi down")
		rep := &recordingReporter{testReporter: b.rep, dev: b.dev}
		b.job.Report, b.job.Undo = rep, records
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonImageInvalid)
		allRunning(t, b.dev)
		assert.True(t, ran(b.dev, "wifi", "up"))
		_, left := b.dev.File(path)
		assert.False(t, left)
		assert.Equal(t, 1, rep.undone)
	})
	t.Run("never reached it", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{name: name, creds: func(_ *bundle, c *Credentials) { c.HostKeyCallback = PinnedKey(nil) }})
		rep := &recordingReporter{testReporter: b.rep, dev: b.dev}
		b.job.Report, b.job.Undo = rep, records
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonHostKeyMismatch)
		assert.Empty(t, b.dev.Executed())
		assert.Zero(t, rep.undone, "the records stay for the engine")
	})
}

// answerDelay relays TCP connections to a device, delaying what the device
// sends back while slow is set; cut drops the open connections.
type answerDelay struct {
	ln     net.Listener
	target string
	slow   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newAnswerDelay(t *testing.T, target string) *answerDelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &answerDelay{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *answerDelay) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, d)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(d, c); d.Close() }()
		go func() {
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := d.Read(buf)
				if n > 0 {
					if p.slow.Load() {
						time.Sleep(300 * time.Millisecond)
					}
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (p *answerDelay) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// A service whose stop command was cut off (a cancel, a dropped session)
// after the device ran it is started again: it counts as stopped from the
// moment its command is sent.
func TestStopCutOffIsUndone(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"cancel", "dropped session"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			var proxy *answerDelay
			b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
				creds: func(_ *bundle, c *Credentials) { c.Address = proxy.ln.Addr().String() }})
			proxy = newAnswerDelay(t, b.dev.Addr())
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			ended := make(chan struct{})
			var watcher sync.WaitGroup
			defer watcher.Wait()
			defer close(ended)
			// From the memory phase on, the device's answers are late; once
			// it stopped a service, the attempt is cut off while it waits
			// for that answer.
			b.rep.onPhase = func(p status.Phase) {
				if p != status.PhaseMemory {
					return
				}
				proxy.slow.Store(true)
				watcher.Go(func() {
					for {
						select {
						case <-ended:
							return
						default:
						}
						for _, running := range b.dev.Services() {
							if !running {
								proxy.slow.Store(false)
								if how == "cancel" {
									cancel(upgrader.ErrCancelled)
								} else {
									proxy.cut()
								}
								return
							}
						}
						time.Sleep(2 * time.Millisecond)
					}
				})
			}
			err := b.u.Upgrade(ctx, b.job)
			require.Error(t, err)
			require.Len(t, stopsRun(b.dev), 1, "cut off at the first stop")
			allRunning(t, b.dev)
			assert.True(t, ran(b.dev, initDir+"/"+stopsRun(b.dev)[0], "start"))
		})
	}
}

// The cleanup tries new connections until its budget is spent: a refused
// reconnection is tried again.
func TestCleanupReconnectsUntilItsBudgetIsSpent(t *testing.T) {
	t.Parallel()
	big := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 1 << 20}
	b := setup(t, setupOpts{img: &big, sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}})
	b.rep.onPhase = func(p status.Phase) {
		if p == status.PhaseUpload { // the upload is cut, then two connections refused
			b.dev.SetFaults(openwrttest.Faults{LowMemoryUntilServicesStopped: true, DropUploadAfter: 64 << 10, RefuseConnections: 2})
		}
	}
	err := b.upgrade(t)
	requireKind(t, err, upgrader.KindRecoverable, status.ReasonUploadFailed)
	require.NotEmpty(t, stopsRun(b.dev))
	allRunning(t, b.dev)
	_, left := b.dev.File(DefaultRemoteDir + "/" + b.job.Image.Name)
	assert.False(t, left, "the partial image was removed")
	assert.Contains(t, b.rep.Logs(), "Cannot reconnect to undo the attempt's changes")
}
