package openwrt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// maxCapture bounds the output kept from one command, in bytes.
const maxCapture = 64 << 10

// sessionOpenTimeout bounds the opening of one SSH session (channel).
const sessionOpenTimeout = 30 * time.Second

// closeGrace is how long a command whose session was closed (timeout or
// ctx) may take to return before the whole connection is closed.
const closeGrace = 2 * time.Second

// errHostKey marks errors returned by the host key check.
var errHostKey = errors.New("openwrt: host key refused")

// conn is one SSH connection to a device, closed when the context it was
// dialled with ends.
type conn struct {
	client *ssh.Client
	addr   string
	stop   func() bool
	once   sync.Once
}

// detach keeps the connection open when the context it was dialled with
// ends: the flash, once decided, must not be cut by the attempt ending.
// The caller closes it.
func (c *conn) detach() { c.stop() }

func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		c.stop()
		err = c.client.Close()
	})
	return err
}

// withPort adds DefaultPort to an address without one.
func withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	host := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	return net.JoinHostPort(host, DefaultPort)
}

// dial connects and logs in. Its errors are classified: host key refused or
// no host key check → aborted (host-key-mismatch); anything else →
// recoverable (connection-failed).
func dial(ctx context.Context, creds Credentials, timeout time.Duration) (*conn, error) {
	return dialWith(ctx, creds, timeout, timeout)
}

// dialWith is dial with a TCP connection timeout of its own (tcpTimeout)
// before the SSH handshake's (timeout).
func dialWith(ctx context.Context, creds Credentials, timeout, tcpTimeout time.Duration) (*conn, error) {
	if creds.HostKeyCallback == nil {
		return nil, upgrader.Aborted(status.ReasonHostKeyMismatch,
			errors.New("openwrt: the credentials have no host key check (HostKeyCallback); refusing to connect"))
	}
	if creds.Address == "" {
		return nil, upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("openwrt: the credentials have no address"))
	}
	if creds.Password == "" && len(creds.Signers) == 0 {
		return nil, upgrader.Aborted(status.ReasonConnectionFailed, errors.New("openwrt: the credentials have neither password nor key"))
	}
	addr := withPort(creds.Address)
	var (
		keyMu  sync.Mutex
		keyErr error
	)
	cfg := &ssh.ClientConfig{
		User: creds.User,
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			if err := creds.HostKeyCallback(hostname, remote, key); err != nil {
				keyMu.Lock()
				keyErr = err
				keyMu.Unlock()
				return fmt.Errorf("%w: %w", errHostKey, err)
			}
			return nil
		},
		HostKeyAlgorithms: creds.HostKeyAlgorithms,
		Timeout:           timeout,
	}
	if len(creds.Signers) > 0 {
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(creds.Signers...))
	}
	if pw := creds.Password; pw != "" {
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}

	d := net.Dialer{Timeout: min(tcpTimeout, timeout)}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, upgrader.Recoverable(status.ReasonConnectionFailed, fmt.Errorf("openwrt: connect to %s: %w", addr, err))
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if len(cfg.HostKeyAlgorithms) == 0 {
		cfg.HostKeyAlgorithms = preferredHostKeyAlgorithms(creds.HostKeyCallback, addr, nc.RemoteAddr())
	}
	stopHandshake := context.AfterFunc(ctx, func() { nc.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if !stopHandshake() || err != nil {
		nc.Close()
		if err == nil {
			sc.Close()
			err = ctx.Err()
		}
		keyMu.Lock()
		defer keyMu.Unlock()
		return nil, classifyDialError(addr, err, keyErr)
	}
	_ = nc.SetDeadline(time.Time{})
	client := ssh.NewClient(sc, chans, reqs)
	c := &conn{client: client, addr: addr}
	c.stop = context.AfterFunc(ctx, func() {
		// The attempt is over (cancelled, timed out, or its claim lost to
		// another engine): reset the connection rather than close it, so
		// that what the kernel still holds unsent (upload data) is dropped
		// instead of reaching the device after we stopped.
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		client.Close()
	})
	return c, nil
}

func classifyDialError(addr string, err, keyErr error) error {
	if keyErr != nil || errors.Is(err, errHostKey) {
		var ke *knownhosts.KeyError
		if errors.As(keyErr, &ke) && len(ke.Want) == 0 {
			return upgrader.Aborted(status.ReasonHostKeyMismatch,
				fmt.Errorf("openwrt: %s is an unknown host: its host key is not in known_hosts; add it to trust the device: %w", addr, keyErr))
		}
		return upgrader.Aborted(status.ReasonHostKeyMismatch,
			fmt.Errorf("openwrt: the host key of %s does not match the expected one (possible man-in-the-middle): %w", addr, keyErr))
	}
	if err != nil && strings.Contains(err.Error(), "ssh: unable to authenticate") {
		// x/crypto/ssh has no error type for it. The device answered and
		// refused every method offered: the same credentials will not do
		// better on the next attempt, nor in an hour.
		return upgrader.Aborted(status.ReasonAuthFailed,
			fmt.Errorf("openwrt: %s refused the login (wrong user, password or key): %w", addr, err))
	}
	return upgrader.Recoverable(status.ReasonConnectionFailed, fmt.Errorf("openwrt: ssh login to %s: %w", addr, err))
}

// The host key checks made by KnownHosts and PinnedKey know which keys
// they accept, so the client can ask the device for one of their types:
// x/crypto/ssh's default order puts RSA before ed25519, and dropbear
// 2022.83 started with only an ed25519 host key agrees to RSA and then
// drops the connection (a failed assertion, "rsa.c:164 key != NULL").
// (OpenSSH's ssh also orders its offer by what its known_hosts holds.)
//
// A check is a plain ssh.HostKeyCallback, so dial recognises the two by
// their code (the method values below); only those are asked which keys
// they know, with hostKeyQuery in place of a key. A callback of the host's
// own, or one wrapping these, is never called but for the real check: it
// may have effects (a trust-on-first-use store, an alert), and then
// Credentials.HostKeyAlgorithms is the host's to set.

// pinnedKeyCheck is PinnedKey's check.
type pinnedKeyCheck struct{ key ssh.PublicKey } // nil: every key is refused

func (p *pinnedKeyCheck) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	if _, ok := key.(hostKeyQuery); ok {
		a := &knownKeysAnswer{}
		if p.key != nil {
			a.keys = append(a.keys, p.key)
		}
		return a
	}
	if p.key == nil {
		return errors.New("openwrt: no pinned host key")
	}
	return ssh.FixedHostKey(p.key)(hostname, remote, key)
}

// knownHostsCheck is KnownHosts' check.
type knownHostsCheck struct {
	cb ssh.HostKeyCallback
	// authorities are the @cert-authority lines of the files. A device
	// whose address such a line matches may present a certificate: the
	// offer is then x/crypto/ssh's default, which asks for those first.
	authorities map[fileLine]bool
}

// fileLine is a line of a file, numbered from 1.
type fileLine struct {
	file string
	line int
}

func (k *knownHostsCheck) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	if _, ok := key.(hostKeyQuery); ok {
		// knownhosts answers a key it does not know with the keys of the
		// lines that match the address, @cert-authority ones included
		// (KeyError.Want; none for an unknown host). No known_hosts file
		// lists the all-zero ed25519 key.
		var ke *knownhosts.KeyError
		if err := k.cb(hostname, remote, unknownKey); errors.As(err, &ke) {
			a := &knownKeysAnswer{}
			for _, w := range ke.Want {
				if k.authorities[fileLine{w.Filename, w.Line}] {
					return &knownKeysAnswer{none: true}
				}
				a.keys = append(a.keys, w.Key)
			}
			return a
		}
		return &knownKeysAnswer{none: true}
	}
	return k.cb(hostname, remote, key)
}

// certAuthorities returns the @cert-authority lines of known_hosts files,
// numbered as knownhosts numbers them.
func certAuthorities(files []string) (map[fileLine]bool, error) {
	out := map[fileLine]bool{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		n := 0
		for line := range strings.Lines(string(b)) {
			n++
			if strings.HasPrefix(strings.TrimSpace(line), "@cert-authority") {
				out[fileLine{name, n}] = true
			}
		}
	}
	return out, nil
}

// unknownKey is a valid ed25519 key that no one holds: all zeros.
var unknownKey = func() ssh.PublicKey {
	k, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		panic(err)
	}
	return k
}()

// hostKeyQuery is passed in place of a host key to ask one of the checks
// above which keys it accepts; they answer with a *knownKeysAnswer.
type hostKeyQuery struct{}

func (hostKeyQuery) Type() string                        { return "fwupgrader-query" }
func (hostKeyQuery) Marshal() []byte                     { return nil }
func (hostKeyQuery) Verify([]byte, *ssh.Signature) error { return errors.New("openwrt: not a key") }

// knownKeysAnswer carries the keys a check accepts for an address.
type knownKeysAnswer struct {
	keys []ssh.PublicKey
	none bool // keep x/crypto/ssh's default offer
}

func (*knownKeysAnswer) Error() string { return "openwrt: known host keys" }

// The code of the checks' method values, the same for every value.
var (
	pinnedKeyCheckCode  = reflect.ValueOf((*pinnedKeyCheck)(nil).check).Pointer()
	knownHostsCheckCode = reflect.ValueOf((*knownHostsCheck)(nil).check).Pointer()
)

// hostKeyPreference is the order in which the algorithms of known host
// keys are offered: OpenSSH's, ed25519 first, SHA-1 RSA and DSA last.
var hostKeyPreference = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA,
	ssh.InsecureKeyAlgoDSA,
}

// preferredHostKeyAlgorithms returns the host key algorithms to offer to
// the device at hostname (host:port, as the handshake names it) and
// remote when cb is KnownHosts' or PinnedKey's: first those of the keys cb
// accepts there, then the rest of hostKeyPreference, then every other
// algorithm x/crypto/ssh implements, so that a device holding only keys of
// other types still presents one and is refused as a host key mismatch (or
// an unknown host), not for want of a common algorithm. nil (x/crypto/ssh's
// default) for other callbacks, as a host's own check may expect a key of a
// type the default order asks for first, and for an address a
// @cert-authority line of KnownHosts' files matches.
func preferredHostKeyAlgorithms(cb ssh.HostKeyCallback, hostname string, remote net.Addr) []string {
	if cb == nil {
		return nil
	}
	if code := reflect.ValueOf(cb).Pointer(); code != pinnedKeyCheckCode && code != knownHostsCheckCode {
		return nil
	}
	var a *knownKeysAnswer
	if !errors.As(cb(hostname, remote, hostKeyQuery{}), &a) || a.none {
		return nil
	}
	known := map[string]bool{}
	for _, k := range a.keys {
		switch t := k.Type(); t {
		case ssh.KeyAlgoRSA:
			known[ssh.KeyAlgoRSASHA512], known[ssh.KeyAlgoRSASHA256], known[ssh.KeyAlgoRSA] = true, true, true
		default:
			known[t] = true
		}
	}
	var out []string
	for _, alg := range hostKeyPreference {
		if known[alg] {
			out = append(out, alg)
		}
	}
	for _, alg := range slices.Concat(hostKeyPreference, ssh.SupportedAlgorithms().HostKeys, ssh.InsecureAlgorithms().HostKeys) {
		if !slices.Contains(out, alg) {
			out = append(out, alg)
		}
	}
	return out
}

// capBuffer keeps the start and the end of what is written to it, max
// bytes in all, and counts what it drops from the middle: the end of a
// long output is where the shell and sysupgrade print their verdict (with
// -v, sysupgrade first lists every file it saves, which can exceed any
// cap).
type capBuffer struct {
	mu      sync.Mutex
	head    []byte // the first max/4 bytes
	tail    []byte // the latest bytes, at most max-len(head) once trimmed
	max     int
	dropped int64
}

func (w *capBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	if room := w.max/4 - len(w.head); room > 0 {
		k := min(room, len(p))
		w.head = append(w.head, p[:k]...)
		p = p[k:]
	}
	w.tail = append(w.tail, p...)
	if keep := w.max - len(w.head); len(w.tail) > 2*keep {
		cut := len(w.tail) - keep
		w.dropped += int64(cut)
		w.tail = append(w.tail[:0], w.tail[cut:]...)
	}
	return n, nil
}

func (w *capBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	tail := w.tail
	dropped := w.dropped
	if keep := w.max - len(w.head); len(tail) > keep {
		dropped += int64(len(tail) - keep)
		tail = tail[len(tail)-keep:]
	}
	if dropped == 0 {
		return string(w.head) + string(tail)
	}
	return string(w.head) + fmt.Sprintf("\n…[%d bytes not kept]…\n", dropped) + string(tail)
}

// maxLineLen bounds one line passed on by lineWriter, in bytes: a longer
// line keeps its first maxLineLen bytes and a marker.
const maxLineLen = 1024

// lineWriter cuts what is written to it into lines (ended by "\n", "\r\n"
// or a lone "\r", as progress output redraws its line) and passes each on
// to emit. It never fails and keeps at most maxLineLen bytes of a line.
type lineWriter struct {
	mu    sync.Mutex
	buf   []byte
	cut   bool // the current line was longer than maxLineLen
	emit  func(string)
	lastR bool // the previous byte was "\r": a "\n" right after it ends nothing
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			w.add(p)
			w.lastR = false
			break
		}
		if i == 0 && p[0] == '\n' && w.lastR {
			w.lastR = false
			p = p[1:]
			continue
		}
		w.add(p[:i])
		w.lastR = p[i] == '\r'
		w.endLine()
		p = p[i+1:]
	}
	return n, nil
}

// add appends b to the current line, up to maxLineLen bytes.
func (w *lineWriter) add(b []byte) {
	if room := maxLineLen - len(w.buf); room < len(b) {
		b = b[:max(room, 0)]
		w.cut = true
	}
	w.buf = append(w.buf, b...)
}

func (w *lineWriter) endLine() {
	line := string(w.buf)
	if w.cut {
		line = strings.ToValidUTF8(line, "") + " …[line cut]"
	}
	w.buf, w.cut = w.buf[:0], false
	w.emit(line)
}

// flush passes on a last line that has no newline.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 || w.cut {
		w.endLine()
	}
}

// errSessionLost is returned by run when the session ended without an exit
// status (the device dropped the connection).
var errSessionLost = errors.New("openwrt: the session ended without an exit status")

// errNotStarted is wrapped (with errSessionLost) by run when the command
// never started: the session could not be opened. Nothing ran on the
// device.
var errNotStarted = errors.New("openwrt: the command never started")

// errCommandTimeout is returned by run when its timeout passed.
var errCommandTimeout = errors.New("openwrt: command timed out")

// run runs cmd and returns its combined output. A
// non-zero exit is a *CommandError; a timeout is errCommandTimeout; a
// dropped session wraps errSessionLost; ctx ending returns ctx's error.
func (c *conn) run(ctx context.Context, timeout time.Duration, cmd string) (string, error) {
	return c.runLines(ctx, timeout, cmd, nil)
}

// streams says what runLines does with a command's output besides
// returning it.
type streams struct {
	// line is called with each line of standard output (stderr false)
	// and standard error (stderr true) as the device prints it, from the
	// goroutines that read them: it must not block for long.
	line func(stderr bool, l string)
	// stderr, when not nil, also receives standard error alone. The
	// combined output interleaves the two streams as the goroutines
	// reading them happen to run, so a message on standard error can land
	// in the middle of a long standard output, where the combined capture
	// drops bytes.
	stderr io.Writer
}

// runLines is run, and also passes the output on as st says (when not
// nil). A last line without a newline is passed on when the command ends,
// before runLines returns; lines longer than maxLineLen are cut (see
// lineWriter).
func (c *conn) runLines(ctx context.Context, timeout time.Duration, cmd string, st *streams) (string, error) {
	s, err := c.newSession(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("%w (%w): open session: %w", errSessionLost, errNotStarted, err)
	}
	defer s.Close()
	out := &capBuffer{max: maxCapture}
	s.Stdout = out
	s.Stderr = out
	if st != nil && st.line != nil {
		// stdout and stderr are split apart: a line is never made of
		// pieces of both.
		stdout := &lineWriter{emit: func(l string) { st.line(false, l) }}
		stderr := &lineWriter{emit: func(l string) { st.line(true, l) }}
		defer stdout.flush() // after the session's copying ended (Wait or abandon)
		defer stderr.flush()
		s.Stdout = io.MultiWriter(out, stdout)
		s.Stderr = io.MultiWriter(out, stderr)
	}
	if st != nil && st.stderr != nil {
		s.Stderr = io.MultiWriter(s.Stderr, st.stderr)
	}
	if err := s.Start(cmd); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		// The exec request may have reached the device before the
		// connection broke: the command may run. Only a session that never
		// opened proves nothing ran.
		return "", fmt.Errorf("%w: start %s: %w", errSessionLost, cmd, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		c.abandon(s, done)
		return out.String(), ctx.Err()
	case <-timer:
		c.abandon(s, done)
		return out.String(), fmt.Errorf("%w after %s: %s", errCommandTimeout, timeout, cmd)
	}
	output := out.String()
	if err == nil {
		return output, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		if ee.Signal() != "" { // x/crypto/ssh reports 128+n: it did not exit, it was killed
			return output, fmt.Errorf("%w: %s killed by signal %s", errSessionLost, cmd, ee.Signal())
		}
		return output, &CommandError{Cmd: cmd, ExitStatus: ee.ExitStatus(), Output: truncateOutput(output, MaxErrorOutput)}
	}
	if ctx.Err() != nil {
		return output, ctx.Err()
	}
	return output, fmt.Errorf("%w: %s: %w", errSessionLost, cmd, err)
}

// abandon closes a session that must stop and waits for its Wait to return;
// if the device does not answer, the whole connection is closed.
func (c *conn) abandon(s *ssh.Session, done <-chan error) {
	_ = s.Signal(ssh.SIGKILL)
	_ = s.Close()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	_ = c.Close()
	<-done
}

// newSession opens a session on the connection, giving up when ctx ends or
// after sessionOpenTimeout. x/crypto/ssh's NewSession has no context and can
// wait forever when the connection dies at the moment the channel is opened
// (the channel is registered after the connection's read loop dropped its
// channels); without this bound an attempt could hang past every deadline.
// On giving up the connection is closed; the goroutine left behind ends with
// NewSession, if ever.
func (c *conn) newSession(ctx context.Context) (*ssh.Session, error) {
	return bounded(ctx, c, func() (*ssh.Session, error) { return c.client.NewSession() },
		func(s *ssh.Session) { s.Close() })
}

// bounded runs open (which may block forever on a dead connection) and
// returns its result, or an error when ctx ends or sessionOpenTimeout passes
// first; then it closes c, and release disposes of a late result.
func bounded[T any](ctx context.Context, c *conn, open func() (T, error), release func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := open()
		ch <- result{v, err}
	}()
	t := time.NewTimer(sessionOpenTimeout)
	defer t.Stop()
	var err error
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = fmt.Errorf("%w: opening a session took longer than %s", errSessionLost, sessionOpenTimeout)
	}
	c.Close()
	go func() {
		if r := <-ch; r.err == nil {
			release(r.v)
		}
	}()
	var zero T
	return zero, err
}
