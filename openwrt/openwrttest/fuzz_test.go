package openwrttest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// FuzzShell feeds arbitrary command lines to the interpreter: it must never
// panic.
func FuzzShell(f *testing.F) {
	for _, s := range []string{
		"cat '/etc/openwrt_release'", `echo "a;b" > /tmp/x && cat /tmp/x || true`, "rm -rf /",
		"sysupgrade -T -F /tmp/x", "printf '%s%d%' a", "[ -f /x ]", "mkdir -p /a/b; ls /a",
		"uci set a.b.c=d; uci show", "2>&1 >/dev/null cat", "scp -t /tmp", "test ! -d /tmp",
		"uci show > /tmp/u", "ls / 2>/tmp/e >/tmp/o", "mkdir /tmp 2>/tmp/e", "/etc/init.d/uhttpd status >>/tmp/s",
		"wifi bad 2>/tmp/w", "cat /proc/meminfo > /tmp/m", "echo 3 > /proc/sys/vm/drop_caches",
	} {
		f.Add(s)
	}
	d, err := New(Config{SCP: true})
	if err != nil {
		f.Fatal(err)
	}
	if err := d.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = d.Close() })
	f.Fuzz(func(t *testing.T, cmd string) {
		if strings.Contains(cmd, "sysupgrade") {
			// A successful flash would take the device down.
			cmd = strings.ReplaceAll(cmd, "sysupgrade", "sysupgrade -T")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		var out bytes.Buffer
		c := &sconn{nc: nopConn{}, done: make(chan struct{})}
		e := &env{d: d, c: c, ctx: ctx, stdin: strings.NewReader("C0644 3 x\nabc\x00"), stdout: &out, stderr: &out}
		_ = e.run(cmd)
	})
}
