package openwrttest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

func TestFaultRefuseConnections(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{Faults: Faults{RefuseConnections: 2}})
	for range 2 {
		_, err := dialErr(d, d.ClientConfig())
		require.Error(t, err)
	}
	sh(t, d, "true")
}

func TestFaultDropUpload(t *testing.T) {
	t.Parallel()
	for _, m := range uploadMethods {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			const k = 100 << 10
			d := setup(t, Config{SFTP: true, SCP: true, Faults: Faults{DropUploadAfter: k}})
			im := testImage
			im.Size = 1 << 20
			c := dial(t, d)
			require.Error(t, m.upload(c, "/tmp/fw.bin", im))
			// Wait for the client to see the cut rather than opening a
			// session on a dying connection: x/crypto/ssh can block forever
			// when a channel is opened as its connection dies.
			cut := make(chan error, 1)
			go func() { cut <- c.Wait() }()
			select {
			case <-cut:
			case <-time.After(10 * time.Second):
				t.Fatal("the connection was not cut")
			}
			_, err := c.NewSession()
			require.Error(t, err, "the connection was cut")
			fi, ok := d.File("/tmp/fw.bin")
			require.True(t, ok, "the partial file stays")
			require.Equal(t, int64(k), fi.Size)
			// Only once.
			require.NoError(t, m.upload(dial(t, d), "/tmp/fw.bin", im))
			fi, _ = d.File("/tmp/fw.bin")
			require.Equal(t, im.SHA256(), fi.SHA256)
		})
	}
}

func TestFaultCorruptUploads(t *testing.T) {
	t.Parallel()
	for _, m := range uploadMethods {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			d := setup(t, Config{SFTP: true, SCP: true, Faults: Faults{CorruptUploads: 2}})
			c := dial(t, d)
			for _, size := range []int64{1000, 300 << 10} {
				im := testImage
				im.Size = size
				require.NoError(t, m.upload(c, "/tmp/fw.bin", im))
				fi, _ := d.File("/tmp/fw.bin")
				require.Equal(t, im.Len(), fi.Size)
				require.NotEqual(t, im.SHA256(), fi.SHA256, "size %d", size)
				require.Equal(t, fi.SHA256+"  /tmp/fw.bin\n", run(t, c, "sha256sum /tmp/fw.bin", nil).stdout)
			}
			// Corrupt uploads still pass the image test: the header is intact.
			require.Equal(t, 0, run(t, c, "sysupgrade --test /tmp/fw.bin", nil).status)
			require.NoError(t, m.upload(c, "/tmp/fw.bin", testImage))
			fi, _ := d.File("/tmp/fw.bin")
			require.Equal(t, testImage.SHA256(), fi.SHA256, "the third upload is intact")
		})
	}
}

// flash uploads testImage and runs sysupgrade, returning its result.
func flash(t *testing.T, d *Device, opts string) result {
	t.Helper()
	c := uploadImage(t, d, testImage, "/tmp/fw.bin")
	return run(t, c, "sysupgrade "+opts+" /tmp/fw.bin", nil)
}

func TestFaultNeverComeBack(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{RebootDelay: 50 * time.Millisecond, Faults: Faults{NeverComeBack: true}})
	addr := d.Addr()
	flash(t, d, "")
	require.NoError(t, d.WaitDown(waitCtx(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, d.WaitUp(ctx), context.DeadlineExceeded)
	require.True(t, refused(addr))
	require.Equal(t, 1, d.Flashed())
}

func TestFaultOldFirmwareAfterReboot(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{Faults: Faults{OldFirmwareAfterReboot: true}})
	boot := d.BootID()
	flash(t, d, "")
	require.NoError(t, d.WaitReboots(waitCtx(t), 1))
	require.NotEqual(t, boot, d.BootID())
	require.Equal(t, DefaultRelease, d.Release())
}

func TestFaultNoReboot(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{Faults: Faults{NoReboot: true}})
	boot := d.BootID()
	r := flash(t, d, "-v")
	require.Contains(t, r.stderr, " upgrade: Commencing upgrade")
	var missing *ssh.ExitMissingError
	require.ErrorAs(t, r.err, &missing)
	time.Sleep(200 * time.Millisecond)
	require.True(t, d.Up())
	require.Equal(t, boot, d.BootID())
	require.Equal(t, DefaultRelease, d.Release())
	require.Zero(t, d.Reboots())
	sh(t, d, "true")
}

func TestFaultFlashHang(t *testing.T) {
	t.Parallel()
	const hang = 300 * time.Millisecond
	d := setup(t, Config{Faults: Faults{FlashHang: hang}})
	c := uploadImage(t, d, testImage, "/tmp/fw.bin")
	s, err := c.NewSession()
	require.NoError(t, err)
	out, err := s.StdoutPipe()
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, s.Start("sysupgrade /tmp/fw.bin"))
	b := make([]byte, 1)
	_, _ = out.Read(b)
	require.GreaterOrEqual(t, time.Since(start), hang, "nothing is sent while hanging")
	require.NoError(t, d.WaitReboots(waitCtx(t), 1))
	require.Equal(t, testImage.Release, d.Release())
}

func TestFaultFlashFalseError(t *testing.T) {
	t.Parallel()
	for _, prov := range []bool{false, true} {
		d := setup(t, Config{Faults: Faults{FlashFalseError: true, FalseErrorProvisioning: prov}})
		r := flash(t, d, "-q")
		require.NoError(t, r.err)
		require.Equal(t, ExitUbusConnectionFailed, r.status)
		want := `Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "\/tmp\/fw.bin", "backup": "\/tmp\/sysupgrade.tgz", "command": "\/lib\/upgrade\/do_stage2", "options": { "save_partitions": 1 } } (Connection failed)` + "\n"
		if prov {
			want = `Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "\/tmp\/fw.bin", "backup": "\/tmp\/sysupgrade.tgz", "command": "\/lib\/upgrade\/do_stage2", "options": { "save_partitions": 1, "add_provisioning": 0 } } (Connection failed)` + "\n"
		}
		require.Equal(t, want, r.stderr)
		require.NoError(t, d.WaitReboots(waitCtx(t), 1), "it reboots anyway")
		require.Equal(t, testImage.Release, d.Release())
	}
}

func TestFaultFlashError(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{Faults: Faults{FlashError: true}})
	boot := d.BootID()
	r := flash(t, d, "")
	require.NoError(t, r.err)
	require.Equal(t, 1, r.status)
	require.Contains(t, r.stderr, "failed to write image")
	require.Zero(t, d.Flashed())
	time.Sleep(150 * time.Millisecond)
	require.True(t, d.Up())
	require.Equal(t, boot, d.BootID())
}

func TestFaultComeBackOnNewAddress(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{Faults: Faults{ComeBackOnNewAddress: true}})
	old := d.Addr()
	flash(t, d, "")
	require.NoError(t, d.WaitReboots(waitCtx(t), 1))
	require.NotEqual(t, old, d.Addr())
	_, port, err := net.SplitHostPort(d.Addr())
	require.NoError(t, err)
	require.Contains(t, string(d.KnownHosts()), "]:"+port)
	sh(t, d, "true")
}

func TestSetFaults(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	d.SetFaults(Faults{RefuseConnections: 1})
	_, err := dialErr(d, d.ClientConfig())
	require.Error(t, err)
	sh(t, d, "true")
}

func TestTmpIsLimitedByMemory(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{SFTP: true, SCP: true, MemAvailable: 3 << 20, Faults: Faults{LowMemoryUntilServicesStopped: true}})
	im := testImage
	im.Size = 2 << 20
	for _, m := range uploadMethods {
		err := m.upload(dial(t, d), "/tmp/fw.bin", im)
		require.Error(t, err, m.name)
		sh(t, d, "rm -f /tmp/fw.bin")
	}
	r := run(t, dial(t, d), "cat > /tmp/fw.bin", im.Reader())
	require.Equal(t, 1, r.status)
	require.Contains(t, r.stderr, "No space left on device")
	// Stopping the non-critical services frees enough memory.
	sh(t, d, "rm -f /tmp/fw.bin; /etc/init.d/uhttpd stop; /etc/init.d/dnsmasq stop; /etc/init.d/cron stop; /etc/init.d/rpcd stop; /etc/init.d/log stop; /etc/init.d/odhcpd stop")
	for _, m := range uploadMethods {
		require.NoError(t, m.upload(dial(t, d), "/tmp/fw.bin", im), m.name)
	}
}

func TestFaultProcdRefusal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rel            string
		status         int
		stdout, stderr string
	}{
		{"22.03", ExitUbusNotSupported, "{\n\t\"error\": {\n\t\t\"message\": \"Firmware image is invalid\"\n\t}\n}\n",
			`Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "\/tmp\/fw.bin", "backup": "\/tmp\/sysupgrade.tgz", "command": "\/lib\/upgrade\/do_stage2", "options": { "save_partitions": 1 } } (Not supported)` + "\n"},
		{"25.12", ExitUbusNotSupported, "{\n\t\"error\": {\n\t\t\"message\": \"Firmware image is invalid\"\n\t}\n}\n",
			`Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "\/tmp\/fw.bin", "backup": "\/tmp\/sysupgrade.tgz", "command": "\/lib\/upgrade\/do_stage2", "options": { "save_partitions": 1, "add_provisioning": 0 } } (Not supported)` + "\n"},
		{"19.07", 8, "", "Command failed: Not supported\n"},
	} {
		t.Run(tc.rel, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, tc.rel, Config{Faults: Faults{ProcdRefusal: true}})
			boot := d.BootID()
			c := uploadImage(t, d, goodImage, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade -q /tmp/fw.bin", nil)
			require.Equal(t, result{stdout: tc.stdout, stderr: tc.stderr, status: tc.status}, r)
			require.Zero(t, d.Flashed(), "nothing is flashed")
			time.Sleep(100 * time.Millisecond)
			require.True(t, d.Up())
			require.Equal(t, boot, d.BootID())
			for s, up := range d.Services() {
				require.True(t, up, s)
			}
		})
	}
	t.Run("17.01 has no procd handover", func(t *testing.T) {
		t.Parallel()
		d := relDevice(t, "17.01", Config{Faults: Faults{ProcdRefusal: true}})
		flash(t, d, "")
		require.NoError(t, d.WaitReboots(waitCtx(t), 1))
		require.Equal(t, 1, d.Flashed())
	})
}

func TestFaultSilentReboot(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{RebootDelay: 700 * time.Millisecond, Faults: Faults{SilentReboot: true}})
	addr := d.Addr()
	flash(t, d, "")
	require.NoError(t, d.WaitDown(waitCtx(t)))
	start := time.Now()
	_, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "a timeout, not a refusal: %v", err)
	require.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
	// A connect that waits through the reboot gets in once the device is up.
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	require.NoError(t, err)
	c.Close()
	require.True(t, d.Up())
	sh(t, d, "true")

	// Without the fault the address refuses at once.
	d2 := setup(t, Config{RebootDelay: time.Second})
	addr2 := d2.Addr()
	flash(t, d2, "")
	require.NoError(t, d2.WaitDown(waitCtx(t)))
	_, err = net.DialTimeout("tcp", addr2, 300*time.Millisecond)
	require.Error(t, err)
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "refused: %v", err)
}

func TestFaultNewHostKeysAfterReset(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{Faults: Faults{NewHostKeysAfterReset: true}})
	key := d.HostKey()
	oldCB := d.HostKeyCallback()
	flash(t, d, "")
	require.NoError(t, d.WaitReboots(waitCtx(t), 1))
	require.Equal(t, key.Marshal(), d.HostKey().Marshal(), "the configuration, keys included, was kept")
	flash(t, d, "-n")
	require.NoError(t, d.WaitReboots(waitCtx(t), 2))
	require.NotEqual(t, key.Marshal(), d.HostKey().Marshal(), "dropbear made new keys")
	cfg := d.ClientConfig()
	cfg.HostKeyCallback = oldCB
	_, err := dialErr(d, cfg)
	require.Error(t, err, "the old key no longer matches")
	sh(t, d, "true")
}
