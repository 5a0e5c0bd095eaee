package openwrt

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/store"
)

func TestParseOptions(t *testing.T) {
	t.Parallel()
	all := Options{KeepConfig: true, KeepOverlay: true, SkipUnchanged: true, NoPartitionRestore: true, KeepPackageList: true, Force: true}
	for _, tc := range []struct {
		in   string
		want Options
	}{
		{``, DefaultOptions()},
		{`null`, DefaultOptions()},
		{`{}`, DefaultOptions()},
		{`{"rollout":{"max_failures":3}}`, DefaultOptions()},
		{`{"sysupgrade":""}`, Options{}},
		{`{"sysupgrade":"c,F"}`, Options{KeepConfig: true, Force: true}},
		{`{"sysupgrade":"-c -F"}`, Options{KeepConfig: true, Force: true}},
		{`{"sysupgrade":"cF"}`, Options{KeepConfig: true, Force: true}},
		{`{"sysupgrade":"n"}`, Options{NoConfig: true}},
		{`{"sysupgrade":"c,o,u,p,k,F"}`, all},
		{`{"F":true}`, Options{KeepConfig: true, Force: true}},
		{`{"c":false,"n":true}`, Options{NoConfig: true}},
		{`{"c":true,"o":true,"u":true,"p":true,"k":true,"F":true,"n":false}`, all},
	} {
		got, err := ParseOptions(json.RawMessage(tc.in))
		require.NoError(t, err, tc.in)
		require.Empty(t, cmp.Diff(tc.want, got), tc.in)
		back, err := ParseOptions(got.JSON())
		require.NoError(t, err)
		require.Equal(t, got, back, "round trip of %s", got.JSON())
	}
	for _, in := range []string{
		`{"sysupgrade":"n,c"}`,
		`{"sysupgrade":"n,o"}`,
		`{"n":true}`, // c defaults to true
		`{"sysupgrade":"c,x"}`,
		`{"x":true}`,
		`{"sysupgrade":"c","F":true}`,
		`{"sysupgrade":3}`,
		`{"F":"yes"}`,
		`[1]`,
		`{`,
	} {
		_, err := ParseOptions(json.RawMessage(in))
		require.ErrorIs(t, err, ErrInvalidOptions, in)
	}
}

func TestOptionsFlagsOrder(t *testing.T) {
	t.Parallel()
	o := Options{Force: true, KeepPackageList: true, NoPartitionRestore: true, SkipUnchanged: true, KeepOverlay: true, KeepConfig: true}
	require.Equal(t, []string{"-c", "-o", "-u", "-p", "-k", "-F"}, o.Flags())
	require.Equal(t, "c,o,u,p,k,F", o.Letters())
	require.Equal(t, "-c -o -u -p -k -F", o.String())
	require.JSONEq(t, `{"sysupgrade":"c,o,u,p,k,F"}`, string(o.JSON()))
	require.NoError(t, o.Validate())
	require.ErrorIs(t, Options{NoConfig: true, KeepConfig: true}.Validate(), ErrInvalidOptions)
	require.NoError(t, Options{NoConfig: true, Force: true}.Validate())
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":              `''`,
		"abc":           `'abc'`,
		"x;reboot":      `'x;reboot'`,
		"$(rm -rf /)":   `'$(rm -rf /)'`,
		"it's":          `'it'\''s'`,
		"''":            `''\'''\'''`,
		"a b\nc":        "'a b\nc'",
		"`reboot`":      "'`reboot`'",
		`back\slash"dq`: `'back\slash"dq'`,
	} {
		require.Equal(t, want, shellQuote(in), in)
	}
	require.Equal(t, `'sha256sum' '/tmp/x y.bin'`, command("sha256sum", "/tmp/x y.bin"))
	require.Equal(t, `'echo' '3' > '/proc/sys/vm/drop_caches'`, redirect(command("echo", "3"), "/proc/sys/vm/drop_caches"))
}

func TestNew(t *testing.T) {
	t.Parallel()
	creds := func(context.Context, store.Device) (Credentials, error) { return Credentials{}, nil }
	_, err := New(nil)
	require.ErrorContains(t, err, "CredentialsFunc")
	_, err = New(&Config{})
	require.ErrorContains(t, err, "CredentialsFunc")
	for _, bad := range []Config{
		{CredentialsFunc: creds, ConnectTimeout: -1},
		{CredentialsFunc: creds, ReconnectMaxRetries: -1},
		{CredentialsFunc: creds, UploadMethods: []UploadMethod{"ftp"}},
		{CredentialsFunc: creds, UploadMethods: []UploadMethod{UploadCat, UploadCat}},
		{CredentialsFunc: creds, Services: []string{"../x"}},
	} {
		_, err := New(&bad)
		require.Error(t, err, "%+v", bad)
	}
	u, err := New(&Config{CredentialsFunc: creds})
	require.NoError(t, err)
	require.Equal(t, DefaultConnectTimeout, u.cfg.ConnectTimeout)
	require.Equal(t, DefaultUpgradeTimeout, u.cfg.UpgradeTimeout)
	require.Equal(t, DefaultReconnectMaxRetries, u.cfg.ReconnectMaxRetries)
	require.Equal(t, DefaultUploadMethods, u.cfg.UploadMethods)
	require.Equal(t, DefaultServices, u.cfg.Services)
	require.Equal(t, int64(DefaultMemoryMargin), u.cfg.MemoryMargin)
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	require.Equal(t, "10.0.0.1:22", withPort("10.0.0.1"))
	require.Equal(t, "10.0.0.1:2222", withPort("10.0.0.1:2222"))
	require.Equal(t, "[fe80::1]:22", withPort("fe80::1"))
	require.Equal(t, "[fe80::1]:22", withPort("[fe80::1]"))
	rel, ok := parseRelease("DISTRIB_ID='OpenWrt'\nDISTRIB_DESCRIPTION='OpenWrt 23.05.3 r23809-234f1a2efa '\n")
	require.True(t, ok)
	require.Equal(t, "OpenWrt 23.05.3 r23809-234f1a2efa", rel)
	n, field, ok := parseMeminfo("MemTotal: 125000 kB\nMemFree: 1000 kB\nMemAvailable: 2000 kB\n")
	require.True(t, ok)
	require.Equal(t, "MemAvailable", field)
	require.Equal(t, int64(2000*1024), n)
	require.True(t, isFalseFlashError(`Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "\/tmp\/x.bin", "command": "\/lib\/upgrade\/do_stage2", "options": { "save_partitions": 1, "add_provisioning": 0 } } (Connection failed)`))
	require.False(t, isFalseFlashError("sysupgrade: failed to write image"))
	require.Equal(t, "…world", truncateOutput("hello world", 5))
}

func ExampleParseOptions() {
	o, err := ParseOptions(json.RawMessage(`{"sysupgrade":"F,c"}`))
	fmt.Println(o, err)
	_, err = ParseOptions(json.RawMessage(`{"sysupgrade":"n,c"}`))
	fmt.Println(err)
	// Output:
	// -c -F <nil>
	// openwrt: invalid sysupgrade options: n (do not keep the configuration) contradicts c and o (keep it)
}
