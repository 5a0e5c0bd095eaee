package openwrt

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// cutProxy relays TCP connections to a device; cut drops the open ones and
// refuses the next n connections.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	refuse int
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut(0) })
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.refuse > 0 {
			p.refuse--
			p.mu.Unlock()
			c.Close()
			continue
		}
		d, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, d)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(d, c); d.Close() }()
		go func() { _, _ = io.Copy(c, d); c.Close() }()
	}
}

func (p *cutProxy) cut(refuse int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.refuse = refuse
}

// A flash command that could not start (its session could not be opened)
// is sent again on a new connection; when it cannot be sent at all, the
// device is restored (services started, image removed) and the operation
// fails saying the device was not flashed.
func TestFlashCommandThatCouldNotStart(t *testing.T) {
	t.Parallel()
	big := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 1 << 20}
	for _, tc := range []struct {
		name    string
		refuse  int // connections refused after the cut
		flashed bool
	}{
		{"sent again on a new connection", 1, true},
		{"never sent: device restored", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var proxy *cutProxy
			b := setup(t, setupOpts{img: &big,
				sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}},
				creds: func(b *bundle, c *Credentials) {
					c.Address = proxy.ln.Addr().String()
				}})
			proxy = newCutProxy(t, b.dev.Addr())
			b.rep.onProgress = func(pct int) {
				if pct == status.ProgressFlashing { // decided, not yet sent
					proxy.cut(tc.refuse)
				}
			}
			err := b.upgrade(t)
			require.True(t, ran(b.dev, "/etc/init.d/uhttpd", "stop"), "services were stopped to make room")
			if tc.flashed {
				require.NoError(t, err)
				require.Equal(t, 1, b.dev.Flashed())
				return
			}
			requireKind(t, err, upgrader.KindFailed, status.ReasonFlashFailed)
			require.ErrorContains(t, err, "was not flashed")
			require.Zero(t, b.dev.Flashed())
			allRunning(t, b.dev)
			_, left := b.dev.File("/tmp/" + b.job.Image.Name)
			require.False(t, left, "the image was removed")
		})
	}
}

// A claim lost while the flash command could not be sent is not sent
// again: another engine may be verifying the operation by then and must not
// find the device flashed behind its back (found by the multi-process
// tests). The device is left alone, not even restored: the new holder owns
// it now.
func TestFlashNotSentAgainAfterTheClaimWasLost(t *testing.T) {
	t.Parallel()
	big := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 1 << 20}
	var proxy *cutProxy
	b := setup(t, setupOpts{img: &big,
		creds: func(b *bundle, c *Credentials) { c.Address = proxy.ln.Addr().String() }})
	proxy = newCutProxy(t, b.dev.Addr())
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	b.rep.onProgress = func(pct int) {
		if pct == status.ProgressFlashing { // decided, not yet sent
			proxy.cut(0)
			cancel(upgrader.ErrLeaseLost) // the engine gave the claim up meanwhile
		}
	}
	err := b.u.Upgrade(ctx, b.job)
	require.ErrorIs(t, err, upgrader.ErrLeaseLost)
	require.Zero(t, b.dev.Flashed(), "not flashed: the first send never started, and there was no second")
}
