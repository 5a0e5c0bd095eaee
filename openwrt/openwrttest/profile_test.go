package openwrttest

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// since lists the releases from rel on, as the facts below are written.
func since(rel string) []string {
	all := Releases()
	return all[slices.Index(all, rel):]
}

func TestProfileFor(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"12.09", "14.07", "15.05", "17.01", "18.06", "19.07", "21.02", "22.03", "23.05", "24.10", "25.12"}, Releases())
	for in, want := range map[string]string{
		"":                                     "22.03",
		"17.01":                                "17.01",
		"17.01.4":                              "17.01",
		"LEDE Reboot 17.01.7 r4030-6028f00df0": "17.01",
		"OpenWrt Attitude Adjustment 12.09":    "12.09",
		"OpenWrt Chaos Calmer 15.05.1":         "15.05",
		"OpenWrt 23.05.3 r23809-234f1a2efa":    "23.05",
		"OpenWrt 20.02.0 r1-x":                 "19.07", // between series: the older one
		"OpenWrt 10.03 r20728":                 "12.09",
		"OpenWrt 26.06.0 r1-x":                 "25.12",
		"OpenWrt SNAPSHOT r30000-deadbeef":     "25.12",
		"Vendor Firmware 3.2":                  "22.03",
		DefaultRelease:                         "22.03",
	} {
		assert.Equal(t, want, ProfileFor(in).Release, in)
	}
	for rel, desc := range map[string]string{
		"12.09": "OpenWrt Attitude Adjustment 12.09",
		"14.07": "OpenWrt Barrier Breaker 14.07",
		"15.05": "OpenWrt Chaos Calmer 15.05.1",
		"17.01": "LEDE Reboot 17.01.7 r4030-6028f00df0",
		"18.06": "OpenWrt 18.06.9 r8077-7cbbab7246",
		"22.03": DefaultRelease,
		"23.05": "OpenWrt 23.05.6 r24232-539228933c",
	} {
		assert.Equal(t, desc, ReleaseDescription(rel), rel)
		assert.Equal(t, rel, ProfileFor(desc).Release, "a description maps back to its series")
	}
	// The Options slice is the caller's.
	p := ProfileFor("22.03")
	p.Options[0] = "changed"
	require.NotEqual(t, "changed", ProfileFor("22.03").Options[0])
}

// TestProfileFacts checks every profile against the facts read from the
// release tags, written here as "from release X on".
func TestProfileFacts(t *testing.T) {
	t.Parallel()
	for _, rel := range Releases() {
		p := ProfileFor(rel)
		from := func(r string) bool { return slices.Contains(since(r), rel) }
		assert.Equal(t, from("17.01"), p.HasApplet("sha256sum"), "%s sha256sum", rel)
		for _, a := range []string{"md5sum", "free", "df"} {
			assert.True(t, p.HasApplet(a), "%s %s", rel, a)
		}
		for _, a := range []string{"timeout", "nohup", "stat"} {
			assert.False(t, p.HasApplet(a), "%s %s", rel, a)
		}
		assert.Equal(t, from("14.07"), p.Test(), "%s --test", rel)
		assert.Equal(t, from("14.07"), p.Accepts("-T"), "%s -T", rel)
		assert.Equal(t, from("17.01"), p.Accepts("-p"), "%s -p", rel)
		for _, o := range []string{"-o", "-u", "-k"} {
			assert.Equal(t, from("19.07"), p.Accepts(o), "%s %s", rel, o)
		}
		assert.Equal(t, from("22.03"), p.Accepts("--ignore-minor-compat-version"), rel)
		assert.Equal(t, !from("18.06"), p.Accepts("-d"), "%s -d", rel)
		assert.Equal(t, from("24.10"), p.Accepts("-s"), "%s -s", rel)
		assert.Equal(t, from("25.12"), p.Accepts("-P"), "%s -P", rel)
		for _, o := range []string{"-n", "-c", "-F", "--force", "-v", "-q", "-f", "-h", "--help"} {
			assert.True(t, p.Accepts(o), "%s %s", rel, o)
		}
		wantHelp := 1
		if from("24.10") {
			wantHelp = 0
		}
		assert.Equal(t, wantHelp, p.HelpStatus, "%s --help", rel)
		assert.Equal(t, from("17.01"), p.Fwtool, "%s fwtool", rel)
		assert.Equal(t, from("21.02"), p.Compat, "%s compat", rel)
		assert.Equal(t, from("25.12"), p.ForceOnlyForceable, rel)
		assert.Equal(t, from("25.12"), p.Provisioning, rel)
		wantFlash := FlashKillsSessions
		switch {
		case from("22.03"):
			wantFlash = FlashUbusError
		case from("18.06"):
			wantFlash = FlashDropsSessions
		}
		assert.Equal(t, wantFlash, p.Flash, "%s flash", rel)
		assert.Equal(t, from("15.05"), p.MemAvailable, "%s MemAvailable", rel)
		assert.Equal(t, from("14.07"), p.SysInfo, "%s sysinfo", rel)
		assert.Equal(t, from("14.07"), p.UbusBoard, "%s ubus board", rel)
		assert.Equal(t, from("17.01"), p.BoardName, "%s board_name", rel)
		assert.True(t, strings.Contains(p.Description, " "+rel), "%s: %s", rel, p.Description)
	}
	assert.Equal(t, "FlashUbusError", FlashUbusError.String())
}

func TestOpenwrtReleasePerRelease(t *testing.T) {
	t.Parallel()
	for rel, want := range map[string]string{
		"12.09": "DISTRIB_ID=\"OpenWrt\"\nDISTRIB_RELEASE=\"12.09\"\nDISTRIB_REVISION=\"r36088\"\nDISTRIB_CODENAME=\"attitude_adjustment\"\nDISTRIB_TARGET=\"ar71xx/generic\"\nDISTRIB_DESCRIPTION=\"OpenWrt Attitude Adjustment 12.09\"\n",
		"14.07": "DISTRIB_ID=\"OpenWrt\"\nDISTRIB_RELEASE=\"14.07\"\nDISTRIB_REVISION=\"r42625\"\nDISTRIB_CODENAME=\"barrier_breaker\"\nDISTRIB_TARGET=\"ar71xx/generic\"\nDISTRIB_DESCRIPTION=\"OpenWrt Barrier Breaker 14.07\"\nDISTRIB_TAINTS=\"\"\n",
		"15.05": "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='15.05.1'\nDISTRIB_REVISION='r48532'\nDISTRIB_CODENAME='chaos_calmer'\nDISTRIB_TARGET='ar71xx/generic'\nDISTRIB_DESCRIPTION='OpenWrt Chaos Calmer 15.05.1'\nDISTRIB_TAINTS=''\n",
		"17.01": "DISTRIB_ID='LEDE'\nDISTRIB_RELEASE='17.01.7'\nDISTRIB_REVISION='r4030-6028f00df0'\nDISTRIB_CODENAME='reboot'\nDISTRIB_TARGET='ar71xx/generic'\nDISTRIB_ARCH='mips_24kc'\nDISTRIB_DESCRIPTION='LEDE Reboot 17.01.7 r4030-6028f00df0'\nDISTRIB_TAINTS=''\n",
		"18.06": "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='18.06.9'\nDISTRIB_REVISION='r8077-7cbbab7246'\nDISTRIB_TARGET='ar71xx/generic'\nDISTRIB_ARCH='mips_24kc'\nDISTRIB_DESCRIPTION='OpenWrt 18.06.9 r8077-7cbbab7246'\nDISTRIB_TAINTS=''\n",
		"24.10": "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='24.10.8'\nDISTRIB_REVISION='r29233-443ec4032a'\nDISTRIB_TARGET='ar71xx/generic'\nDISTRIB_ARCH='mips_24kc'\nDISTRIB_DESCRIPTION='OpenWrt 24.10.8 r29233-443ec4032a'\nDISTRIB_TAINTS=''\n",
	} {
		got := openwrtRelease(ProfileFor(rel), ReleaseDescription(rel), "ar71xx/generic", DefaultArch)
		assert.Equal(t, want, got, rel)
	}
}
