package imagemap_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

// allowedSuffixes are the sysupgrade image file endings the built-in map
// may use.
var allowedSuffixes = []string{"sysupgrade.bin", "sysupgrade.itb", "sysupgrade.tar", ".img.gz"}

func TestOpenWrtEntriesWellFormed(t *testing.T) {
	t.Parallel()
	m := imagemap.OpenWrt()
	require.Same(t, m, imagemap.OpenWrt(), "built once")

	models := map[string]bool{}
	names := map[string]bool{}
	targets := map[string]bool{}
	for _, typ := range m.Types() {
		e, ok := m.Entry(typ)
		require.True(t, ok, typ)
		assert.NotEmpty(t, strings.TrimSpace(e.Label), typ)
		assert.NotEqual(t, typ, e.Label, "%s: label defaulted to the type", typ)
		assert.NotEmpty(t, e.Boards, "%s: no model strings", typ)
		assert.Equal(t, typ, imagemap.TypeFromFileName("openwrt-23.05.3-"+typ), "%s is not a valid image type", typ)
		assert.True(t, hasAnySuffix(typ, allowedSuffixes), "%s: unexpected file ending", typ)
		require.NotEmpty(t, e.Target, typ)
		assert.True(t, strings.HasPrefix(typ, strings.ReplaceAll(e.Target, "/", "-")+"-"), "%s: type does not start with its target %s", typ, e.Target)
		targets[strings.Split(e.Target, "/")[0]] = true
		assertNoDuplicates(t, typ, e.Boards)
		assertNoDuplicates(t, typ, e.BoardNames)
		for _, b := range e.Boards {
			assert.Equal(t, strings.TrimSpace(b), b)
			models[strings.ToLower(b)] = true
		}
		for _, n := range e.BoardNames {
			assert.Equal(t, strings.TrimSpace(n), n)
			assert.NotContains(t, n, " ", "%s: board name %q", typ, n)
			names[strings.ToLower(n)] = true
		}
		// Device-tree targets carry compatibles; ar71xx has none.
		if e.Target == "ar71xx/generic" {
			assert.Empty(t, e.BoardNames, typ)
		} else {
			assert.NotEmpty(t, e.BoardNames, typ)
		}
		// Every entry fits every one of its own boards.
		for _, b := range e.Boards {
			assert.True(t, m.Fits(typ, b, ""), "%s does not fit its model %q", typ, b)
			assert.Contains(t, m.TypesFor(b, ""), typ)
		}
		for _, n := range e.BoardNames {
			assert.True(t, m.Fits(typ, "", n), "%s does not fit its board name %q", typ, n)
		}
	}
	t.Logf("built-in map: %d image types, %d model strings, %d board names, %d targets", m.Len(), len(models), len(names), len(targets))
	assert.GreaterOrEqual(t, m.Len(), 92)
	assert.GreaterOrEqual(t, len(models), 118)
	for _, target := range []string{"ath79", "ar71xx", "ramips", "mediatek", "x86", "ipq40xx", "qualcommax", "mvebu", "bcm27xx", "realtek", "octeon", "mpc85xx"} {
		assert.True(t, targets[target], "no entry for target %s", target)
	}
}

func TestOpenWrtLookups(t *testing.T) {
	t.Parallel()
	m := imagemap.OpenWrt()
	const (
		athC7  = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
		arC7   = "ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin"
		athC7b = "ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin"
	)
	// An ath79 device: both targets know the model, ath79 wins.
	assert.Equal(t, []string{athC7, arC7}, m.TypesFor("TP-Link Archer C7 v2", "tplink,archer-c7-v2"))
	// An ar71xx device (old board name "archer-c7"): the ath79 image lists
	// board names and "archer-c7" is not one of them, so only the ar71xx
	// image fits. Moving from ar71xx to ath79 needs a deliberate choice
	// (sysupgrade -F and a configuration reset), never a model match.
	assert.Equal(t, []string{arC7}, m.TypesFor("TP-LINK Archer C7 v2", "archer-c7"))
	assert.False(t, m.Fits(athC7, "TP-LINK Archer C7 v2", "archer-c7"))
	assert.True(t, m.Fits(athC7, "", "tplink,archer-c7-v2"))
	assert.False(t, m.Fits(athC7b, "TP-Link Archer C7 v2", "tplink,archer-c7-v2"), "v5 image must not fit a v2")
	assert.Equal(t, []string{"TP-Link Archer C7 v2"}, m.Boards(athC7))

	// Linksys WRT boards are known by their codename too.
	best, ok := m.Best("", "linksys,rango")
	require.True(t, ok)
	assert.Equal(t, "mvebu-cortexa9-linksys_wrt3200acm-squashfs-sysupgrade.bin", best)

	// One Raspberry Pi 4 fits two images; the ext4 one sorts first.
	assert.Equal(t, []string{
		"bcm27xx-bcm2711-rpi-4-ext4-sysupgrade.img.gz",
		"bcm27xx-bcm2711-rpi-4-squashfs-sysupgrade.img.gz",
	}, m.TypesFor("Raspberry Pi 4 Model B Rev 1.4", "raspberrypi,4-model-b"))

	assert.Len(t, m.TypesFor("QEMU Standard PC (Q35 + ICH9, 2009)", "qemu-standard-pc-q35-ich9-2009"), 4)
	assert.Nil(t, m.TypesFor("Unknown Router 9000", "unknown,router-9000"))
}

func hasAnySuffix(s string, suffixes []string) bool {
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf) {
			return true
		}
	}
	return false
}

func assertNoDuplicates(t *testing.T, typ string, list []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, s := range list {
		k := strings.ToLower(s)
		assert.False(t, seen[k], "%s: %q listed twice", typ, s)
		seen[k] = true
	}
}
