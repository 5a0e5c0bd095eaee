package openwrttest

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

// upload puts im at dst with cat and returns a client.
func uploadImage(t *testing.T, d *Device, im Image, dst string) *ssh.Client {
	t.Helper()
	c := dial(t, d)
	require.NoError(t, catUpload(c, dst, im.Reader()))
	return c
}

func TestSysupgradeTest(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	c := uploadImage(t, d, testImage, "/tmp/good.bin")
	require.NoError(t, catUpload(c, "/tmp/other.bin", Image{Boards: []string{"tplink,archer-c7-v5"}, Release: "OpenWrt 23.05.3 r1-x", Size: 10000}.Reader()))
	require.NoError(t, catUpload(c, "/tmp/junk.bin", strings.NewReader("not an image\n")))
	require.NoError(t, catUpload(c, "/tmp/bymodel.bin", Image{Boards: []string{DefaultModel}, Size: 100}.Reader()))

	r := run(t, c, "sysupgrade --test '/tmp/good.bin'", nil)
	require.Equal(t, 0, r.status, r.stderr)
	r = run(t, c, "sysupgrade -T /tmp/bymodel.bin", nil)
	require.Equal(t, 1, r.status, "the board check compares board_name, never the model")
	require.Contains(t, r.stderr, "Device tplink,archer-c7-v2 not supported by this image\nSupported devices: TP-Link Archer C7 v2\nImage check failed.\n")
	r = run(t, c, "sysupgrade -q --test /tmp/other.bin", nil)
	require.Equal(t, 1, r.status)
	require.Equal(t, "Device tplink,archer-c7-v2 not supported by this image\nSupported devices: tplink,archer-c7-v5\nImage check failed.\n", r.stderr)
	r = run(t, c, "sysupgrade -q --test /tmp/junk.bin", nil)
	require.Equal(t, 1, r.status)
	require.Equal(t, "Invalid image type.\nImage check failed.\n", r.stderr)
	r = run(t, c, "sysupgrade --test -F /tmp/other.bin", nil)
	require.Equal(t, 0, r.status)
	require.Contains(t, r.stderr, "--force given")
	r = run(t, c, "sysupgrade --test /tmp/missing.bin", nil)
	require.Equal(t, 1, r.status)
	require.Zero(t, d.Flashed())
	// A failed check never flashes.
	r = run(t, c, "sysupgrade -n /tmp/other.bin", nil)
	require.Equal(t, 1, r.status)
	require.Zero(t, d.Flashed())
	require.True(t, d.Up())
}

func TestRebootCycle(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{
		UUID:  "uuid-1",
		Files: map[string][]byte{"/etc/openwisp/firmware_checksum": []byte("old\n"), "/tmp/keepnot": []byte("x")},
	})
	c := uploadImage(t, d, testImage, "/tmp/fw.bin")
	sh(t, d, "echo new > /etc/openwisp/firmware_checksum && /etc/init.d/uhttpd stop && rm -rf /tmp/opkg-lists")
	_, ok := d.File("/tmp/keepnot")
	require.True(t, ok, "initial /tmp files exist until the first reboot")
	boot := d.BootID()
	other := dial(t, d) // an idle connection: it is dropped too

	r := run(t, c, "sysupgrade -v -c '/tmp/fw.bin'", nil)
	require.Contains(t, r.stderr, " upgrade: Saving config files...\n")
	require.Contains(t, r.stdout, "etc/openwisp/firmware_checksum\n", "-v lists the saved files")
	require.Contains(t, r.stderr, " upgrade: Commencing upgrade. Closing all shell sessions.\n")
	require.NoError(t, r.err)
	require.Equal(t, ExitUbusConnectionFailed, r.status, "22.03: the ubus client loses ubusd")
	closed := make(chan error, 1)
	go func() { closed <- other.Wait() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("an idle connection was not dropped")
	}
	require.NoError(t, d.WaitReboots(waitCtx(t), 1))

	require.NotEqual(t, boot, d.BootID())
	require.Equal(t, testImage.Release, d.Release())
	require.Equal(t, 1, d.Flashed())
	fl := d.Flashes()[0]
	require.Equal(t, []string{"-v", "-c", "/tmp/fw.bin"}, fl.Args)
	require.True(t, fl.KeepConfig)
	require.Equal(t, testImage.SHA256(), fl.SHA256)
	require.Contains(t, sh(t, d, "cat /etc/openwrt_release"), "DISTRIB_DESCRIPTION='OpenWrt 23.05.3 r23809-234f1a2efa'")
	require.Equal(t, d.BootID()+"\n", sh(t, d, "cat /proc/sys/kernel/random/boot_id"))
	_, ok = d.File("/tmp/fw.bin")
	require.False(t, ok, "/tmp is wiped")
	_, ok = d.File("/tmp/keepnot")
	require.False(t, ok)
	require.Equal(t, DefaultModel+"\n", sh(t, d, "cat /tmp/sysinfo/model"))
	require.Equal(t, "new\n", sh(t, d, "cat /etc/openwisp/firmware_checksum"), "/etc is kept")
	require.Equal(t, "uuid-1\n", sh(t, d, "uci get openwisp.http.uuid"))
	require.True(t, d.Services()["uhttpd"], "services run again")
	sh(t, d, "test -d /tmp/opkg-lists")

	// -n: the configuration is not kept.
	c = uploadImage(t, d, Image{Boards: testImage.Boards, Release: "OpenWrt 24.10.0 r28427-6df0e3d02a", Size: 1000}, "/tmp/fw2.bin")
	r = run(t, c, "sysupgrade -n /tmp/fw2.bin", nil)
	require.NotContains(t, r.stderr, "Saving config files")
	require.Contains(t, r.stderr, "Commencing upgrade")
	require.NoError(t, d.WaitReboots(waitCtx(t), 2))
	require.Equal(t, "OpenWrt 24.10.0 r28427-6df0e3d02a", d.Release())
	rr := run(t, dial(t, d), "uci get openwisp.http.uuid", nil)
	require.Equal(t, 1, rr.status)
	require.Equal(t, "uci: Entry not found\n", rr.stderr)
	_, ok = d.File("/etc/openwisp/firmware_checksum")
	require.False(t, ok)
	require.False(t, d.Flashes()[1].KeepConfig)
	require.Equal(t, 2, d.Reboots())
}

func TestRebootCommand(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	boot := d.BootID()
	r := run(t, dial(t, d), "reboot", nil)
	require.Equal(t, 0, r.status)
	require.NoError(t, d.WaitReboots(waitCtx(t), 1))
	require.NotEqual(t, boot, d.BootID())
	require.Equal(t, DefaultRelease, d.Release())
	require.Zero(t, d.Flashed())
}

func TestCloseDuringReboot(t *testing.T) {
	t.Parallel()
	d, err := New(Config{RebootDelay: 10e9})
	require.NoError(t, err)
	require.NoError(t, d.Start())
	c := uploadImage(t, d, testImage, "/tmp/fw.bin")
	run(t, c, "sysupgrade /tmp/fw.bin", nil)
	require.NoError(t, d.WaitDown(waitCtx(t)))
	require.NoError(t, d.Close(), "the pending reboot is cancelled")
	require.False(t, d.Up())
}
