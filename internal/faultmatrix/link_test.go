package faultmatrix_test

// A slow link: a TCP relay between the upgrader and a simulated device that
// carries what the upgrader sends at a fixed rate (the simulator has no rate
// knob of its own). The upgrader still gets ahead of the device by what its
// socket buffer and the SSH channel's window hold (about 2 MiB on loopback):
// an upload's progress, counted from the bytes it read from the image,
// follows the link beyond that.

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// linkBuffer is the receive buffer of the relay's sockets, in bytes (the
// kernel doubles it).
const linkBuffer = 8 << 10

type link struct {
	ln     net.Listener
	target func() string // the device's address now
	rate   int           // bytes a second, upgrader to device (0: no limit)
	delay  time.Duration // added to everything the device sends back
	done   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	pipes map[*pipe]struct{}
}

// newLink starts a relay to target carrying rate bytes a second to the
// device (0: no limit) and delaying the device's answers by delay; it is
// closed when the test ends.
func newLink(t *testing.T, target func() string, rate int, delay time.Duration) *link {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, linkBuffer)
		})
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := &link{ln: ln, target: target, rate: rate, delay: delay, done: make(chan struct{}), pipes: map[*pipe]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(l.close)
	return l
}

// Addr is where the upgrader connects.
func (l *link) Addr() string { return l.ln.Addr().String() }

func (l *link) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go l.serve(c)
	}
}

// pipe is one relayed connection. Either side failing ends both at once,
// with a reset: what the relay still holds of the upgrader's data must not
// reach the device after the upgrader stopped sending.
type pipe struct {
	up, down net.Conn
	once     sync.Once
	gone     chan struct{}
}

func (p *pipe) cut() {
	p.once.Do(func() {
		close(p.gone)
		for _, c := range []net.Conn{p.up, p.down} {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
		}
	})
}

func (l *link) serve(c net.Conn) {
	defer l.wg.Done()
	d := net.Dialer{Timeout: 2 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, linkBuffer)
		})
		return errors.Join(err, serr)
	}}
	dc, err := d.Dial("tcp", l.target())
	if err != nil {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		return
	}
	p := &pipe{up: c, down: dc, gone: make(chan struct{})}
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		p.cut()
		return
	default:
	}
	l.pipes[p] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.pipes, p)
		l.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Go(func() {
		defer p.cut()
		l.delayed(p)
	})
	wg.Go(func() {
		defer p.cut()
		l.paced(p)
	})
	wg.Wait()
}

// paced copies the upgrader's bytes to the device at the link's rate, a
// chunk at a time, without bursts after an idle while.
func (l *link) paced(p *pipe) {
	if l.rate <= 0 {
		_, _ = io.Copy(p.down, p.up)
		return
	}
	buf := make([]byte, max(l.rate/50, 512))
	var ready time.Time
	for {
		n, err := p.up.Read(buf)
		if n > 0 {
			ready = later(ready, time.Now()).Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
			if wait := time.Until(ready); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-p.gone:
					t.Stop()
					return
				}
			}
			if _, werr := p.down.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// delayed copies the device's answers to the upgrader, each delay after
// it was sent.
func (l *link) delayed(p *pipe) {
	if l.delay <= 0 {
		_, _ = io.Copy(p.up, p.down)
		return
	}
	type chunk struct {
		b   []byte
		due time.Time
	}
	queue := make(chan chunk, 1024)
	go func() {
		defer close(queue)
		for {
			buf := make([]byte, 32<<10)
			n, err := p.down.Read(buf)
			if n > 0 {
				select {
				case queue <- chunk{buf[:n], time.Now().Add(l.delay)}:
				case <-p.gone:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range queue {
		if wait := time.Until(c.due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-p.gone:
				t.Stop()
				return
			}
		}
		if _, err := p.up.Write(c.b); err != nil {
			return
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (l *link) close() {
	l.mu.Lock()
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	pipes := make([]*pipe, 0, len(l.pipes))
	for p := range l.pipes {
		pipes = append(pipes, p)
	}
	l.mu.Unlock()
	l.ln.Close()
	for _, p := range pipes {
		p.cut()
	}
	l.wg.Wait()
}
