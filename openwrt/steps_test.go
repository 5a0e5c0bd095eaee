package openwrt

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// requireUntouched checks that nothing was uploaded or flashed and that every
// service runs.
func requireUntouched(t *testing.T, b *bundle) {
	t.Helper()
	require.Empty(t, uploads(b.dev), "upload commands")
	require.Empty(t, flashCommands(b.dev))
	require.Zero(t, b.dev.Flashed())
	allRunning(t, b.dev)
}

func TestIdentity(t *testing.T) {
	t.Parallel()
	t.Run("dashless uppercase matches", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{UUID: strings.ToUpper(strings.ReplaceAll(testUUID, "-", ""))}})
		require.NoError(t, b.upgrade(t))
		require.True(t, ran(b.dev, "uci", "get", "openwisp.http.uuid"))
	})
	t.Run("mismatch", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{UUID: "00000000-1111-2222-3333-444444444444"}})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonIdentityMismatch)
		requireUntouched(t, b)
		require.Contains(t, b.rep.Logs(), "Identity mismatch")
	})
	t.Run("unreadable", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{noUUID: true})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonIdentityMismatch)
		requireUntouched(t, b)
		require.Contains(t, b.rep.Logs(), "Cannot read the device's identity")
	})
	t.Run("skipped", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{UUID: "00000000-1111-2222-3333-444444444444"},
			config: func(c *Config) { c.SkipIdentityCheck = true }})
		require.NoError(t, b.upgrade(t))
		require.False(t, ran(b.dev, "uci", "get", "openwisp.http.uuid"))
	})
}

func TestChecksum(t *testing.T) {
	t.Parallel()
	img := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: testImgSize}
	t.Run("present same", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Files: map[string][]byte{ChecksumFile: []byte(img.SHA256() + "\n")}}})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindNotNeeded, status.ReasonAlreadyInstalled)
		requireUntouched(t, b)
		require.False(t, ran(b.dev, "rm", "-rf", opkgListsDir), "went past the checksum step")
	})
	t.Run("present different", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Files: map[string][]byte{ChecksumFile: []byte(strings.Repeat("0", 64) + "\n")}}})
		require.NoError(t, b.upgrade(t))
		require.Contains(t, b.rep.Logs(), "Checksum different")
		f, ok := b.dev.File(ChecksumFile)
		require.True(t, ok)
		require.Equal(t, img.SHA256()+"\n", string(f.Content))
	})
	t.Run("absent", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{})
		require.NoError(t, b.upgrade(t))
		require.Contains(t, b.rep.Logs(), "checksum file not found")
	})
}

func TestMemory(t *testing.T) {
	t.Parallel()
	big := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 2 << 20}
	t.Run("enough", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{})
		require.NoError(t, b.upgrade(t))
		require.True(t, ran(b.dev, "rm", "-rf", opkgListsDir))
		require.True(t, ran(b.dev, "echo", "3"))
		require.Empty(t, executed(b.dev, "wifi"), "no service stopped")
	})
	t.Run("no MemAvailable", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{NoMemAvailable: true}})
		require.NoError(t, b.upgrade(t))
		require.Contains(t, b.rep.Logs(), "(MemFree+Buffers+Cached-Shmem)")
	})
	t.Run("freed by stopping services", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: &big, sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}})
		require.NoError(t, b.upgrade(t))
		for _, svc := range []string{"uhttpd", "dnsmasq", "cron", "rpcd", "log", "odhcpd"} {
			require.True(t, ran(b.dev, "/etc/init.d/"+svc, "stop"), svc)
		}
		require.True(t, ran(b.dev, "wifi", "down"))
		require.Equal(t, 1, b.dev.Flashed())
		allRunning(t, b.dev) // rebooted
	})
	t.Run("still short", func(t *testing.T) {
		t.Parallel()
		huge := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 32 << 20}
		b := setup(t, setupOpts{img: &huge, sim: openwrttest.Config{MemAvailable: 4 << 20}})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonInsufficientMemory)
		for _, svc := range []string{"uhttpd", "dnsmasq", "cron", "rpcd", "log", "odhcpd", "openwisp-config"} {
			require.True(t, ran(b.dev, "/etc/init.d/"+svc, "stop"), svc)
			require.True(t, ran(b.dev, "/etc/init.d/"+svc, "start"), svc)
		}
		require.False(t, ran(b.dev, "/etc/init.d/rssileds", "start"), "absent service started")
		require.True(t, ran(b.dev, "wifi", "up"))
		requireUntouched(t, b)
	})
}

func TestImageTest(t *testing.T) {
	t.Parallel()
	wrong := openwrttest.Image{Boards: []string{"other,board"}, Release: newRelease, Size: testImgSize}
	t.Run("fail", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: &wrong})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindAborted, status.ReasonImageInvalid)
		require.Contains(t, b.rep.Logs(), "not supported by this image")
		require.Empty(t, flashCommands(b.dev))
		_, ok := b.dev.File("/tmp/" + b.job.Image.Name)
		require.False(t, ok, "the uploaded image was not removed")
		allRunning(t, b.dev)
	})
	t.Run("forced", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: &wrong, options: json.RawMessage(`{"sysupgrade":"c,F"}`)})
		require.NoError(t, b.upgrade(t))
		require.True(t, ran(b.dev, "sysupgrade", "--test", "-c", "-F", "/tmp/"+b.job.Image.Name))
		require.Equal(t, []string{"-v", "-c", "-F", "/tmp/" + b.job.Image.Name}, b.dev.Flashes()[0].Args)
	})
}

func TestFlash(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		faults openwrttest.Faults
	}{
		{"ok", openwrttest.Faults{}},
		{"false ubus error", openwrttest.Faults{FlashFalseError: true}},
		{"false ubus error 25.12", openwrttest.Faults{FlashFalseError: true, FalseErrorProvisioning: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{sim: openwrttest.Config{Faults: tc.faults}})
			require.NoError(t, b.upgrade(t))
			require.Equal(t, newRelease, b.dev.Release())
			require.Equal(t, 1, b.dev.Reboots())
		})
	}
	t.Run("real error", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{FlashError: true}}})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindFailed, status.ReasonFlashFailed)
		require.Contains(t, b.rep.Logs(), "failed to write image")
		require.Zero(t, b.dev.Reboots())
		require.NotContains(t, b.rep.Phases(), status.PhaseRebooting)
		allRunning(t, b.dev)
	})
	t.Run("hung session", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{
			sim:    openwrttest.Config{Faults: openwrttest.Faults{FlashHang: 700 * time.Millisecond}},
			config: func(c *Config) { c.UpgradeTimeout = 200 * time.Millisecond },
		})
		require.NoError(t, b.upgrade(t))
		require.Contains(t, b.rep.Logs(), "No answer from sysupgrade")
		require.Equal(t, newRelease, b.dev.Release())
	})
}

func TestReconnect(t *testing.T) {
	t.Parallel()
	few := func(c *Config) { c.ReconnectMaxRetries = 6 }
	t.Run("never comes back", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{NeverComeBack: true}}, config: few})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindFailed, status.ReasonUnreachableAfterFlash)
		require.ErrorContains(t, err, "(6 attempts in", "ReconnectMaxRetries caps the attempts")
	})
	t.Run("old firmware", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{OldFirmwareAfterReboot: true}}, config: few})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindFailed, status.ReasonOldFirmwareAfterReboot)
		require.Equal(t, 1, b.dev.Reboots())
		_, ok := b.dev.File(ChecksumFile)
		require.False(t, ok, "checksum written for an old firmware")
	})
	t.Run("not rebooted", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{NoReboot: true}}, config: few})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindFailed, status.ReasonOldFirmwareAfterReboot)
		require.Contains(t, b.rep.Logs(), "same boot id")
		_, ok := b.dev.File(ChecksumFile)
		require.False(t, ok)
	})
	t.Run("new address", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{ComeBackOnNewAddress: true}}})
		before := b.dev.Addr()
		require.NoError(t, b.upgrade(t))
		require.NotEqual(t, before, b.dev.Addr())
		require.Contains(t, b.rep.Logs(), "Connected to "+b.dev.Addr())
	})
	t.Run("slow reboot", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{RebootDelay: 600 * time.Millisecond}})
		require.NoError(t, b.upgrade(t))
	})
}
