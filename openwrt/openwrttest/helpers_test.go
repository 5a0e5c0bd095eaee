package openwrttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// TestMain checks that no test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeFile(name string, b []byte) error { return os.WriteFile(name, b, 0o600) }

// testImage is a small valid image for the default device.
var testImage = Image{
	Boards:  []string{DefaultBoardName},
	Release: "OpenWrt 23.05.3 r23809-234f1a2efa",
	Size:    256 << 10,
}

// setup starts a device and closes it at the end of the test.
func setup(t testing.TB, cfg Config) *Device {
	t.Helper()
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = 100 * time.Millisecond
	}
	d, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, d.Start())
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

// hostKeyCallback verifies the host key through a known_hosts file built
// from KnownHosts, as a real client would.
func hostKeyCallback(t testing.TB, d *Device) ssh.HostKeyCallback {
	t.Helper()
	f := path.Join(t.TempDir(), "known_hosts")
	require.NoError(t, writeFile(f, d.KnownHosts()))
	cb, err := knownhosts.New(f)
	require.NoError(t, err)
	return cb
}

func dial(t testing.TB, d *Device) *ssh.Client {
	t.Helper()
	c, err := dialErr(d, &ssh.ClientConfig{
		User:            d.Config().User,
		Auth:            []ssh.AuthMethod{ssh.Password(d.Config().Password)},
		HostKeyCallback: hostKeyCallback(t, d),
		Timeout:         5 * time.Second,
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func dialErr(d *Device, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	return ssh.Dial("tcp", d.Addr(), cfg)
}

type result struct {
	stdout, stderr string
	status         int
	err            error // non-exit errors (e.g. ssh.ExitMissingError)
}

// run executes cmd with optional stdin and returns its output and status.
func run(t testing.TB, c *ssh.Client, cmd string, stdin io.Reader) result {
	t.Helper()
	s, err := c.NewSession()
	require.NoError(t, err)
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errb, stdin
	err = s.Run(cmd)
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *ssh.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.status = ee.ExitStatus()
	default:
		r.status = -1
		r.err = err
	}
	return r
}

// sh runs cmd on a fresh connection and requires exit status 0.
func sh(t testing.TB, d *Device, cmd string) string {
	t.Helper()
	r := run(t, dial(t, d), cmd, nil)
	require.NoError(t, r.err)
	require.Equal(t, 0, r.status, "%s: %s", cmd, r.stderr)
	return r.stdout
}

func sftpUpload(c *ssh.Client, dst string, r io.Reader, opts ...sftp.ClientOption) error {
	sc, err := sftp.NewClient(c, opts...)
	if err != nil {
		return err
	}
	defer sc.Close()
	f, err := sc.Create(dst)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// scpUpload is the source side of legacy SCP, as `scp -O` sends it.
func scpUpload(c *ssh.Client, dst string, r io.Reader, size int64) error {
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	in, err := s.StdinPipe()
	if err != nil {
		return err
	}
	out, err := s.StdoutPipe()
	if err != nil {
		return err
	}
	if err := s.Start("scp -t " + quote(path.Dir(dst))); err != nil {
		return err
	}
	ack := func() error {
		var b [1]byte
		if _, err := io.ReadFull(out, b[:]); err != nil {
			return err
		}
		if b[0] != 0 {
			msg, _ := io.ReadAll(io.LimitReader(out, 512))
			return fmt.Errorf("scp: %q", msg)
		}
		return nil
	}
	if err := ack(); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(in, "C0644 %d %s\n", size, path.Base(dst)); err != nil {
		return err
	}
	if err := ack(); err != nil {
		return err
	}
	if _, err := io.Copy(in, r); err != nil {
		return err
	}
	if _, err := in.Write([]byte{0}); err != nil {
		return err
	}
	if err := ack(); err != nil {
		return err
	}
	in.Close()
	return s.Wait()
}

func catUpload(c *ssh.Client, dst string, r io.Reader) error {
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	s.Stdin = r
	return s.Run("cat > " + quote(dst))
}

// quote single-quotes s for sh.
func quote(s string) string {
	var b bytes.Buffer
	b.WriteByte('\'')
	for _, c := range []byte(s) {
		if c == '\'' {
			b.WriteString(`'\''`)
		} else {
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

func waitCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// refused reports whether a connection attempt to addr fails at TCP level.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// nopConn is a net.Conn that does nothing, for interpreter tests.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
