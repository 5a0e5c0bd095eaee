package openwrt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// errUnavailable marks an upload method the device does not offer; the next
// method is tried.
var errUnavailable = errors.New("openwrt: upload method not available on the device")

// progressReader counts the bytes read through it and calls report, at
// most every reportEvery or when the percentage changes by 1 or more.
type progressReader struct {
	r      io.Reader
	n      int64
	report func(sent int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if n > 0 && p.report != nil {
		p.report(p.n)
	}
	return n, err
}

// uploadVia sends size bytes of r to remotePath on c with method m.
func (c *conn) uploadVia(ctx context.Context, m UploadMethod, r io.Reader, size int64, remotePath string) error {
	switch m {
	case UploadSFTP:
		return c.uploadSFTP(ctx, r, remotePath)
	case UploadSCP:
		return c.uploadSCP(ctx, r, size, remotePath)
	case UploadCat:
		return c.uploadCat(ctx, r, remotePath)
	}
	return fmt.Errorf("openwrt: unknown upload method %q", m)
}

// uploadSFTP writes the image with SFTP on a session of its own, and
// returns once that session has ended.
//
// The session is opened here, not by sftp.NewClient, so that it can be
// waited for: closing an SFTP client only sends EOF to the server and waits
// for the server's EOF, while the server's exit status and the channel's
// close are still on their way. dropbear (2022.83, on loopback) sometimes
// drops the next session opened at that moment, before its command starts
// ("start 'sha256sum' …: EOF" in the checksum step that follows the
// upload); waiting for the SFTP session to end first avoids it.
func (c *conn) uploadSFTP(ctx context.Context, r io.Reader, remotePath string) error {
	ss, err := bounded(ctx, c, func() (*sftpSession, error) { return c.openSFTP() },
		func(ss *sftpSession) { ss.ch.Close(); ss.client.Close() })
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: sftp: %w", errUnavailable, err)
	}
	defer ss.end(ctx, c)
	stop := context.AfterFunc(ctx, func() { ss.ch.Close() })
	defer stop()
	f, err := ss.client.OpenFile(remotePath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("openwrt: sftp: create %s: %w", remotePath, err)
	}
	if _, err := f.ReadFromWithConcurrency(r, 0); err != nil {
		f.Close()
		return fmt.Errorf("openwrt: sftp: write %s: %w", remotePath, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("openwrt: sftp: close %s: %w", remotePath, err)
	}
	return nil
}

// sftpSession is an SFTP client on a session channel of its own.
type sftpSession struct {
	ch     ssh.Channel
	client *sftp.Client
	// ended is closed when the channel is closed (its requests end): the
	// server is done with the session.
	ended chan struct{}
}

// sftpStdin is the SFTP client's writer: closing it sends EOF (the server
// then exits), not the channel's close.
type sftpStdin struct{ ssh.Channel }

func (w sftpStdin) Close() error { return w.CloseWrite() }

// openSFTP opens a session channel, starts the sftp subsystem on it and
// greets the server. It may block on a dead connection: run it bounded.
//
// An ssh.Session is not used: its Wait reports only on commands started
// with Start, Run or Shell, never on a subsystem.
func (c *conn) openSFTP() (*sftpSession, error) {
	ch, reqs, err := c.client.OpenChannel("session", nil)
	if err != nil {
		return nil, err
	}
	ss := &sftpSession{ch: ch, ended: make(chan struct{})}
	go func() {
		// exit-status and the like: nothing here needs them.
		for r := range reqs {
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
		close(ss.ended)
	}()
	// The server's standard error is read and dropped, so that it never
	// fills the channel's window.
	go func() { _, _ = io.Copy(io.Discard, ch.Stderr()) }()
	ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(struct{ Name string }{"sftp"}))
	if err == nil && !ok {
		err = errors.New("the device refused the sftp subsystem")
	}
	if err == nil {
		ss.client, err = sftp.NewClientPipe(ch, sftpStdin{ch})
	}
	if err != nil {
		ch.Close()
		return nil, err
	}
	return ss, nil
}

// end closes the SFTP client, which sends EOF to the server, and waits for
// the session to end: the server's EOF, then its exit and the channel's
// close. When that takes longer than closeGrace, or ctx ends, the channel
// is closed; if the device does not answer that within closeGrace either,
// the whole connection is closed.
func (ss *sftpSession) end(ctx context.Context, c *conn) {
	done := make(chan struct{})
	go func() {
		_ = ss.client.Close() // returns once the server's EOF came, or the channel is closed
		<-ss.ended
		close(done)
	}()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-ctx.Done():
	case <-t.C:
	}
	_ = ss.ch.Close()
	t.Reset(closeGrace)
	select {
	case <-done:
	case <-t.C:
		_ = c.Close()
		<-done
	}
}

// uploadSCP speaks the sink side of the legacy SCP protocol: "scp -t PATH"
// answers a 0 byte when ready, then after the "C0644 SIZE NAME" line, then
// after the data and its trailing 0 byte.
func (c *conn) uploadSCP(ctx context.Context, r io.Reader, size int64, remotePath string) error {
	s, err := c.newSession(ctx)
	if err != nil {
		return fmt.Errorf("openwrt: scp: open session: %w", err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	stdin, err := s.StdinPipe()
	if err != nil {
		return fmt.Errorf("openwrt: scp: %w", err)
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		return fmt.Errorf("openwrt: scp: %w", err)
	}
	stderr := &capBuffer{max: MaxErrorOutput}
	s.Stderr = stderr
	cmd := command("scp", "-t", remotePath)
	if err := s.Start(cmd); err != nil {
		return fmt.Errorf("openwrt: scp: start: %w", err)
	}
	out := bufio.NewReaderSize(stdout, 512)
	// The first answer tells whether scp exists at all.
	if err := scpAck(out); err != nil {
		_ = stdin.Close()
		werr := s.Wait()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: scp: %v %s", errUnavailable, werr, strings.TrimSpace(stderr.String()))
		}
		return fmt.Errorf("openwrt: scp: %w", err)
	}
	fail := func(stage string, err error) error {
		_ = stdin.Close()
		_ = s.Close()
		return fmt.Errorf("openwrt: scp: %s: %w", stage, err)
	}
	name := strings.NewReplacer("\n", "_", "\r", "_", "/", "_").Replace(path.Base(remotePath))
	if _, err := io.WriteString(stdin, "C0644 "+strconv.FormatInt(size, 10)+" "+name+"\n"); err != nil {
		return fail("header", err)
	}
	if err := scpAck(out); err != nil {
		return fail("header", err)
	}
	n, err := io.Copy(stdin, io.LimitReader(r, size))
	if err != nil {
		return fail("data", err)
	}
	if n != size {
		return fail("data", fmt.Errorf("image has %d bytes, %d expected", n, size))
	}
	if _, err := stdin.Write([]byte{0}); err != nil {
		return fail("data", err)
	}
	if err := scpAck(out); err != nil {
		return fail("data", err)
	}
	_ = stdin.Close()
	if err := s.Wait(); err != nil {
		return fmt.Errorf("openwrt: scp: %w %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// scpAck reads one SCP answer: 0 is OK, 1 and 2 carry an error message.
func scpAck(r *bufio.Reader) error {
	b, err := r.ReadByte()
	if err != nil {
		return err
	}
	if b == 0 {
		return nil
	}
	msg, _ := r.ReadString('\n')
	return fmt.Errorf("the device refused: %s", strings.TrimSpace(msg))
}

// uploadCat streams the image into "cat > PATH". The copy runs in the
// caller's goroutine, so the image reader is never used after it returns.
func (c *conn) uploadCat(ctx context.Context, r io.Reader, remotePath string) error {
	s, err := c.newSession(ctx)
	if err != nil {
		return fmt.Errorf("openwrt: cat upload: open session: %w", err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	stdin, err := s.StdinPipe()
	if err != nil {
		return fmt.Errorf("openwrt: cat upload: %w", err)
	}
	out := &capBuffer{max: MaxErrorOutput}
	s.Stdout, s.Stderr = out, out
	cmd := redirect(command("cat"), remotePath)
	if err := s.Start(cmd); err != nil {
		return fmt.Errorf("openwrt: cat upload: start: %w", err)
	}
	if _, err := io.Copy(stdin, r); err != nil {
		_ = s.Close()
		return fmt.Errorf("openwrt: cat upload: %w", err)
	}
	if err := stdin.Close(); err != nil {
		_ = s.Close()
		return fmt.Errorf("openwrt: cat upload: %w", err)
	}
	if err := s.Wait(); err != nil {
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			return &CommandError{Cmd: cmd, ExitStatus: ee.ExitStatus(), Output: truncateOutput(out.String(), MaxErrorOutput)}
		}
		return fmt.Errorf("openwrt: cat upload: %w", err)
	}
	return nil
}

// throttle calls fn when the percentage moved and at least every has
// passed since the last call, and always for the last byte.
type throttle struct {
	every time.Duration
	last  time.Time
	pct   int
	fn    func(pct int)
}

func (t *throttle) update(pct int, final bool) {
	if pct == t.pct {
		return
	}
	now := time.Now()
	if !final && now.Sub(t.last) < t.every {
		return
	}
	t.last, t.pct = now, pct
	t.fn(pct)
}
