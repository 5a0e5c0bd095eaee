package openwrt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// These tests run the library against Debian's dropbear (the SSH server of
// real OpenWrt devices), started on loopback as a child process with an
// ed25519 host key of its own and password logins off. They need the
// packages dropbear-bin, libnss-wrapper, openssh-sftp-server (dropbear's
// SFTP subsystem) and openssh-client (the scp that "scp -t" runs); without
// them they are skipped, unless FWUPGRADER_REQUIRE_DROPBEAR=1 (CI), when
// they fail.
//
// dropbear reads a user's authorized_keys from the home of the user's
// passwd entry. The login is a user of our own, "fwtest", whose entry (with
// a temporary home holding the test's key) comes from nss_wrapper,
// preloaded into dropbear alone. Started as root, dropbear runs that user's
// sessions as uid 65534 (nobody): the attempt's commands run on this
// machine as nobody and can change nothing but their own files (the upload,
// into the temporary home). Started as another user, the entry has that
// user's uid.

// dropbearUser is the login user of the test dropbear.
const dropbearUser = "fwtest"

// dropbearServer is a running dropbear.
type dropbearServer struct {
	addr    string
	hostKey ssh.PublicKey // ed25519, the only host key it has
	signer  ssh.Signer    // the client key it accepts for dropbearUser
	home    string        // dropbearUser's home: the uploads go there
	log     *dropbearLog
	cmd     *exec.Cmd
	done    chan struct{}
}

// dropbearLog is dropbear's standard error, kept for failure messages.
type dropbearLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *dropbearLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *dropbearLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// dropbearMissing skips the test because something dropbear needs is not
// installed, or fails it when FWUPGRADER_REQUIRE_DROPBEAR=1.
func dropbearMissing(t *testing.T, what string) {
	t.Helper()
	const install = "apt-get install -y dropbear-bin libnss-wrapper openssh-sftp-server openssh-client"
	if os.Getenv("FWUPGRADER_REQUIRE_DROPBEAR") == "1" {
		t.Fatalf("%s, and FWUPGRADER_REQUIRE_DROPBEAR=1 (Debian: %s)", what, install)
	}
	t.Skipf("%s: skipped (Debian: %s; FWUPGRADER_REQUIRE_DROPBEAR=1 makes this a failure)", what, install)
}

// dropbearTools finds dropbear, dropbearkey and nss_wrapper's library, or
// skips the test.
func dropbearTools(t *testing.T) (bin, keygen, nss string) {
	t.Helper()
	find := func(name string, paths ...string) string {
		for _, p := range paths {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		p, _ := exec.LookPath(name)
		return p
	}
	if bin = find("dropbear", "/usr/sbin/dropbear", "/usr/bin/dropbear"); bin == "" {
		dropbearMissing(t, "dropbear is not installed")
	}
	if keygen = find("dropbearkey", "/usr/bin/dropbearkey", "/usr/sbin/dropbearkey"); keygen == "" {
		dropbearMissing(t, "dropbearkey is not installed")
	}
	for _, pattern := range []string{"/usr/lib/*/libnss_wrapper.so", "/usr/lib/libnss_wrapper.so", "/usr/lib64/libnss_wrapper.so",
		"/usr/local/lib/libnss_wrapper.so"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			nss = m[0]
			break
		}
	}
	if nss == "" {
		dropbearMissing(t, "libnss_wrapper.so is not installed")
	}
	return bin, keygen, nss
}

// startDropbear starts a dropbear for the test, stopped when it ends.
func startDropbear(t *testing.T) *dropbearServer {
	t.Helper()
	bin, keygen, nss := dropbearTools(t)
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		if _, err := user.LookupId("65534"); err != nil {
			t.Skip("running as root, but uid 65534 (nobody) is not in /etc/passwd to run dropbear's sessions as")
		}
		uid, gid = 65534, 65534
	}

	// The home and its authorized key: every directory on the way must be
	// searchable by the user, the home and .ssh owned by it and writable
	// by nobody else, or dropbear ignores the key.
	dir := t.TempDir() // TMP/TestName…/NNN: both made 0700 by testing
	for _, d := range []string{filepath.Dir(dir), dir} {
		require.NoError(t, os.Chmod(d, 0o711))
	}
	home := filepath.Join(dir, "home")
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".ssh"), 0o700))
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	ak := filepath.Join(home, ".ssh", "authorized_keys")
	require.NoError(t, os.WriteFile(ak, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600))
	if os.Getuid() == 0 {
		for _, p := range []string{home, filepath.Join(home, ".ssh"), ak} {
			require.NoError(t, os.Chown(p, uid, gid))
		}
	}
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	require.NoError(t, os.WriteFile(passwd, fmt.Appendf(nil, "%s:x:%d:%d:fwupgrader test:%s:/bin/sh\n", dropbearUser, uid, gid, home), 0o644))
	require.NoError(t, os.WriteFile(group, fmt.Appendf(nil, "%s:x:%d:\n", dropbearUser, gid), 0o644))

	// The host key: ed25519 only.
	keyFile := filepath.Join(dir, "dropbear_ed25519_host_key")
	out, err := exec.Command(keygen, "-t", "ed25519", "-f", keyFile).CombinedOutput()
	require.NoError(t, err, "dropbearkey: %s", out)
	out, err = exec.Command(keygen, "-y", "-f", keyFile).Output()
	require.NoError(t, err, "dropbearkey -y")
	var hostKey ssh.PublicKey
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "ssh-") {
			hostKey, _, _, _, err = ssh.ParseAuthorizedKey([]byte(line))
			require.NoError(t, err)
		}
	}
	require.NotNil(t, hostKey, "dropbearkey -y printed no public key: %s", out)

	// A free port can be taken by someone else before dropbear binds it:
	// try again with another.
	for try := 0; ; try++ {
		s, err := runDropbear(t, bin, nss, dir, keyFile, passwd, group)
		if err != nil && try < 2 {
			t.Logf("dropbear did not start (%v); trying another port", err)
			continue
		}
		require.NoError(t, err)
		s.hostKey, s.signer, s.home = hostKey, signer, home
		return s
	}
}

// runDropbear starts dropbear on a free port and waits for its banner.
func runDropbear(t *testing.T, bin, nss, dir, keyFile, passwd, group string) (*dropbearServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &dropbearServer{addr: addr, log: &dropbearLog{}, done: make(chan struct{})}
	// -F foreground, -E log to stderr, -s no password logins, -P a pid
	// file of its own.
	s.cmd = exec.Command(bin, "-F", "-E", "-s", "-p", addr, "-r", keyFile, "-P", filepath.Join(dir, "dropbear.pid"))
	s.cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LD_PRELOAD=" + nss,
		"NSS_WRAPPER_PASSWD=" + passwd, "NSS_WRAPPER_GROUP=" + group}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dropbear: %w", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dropbear's log:\n%s", dropbearTail(s.log.String(), 30))
		}
		s.stop()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "SSH-") {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("dropbear exited: %s", dropbearTail(s.log.String(), 3))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("dropbear does not answer on %s after 15 s: %s", addr, dropbearTail(s.log.String(), 3))
		}
	}
}

// stop ends dropbear: SIGTERM, then SIGKILL after 5 s.
func (s *dropbearServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func dropbearTail(log string, n int) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// credentials are the credentials of s with the host key check cb.
func (s *dropbearServer) credentials(cb ssh.HostKeyCallback) Credentials {
	return Credentials{Address: s.addr, User: dropbearUser, Signers: []ssh.Signer{s.signer}, HostKeyCallback: cb}
}

// dropbearDevice is the device record of the attempts on dropbear: the
// server has no /tmp/sysinfo nor ubus, so the attempt takes the board name
// from it.
var dropbearDevice = store.Device{ID: "dropbear-loopback", BoardName: openwrttest.DefaultBoardName,
	Connection: Connection, Active: true}

// dbUpgrader is an Upgrader for s that uploads with method m to the
// path *remote (read at each attempt) and changes nothing else on this
// machine: no identity check (the server has no openwisp UUID), no
// service stopped, the wireless kept.
func dbUpgrader(t *testing.T, s *dropbearServer, m UploadMethod, remote *string) *Upgrader {
	t.Helper()
	u, err := New(&Config{
		CredentialsFunc: func(context.Context, store.Device) (Credentials, error) {
			return s.credentials(PinnedKey(s.hostKey)), nil
		},
		SkipIdentityCheck: true,
		UploadMethods:     []UploadMethod{m},
		RemotePathFunc:    func(upgrader.Image) string { return *remote },
		Services:          []string{},
		KeepWireless:      true,
		CommandTimeout:    30 * time.Second,
		Logger:            slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	return u
}

// dbReporter stops an attempt when it enters the phase stopAt. At the
// image test (after the upload and its checksum) it first hashes the file
// the attempt uploaded, as it is on disk, before the attempt removes it.
type dbReporter struct {
	stopAt status.Phase
	remote string
	mu     sync.Mutex
	logs   []string
	onDisk string // SHA-256 of the uploaded file at the image test; "" if not reached
	diskEr error
}

func (r *dbReporter) Phase(ctx context.Context, p status.Phase) error {
	if p == status.PhaseImageTest && r.remote != "" {
		sum, err := dbFileSHA256(r.remote)
		r.mu.Lock()
		r.onDisk, r.diskEr = sum, err
		r.mu.Unlock()
	}
	if p == r.stopAt {
		return upgrader.ErrCancelled
	}
	return ctx.Err()
}

func (r *dbReporter) Progress(context.Context, int) error { return nil }
func (r *dbReporter) Cancelled(ctx context.Context) error { return ctx.Err() }

func (r *dbReporter) Log(_ context.Context, line string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, line)
	return nil
}

func (r *dbReporter) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.logs, "\n")
}

func dbFileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// dbJob is an attempt's job for img, reported to rep.
func dbJob(img openwrttest.Image, imageID string, rep upgrader.Reporter) *upgrader.Job {
	return &upgrader.Job{
		Operation: store.Operation{ID: store.NewID(), DeviceID: dropbearDevice.ID, ImageID: imageID,
			State: status.InProgress, Attempt: 1},
		Device: dropbearDevice,
		Image: upgrader.Image{
			Image: store.Image{ID: imageID, Name: img.FileName(), Size: img.Len(), SHA256: img.SHA256()},
			Build: store.Build{OSIdentifier: img.Release},
			OpenFunc: func(context.Context) (io.ReadCloser, error) {
				return io.NopCloser(img.Reader()), nil
			},
		},
		Report: rep,
	}
}

// dbUploadOnce runs one attempt of u that stops at the image test, and
// returns why it did not upload img to remote, verify it there with
// sha256sum and leave it intact until the image test, or nil.
func dbUploadOnce(ctx context.Context, u *Upgrader, img openwrttest.Image, imageID string, m UploadMethod, remote string) error {
	rep := &dbReporter{stopAt: status.PhaseImageTest, remote: remote}
	err := u.Upgrade(ctx, dbJob(img, imageID, rep))
	logs := rep.Logs()
	switch {
	case !errors.Is(err, upgrader.ErrCancelled):
		return fmt.Errorf("the attempt did not reach the image test: %v\nlog:\n%s", err, logs)
	case !strings.Contains(logs, "via "+string(m)+":"):
		return fmt.Errorf("no upload via %s in the log:\n%s", m, logs)
	case !strings.Contains(logs, "Uploaded file verified (SHA-256 "+img.SHA256()+")"):
		return fmt.Errorf("the upload was not verified with sha256sum:\n%s", logs)
	case rep.diskEr != nil:
		return fmt.Errorf("read the uploaded file: %w", rep.diskEr)
	case rep.onDisk != img.SHA256():
		return fmt.Errorf("the uploaded file has SHA-256 %s, the image %s", rep.onDisk, img.SHA256())
	}
	if _, err := os.Stat(remote); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the attempt left %s behind (stat: %v)", remote, err)
	}
	return nil
}

// TestDropbearUploadMethods uploads an image to dropbear with each method,
// through Upgrader.Upgrade stopped at the image test: the attempt's
// sha256sum must verify it, and the file on disk must be the image.
func TestDropbearUploadMethods(t *testing.T) {
	s := startDropbear(t)
	img := openwrttest.NewImage("23.05", openwrttest.DefaultBoardName, 256<<10)
	imageID := store.NewID()
	for _, m := range []UploadMethod{UploadSFTP, UploadSCP, UploadCat} {
		t.Run(string(m), func(t *testing.T) {
			switch m {
			case UploadSFTP:
				if _, err := os.Stat("/usr/lib/sftp-server"); err != nil {
					dropbearMissing(t, "dropbear's SFTP server /usr/lib/sftp-server is missing")
				}
			case UploadSCP:
				if _, err := os.Stat("/usr/bin/scp"); err != nil {
					dropbearMissing(t, "scp (for \"scp -t\") is missing from /usr/bin")
				}
			}
			remote := filepath.Join(s.home, "fw-"+string(m)+".bin")
			u := dbUpgrader(t, s, m, &remote)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			require.NoError(t, dbUploadOnce(ctx, u, img, imageID, m, remote))
		})
	}
}

// TestDropbearSFTPThenCommand uploads by SFTP many times on one connection,
// each upload followed by the command the attempt's checksum step runs on
// the same connection (uploadVia, then run "sha256sum"). SFTP used to
// return before dropbear had ended the SFTP session, and dropbear then
// sometimes dropped the next session before its command started ("the
// session ended without an exit status: start 'sha256sum' …: EOF"), a few
// times in a hundred; every command must now run and print the image's sum.
func TestDropbearSFTPThenCommand(t *testing.T) {
	if _, err := os.Stat("/usr/lib/sftp-server"); err != nil {
		dropbearMissing(t, "dropbear's SFTP server /usr/lib/sftp-server is missing")
	}
	s := startDropbear(t)
	img := openwrttest.NewImage("23.05", openwrttest.DefaultBoardName, 64<<10)
	remote := filepath.Join(s.home, "fw-sftp.bin")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := dial(ctx, s.credentials(PinnedKey(s.hostKey)), 15*time.Second)
	require.NoError(t, err)
	defer c.Close()
	const rounds = 150
	var failures []string
	for i := range rounds {
		if err := c.uploadVia(ctx, UploadSFTP, img.Reader(), img.Len(), remote); err != nil {
			failures = append(failures, fmt.Sprintf("upload %d: %v", i+1, err))
			continue
		}
		out, err := c.run(ctx, 30*time.Second, command("sha256sum", remote))
		if err != nil {
			failures = append(failures, fmt.Sprintf("sha256sum after upload %d: %v", i+1, err))
			continue
		}
		if f := strings.Fields(out); len(f) == 0 || f[0] != img.SHA256() {
			failures = append(failures, fmt.Sprintf("sha256sum after upload %d printed %q, want %s", i+1, out, img.SHA256()))
		}
	}
	require.NoError(t, ctx.Err())
	if len(failures) > 0 {
		t.Fatalf("%d of %d SFTP uploads were not followed by a verified sha256sum:\n%s", len(failures), rounds,
			strings.Join(failures, "\n"))
	}
}

// TestDropbearHostKeyChecks connects to a dropbear whose only host key is
// ed25519, through Upgrader.Upgrade stopped once connected (at the identity
// phase), with the credentials' HostKeyAlgorithms left empty: KnownHosts
// and PinnedKey make the client ask for an ed25519 key first (x/crypto/ssh's
// default order asks for RSA first, and this dropbear then drops the
// connection). A wrong key or an unknown host is still refused, as a host
// key mismatch.
func TestDropbearHostKeyChecks(t *testing.T) {
	s := startDropbear(t)
	dir := t.TempDir()
	writeKnownHosts := func(name string, lines ...string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
		return path
	}
	host := knownhosts.Normalize(s.addr)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	rsaPub, err := ssh.NewPublicKey(&rsaKey.PublicKey)
	require.NoError(t, err)
	otherPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	otherKey, err := ssh.NewPublicKey(otherPub)
	require.NoError(t, err)
	knownHosts := func(path string) ssh.HostKeyCallback {
		cb, err := KnownHosts(path)
		require.NoError(t, err)
		return cb
	}
	img := openwrttest.NewImage("23.05", openwrttest.DefaultBoardName, 64<<10)
	imageID := store.NewID()

	for _, tc := range []struct {
		name  string
		creds Credentials
		want  string // "" connects; else a word of the refusal
	}{
		{"pinned key", s.credentials(PinnedKey(s.hostKey)), ""},
		{"known_hosts", s.credentials(knownHosts(writeKnownHosts("known", knownhosts.Line([]string{host}, s.hostKey)))), ""},
		// The device was known with an RSA key too, listed first: ed25519
		// is still asked for first.
		{"known_hosts with an RSA key first", s.credentials(knownHosts(writeKnownHosts("both",
			knownhosts.Line([]string{host}, rsaPub), knownhosts.Line([]string{host}, s.hostKey)))), ""},
		// A check of the host's own, with the algorithms set by the host.
		{"own check and HostKeyAlgorithms", func() Credentials {
			c := s.credentials(ssh.FixedHostKey(s.hostKey))
			c.HostKeyAlgorithms = []string{ssh.KeyAlgoED25519}
			return c
		}(), ""},
		{"wrong pinned key", s.credentials(PinnedKey(otherKey)), "does not match"},
		{"known_hosts without the device", s.credentials(knownHosts(writeKnownHosts("other",
			knownhosts.Line([]string{"[127.0.0.1]:1"}, s.hostKey)))), "unknown host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := New(&Config{
				CredentialsFunc:   func(context.Context, store.Device) (Credentials, error) { return tc.creds, nil },
				SkipIdentityCheck: true,
				Services:          []string{},
				KeepWireless:      true,
				Logger:            slog.New(slog.DiscardHandler),
			})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			rep := &dbReporter{stopAt: status.PhaseIdentity}
			err = u.Upgrade(ctx, dbJob(img, imageID, rep))
			if tc.want == "" {
				require.ErrorIs(t, err, upgrader.ErrCancelled, "log:\n%s", rep.Logs())
				require.Contains(t, rep.Logs(), "Connected to "+s.addr)
				return
			}
			kind, reason := upgrader.Classify(err)
			require.Equal(t, status.ReasonHostKeyMismatch, reason, "error: %v", err)
			require.Equal(t, upgrader.KindAborted, kind, "error: %v", err)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, rep.Logs(), "Connected to")
		})
	}
}

// TestPreferredHostKeyAlgorithms checks the host key algorithms offered
// for the checks of KnownHosts and PinnedKey, and that a check of the
// host's own is not called to find them.
func TestPreferredHostKeyAlgorithms(t *testing.T) {
	newKey := func(k any) ssh.PublicKey {
		pub, err := ssh.NewPublicKey(k)
		require.NoError(t, err)
		return pub
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	edKey := newKey(edPub)
	rsaPriv, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	rsaKey := newKey(&rsaPriv.PublicKey)
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ecKey := newKey(&ecPriv.PublicKey)

	const hostname = "192.0.2.7:22"
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 22}
	all := slices.Concat(ssh.SupportedAlgorithms().HostKeys, ssh.InsecureAlgorithms().HostKeys)
	offered := func(t *testing.T, cb ssh.HostKeyCallback, first ...string) {
		t.Helper()
		got := preferredHostKeyAlgorithms(cb, hostname, remote)
		require.Greater(t, len(got), len(first), "got %q", got)
		require.Equal(t, first, got[:len(first)], "got %q", got)
		// Then every other algorithm, once each, so that a device with a
		// key of another type is refused as a mismatch.
		require.ElementsMatch(t, all, slices.Compact(slices.Sorted(slices.Values(got))), "got %q", got)
	}

	t.Run("pinned ed25519", func(t *testing.T) { offered(t, PinnedKey(edKey), ssh.KeyAlgoED25519) })
	t.Run("pinned RSA", func(t *testing.T) {
		offered(t, PinnedKey(rsaKey), ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
	})
	t.Run("known_hosts", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "known_hosts")
		require.NoError(t, os.WriteFile(path, []byte(strings.Join([]string{
			knownhosts.Line([]string{"192.0.2.7"}, rsaKey),
			knownhosts.Line([]string{"192.0.2.8"}, edKey), // another device
			knownhosts.Line([]string{"192.0.2.7"}, ecKey),
		}, "\n")+"\n"), 0o600))
		cb, err := KnownHosts(path)
		require.NoError(t, err)
		offered(t, cb, ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		// An unknown host (refused in the end): ed25519 first, as always
		// with these checks, so that dropbear presents a key at all.
		unknown := preferredHostKeyAlgorithms(cb, "192.0.2.9:22", &net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 22})
		require.Equal(t, hostKeyPreference, unknown[:len(hostKeyPreference)])
		require.ElementsMatch(t, all, slices.Compact(slices.Sorted(slices.Values(unknown))))
		// The check itself is unchanged.
		require.NoError(t, cb(hostname, remote, rsaKey))
		require.NoError(t, cb(hostname, remote, ecKey))
		require.Error(t, cb(hostname, remote, edKey))
	})
	t.Run("known_hosts with a certificate authority", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "known_hosts")
		require.NoError(t, os.WriteFile(path, []byte(strings.Join([]string{
			"# devices of example.com present certificates",
			"@cert-authority " + knownhosts.Line([]string{"*.example.com"}, edKey),
			knownhosts.Line([]string{"192.0.2.7"}, rsaKey),
		}, "\n")+"\n"), 0o600))
		cb, err := KnownHosts(path)
		require.NoError(t, err)
		offered(t, cb, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		// A device the authority covers may present a certificate:
		// x/crypto/ssh's default, which asks for those first.
		require.Nil(t, preferredHostKeyAlgorithms(cb, "dev.example.com:22", &net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 22}))
	})
	t.Run("pinned check unchanged", func(t *testing.T) {
		cb := PinnedKey(edKey)
		require.NoError(t, cb(hostname, remote, edKey))
		require.Error(t, cb(hostname, remote, rsaKey))
		require.Error(t, PinnedKey(nil)(hostname, remote, edKey))
		require.Equal(t, hostKeyPreference, preferredHostKeyAlgorithms(PinnedKey(nil), hostname, remote)[:len(hostKeyPreference)])
	})
	t.Run("own checks are not called", func(t *testing.T) {
		calls := 0
		own := func(string, net.Addr, ssh.PublicKey) error { calls++; return nil }
		pinned := PinnedKey(edKey)
		wrapped := func(h string, r net.Addr, k ssh.PublicKey) error { calls++; return pinned(h, r, k) }
		require.Nil(t, preferredHostKeyAlgorithms(own, hostname, remote))
		require.Nil(t, preferredHostKeyAlgorithms(wrapped, hostname, remote))
		require.Nil(t, preferredHostKeyAlgorithms(ssh.FixedHostKey(edKey), hostname, remote))
		require.Zero(t, calls)
	})
}
