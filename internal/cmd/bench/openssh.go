package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// opensshTools are OpenSSH's client programs (Debian: openssh-client).
type opensshTools struct {
	ssh, scp, sftp string
	version        string
}

// findOpenSSH finds ssh, scp and sftp on PATH; when one is missing it
// returns nil and why.
func findOpenSSH() (*opensshTools, string) {
	var t opensshTools
	for _, p := range []struct {
		name string
		to   *string
	}{{"ssh", &t.ssh}, {"scp", &t.scp}, {"sftp", &t.sftp}} {
		path, err := exec.LookPath(p.name)
		if err != nil {
			return nil, fmt.Sprintf("%s not found (Debian: apt-get install openssh-client)", p.name)
		}
		*p.to = path
	}
	out, _ := exec.Command(t.ssh, "-V").CombinedOutput()
	t.version = strings.TrimSpace(string(out))
	return &t, ""
}

// opensshClient is a master connection of OpenSSH's ssh to one server
// (ControlMaster), which scp and sftp then use.
type opensshClient struct {
	tools  *opensshTools
	dir    string
	opts   []string // the options of every client
	host   string
	master *exec.Cmd
	done   chan error // the master's exit
	// cipher is the cipher OpenSSH negotiated (client to server), and
	// serverCiphers what the server offered.
	cipher        string
	serverCiphers []string
}

// connect starts a master connection to t in dir, logging in with the key
// in keyFile and checking t's host key with a known_hosts file of its own.
func (o *opensshTools) connect(ctx context.Context, dir string, t *uploadTarget, keyFile string) (*opensshClient, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(t.addr)
	if err != nil {
		return nil, err
	}
	kh := filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(t.addr)}, t.hostKey) + "\n"
	if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
		return nil, err
	}
	c := &opensshClient{tools: o, dir: dir, host: host, done: make(chan error, 1)}
	// With -o, the first value given for an option wins: the master's own
	// options come before these.
	c.opts = []string{"-F", "/dev/null",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + kh, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes", "-o", "IdentityFile=" + keyFile, "-o", "IdentityAgent=none",
		"-o", "User=" + t.user, "-o", "Port=" + port,
		"-o", "ControlPath=" + filepath.Join(dir, "mux"), "-o", "ControlMaster=no",
		"-o", "LogLevel=ERROR"}
	logPath := filepath.Join(dir, "master.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	args := append([]string{"-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-o", "LogLevel=DEBUG2"}, c.opts...)
	c.master = exec.Command(o.ssh, append(args, "-N", host)...)
	c.master.Stdout, c.master.Stderr = logFile, logFile
	c.master.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.master.Start(); err != nil {
		return nil, err
	}
	go func() { c.done <- c.master.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		check := exec.CommandContext(ctx, o.ssh, append(slices.Clone(c.opts), "-O", "check", host)...)
		if check.Run() == nil {
			break
		}
		select {
		case err := <-c.done:
			c.done <- err
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("ssh master exited (%v): %s", err, lastLines(string(log), 3))
		case <-ctx.Done():
			c.close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.close()
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("ssh master not ready after 20 s: %s", lastLines(string(log), 3))
		}
	}
	log, _ := os.ReadFile(logPath)
	c.cipher, c.serverCiphers = parseCiphers(string(log))
	return c, nil
}

var (
	reCipher        = regexp.MustCompile(`kex: client->server cipher: (\S+)`)
	reServerCiphers = regexp.MustCompile(`(?s)peer server KEXINIT proposal.*?ciphers ctos: (\S*)`)
)

// parseCiphers reads from ssh's debug log the cipher negotiated and the
// ciphers the server offered.
func parseCiphers(log string) (string, []string) {
	var cipher string
	var offered []string
	if m := reCipher.FindStringSubmatch(log); m != nil {
		cipher = m[1]
	}
	if m := reServerCiphers.FindStringSubmatch(log); m != nil {
		offered = strings.Split(m[1], ",")
	}
	return cipher, offered
}

// xcryptoCipher is the cipher an x/crypto/ssh client with the default
// configuration chooses from a server's offer: the first of its own
// preferences that the server offers.
func xcryptoCipher(offered []string) string {
	if len(offered) == 0 {
		return "unknown (the server's offer was not logged)"
	}
	for _, c := range ssh.SupportedAlgorithms().Ciphers {
		if slices.Contains(offered, c) {
			return c
		}
	}
	return "none in common"
}

// close ends the master connection.
func (c *opensshClient) close() {
	_ = exec.Command(c.tools.ssh, append(slices.Clone(c.opts), "-O", "exit", c.host)...).Run()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.master.Process.Kill()
		<-c.done
	}
}

// runTimed runs a client program and returns how long it ran.
func runTimed(ctx context.Context, name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("%s: %v: %s", filepath.Base(name), err, lastLines(out.String(), 3))
		}
		return 0, err
	}
	return d, nil
}

// scpContender uploads with "scp -O" (the legacy SCP protocol, as
// OpenWrt's dropbear offers it) over the master connection.
func (c *opensshClient) scpContender(file uploadFile) contender {
	return contender{name: cSSHSCP, leaves: true, run: func(ctx context.Context, remote string) (time.Duration, error) {
		args := append([]string{"-O", "-q"}, c.opts...)
		return runTimed(ctx, c.tools.scp, append(args, file.path, c.host+":"+remote)...)
	}}
}

// sftpContender uploads with sftp's "put" over the master connection.
func (c *opensshClient) sftpContender(file uploadFile) contender {
	return contender{name: cSSHSFTP, leaves: true, run: func(ctx context.Context, remote string) (time.Duration, error) {
		batch := filepath.Join(c.dir, "sftp.batch")
		if err := os.WriteFile(batch, []byte(fmt.Sprintf("put %q %q\n", file.path, remote)), 0o600); err != nil {
			return 0, err
		}
		args := append([]string{"-q", "-b", batch}, c.opts...)
		return runTimed(ctx, c.tools.sftp, append(args, c.host)...)
	}}
}

// lastLines returns the last n non-empty lines of s, joined by " | ".
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
