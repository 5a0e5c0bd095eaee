package openwrttest

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

// newRelease is what the test images install.
const newRelease = "OpenWrt 23.05.3 r23809-234f1a2efa"

// goodImage is an image for the default board with real fwtool metadata.
var goodImage = Image{Boards: []string{DefaultBoardName}, Release: newRelease, Size: 64 << 10, Fwtool: true}

// relDevice starts a device running the last point release of series rel.
func relDevice(t *testing.T, rel string, cfg Config) *Device {
	t.Helper()
	cfg.Release = ReleaseDescription(rel)
	return setup(t, cfg)
}

// from reports whether release rel is series first or a later one.
func from(rel, first string) bool { return slices.Contains(since(first), rel) }

// dated matches the "<date> upgrade: " prefix of v() from 21.02.
var dated = regexp.MustCompile(`(?m)^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d UTC \d{4} upgrade: `)

func undate(s string) string { return dated.ReplaceAllString(s, "DATE upgrade: ") }

func TestReleaseSystem(t *testing.T) {
	t.Parallel()
	for _, rel := range Releases() {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, rel, Config{})
			c := uploadImage(t, d, goodImage, "/tmp/fw.bin")
			fi, _ := d.File("/tmp/fw.bin")

			r := run(t, c, "sha256sum /tmp/fw.bin", nil)
			if from(rel, "17.01") {
				assert.Equal(t, fi.SHA256+"  /tmp/fw.bin\n", r.stdout)
			} else {
				assert.Equal(t, result{stderr: "ash: sha256sum: not found\n", status: 127}, r)
				assert.Equal(t, 127, run(t, c, "command -v sha256sum", nil).status)
				assert.Equal(t, 127, run(t, c, "/usr/bin/sha256sum /tmp/fw.bin", nil).status)
			}
			assert.Equal(t, fi.MD5+"  /tmp/fw.bin\n", run(t, c, "md5sum /tmp/fw.bin", nil).stdout)
			for _, cmd := range []string{"timeout 10 true", "nohup true", "stat /tmp/fw.bin"} {
				name, _, _ := strings.Cut(cmd, " ")
				assert.Equal(t, result{stderr: "ash: " + name + ": not found\n", status: 127}, run(t, c, cmd, nil), cmd)
			}
			assert.Contains(t, run(t, c, "free", nil).stdout, "Mem:")
			assert.Contains(t, run(t, c, "df /tmp", nil).stdout, "tmpfs                    65536 ")

			assert.Equal(t, from(rel, "15.05"), strings.Contains(run(t, c, "cat /proc/meminfo", nil).stdout, "MemAvailable:"), "MemAvailable")
			assert.Contains(t, run(t, c, "cat /proc/meminfo", nil).stdout, "MemFree:")
			r = run(t, c, "cat /tmp/sysinfo/board_name", nil)
			assert.Equal(t, from(rel, "14.07"), r.status == 0, "/tmp/sysinfo")
			assert.Equal(t, from(rel, "14.07"), d.SysInfo())
			assert.Contains(t, run(t, c, "cat /proc/cpuinfo", nil).stdout, "machine\t\t\t: "+DefaultModel+"\n")

			r = run(t, c, "ubus call system board", nil)
			switch {
			case !from(rel, "14.07"):
				assert.Equal(t, result{stderr: "Command failed: Not found\n", status: 4}, r)
			default:
				assert.Equal(t, 0, r.status)
				assert.Contains(t, r.stdout, `"model": "`+DefaultModel+`"`)
				assert.Equal(t, from(rel, "17.01"), strings.Contains(r.stdout, `"board_name": "`+DefaultBoardName+`"`), "board_name")
				assert.Equal(t, from(rel, "22.03"), strings.Contains(r.stdout, `"rootfs_type": "squashfs"`), "rootfs_type")
				assert.Contains(t, r.stdout, `"description": "`+ReleaseDescription(rel)+`"`)
			}

			r = run(t, c, "cat /etc/board.json", nil)
			assert.Equal(t, from(rel, "15.05"), r.status == 0, "board.json")
			assert.Equal(t, from(rel, "21.02"), strings.Contains(r.stdout, `"compat_version": "1.0"`), "board.json compat")
			r = run(t, c, "uci -q get system.@system[0].compat_version", nil)
			if from(rel, "21.02") {
				assert.Equal(t, "1.0\n", r.stdout)
			} else {
				assert.Equal(t, 1, r.status)
			}
			assert.Contains(t, run(t, c, "cat /etc/openwrt_release", nil).stdout, "DISTRIB_DESCRIPTION=")
			assert.Equal(t, rel, d.Profile().Release)
		})
	}
}

func TestSysupgradeOptionsPerRelease(t *testing.T) {
	t.Parallel()
	for _, rel := range Releases() {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, rel, Config{})
			c := uploadImage(t, d, goodImage, "/tmp/fw.bin")
			invalid := func(opt string) result {
				if from(rel, "19.07") {
					return result{stderr: "Invalid option: " + opt + "\n", status: 1}
				}
				return result{stdout: "Invalid option: " + opt + "\n", status: 1}
			}
			for _, tc := range []struct {
				opt, since string
			}{
				{"--test", "14.07"}, {"-T", "14.07"}, {"-p", "17.01"}, {"-o", "19.07"}, {"-u", "19.07"},
				{"-k", "19.07"}, {"--ignore-minor-compat-version", "22.03"}, {"-s", "24.10"}, {"-P", "25.12"},
			} {
				// The option under test comes first: the loop stops at the
				// first one the release lacks. Every refusal leaves the device alone.
				r := run(t, c, "sysupgrade "+tc.opt+" -T /tmp/fw.bin", nil)
				if from(rel, tc.since) {
					assert.Equal(t, 0, r.status, "%s: %s", tc.opt, r.stdout+r.stderr)
				} else {
					assert.Equal(t, invalid(tc.opt), r, tc.opt)
				}
			}
			assert.Equal(t, invalid("-x"), run(t, c, "sysupgrade -x /tmp/fw.bin", nil))
			assert.Equal(t, invalid("-vn"), run(t, c, "sysupgrade -vn /tmp/fw.bin", nil), "options are not combined")
			r := run(t, c, "sysupgrade --help", nil)
			assert.Equal(t, ProfileFor(rel).HelpStatus, r.status)
			assert.True(t, strings.HasPrefix(r.stdout, "Usage: /sbin/sysupgrade [<upgrade-option>...] <image file or URL>\n"), r.stdout)
			assert.Equal(t, from(rel, "14.07"), strings.Contains(r.stdout, "-T | --test"))
			r = run(t, c, "sysupgrade", nil)
			assert.Equal(t, 1, r.status, "no image: usage, exit 1")
			if from(rel, "14.07") {
				r = run(t, c, "sysupgrade -l", nil)
				assert.Equal(t, 0, r.status)
				assert.Contains(t, r.stdout, "/etc/config/network\n")
			}
			require.Zero(t, d.Flashed())
			require.True(t, d.Up())
		})
	}
}

// ubusLine is the stderr line of a 22.03+ flash.
func ubusLine(path, opts string, force, keep bool) string {
	s := `Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "` + strings.ReplaceAll(path, "/", `\/`) + `", `
	if force {
		s += `"force": true, `
	}
	if keep {
		s += `"backup": "\/tmp\/sysupgrade.tgz", `
	}
	return s + `"command": "\/lib\/upgrade\/do_stage2", "options": { ` + opts + ` } } (Connection failed)` + "\n"
}

func TestFlashPerRelease(t *testing.T) {
	t.Parallel()
	for _, rel := range Releases() {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, rel, Config{RebootDelay: 50 * time.Millisecond})
			c := uploadImage(t, d, goodImage, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade /tmp/fw.bin", nil)
			var missing *ssh.ExitMissingError
			switch {
			case !from(rel, "18.06"):
				require.ErrorAs(t, r.err, &missing, "the session drops")
				assert.True(t, strings.HasPrefix(r.stdout, "Saving config files...\nSending TERM to remaining processes ... dropbear network"), r.stdout)
			case !from(rel, "21.02"):
				require.ErrorAs(t, r.err, &missing, "the session drops")
				assert.Equal(t, "Saving config files...\nCommencing upgrade. Closing all shell sessions.\n", r.stdout)
				assert.Empty(t, r.stderr)
			case !from(rel, "22.03"):
				require.ErrorAs(t, r.err, &missing, "the session drops")
				assert.Empty(t, r.stdout)
				assert.Equal(t, "DATE upgrade: Saving config files...\nDATE upgrade: Commencing upgrade. Closing all shell sessions.\n", undate(r.stderr))
			default:
				require.NoError(t, r.err)
				assert.Equal(t, ExitUbusConnectionFailed, r.status)
				opts := `"save_partitions": 1`
				if from(rel, "25.12") {
					opts += `, "add_provisioning": 0`
				}
				assert.Equal(t, "DATE upgrade: Saving config files...\nDATE upgrade: Commencing upgrade. Closing all shell sessions.\n"+
					ubusLine("/tmp/fw.bin", opts, false, true), undate(r.stderr))
				assert.False(t, d.Up(), "procd stopped dropbear before the ubus client gave up")
			}
			require.NoError(t, d.WaitReboots(waitCtx(t), 1))
			require.Equal(t, 1, d.Flashed())
			require.Equal(t, newRelease, d.Release())
			require.Equal(t, "23.05", d.Profile().Release, "the device now behaves as the image's release")
			require.True(t, d.Services()["uhttpd"])
		})
	}
}

func TestFlashMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rel, opts   string
		force, keep bool
		options     string
	}{
		{"22.03", "", false, true, `"save_partitions": 1`},
		{"23.05", "-F", true, true, `"save_partitions": 1`},
		{"23.05", "-n -p", false, false, `"save_partitions": 0`},
		{"24.10", "-F -n -s", true, false, `"save_partitions": 1, "use_curr_part": true`},
		{"25.12", "-p", false, true, `"save_partitions": 0, "add_provisioning": 0`},
		{"25.12", "-P -n", false, false, `"save_partitions": 1, "add_provisioning": 1`},
	} {
		t.Run(tc.rel+tc.opts, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, tc.rel, Config{RebootDelay: 50 * time.Millisecond})
			c := uploadImage(t, d, goodImage, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade -q "+tc.opts+" /tmp/fw.bin", nil)
			require.Equal(t, ExitUbusConnectionFailed, r.status)
			require.Equal(t, ubusLine("/tmp/fw.bin", tc.options, tc.force, tc.keep), r.stderr)
			require.NoError(t, d.WaitReboots(waitCtx(t), 1))
			require.Equal(t, tc.keep, d.Flashes()[0].KeepConfig)
		})
	}
}

func TestCompat(t *testing.T) {
	t.Parallel()
	const msg = "Config cannot be migrated from swconfig to DSA"
	minor := Image{Boards: []string{DefaultBoardName}, Release: newRelease, Size: 8 << 10, CompatVersion: "1.1", CompatMessage: msg}
	major := Image{Boards: []string{DefaultBoardName}, Release: newRelease, Size: 8 << 10, CompatVersion: "2.0"}
	for _, tc := range []struct {
		name, rel, compat string
		im                Image
		opts              string
		status            int
		stderr            string // undated, with stdout for releases before 19.07
	}{
		{"minor keep", "22.03", "", minor, "", 1, "DATE upgrade: The device is supported, but the config is incompatible to the new image (1.0->1.1). Please upgrade without keeping config (sysupgrade -n).\nDATE upgrade: " + msg + "\nImage check failed.\n"},
		{"minor -n", "22.03", "", minor, "-n", 0, ""},
		{"minor ignore flag", "23.05", "", minor, "--ignore-minor-compat-version", 0, ""},
		{"minor ignore flag 21.02", "21.02", "", minor, "--ignore-minor-compat-version", 1, "Invalid option: --ignore-minor-compat-version\n"},
		{"minor -n 21.02", "21.02", "", minor, "-n", 0, ""},
		{"minor -F", "22.03", "", minor, "-F", 0, "DATE upgrade: The device is supported, but the config is incompatible to the new image (1.0->1.1). Please upgrade without keeping config (sysupgrade -n).\nDATE upgrade: " + msg + "\nImage check failed but --force given - will update anyway!\n"},
		{"same compat", "22.03", "1.1", minor, "", 0, ""},
		{"major", "24.10", "", major, "-n --ignore-minor-compat-version", 1, "DATE upgrade: The device is supported, but this image is incompatible for sysupgrade based on the image version (1.0->2.0).\nImage check failed.\n"},
		{"major from 1.1", "25.12", "1.1", major, "-n", 1, "DATE upgrade: The device is supported, but this image is incompatible for sysupgrade based on the image version (1.1->2.0).\nImage check failed.\n"},
		{"major -F", "25.12", "", major, "-F", 0, "DATE upgrade: The device is supported, but this image is incompatible for sysupgrade based on the image version (1.0->2.0).\nImage check failed but --force given - will update anyway!\n"},
		{"19.07 sees the legacy message", "19.07", "", minor, "-n", 1, "Device tplink,archer-c7-v2 not supported by this image\nSupported devices: tplink,archer-c7-v2 - Image version mismatch: image 1.1, device 1.0. Please wipe config during upgrade (force required) or reinstall. Reason: " + msg + "\nImage check failed.\n"},
		{"19.07 forced", "19.07", "", minor, "-n -F", 0, "Device tplink,archer-c7-v2 not supported by this image\nSupported devices: tplink,archer-c7-v2 - Image version mismatch: image 1.1, device 1.0. Please wipe config during upgrade (force required) or reinstall. Reason: " + msg + "\nImage check failed but --force given - will update anyway!\n"},
		{"17.01 sees the legacy message", "17.01", "", minor, "-n", 1, "Device tplink,archer-c7-v2 not supported by this image\nSupported devices: tplink,archer-c7-v2 - Image version mismatch: image 1.1, device 1.0. Please wipe config during upgrade (force required) or reinstall. Reason: " + msg + "\nImage check 'fwtool_check_image' failed.\n"},
		{"15.05 has no fwtool", "15.05", "", minor, "-n", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, tc.rel, Config{CompatVersion: tc.compat})
			c := uploadImage(t, d, tc.im, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade -T "+tc.opts+" /tmp/fw.bin", nil)
			assert.Equal(t, tc.status, r.status)
			assert.Equal(t, tc.stderr, undate(r.stdout+r.stderr))
			require.Zero(t, d.Flashed())
		})
	}

	t.Run("device compat after a flash", func(t *testing.T) {
		t.Parallel()
		d := relDevice(t, "22.03", Config{RebootDelay: 50 * time.Millisecond})
		require.Equal(t, "1.0", d.CompatVersion())
		c := uploadImage(t, d, minor, "/tmp/fw.bin")
		require.Equal(t, ExitUbusConnectionFailed, run(t, c, "sysupgrade --ignore-minor-compat-version /tmp/fw.bin", nil).status)
		require.NoError(t, d.WaitReboots(waitCtx(t), 1))
		require.Equal(t, "1.0", d.CompatVersion(), "the kept configuration keeps its compat_version")
		require.Contains(t, sh(t, d, "cat /etc/board.json"), `"compat_version": "1.1"`, "the new firmware's board.json")
		c = uploadImage(t, d, minor, "/tmp/fw.bin")
		require.Equal(t, ExitUbusConnectionFailed, run(t, c, "sysupgrade -n /tmp/fw.bin", nil).status)
		require.NoError(t, d.WaitReboots(waitCtx(t), 2))
		require.Equal(t, "1.1", d.CompatVersion(), "config_generate takes board.json's after -n")
		require.Equal(t, "1.1\n", sh(t, d, "uci get system.@system[0].compat_version"))
		c = uploadImage(t, d, minor, "/tmp/fw.bin")
		require.Equal(t, 0, run(t, c, "sysupgrade -T /tmp/fw.bin", nil).status, "1.1 to 1.1 keeps the configuration")
	})
}

func TestBoardCheck(t *testing.T) {
	t.Parallel()
	byModel := Image{Boards: []string{DefaultModel}, Release: newRelease, Size: 8 << 10, Fwtool: true}
	// The header (the "vendor" check) says the board, the metadata another.
	contradicting := Image{Boards: []string{DefaultBoardName}, Release: newRelease, Size: 8 << 10,
		Metadata: Image{Boards: []string{"glinet,gl-ar150"}, Release: newRelease, Fwtool: true}.FwtoolMetadata()}
	for _, tc := range []struct {
		name, rel string
		im        Image
		opts      string
		status    int
		out       string
	}{
		{"model in metadata", "22.03", byModel, "", 1, "Device tplink,archer-c7-v2 not supported by this image\nSupported devices: TP-Link Archer C7 v2\n"},
		{"metadata contradicts the header", "22.03", contradicting, "", 1, "DATE upgrade: Device tplink,archer-c7-v2 not supported by this image\nDATE upgrade: Supported devices: glinet,gl-ar150\nImage check failed.\n"},
		{"metadata contradicts the header, -F", "22.03", contradicting, "-F", 0, "DATE upgrade: Device tplink,archer-c7-v2 not supported by this image\nDATE upgrade: Supported devices: glinet,gl-ar150\nImage check failed but --force given - will update anyway!\n"},
		{"18.06", "18.06", contradicting, "", 1, "Device tplink,archer-c7-v2 not supported by this image\nSupported devices: glinet,gl-ar150\nImage check 'fwtool_check_image' failed.\n"},
		{"18.06 -F skips the later checks", "18.06", contradicting, "-F", 0, "Device tplink,archer-c7-v2 not supported by this image\nSupported devices: glinet,gl-ar150\nImage check 'fwtool_check_image' failed but --force given - will update anyway!\n"},
		{"15.05 reads no metadata", "15.05", contradicting, "", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, tc.rel, Config{})
			c := uploadImage(t, d, tc.im, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade -T "+tc.opts+" /tmp/fw.bin", nil)
			assert.Equal(t, tc.status, r.status)
			assert.Contains(t, undate(r.stdout+r.stderr), tc.out)
			if tc.out == "" {
				assert.Empty(t, r.stdout+r.stderr)
			}
		})
	}
	t.Run("a forced contradicting image is flashed", func(t *testing.T) {
		t.Parallel()
		d := relDevice(t, "23.05", Config{RebootDelay: 50 * time.Millisecond})
		c := uploadImage(t, d, contradicting, "/tmp/fw.bin")
		require.Equal(t, ExitUbusConnectionFailed, run(t, c, "sysupgrade -F /tmp/fw.bin", nil).status)
		require.NoError(t, d.WaitReboots(waitCtx(t), 1))
		require.True(t, d.Flashes()[0].Force)
	})
}

func TestForce2512(t *testing.T) {
	t.Parallel()
	junk := []byte("this is not a firmware image\n")
	for _, tc := range []struct {
		rel    string
		status int
		out    string
	}{
		{"24.10", 0, "Invalid image type.\nImage check failed but --force given - will update anyway!\n"},
		{"25.12", 1, "Invalid image type.\nImage check failed.\n"},
	} {
		t.Run(tc.rel, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, tc.rel, Config{})
			c := dial(t, d)
			require.NoError(t, catUpload(c, "/tmp/fw.bin", strings.NewReader(string(junk))))
			r := run(t, c, "sysupgrade -q -F --test /tmp/fw.bin", nil)
			assert.Equal(t, tc.status, r.status)
			assert.Equal(t, tc.out, r.stderr)
			// A board mismatch stays forceable.
			c = uploadImage(t, d, Image{Boards: []string{"other,board"}, Release: newRelease, Size: 4096, Fwtool: true}, "/tmp/other.bin")
			assert.Equal(t, 0, run(t, c, "sysupgrade -F --test /tmp/other.bin", nil).status)
		})
	}
}

func TestOverlay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rel, rootfs, opts string
		status            int
		stdout, stderr    string
	}{
		{"22.03", RootFSExt4, "-c", 1, "", "Cannot find '/overlay/upper/etc', required for '-c'\n"},
		{"19.07", RootFSInitramfs, "-c", 1, "", "Cannot find '/overlay/upper/etc', required for '-c'\n"},
		{"24.10", RootFSExt4, "-o", 1, "", "Cannot find '/overlay/upper/etc', required for '-c' or '-o'\n"},
		{"18.06", RootFSExt4, "-c", 1, "Cannot find '/overlay/upper/etc', required for '-c'\n", ""},
		{"17.01", RootFSExt4, "-c", 0, "", ""},
		{"22.03", RootFSSquashfs, "-c", 0, "", ""},
		{"23.05", RootFSExt4, "-u", 1, "'/rom/' is required by '-u'\n", ""},
		{"23.05", RootFSSquashfs, "-u", 0, "", ""},
		{"23.05", RootFSExt4, "", 0, "", ""},
	} {
		t.Run(tc.rel+tc.rootfs+tc.opts, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, tc.rel, Config{RootFS: tc.rootfs})
			c := uploadImage(t, d, goodImage, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade -T "+tc.opts+" /tmp/fw.bin", nil)
			assert.Equal(t, result{stdout: tc.stdout, stderr: tc.stderr, status: tc.status}, r)
			assert.Equal(t, tc.rootfs == RootFSSquashfs, run(t, c, "test -d /overlay/upper/etc", nil).status == 0)
			assert.Equal(t, tc.rootfs == RootFSSquashfs, run(t, c, "test -d /rom", nil).status == 0)
		})
	}
	t.Run("initramfs cannot save the configuration", func(t *testing.T) {
		t.Parallel()
		d := relDevice(t, "22.03", Config{RootFS: RootFSInitramfs, RebootDelay: 50 * time.Millisecond})
		c := uploadImage(t, d, goodImage, "/tmp/fw.bin")
		r := run(t, c, "sysupgrade /tmp/fw.bin", nil)
		require.Equal(t, ExitUbusConnectionFailed, r.status)
		require.True(t, strings.HasPrefix(r.stderr, "Cannot save config while running from ramdisk.\n"), r.stderr)
		require.NoError(t, d.WaitReboots(waitCtx(t), 1))
	})
}

func TestVerboseListing(t *testing.T) {
	t.Parallel()
	for _, rel := range []string{"19.07", "23.05", "24.10"} {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			const n = 3000
			d := relDevice(t, rel, Config{BackupFiles: n, RebootDelay: 50 * time.Millisecond})
			c := uploadImage(t, d, goodImage, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade -v /tmp/fw.bin", nil)
			list := r.stdout
			if from(rel, "24.10") {
				list = r.stderr
			}
			require.Greater(t, len(list), 64<<10, "the listing exceeds 64 KiB")
			require.Equal(t, n, strings.Count(list, "etc/"), "one line a file")
			require.Contains(t, list, "\netc/config/network\n", "no leading slash")
			if from(rel, "22.03") {
				require.Equal(t, ExitUbusConnectionFailed, r.status)
				require.True(t, strings.HasSuffix(r.stderr, ubusLine("/tmp/fw.bin", `"save_partitions": 1`, false, true)), "the ubus line comes last")
			}
			require.NoError(t, d.WaitReboots(waitCtx(t), 1))
		})
	}
}

func TestOldReleaseProbe(t *testing.T) {
	t.Parallel()
	t.Run("12.09 without sysinfo", func(t *testing.T) {
		t.Parallel()
		d := relDevice(t, "12.09", Config{})
		c := dial(t, d)
		r := run(t, c, "cat /tmp/sysinfo/model", nil)
		require.Equal(t, 1, r.status)
		require.Equal(t, "cat: can't open '/tmp/sysinfo/model': No such file or directory\n", r.stderr)
		require.Equal(t, 1, run(t, c, "test -d /tmp/sysinfo", nil).status)
		require.Contains(t, sh(t, d, "cat /proc/cpuinfo"), "machine\t\t\t: TP-Link Archer C7 v2\n")
		require.Equal(t, 4, run(t, c, "ubus call system board", nil).status)
		require.NotContains(t, sh(t, d, "cat /proc/meminfo"), "MemAvailable")
	})
	t.Run("12.09 on ar71xx", func(t *testing.T) {
		t.Parallel()
		d := relDevice(t, "12.09", Config{Target: "ar71xx/generic"})
		require.Equal(t, DefaultBoardName+"\n", sh(t, d, "cat /tmp/sysinfo/board_name"))
	})
	t.Run("12.09 flashes", func(t *testing.T) {
		t.Parallel()
		d := relDevice(t, "12.09", Config{RebootDelay: 50 * time.Millisecond})
		c := uploadImage(t, d, Image{Boards: []string{DefaultBoardName}, Release: ReleaseDescription("14.07"), Size: 8 << 10}, "/tmp/fw.bin")
		r := run(t, c, "sysupgrade -n /tmp/fw.bin", nil)
		require.True(t, strings.HasPrefix(r.stdout, "Sending TERM to remaining processes ... "), r.stdout)
		require.NoError(t, d.WaitReboots(waitCtx(t), 1))
		require.Equal(t, "14.07", d.Profile().Release)
		require.Contains(t, sh(t, d, "cat /etc/openwrt_release"), "DISTRIB_DESCRIPTION=\"OpenWrt Barrier Breaker 14.07\"\n")
		require.Equal(t, 1, run(t, dial(t, d), "sysupgrade --help", nil).status, "14.07: --help exits 1")
	})
}
