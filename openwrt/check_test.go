package openwrt

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// allChecks are the checks of a device that can be checked to the end, in
// the order Check runs them.
var allChecks = []string{
	upgrader.CheckReachable, upgrader.CheckHostKey, upgrader.CheckIdentity, upgrader.CheckOptions,
	upgrader.CheckBoard, upgrader.CheckCompat, upgrader.CheckInstalled, upgrader.CheckMemory,
}

// fwtoolImage is the test image with fwtool metadata for boards.
func fwtoolImage(boards ...string) *openwrttest.Image {
	return &openwrttest.Image{Boards: boards, Release: newRelease, Size: testImgSize, Fwtool: true}
}

// deviceState is what a dry run must leave as it found it.
type deviceState struct {
	Files    map[string]string // path → SHA-256, every regular file
	Services map[string]bool
	Mem      int64 // MemAvailable: changed by removing /tmp/opkg-lists, dropping the caches, stopping services, files in /tmp
	BootID   string
	Release  string
	UUID     string
}

func stateOf(dev *openwrttest.Device) deviceState {
	s := deviceState{Files: map[string]string{}, Services: dev.Services(), Mem: dev.MemAvailable(),
		BootID: dev.BootID(), Release: dev.Release()}
	for _, p := range dev.Files() {
		f, _ := dev.File(p)
		s.Files[p] = f.SHA256
	}
	s.UUID, _ = dev.UCI(uuidOption)
	return s
}

// quotedCommand is a command line made only of single-quoted words, as
// command builds them: no shell operator, no unquoted word.
var quotedCommand = regexp.MustCompile(`^'[^']*'(?:\\''[^']*')*(?: '[^']*'(?:\\''[^']*')*)*$`)

// readOnly reports whether argv is one of the reading commands a dry run
// may send.
func readOnly(argv []string) bool {
	switch {
	case len(argv) == 2 && argv[0] == "cat": // never bare "cat": it writes stdin to its redirection
		return true
	case len(argv) == 3 && argv[0] == "uci" && argv[1] == "get",
		len(argv) == 4 && argv[0] == "uci" && argv[1] == "-q" && argv[2] == "get":
		return true
	case slices.Equal(argv, []string{"ubus", "call", "system", "board"}):
		return true
	case len(argv) == 3 && argv[0] == "df" && argv[1] == "-k":
		return true
	case slices.Equal(argv, []string{"ls", initDir}):
		return true
	}
	return false
}

// dryRun runs Check on the bundle's device and requires that it changed
// nothing: no upload, no file created or changed (under /tmp or anywhere),
// no service stopped, no cache dropped, no sysupgrade (not even --test), no
// reboot, only reading commands, each one made of quoted words, and no
// phase or progress reported.
func (b *bundle) dryRun(t *testing.T) ([]upgrader.Check, error) {
	t.Helper()
	before := stateOf(b.dev)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	checks, err := b.u.Check(ctx, b.job)
	t.Logf("checks %+v, verdict %v", checks, err)

	after := stateOf(b.dev)
	require.Equal(t, before, after, "the dry run changed the device")
	for p := range after.Files {
		if strings.HasPrefix(p, "/tmp/") {
			_, had := before.Files[p]
			require.True(t, had, "the dry run created %s", p)
		}
	}
	require.Empty(t, uploads(b.dev), "upload")
	require.Empty(t, executed(b.dev, "sysupgrade"), "sysupgrade ran")
	require.Empty(t, executed(b.dev, "wifi"), "wifi ran")
	require.Zero(t, b.dev.Flashed())
	require.Zero(t, b.dev.Reboots())
	allRunning(t, b.dev)
	for _, argv := range b.dev.Executed() {
		require.True(t, readOnly(argv), "the dry run ran %q", argv)
	}
	for _, c := range b.dev.Commands() {
		require.Regexp(t, quotedCommand, c, "a command that is not made of quoted words")
	}
	require.Empty(t, b.rep.Phases(), "a phase was reported")
	require.Empty(t, b.rep.Progresses(), "progress was reported")
	return checks, err
}

func names(checks []upgrader.Check) []string {
	out := make([]string, len(checks))
	for i, c := range checks {
		out[i] = c.Name
	}
	return out
}

// find returns the check named name.
func find(t *testing.T, checks []upgrader.Check, name string) upgrader.Check {
	t.Helper()
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %s check in %+v", name, checks)
	return upgrader.Check{}
}

// requireOnlyFailure requires that the check named failed, with reason, and
// that every other check passed.
func requireOnlyFailure(t *testing.T, checks []upgrader.Check, failed string, reason status.Reason) {
	t.Helper()
	for _, c := range checks {
		if c.Name == failed {
			require.False(t, c.OK, "%s: %+v", c.Name, c)
			require.Equal(t, reason, c.Reason, "%s: %+v", c.Name, c)
			require.NotEmpty(t, c.Detail)
		} else {
			require.True(t, c.OK, "%s: %+v", c.Name, c)
			require.Empty(t, c.Reason, c.Name)
		}
	}
	if failed != "" {
		find(t, checks, failed)
	}
}

// requireUpgradeAgrees runs Upgrade on the same device after the dry run:
// it must end with the dry run's verdict.
func requireUpgradeAgrees(t *testing.T, b *bundle, verdict error) {
	t.Helper()
	err := b.upgrade(t)
	if verdict == nil {
		require.NoError(t, err, "the dry run passed; the upgrade:\n%s", b.rep.Logs())
		require.Equal(t, 1, b.dev.Flashed())
		return
	}
	kind, reason := upgrader.Classify(verdict)
	requireKind(t, err, kind, reason)
}

func TestCheckPasses(t *testing.T) {
	t.Parallel()
	t.Run("every check", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: fwtoolImage(openwrttest.DefaultBoardName)})
		checks, err := b.dryRun(t)
		require.NoError(t, err)
		require.Equal(t, allChecks, names(checks))
		requireOnlyFailure(t, checks, "", "")
		require.Contains(t, find(t, checks, upgrader.CheckBoard).Detail, openwrttest.DefaultBoardName)
		require.Contains(t, find(t, checks, upgrader.CheckCompat).Detail, "compat_version 1.0")
		require.Contains(t, find(t, checks, upgrader.CheckMemory).Detail, "(MemAvailable)")
		require.Contains(t, find(t, checks, upgrader.CheckInstalled).Detail, "no "+ChecksumFile)
		require.Contains(t, b.rep.Logs(), "Identity verified")
		// Each step read what Upgrade reads.
		for _, argv := range [][]string{{"uci", "get", uuidOption}, {"cat", releaseFile}, {"cat", boardNameFile},
			{"uci", "-q", "get", "system.@system[0].compat_version"}, {"cat", ChecksumFile}, {"df", "-k", "/tmp/"}, {"cat", meminfoFile}} {
			require.True(t, ran(b.dev, argv...), "%q did not run", argv)
		}
		require.False(t, ran(b.dev, "ls", initDir), "the image fits: no service to list")
		requireUpgradeAgrees(t, b, err)
	})
	t.Run("no metadata, release already running", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Release: newRelease}})
		checks, err := b.dryRun(t)
		require.NoError(t, err)
		require.Equal(t, allChecks, names(checks))
		requireOnlyFailure(t, checks, "", "")
		require.Contains(t, find(t, checks, upgrader.CheckBoard).Detail, "no fwtool metadata")
		require.Contains(t, find(t, checks, upgrader.CheckCompat).Detail, "no fwtool metadata")
		// Upgrade decides on the checksum file only: the same release
		// is flashed again, and the detail says so.
		require.Contains(t, find(t, checks, upgrader.CheckInstalled).Detail, "already runs")
		requireUpgradeAgrees(t, b, err)
	})
	t.Run("identity check skipped", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{UUID: "00000000-1111-2222-3333-444444444444"},
			config: func(c *Config) { c.SkipIdentityCheck = true }})
		checks, err := b.dryRun(t)
		require.NoError(t, err)
		requireOnlyFailure(t, checks, "", "")
		require.Contains(t, find(t, checks, upgrader.CheckIdentity).Detail, "not checked")
		require.False(t, ran(b.dev, "uci", "get", uuidOption))
	})
	t.Run("odd remote path reaches the device quoted", func(t *testing.T) {
		t.Parallel()
		const dir = "/tmp/it's $(reboot) `reboot`; reboot"
		b := setup(t, setupOpts{config: func(c *Config) {
			c.RemotePathFunc = func(upgrader.Image) string { return dir + "/x;reboot;.bin" }
		}})
		_, err := b.dryRun(t)
		require.NoError(t, err)
		require.True(t, ran(b.dev, "df", "-k", dir+"/"))
		require.Empty(t, executed(b.dev, "reboot"))
	})
}

func TestCheckWrongBoard(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		options json.RawMessage
	}{
		{name: "default options"},
		{name: "even with -F", options: json.RawMessage(`{"sysupgrade":"c,F"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{img: fwtoolImage("glinet,gl-ar150"), options: tc.options})
			checks, err := b.dryRun(t)
			requireKind(t, err, upgrader.KindAborted, status.ReasonNoImageForBoard)
			// The other checks still ran: the board is not the only news.
			require.Equal(t, allChecks, names(checks))
			requireOnlyFailure(t, checks, upgrader.CheckBoard, status.ReasonNoImageForBoard)
			require.Contains(t, find(t, checks, upgrader.CheckBoard).Detail, "glinet,gl-ar150")
			requireUpgradeAgrees(t, b, err)
		})
	}
}

func TestCheckRefusedByTheRelease(t *testing.T) {
	t.Parallel()
	board := []string{openwrttest.DefaultBoardName}
	for _, tc := range []struct {
		name    string
		release string
		img     openwrttest.Image
		options json.RawMessage
		failed  string
		reason  status.Reason
	}{
		{name: "an option the release lacks", release: "17.01", img: *fwtoolImage(board...),
			options: json.RawMessage(`{"sysupgrade":"c,o"}`), failed: upgrader.CheckOptions, reason: status.ReasonInvalidOptions},
		{name: "compat_version major", release: "24.10",
			img:     openwrttest.Image{Boards: board, Release: newRelease, Size: testImgSize, CompatVersion: "2.0"},
			options: json.RawMessage(`{"sysupgrade":"n"}`), failed: upgrader.CheckCompat, reason: status.ReasonImageInvalid},
		{name: "compat_version minor keeping the configuration", release: "22.03",
			img:    openwrttest.Image{Boards: board, Release: newRelease, Size: testImgSize, CompatVersion: "1.1"},
			failed: upgrader.CheckCompat, reason: status.ReasonImageInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{sim: openwrttest.Config{Release: openwrttest.ReleaseDescription(tc.release)}, img: &tc.img, options: tc.options})
			checks, err := b.dryRun(t)
			requireKind(t, err, upgrader.KindAborted, tc.reason)
			require.Equal(t, allChecks, names(checks))
			requireOnlyFailure(t, checks, tc.failed, tc.reason)
			requireUpgradeAgrees(t, b, err)
		})
	}
	t.Run("compat_version minor with -n", func(t *testing.T) {
		t.Parallel()
		img := openwrttest.Image{Boards: board, Release: newRelease, Size: testImgSize, CompatVersion: "1.1"}
		b := setup(t, setupOpts{sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("22.03")}, img: &img,
			options: json.RawMessage(`{"sysupgrade":"n"}`)})
		checks, err := b.dryRun(t)
		require.NoError(t, err)
		requireOnlyFailure(t, checks, "", "")
		require.Contains(t, find(t, checks, upgrader.CheckCompat).Detail, "allowed by -n")
	})
}

func TestCheckMemory(t *testing.T) {
	t.Parallel()
	big := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 2 << 20}
	t.Run("nothing an upgrade could stop", func(t *testing.T) {
		t.Parallel()
		// What removing /tmp/opkg-lists and dropping the caches free is
		// negligible here, as the dry run assumes.
		b := setup(t, setupOpts{
			sim:    openwrttest.Config{MemAvailable: 1 << 20, OpkgListsMemory: 1, DropCachesMemory: 1},
			config: func(c *Config) { c.Services = []string{}; c.KeepWireless = true },
		})
		checks, err := b.dryRun(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonInsufficientMemory)
		require.Equal(t, allChecks, names(checks))
		requireOnlyFailure(t, checks, upgrader.CheckMemory, status.ReasonInsufficientMemory)
		require.Contains(t, find(t, checks, upgrader.CheckMemory).Detail, "no service to stop")
		requireUpgradeAgrees(t, b, err)
	})
	t.Run("services absent from the device", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{
			sim: openwrttest.Config{MemAvailable: 1 << 20, OpkgListsMemory: 1, DropCachesMemory: 1,
				Services: []string{"dropbear", "network"}},
			config: func(c *Config) { c.KeepWireless = true },
		})
		checks, err := b.dryRun(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonInsufficientMemory)
		requireOnlyFailure(t, checks, upgrader.CheckMemory, status.ReasonInsufficientMemory)
		require.True(t, ran(b.dev, "ls", initDir))
		requireUpgradeAgrees(t, b, err)
	})
	t.Run("upload directory too small", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: &big, sim: openwrttest.Config{MemTotal: 2 << 20, MemAvailable: 1 << 20}})
		checks, err := b.dryRun(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonInsufficientMemory)
		requireOnlyFailure(t, checks, upgrader.CheckMemory, status.ReasonInsufficientMemory)
		require.Contains(t, find(t, checks, upgrader.CheckMemory).Detail, "upload directory")
		require.False(t, ran(b.dev, "cat", meminfoFile), "went past the upload directory's room")
		requireUpgradeAgrees(t, b, err)
	})
	t.Run("fits once services are stopped", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: &big, sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}})
		checks, err := b.dryRun(t)
		require.NoError(t, err)
		requireOnlyFailure(t, checks, "", "")
		mem := find(t, checks, upgrader.CheckMemory)
		require.Contains(t, mem.Detail, "services would be stopped")
		for _, svc := range []string{"uhttpd", "dnsmasq", "cron", "the wireless"} {
			require.Contains(t, mem.Detail, svc)
		}
		require.NotContains(t, mem.Detail, "rssileds", "a service the device does not have")
		requireUpgradeAgrees(t, b, err)
	})
}

func TestCheckAlreadyInstalled(t *testing.T) {
	t.Parallel()
	img := fwtoolImage(openwrttest.DefaultBoardName)
	b := setup(t, setupOpts{img: img, sim: openwrttest.Config{Files: map[string][]byte{ChecksumFile: []byte(img.SHA256() + "\n")}}})
	checks, err := b.dryRun(t)
	requireKind(t, err, upgrader.KindNotNeeded, status.ReasonAlreadyInstalled)
	require.Equal(t, allChecks, names(checks))
	requireOnlyFailure(t, checks, upgrader.CheckInstalled, status.ReasonAlreadyInstalled)
	requireUpgradeAgrees(t, b, err)
}

func TestCheckUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	b := setup(t, setupOpts{})
	b.addr = func() string { return closed }
	checks, err := b.dryRun(t)
	requireKind(t, err, upgrader.KindRecoverable, status.ReasonConnectionFailed)
	require.Equal(t, []string{upgrader.CheckReachable}, names(checks))
	requireOnlyFailure(t, checks, upgrader.CheckReachable, status.ReasonConnectionFailed)
	require.Empty(t, b.dev.Commands())
	requireUpgradeAgrees(t, b, err)
}

func TestCheckHostKeyMismatch(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	other, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		cb     ssh.HostKeyCallback
		checks []string
	}{
		{"another key", PinnedKey(other.PublicKey()), []string{upgrader.CheckReachable, upgrader.CheckHostKey}},
		{"no host key check", nil, []string{upgrader.CheckHostKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{creds: func(_ *bundle, c *Credentials) { c.HostKeyCallback = tc.cb }})
			checks, err := b.dryRun(t)
			requireKind(t, err, upgrader.KindAborted, status.ReasonHostKeyMismatch)
			require.Equal(t, tc.checks, names(checks))
			requireOnlyFailure(t, checks, upgrader.CheckHostKey, status.ReasonHostKeyMismatch)
			require.Empty(t, b.dev.Commands(), "something ran on a device whose host key was refused")
			requireUpgradeAgrees(t, b, err)
		})
	}
}

func TestCheckIdentityMismatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		o    setupOpts
	}{
		{"another UUID", setupOpts{sim: openwrttest.Config{UUID: "00000000-1111-2222-3333-444444444444"}}},
		{"no UUID", setupOpts{noUUID: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tc.o)
			checks, err := b.dryRun(t)
			requireKind(t, err, upgrader.KindAborted, status.ReasonIdentityMismatch)
			require.Equal(t, []string{upgrader.CheckReachable, upgrader.CheckHostKey, upgrader.CheckIdentity}, names(checks))
			requireOnlyFailure(t, checks, upgrader.CheckIdentity, status.ReasonIdentityMismatch)
			// Nothing but the identity was read from another device.
			require.Equal(t, [][]string{{"uci", "get", uuidOption}}, b.dev.Executed())
			requireUpgradeAgrees(t, b, err)
		})
	}
}

func TestCheckInvalidOptions(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{options: json.RawMessage(`{"sysupgrade":"c,n"}`)})
	checks, err := b.dryRun(t)
	requireKind(t, err, upgrader.KindAborted, status.ReasonInvalidOptions)
	require.Equal(t, []string{upgrader.CheckOptions}, names(checks))
	require.Empty(t, b.dev.Commands(), "the options are refused before connecting")
	requireUpgradeAgrees(t, b, err)
}

func TestCheckCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := b.u.Check(ctx, b.job)
	require.ErrorIs(t, err, context.Canceled)
	require.Empty(t, b.dev.Commands())
}
