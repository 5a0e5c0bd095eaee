package openwrttest

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

const handshakeTimeout = 10 * time.Second

// sconn is one accepted TCP connection.
type sconn struct {
	nc   net.Conn
	once sync.Once
	done chan struct{} // closed when the connection is killed
}

func (c *sconn) kill() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

func (d *Device) acceptLoop(ln net.Listener) {
	defer d.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		d.mu.Lock()
		if d.closed || d.ln != ln {
			d.mu.Unlock()
			nc.Close()
			return
		}
		if d.refused < d.faults.RefuseConnections {
			d.refused++
			d.mu.Unlock()
			nc.Close()
			continue
		}
		c := &sconn{nc: nc, done: make(chan struct{})}
		if d.conns == nil {
			d.conns = make(map[*sconn]struct{})
		}
		d.conns[c] = struct{}{}
		cfg := d.sshCfg
		d.wg.Add(1)
		d.mu.Unlock()
		go d.handleConn(c, cfg)
	}
}

func (d *Device) handleConn(c *sconn, cfg *ssh.ServerConfig) {
	defer d.wg.Done()
	defer func() {
		c.kill()
		d.mu.Lock()
		delete(d.conns, c)
		d.mu.Unlock()
	}()
	_ = c.nc.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(c.nc, cfg)
	if err != nil {
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	if m := d.cfg.Meter; m != nil {
		m.connOpened(d, d.cfg.MeterGroup)
		defer m.connClosed(d, d.cfg.MeterGroup)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ssh.DiscardRequests(reqs)
	}()
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "unknown channel type")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		d.wg.Add(1)
		go d.session(c, ch, creqs)
	}
	_ = sc.Close()
}

func (d *Device) session(c *sconn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer d.wg.Done()
	started := false
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if started || ssh.Unmarshal(req.Payload, &p) != nil {
				_ = req.Reply(false, nil)
				continue
			}
			started = true
			_ = req.Reply(true, nil)
			d.record(p.Command)
			d.wg.Add(1)
			go d.runExec(c, ch, p.Command)
		case "subsystem":
			var p struct{ Name string }
			if started || ssh.Unmarshal(req.Payload, &p) != nil {
				_ = req.Reply(false, nil)
				continue
			}
			d.record("subsystem:" + p.Name)
			if p.Name != "sftp" || !d.cfg.SFTP {
				_ = req.Reply(false, nil)
				continue
			}
			started = true
			_ = req.Reply(true, nil)
			d.wg.Add(1)
			go d.serveSFTP(c, ch)
		case "env", "pty-req", "window-change":
			if req.WantReply {
				_ = req.Reply(true, nil)
			}
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	if !started {
		ch.Close()
	}
}

func (d *Device) runExec(c *sconn, ch ssh.Channel, cmd string) {
	defer d.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Stops waiting commands when the connection or the device ends.
		select {
		case <-c.done:
		case <-d.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	e := &env{d: d, c: c, ctx: ctx, stdin: ch, stdout: ch, stderr: ch.Stderr()}
	code := e.run(cmd)
	if e.noExit {
		return
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
	_ = ch.CloseWrite()
	ch.Close()
	if e.after != nil {
		e.after()
	}
}
