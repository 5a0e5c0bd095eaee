package openwrt_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/fwupgrader/fwupgrader/openwrt"
)

func TestParseRelease(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		want openwrt.Release
	}{
		{"OpenWrt Attitude Adjustment 12.09", openwrt.Release{Dist: "OpenWrt", Version: "12.09", Major: 12, Minor: 9}},
		{"OpenWrt Barrier Breaker 14.07", openwrt.Release{Dist: "OpenWrt", Version: "14.07", Major: 14, Minor: 7}},
		{"OpenWrt Chaos Calmer 15.05.1", openwrt.Release{Dist: "OpenWrt", Version: "15.05.1", Major: 15, Minor: 5}},
		{"LEDE Reboot 17.01.7 r4030-6028f00df0", openwrt.Release{Dist: "LEDE", Version: "17.01.7", Revision: "r4030-6028f00df0", Major: 17, Minor: 1}},
		{"OpenWrt 23.05.6 r24106-10cc5fcd00", openwrt.Release{Dist: "OpenWrt", Version: "23.05.6", Revision: "r24106-10cc5fcd00", Major: 23, Minor: 5}},
		{"OpenWrt 24.10.0-rc1 r28304-6dacba30a7", openwrt.Release{Dist: "OpenWrt", Version: "24.10.0-rc1", Revision: "r28304-6dacba30a7", Major: 24, Minor: 10}},
		{"OpenWrt SNAPSHOT r27000-abcdef", openwrt.Release{Dist: "OpenWrt", Version: "SNAPSHOT", Revision: "r27000-abcdef"}},
	} {
		got, ok := openwrt.ParseRelease(tc.desc)
		assert.True(t, ok, tc.desc)
		assert.Equal(t, tc.want, got, tc.desc)
	}
	for _, bad := range []string{"", "OpenWrt", "MyFirmware build one"} {
		_, ok := openwrt.ParseRelease(bad)
		assert.False(t, ok, bad)
	}
	lede, _ := openwrt.ParseRelease("LEDE Reboot 17.01.7 r4030-6028f00df0")
	meta := openwrt.Release{Dist: "LEDE", Version: "17.01.7", Revision: "r4030-6028f00df0"}
	assert.True(t, lede.Same(meta), "the codename is not part of the identity")
	other := meta
	other.Revision = "r4031-aaaa"
	assert.False(t, lede.Same(other))
	old, _ := openwrt.ParseRelease("OpenWrt 23.05.3 r23809-234f1a2efa")
	assert.False(t, old.Same(openwrt.Release{Version: "23.05.6"}))
}

func TestCapabilitiesByRelease(t *testing.T) {
	t.Parallel()
	caps := func(desc string) openwrt.Capabilities {
		r, _ := openwrt.ParseRelease(desc)
		return openwrt.CapabilitiesOf(r)
	}
	aa := caps("OpenWrt Attitude Adjustment 12.09")
	assert.False(t, aa.Test)
	assert.False(t, aa.SHA256)
	assert.False(t, aa.MemAvailable)
	bb := caps("OpenWrt Barrier Breaker 14.07")
	assert.True(t, bb.Test)
	assert.False(t, bb.MemAvailable)
	lede := caps("LEDE Reboot 17.01.7 r4030-6028f00df0")
	assert.True(t, lede.SHA256)
	assert.Contains(t, lede.Options, "p")
	assert.NotContains(t, lede.Options, "o")
	o21 := caps("OpenWrt 21.02.7 r16847-f8282da11e")
	assert.True(t, o21.CompatCheck)
	assert.False(t, o21.IgnoreMinorCompat)
	assert.False(t, o21.UbusHandover)
	o22 := caps("OpenWrt 22.03.5 r20134-5f15225c1e")
	assert.True(t, o22.IgnoreMinorCompat)
	assert.True(t, o22.UbusHandover)
	snap := caps("OpenWrt SNAPSHOT r27000-abcdef")
	assert.True(t, snap.UbusHandover, "unknown releases are taken as the newest")
}
