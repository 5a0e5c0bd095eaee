package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/store"
)

// Debian's dropbear (package dropbear-bin) on loopback: the SSH server real
// OpenWrt runs. It is started as a child process on a free port with a
// host key of its own (dropbearkey), password logins off.
//
// dropbear finds a user's authorized_keys in the home directory of the
// user's passwd entry, and the root's is not to be touched. So the login is
// a user "fwbench" whose passwd entry, with a temporary home holding the
// generated key, comes from nss_wrapper (Debian: libnss-wrapper), preloaded
// into dropbear alone. Started as root, dropbear runs the sessions of that
// user as uid 65534 (nobody): the library's attempt runs its commands on
// this machine as nobody (reads of /etc and /proc, "df", "sync", a refused
// write to drop_caches, the upload into /tmp and "rm" of it), which changes
// nothing but its own files. Started as another user, dropbear can only log
// that user in: the entry then has the user's own uid.

// dropbearServer is a running dropbear.
type dropbearServer struct {
	cmd     *exec.Cmd
	done    chan error
	addr    string
	hostKey ssh.PublicKey
	version string
	log     *bytes.Buffer
}

// dropbearPaths are where Debian installs dropbear and dropbearkey.
var dropbearPaths = []string{"/usr/sbin/dropbear", "/usr/bin/dropbear"}

// startDropbear starts dropbear in dir, authorizing clientKey for the user
// fwbench. why says why it cannot when something it needs is missing.
func startDropbear(ctx context.Context, dir string, clientKey ssh.PublicKey) (*dropbearServer, string, error) {
	bin := ""
	for _, p := range dropbearPaths {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		if p, err := exec.LookPath("dropbear"); err == nil {
			bin = p
		}
	}
	if bin == "" {
		return nil, "dropbear is not installed (Debian: apt-get install -y dropbear-bin)", nil
	}
	keygen, err := exec.LookPath("dropbearkey")
	if err != nil {
		keygen = filepath.Join(filepath.Dir(bin), "..", "bin", "dropbearkey")
		if _, err := os.Stat(keygen); err != nil {
			return nil, "dropbearkey is not installed (Debian: apt-get install -y dropbear-bin)", nil
		}
	}
	nss := findNSSWrapper()
	if nss == "" {
		return nil, "libnss_wrapper.so not found (Debian: apt-get install -y libnss-wrapper): dropbear would need root's own authorized_keys", nil
	}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		if _, err := user.LookupId("65534"); err != nil {
			return nil, "running as root, but uid 65534 (nobody) is not in /etc/passwd to run the sessions as", nil
		}
		uid, gid = 65534, 65534
	}

	// The user's home and its authorized key. Every directory on the way
	// must be searchable by the user, and the home and .ssh owned by it and
	// writable by nobody else, or dropbear ignores the key.
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		return nil, "", err
	}
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, "", err
		}
	}
	ak := filepath.Join(home, ".ssh", "authorized_keys")
	if err := os.WriteFile(ak, ssh.MarshalAuthorizedKey(clientKey), 0o600); err != nil {
		return nil, "", err
	}
	if os.Getuid() == 0 {
		for _, p := range []string{home, filepath.Join(home, ".ssh"), ak} {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, "", err
			}
		}
	}
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	if err := os.WriteFile(passwd, fmt.Appendf(nil, "fwbench:x:%d:%d:fwupgrader bench:%s:/bin/sh\n", uid, gid, home), 0o644); err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(group, fmt.Appendf(nil, "fwbench:x:%d:\n", gid), 0o644); err != nil {
		return nil, "", err
	}

	// The host key.
	hostKeyFile := filepath.Join(dir, "dropbear_ed25519_host_key")
	if out, err := exec.CommandContext(ctx, keygen, "-t", "ed25519", "-f", hostKeyFile).CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("dropbearkey: %v: %s", err, out)
	}
	out, err := exec.CommandContext(ctx, keygen, "-y", "-f", hostKeyFile).Output()
	if err != nil {
		return nil, "", fmt.Errorf("dropbearkey -y: %v", err)
	}
	var hostKey ssh.PublicKey
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "ssh-") {
			if hostKey, _, _, _, err = ssh.ParseAuthorizedKey([]byte(line)); err != nil {
				return nil, "", fmt.Errorf("dropbearkey -y: %v", err)
			}
		}
	}
	if hostKey == nil {
		return nil, "", fmt.Errorf("dropbearkey -y printed no public key: %s", out)
	}

	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	s := &dropbearServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), hostKey: hostKey, done: make(chan error, 1),
		log: &bytes.Buffer{}}
	if v, err := exec.Command(bin, "-V").CombinedOutput(); err == nil {
		s.version = strings.TrimSpace(string(v))
	}
	// -F foreground, -E log to stderr, -s no password logins, -P a pid file
	// of its own (not /var/run/dropbear.pid).
	s.cmd = exec.Command(bin, "-F", "-E", "-s", "-p", s.addr, "-r", hostKeyFile, "-P", filepath.Join(dir, "dropbear.pid"))
	s.cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LD_PRELOAD=" + nss,
		"NSS_WRAPPER_PASSWD=" + passwd, "NSS_WRAPPER_GROUP=" + group}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start dropbear: %w", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	if err := s.waitReady(ctx); err != nil {
		s.stop()
		return nil, "", err
	}
	return s, "", nil
}

// findNSSWrapper returns the path of nss_wrapper's library, "" when it is
// not installed.
func findNSSWrapper() string {
	for _, pattern := range []string{"/usr/lib/*/libnss_wrapper.so", "/usr/lib/libnss_wrapper.so", "/usr/lib64/libnss_wrapper.so",
		"/usr/local/lib/libnss_wrapper.so"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return m[0]
		}
	}
	return ""
}

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady waits until dropbear sends its SSH banner.
func (s *dropbearServer) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "SSH-") {
				return nil
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("dropbear exited (%v): %s", err, lastLines(s.log.String(), 3))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dropbear does not answer on %s after 15 s: %s", s.addr, lastLines(s.log.String(), 3))
		}
	}
}

// stop ends dropbear (SIGTERM, then SIGKILL after 5 s).
func (s *dropbearServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// target is the upload target of s: files land in this machine's /tmp.
func (s *dropbearServer) target() *uploadTarget {
	// The library's attempt reads the board from the device record when
	// the server cannot tell it (no /tmp/sysinfo, no ubus).
	return &uploadTarget{
		name: "dropbear", addr: s.addr, user: "fwbench", hostKey: s.hostKey,
		device: store.Device{ID: "dropbear-loopback", BoardName: openwrttest.DefaultBoardName,
			Connection: openwrt.Connection, Active: true},
		skipIdentity: true,
		remoteDir:    "/tmp",
		before:       syncDisks,
		remove:       func(p string) { _ = os.Remove(p) },
	}
}
