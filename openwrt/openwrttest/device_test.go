package openwrttest

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"negative memory":  {MemAvailable: -1},
		"avail over total": {MemTotal: 1 << 20, MemAvailable: 2 << 20},
		"relative file":    {Files: map[string][]byte{"etc/x": nil}},
		"bad service":      {Services: []string{"a b"}},
		"bad addr":         {Addr: "nope"},
		"quote in model":   {Model: "it's"},
		"bad root fs":      {RootFS: "zfs"},
		"negative backups": {BackupFiles: -1},
		"quote in compat":  {CompatVersion: `1"0`},
	} {
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	d, err := New(Config{})
	require.NoError(t, err)
	require.Empty(t, d.Addr(), "New does not listen")
	require.NoError(t, d.Start())
	require.ErrorIs(t, d.Start(), ErrStarted)
	require.True(t, d.Up())
	require.NoError(t, d.Close())
	require.NoError(t, d.Close())
	require.ErrorIs(t, d.Start(), ErrClosed)
	require.ErrorIs(t, d.WaitUp(waitCtx(t)), ErrClosed)
}

func TestHostKeyVerification(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	other := setup(t, Config{})
	host, _, err := net.SplitHostPort(d.Addr())
	require.NoError(t, err)
	require.Contains(t, string(d.KnownHosts()), "["+host+"]:")
	// The right known_hosts line is accepted.
	_ = sh(t, d, "true")
	// Another key for the same address is refused.
	f := path.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(d.Addr())}, other.HostKey())
	require.NoError(t, writeFile(f, []byte(line+"\n")))
	cb, err := knownhosts.New(f)
	require.NoError(t, err)
	_, err = dialErr(d, &ssh.ClientConfig{
		User: DefaultUser, Auth: []ssh.AuthMethod{ssh.Password(DefaultPassword)},
		HostKeyCallback: cb, Timeout: 5 * time.Second,
	})
	var ke *knownhosts.KeyError
	require.ErrorAs(t, err, &ke)
	require.NotEmpty(t, ke.Want, "a mismatch, not an unknown key")
}

func TestAuth(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	_, priv2, _ := ed25519.GenerateKey(rand.Reader)
	stranger, _ := ssh.NewSignerFromKey(priv2)
	d := setup(t, Config{User: "admin", Password: "s3cret", AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})

	try := func(user string, auth ssh.AuthMethod) error {
		c, err := dialErr(d, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{auth}, HostKeyCallback: d.HostKeyCallback(), Timeout: 5 * time.Second})
		if err == nil {
			c.Close()
		}
		return err
	}
	require.NoError(t, try("admin", ssh.Password("s3cret")))
	require.NoError(t, try("admin", ssh.PublicKeys(signer)))
	require.Error(t, try("admin", ssh.Password("wrong")))
	require.Error(t, try("root", ssh.Password("s3cret")))
	require.Error(t, try("admin", ssh.PublicKeys(stranger)))

	keyOnly := setup(t, Config{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	c, err := dialErr(keyOnly, &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.Password(DefaultPassword)}, HostKeyCallback: keyOnly.HostKeyCallback(), Timeout: 5 * time.Second})
	if err == nil {
		c.Close()
	}
	require.Error(t, err, "no default password when keys are configured")
}

func TestCommands(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{
		UUID:         "4ac5c9a0-0e59-4d2a-9c1b-3d2f3b1c2a10",
		MemAvailable: 40 << 20,
		Files:        map[string][]byte{"/etc/openwisp/firmware_checksum": []byte("abc\n")},
	})
	c := dial(t, d)
	for _, tc := range []struct {
		cmd        string
		stdout     string
		stderr     string
		status     int
		contains   bool
		stdoutPart string
	}{
		{cmd: "uci get openwisp.http.uuid", stdout: "4ac5c9a0-0e59-4d2a-9c1b-3d2f3b1c2a10\n"},
		{cmd: "'uci' 'get' 'openwisp.http.uuid'", stdout: "4ac5c9a0-0e59-4d2a-9c1b-3d2f3b1c2a10\n"},
		{cmd: "uci get system.@system[0].hostname", stderr: "uci: Entry not found\n", status: 1},
		{cmd: "uci -q get nope.nope.nope", status: 1},
		{cmd: "'cat' '/tmp/sysinfo/model'", stdout: DefaultModel + "\n"},
		{cmd: "cat /tmp/sysinfo/board_name", stdout: DefaultBoardName + "\n"},
		{cmd: "cat '/etc/openwisp/firmware_checksum'", stdout: "abc\n"},
		{cmd: "cat '/etc/nope'", stderr: "cat: can't open '/etc/nope': No such file or directory\n", status: 1},
		{cmd: "cat /etc/openwrt_release", stdout: "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='22.03.5'\nDISTRIB_REVISION='r20134-5f15225c1e'\nDISTRIB_TARGET='ath79/generic'\nDISTRIB_ARCH='mips_24kc'\nDISTRIB_DESCRIPTION='OpenWrt 22.03.5 r20134-5f15225c1e'\nDISTRIB_TAINTS=''\n"},
		{cmd: "cat /proc/meminfo", stdoutPart: "MemAvailable:      40960 kB\n"},
		{cmd: "cat /proc/sys/kernel/random/boot_id", stdout: d.BootID() + "\n"},
		{cmd: "echo hello   world", stdout: "hello world\n"},
		{cmd: "echo -n 'a  b'", stdout: "a  b"},
		{cmd: `printf '%s\n' a b`, stdout: "a\nb\n"},
		{cmd: `printf "%s=%d" x 42`, stdout: "x=42"},
		{cmd: "true && echo yes || echo no", stdout: "yes\n"},
		{cmd: "false && echo yes || echo no", stdout: "no\n"},
		{cmd: "false; echo after", stdout: "after\n"},
		{cmd: "nosuchcmd arg", stderr: "ash: nosuchcmd: not found\n", status: 127},
		{cmd: "/usr/bin/nosuch", stderr: "ash: /usr/bin/nosuch: not found\n", status: 127},
		{cmd: "scp -t /tmp", stderr: "ash: scp: not found\n", status: 127},
		{cmd: "timeout 5 true", stderr: "ash: timeout: not found\n", status: 127},
		{cmd: "cat /nope 2>/dev/null", status: 1},
		{cmd: "cat /nope 2>&1", stdout: "cat: can't open '/nope': No such file or directory\n", status: 1},
		{cmd: "test -f /etc/openwrt_release", status: 0},
		{cmd: "[ -f /etc/init.d/uhttpd ]", status: 0},
		{cmd: "[ -f /etc/init.d/nope ]", status: 1},
		{cmd: "test -d /tmp", status: 0},
		{cmd: "test -e /tmp/nope", status: 1},
		{cmd: "sync", status: 0},
		{cmd: "uptime", stdoutPart: " up 0 min,"},
		{cmd: "ubus call system board", stdoutPart: `"board_name": "tplink,archer-c7-v2"`},
		{cmd: "echo 'unterminated", stderr: "sh: unterminated quoted string\n", status: 2},
		{cmd: "echo a | cat", stderr: "sh: pipes are not supported\n", status: 2},
		{cmd: "&& echo x", stderr: "sh: syntax error\n", status: 2},
		{cmd: "command -v sysupgrade", stdout: "/sbin/sysupgrade\n"},
		{cmd: "command -v scp", status: 127},
		{cmd: "sysupgrade", stdoutPart: "Usage: /sbin/sysupgrade [<upgrade-option>...] <image file or URL>\n", status: 1},
		{cmd: "sysupgrade -x /tmp/a", stderr: "Invalid option: -x\n", status: 1},
	} {
		r := run(t, c, tc.cmd, nil)
		require.NoError(t, r.err, tc.cmd)
		assert.Equal(t, tc.status, r.status, "%s: %s", tc.cmd, r.stderr)
		if tc.stdoutPart != "" {
			assert.Contains(t, r.stdout, tc.stdoutPart, tc.cmd)
		} else {
			assert.Equal(t, tc.stdout, r.stdout, tc.cmd)
		}
		if tc.stderr != "" {
			assert.Equal(t, tc.stderr, r.stderr, tc.cmd)
		}
	}
	require.Equal(t, "uci get openwisp.http.uuid", d.Commands()[0])
	require.Equal(t, []string{"uci", "get", "openwisp.http.uuid"}, d.Executed()[1])
}

func TestFilesAndDirectories(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	c := dial(t, d)
	ok := func(cmd string) string {
		t.Helper()
		r := run(t, c, cmd, nil)
		require.Equal(t, 0, r.status, "%s: %s", cmd, r.stderr)
		return r.stdout
	}
	ok("echo abc > /tmp/x")
	require.Equal(t, "abc\n", ok("cat /tmp/x"))
	ok("echo def >> /tmp/x")
	require.Equal(t, "abc\ndef\n", ok("cat /tmp/x"))
	require.Equal(t, "4d4b2a6c5d4b7bb1ef4a1ee1f0a3b4df8a8cf7a9b8f2b2c9ba0c6ac06b4bdf5d  /tmp/x\n"[64:], ok("sha256sum /tmp/x")[64:])
	fi, found := d.File("/tmp/x")
	require.True(t, found)
	require.Equal(t, fi.SHA256+"  /tmp/x\n", ok("sha256sum /tmp/x"))
	r := run(t, c, "echo x > /nodir/y", nil)
	require.Equal(t, 1, r.status)
	require.Contains(t, r.stderr, "can't create /nodir/y")
	ok("mkdir -p /tmp/a/b/c && echo 1 > /tmp/a/b/c/f")
	require.Equal(t, 1, run(t, c, "mkdir /tmp/a", nil).status)
	require.Equal(t, 1, run(t, c, "rm /tmp/a", nil).status, "rm without -r on a directory")
	ok("rm -rf /tmp/a")
	require.Equal(t, 1, run(t, c, "test -e /tmp/a/b/c/f", nil).status)
	require.Equal(t, 1, run(t, c, "rm /tmp/nope", nil).status)
	ok("rm -f /tmp/nope")
	ok("printf '%s' 'x' > /root/y")
	require.Equal(t, "x", ok("cat < /root/y"))
	ok("uci set openwisp.http.uuid=abc && uci commit openwisp")
	v, found := d.UCI("openwisp.http.uuid")
	require.True(t, found)
	require.Equal(t, "abc", v)
}

func TestMemoryAndServices(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{MemAvailable: 20 << 20, ServiceMemory: 1 << 20, OpkgListsMemory: 2 << 20, DropCachesMemory: 1 << 20})
	c := dial(t, d)
	mem := func() int64 { return d.MemAvailable() }
	require.Equal(t, int64(20<<20), mem())
	require.Equal(t, 0, run(t, c, "rm -rf /tmp/opkg-lists", nil).status)
	require.Equal(t, int64(22<<20), mem())
	require.Equal(t, 0, run(t, c, "sync && echo 3 > /proc/sys/vm/drop_caches", nil).status)
	require.Equal(t, int64(23<<20), mem())
	require.Equal(t, 0, run(t, c, "'/etc/init.d/uhttpd' 'stop'", nil).status)
	require.Equal(t, 0, run(t, c, "/etc/init.d/dnsmasq stop", nil).status)
	require.Equal(t, int64(25<<20), mem())
	require.False(t, d.Services()["uhttpd"])
	require.True(t, d.Services()["cron"])
	require.Equal(t, 0, run(t, c, "/etc/init.d/uhttpd start", nil).status)
	require.True(t, d.Services()["uhttpd"])
	require.Equal(t, 127, run(t, c, "/etc/init.d/nope stop", nil).status)
	require.Equal(t, 0, run(t, c, "wifi down", nil).status)
	// Files in /tmp use RAM.
	require.Equal(t, 0, run(t, c, "cat > /tmp/blob", strings.NewReader(strings.Repeat("x", 1<<20))).status)
	require.Equal(t, int64(23<<20), mem())
}

func TestLowMemoryUntilServicesStopped(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{
		MemAvailable: 30 << 20,
		Services:     []string{"dropbear", "network", "uhttpd", "dnsmasq"},
		Faults:       Faults{LowMemoryUntilServicesStopped: true},
	})
	c := dial(t, d)
	require.Equal(t, int64(DefaultLowMemory), d.MemAvailable())
	run(t, c, "/etc/init.d/uhttpd stop", nil)
	require.Equal(t, int64(DefaultLowMemory), d.MemAvailable())
	run(t, c, "/etc/init.d/dnsmasq stop", nil)
	require.Equal(t, int64(30<<20+2*DefaultServiceMemory), d.MemAvailable())
	require.Contains(t, run(t, c, "cat /proc/meminfo", nil).stdout, "MemAvailable:      32768 kB")
}

func TestNoMemAvailable(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{NoMemAvailable: true})
	out := sh(t, d, "cat /proc/meminfo")
	require.NotContains(t, out, "MemAvailable")
	require.Contains(t, out, "MemFree:")
}

// TestQuoting proves that quoted metacharacters are never interpreted.
func TestQuoting(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	c := dial(t, d)
	for _, name := range []string{"/tmp/x;reboot;.bin", "/tmp/$(rm -rf ~).bin", "/tmp/$(reboot)", "/tmp/`reboot`.bin", "/tmp/a && reboot", "/tmp/it's.bin", "/tmp/x > y | z"} {
		r := run(t, c, "cat > "+quote(name), strings.NewReader("payload"))
		require.Equal(t, 0, r.status, "%s: %s", name, r.stderr)
		fi, ok := d.File(name)
		require.True(t, ok, name)
		require.Equal(t, "payload", string(fi.Content))
		r = run(t, c, "'sha256sum' "+quote(name), nil)
		require.Equal(t, fi.SHA256+"  "+name+"\n", r.stdout)
	}
	r := run(t, c, `echo "a;b" 'c && d' e\;f "$(reboot)" `+"`reboot`", nil)
	require.Equal(t, "a;b c && d e;f $(reboot) `reboot`\n", r.stdout)
	for _, argv := range d.Executed() {
		require.NotEqual(t, "reboot", argv[0])
		require.NotEqual(t, "rm", argv[0])
	}
	require.Zero(t, d.Reboots())
	require.True(t, d.Up())
	// An unquoted separator does separate.
	r = run(t, c, "echo a;echo b", nil)
	require.Equal(t, "a\nb\n", r.stdout)
}

func TestTokenizeNoPanic(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", ">", "2>", ">&", ">&9", "a >", "'", `"`, `\`, "a &&", "|| a", ";;", "a;;b", "#x", "a # b", "<", "2>&1", "\x00", "a\nb", `"\`, "> ''"} {
		_, _ = parse(s)
	}
	toks, err := tokenize(`a 2>/dev/null >>f 2>&1 "x y"`)
	require.NoError(t, err)
	require.Len(t, toks, 5)
}
