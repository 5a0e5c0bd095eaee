package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

const (
	c7Board    = "tplink,archer-c7-v2"
	c7Model    = "TP-Link Archer C7 v2"
	c7Type     = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	oldRelease = "OpenWrt 22.03.5 r20134-5f15225c1e"
	newRelease = "OpenWrt 23.05.3 r23809-234f1a2efa"
)

type env struct {
	dev        *openwrttest.Device
	uuid       string
	knownHosts string
	image      string
	dir        string
}

func setup(t *testing.T, cfg openwrttest.Config) *env {
	t.Helper()
	e := &env{uuid: uuid.NewString(), dir: t.TempDir()}
	if cfg.Model == "" {
		cfg.Model, cfg.BoardName = c7Model, c7Board
	}
	if cfg.UUID == "" {
		cfg.UUID = e.uuid
	}
	cfg.Release = oldRelease
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = 200 * time.Millisecond
	}
	dev, err := openwrttest.New(cfg)
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { dev.Close() })
	e.dev = dev
	e.knownHosts = filepath.Join(e.dir, "known_hosts")
	require.NoError(t, os.WriteFile(e.knownHosts, dev.KnownHosts(), 0o600))
	e.image = filepath.Join(e.dir, "openwrt-23.05.3-"+c7Type)
	f, err := os.Create(e.image)
	require.NoError(t, err)
	_, err = io.Copy(f, openwrttest.Image{Boards: []string{c7Board}, Release: newRelease, Size: 1 << 20}.Reader())
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return e
}

// TestMain sets the password variable once (t.Setenv cannot be used in
// parallel tests) and stops the PostgreSQL cluster the tests started.
func TestMain(m *testing.M) {
	os.Setenv("FWUPGRADE_TEST_PASSWORD", openwrttest.DefaultPassword)
	pgtest.Main(m)
}

func (e *env) args(extra ...string) []string {
	host, port, _ := strings.Cut(e.dev.Addr(), ":")
	a := []string{"upgrade", "--host", host, "--port", port, "--password-env", "FWUPGRADE_TEST_PASSWORD",
		"--known-hosts", e.knownHosts, "--image", e.image, "--uuid", e.uuid,
		"--reconnect-delay", "100ms", "--reconnect-retry-delay", "100ms", "--reconnect-max-retries", "30",
		"--upgrade-timeout", "5s", "--retries", "0", "--expect-release", newRelease, "--json"}
	return append(a, extra...)
}

func runCLI(t *testing.T, args []string, sig chan os.Signal) (int, result, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if sig == nil {
		sig = make(chan os.Signal)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := run(ctx, args, &stdout, &stderr, sig)
	var res result
	if code != exitUsage {
		require.NoError(t, json.Unmarshal(stdout.Bytes(), &res), "stdout: %s\nstderr: %s", stdout.String(), stderr.String())
	}
	return code, res, stderr.String()
}

// flashed reports whether the device ran a flash: a sysupgrade other than
// --test (matching command lines would also match image file names that
// contain "sysupgrade").
func flashed(dev *openwrttest.Device) bool {
	for _, argv := range dev.Executed() {
		if len(argv) > 0 && argv[0] == "sysupgrade" && !slices.Contains(argv, "--test") {
			return true
		}
	}
	return dev.Flashed() > 0
}

func TestUpgradeSuccess(t *testing.T) {
	t.Parallel()
	e := setup(t, openwrttest.Config{})
	code, res, stderr := runCLI(t, e.args("--option", "c"), nil)
	require.Equal(t, exitSuccess, code, stderr)
	assert.Equal(t, "success", res.State)
	assert.Equal(t, 100, res.Progress)
	assert.NotEmpty(t, res.OperationID)
	assert.NotEmpty(t, res.Log)
	assert.Equal(t, newRelease, e.dev.Release())
	assert.Contains(t, stderr, "phase: flashing", "progress goes to stderr with --json")
}

func TestAbortedWrongBoard(t *testing.T) {
	t.Parallel()
	e := setup(t, openwrttest.Config{Model: "GL.iNet GL-AR300M", BoardName: "glinet,gl-ar300m"})
	code, res, _ := runCLI(t, e.args(), nil)
	assert.Equal(t, exitAborted, code)
	assert.Equal(t, "aborted", res.State)
	assert.Equal(t, "no-image-for-board", res.Reason)
	assert.False(t, flashed(e.dev))
	assert.Empty(t, e.dev.Files(), "nothing written to the device") // only generated files
}

func TestAbortedWrongUUID(t *testing.T) {
	t.Parallel()
	e := setup(t, openwrttest.Config{UUID: uuid.NewString()})
	code, res, _ := runCLI(t, e.args(), nil)
	assert.Equal(t, exitAborted, code)
	assert.Equal(t, "identity-mismatch", res.Reason)
	assert.False(t, flashed(e.dev))
}

func TestAbortedHostKeyMismatch(t *testing.T) {
	t.Parallel()
	e := setup(t, openwrttest.Config{})
	other, err := openwrttest.New(openwrttest.Config{})
	require.NoError(t, err)
	require.NoError(t, other.Start())
	defer other.Close()
	// known_hosts names e's address with the other device's key.
	line := strings.Replace(string(other.KnownHosts()), other.Addr()[strings.LastIndex(other.Addr(), ":")+1:]+"]",
		e.dev.Addr()[strings.LastIndex(e.dev.Addr(), ":")+1:]+"]", 1)
	require.NoError(t, os.WriteFile(e.knownHosts, []byte(line), 0o600))
	code, res, _ := runCLI(t, e.args(), nil)
	assert.Equal(t, exitAborted, code)
	assert.Equal(t, "host-key-mismatch", res.Reason)
	assert.Empty(t, e.dev.Commands(), "no command reached the device")
}

func TestFailedNeverBack(t *testing.T) {
	t.Parallel()
	e := setup(t, openwrttest.Config{Faults: openwrttest.Faults{NeverComeBack: true}})
	args := e.args()
	for i, a := range args {
		if a == "--reconnect-max-retries" {
			args[i+1] = "3"
		}
	}
	code, res, _ := runCLI(t, args, nil)
	assert.Equal(t, exitFailed, code)
	assert.Equal(t, "failed", res.State)
	assert.Equal(t, "unreachable-after-flash", res.Reason)
}

func TestCtrlCCancelsBeforeFlashing(t *testing.T) {
	t.Parallel()
	e := setup(t, openwrttest.Config{})
	sig := make(chan os.Signal, 1)
	sig <- os.Interrupt
	code, res, stderr := runCLI(t, e.args(), sig)
	assert.Equal(t, exitCancelled, code, stderr)
	assert.Equal(t, "cancelled", res.State)
	assert.False(t, flashed(e.dev))
	assert.Equal(t, oldRelease, e.dev.Release())
}

func TestBadUsage(t *testing.T) {
	t.Parallel()
	e := setup(t, openwrttest.Config{})
	without := func(flag string, hasValue bool) []string {
		var out []string
		args := e.args()
		for i := 0; i < len(args); i++ {
			if args[i] == flag {
				if hasValue {
					i++
				}
				continue
			}
			out = append(out, args[i])
		}
		return out
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"NoCommand", nil, "upgrade"},
		{"UnknownCommand", []string{"flash"}, "upgrade"},
		{"NoHost", without("--host", true), "--host"},
		{"NoKnownHosts", without("--known-hosts", true), "--known-hosts"},
		{"MissingKnownHostsFile", e.args("--known-hosts", "/nonexistent/known_hosts"), "known-hosts"},
		{"NoImage", without("--image", true), "--image"},
		{"UnreadableImage", e.args("--image", "/nonexistent.bin"), "--image"},
		{"ImageIsDirectory", e.args("--image", e.dir), "regular file"},
		{"NoCredentials", without("--password-env", true), "--identity"},
		{"BothCredentials", e.args("--identity", e.image), "exactly one"},
		{"EmptyPasswordEnv", e.args("--password-env", "FWUPGRADE_UNSET_VARIABLE"), "FWUPGRADE_UNSET_VARIABLE"},
		{"BadKeyFile", append(without("--password-env", true), "--identity", e.image), "not a private key"},
		{"UUIDAndNoCheck", e.args("--no-identity-check"), "--uuid"},
		{"BadUUID", e.args("--uuid", "not-a-uuid"), "not a UUID"},
		{"BadOptionLetter", e.args("--option", "c,z"), "--option"},
		{"ContradictoryOptions", e.args("--option", "n,c"), "--option"},
		{"BadDuration", e.args("--reconnect-delay", "soon"), "reconnect-delay"},
		{"BadPort", e.args("--port", "70000"), "--port"},
		{"UnknownFlag", e.args("--insecure"), "insecure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr, nil)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, stdout.String())
			msg := strings.TrimSpace(stderr.String())
			assert.NotContains(t, msg, "\n", "one line on stderr")
			assert.Contains(t, msg, tc.want)
		})
	}
	assert.Empty(t, e.dev.Commands(), "bad usage never reaches the device")
}

func TestUpgradeWithKeyFile(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	sshPub, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	e := setup(t, openwrttest.Config{Password: "not-used-" + uuid.NewString(), AuthorizedKeys: []ssh.PublicKey{sshPub}})
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	keyFile := filepath.Join(e.dir, "id_ed25519")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600))

	var args []string
	for i := 0; i < len(e.args()); i++ {
		a := e.args()[i]
		if a == "--password-env" {
			i++
			continue
		}
		args = append(args, a)
	}
	args = append(args, "--identity", keyFile)
	code, res, stderr := runCLI(t, args, nil)
	require.Equal(t, exitSuccess, code, stderr)
	assert.Equal(t, "success", res.State)
	assert.Equal(t, newRelease, e.dev.Release())
}
