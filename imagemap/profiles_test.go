package imagemap_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

func importFixture(t *testing.T, name string) *imagemap.Map {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "profiles", name))
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	m, err := imagemap.ImportProfiles(f)
	require.NoError(t, err)
	return m
}

func TestImportProfilesFixtures(t *testing.T) {
	t.Parallel()
	counts := map[string]int{
		"ath79-generic.json":    26, // 27 profiles, one without a sysupgrade image
		"ramips-mt7621.json":    15, // 16 profiles, one initramfs-only
		"ipq40xx-generic.json":  14,
		"mediatek-filogic.json": 6,
	}
	var all *imagemap.Map
	for name, want := range counts {
		m := importFixture(t, name)
		assert.Equal(t, want, m.Len(), name)
		all = all.Merge(m)
	}
	require.Equal(t, 61, all.Len())

	tests := []struct {
		typ  string
		want imagemap.Entry
	}{
		{"ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin", imagemap.Entry{
			Label:      "TP-Link Archer C7 v2 (ath79/generic)",
			Boards:     []string{"TP-Link Archer C7 v2"},
			BoardNames: []string{"tplink,archer-c7-v2"},
			Target:     "ath79/generic",
		}},
		{"ath79-generic-tplink_archer-c6-v2-us-squashfs-sysupgrade.bin", imagemap.Entry{
			Label:      "TP-Link Archer C6 v2 (US) (ath79/generic)",
			Boards:     []string{"TP-Link Archer C6 v2 (US)", "TP-Link Archer A6 v2 (US/TW)"},
			BoardNames: []string{"tplink,archer-c6-v2-us"},
			Target:     "ath79/generic",
		}},
		{"ath79-generic-ubnt_unifiac-lite-squashfs-sysupgrade.bin", imagemap.Entry{
			Label:      "Ubiquiti UniFi AC Lite (ath79/generic)",
			Boards:     []string{"Ubiquiti UniFi AC Lite"},
			BoardNames: []string{"ubnt,unifiac-lite", "unifiac-lite"},
			Target:     "ath79/generic",
		}},
		{"ramips-mt7621-xiaomi_mi-router-4a-gigabit-squashfs-sysupgrade.bin", imagemap.Entry{
			// a "title" entry instead of vendor/model/variant
			Label:      "Xiaomi Mi Router 4A Gigabit Edition (ramips/mt7621)",
			Boards:     []string{"Xiaomi Mi Router 4A Gigabit Edition"},
			BoardNames: []string{"xiaomi,mi-router-4a-gigabit"},
			Target:     "ramips/mt7621",
		}},
		{"ramips-mt7621-zbtlink_zbt-wg3526-16m-squashfs-sysupgrade.bin", imagemap.Entry{
			Label:  "ZBT WG3526 16M (ramips/mt7621)",
			Boards: []string{"ZBT WG3526 16M"},
			// "zbt-wg3526-16M" folds onto no other name, so all three stay
			BoardNames: []string{"zbtlink,zbt-wg3526-16m", "zbt-wg3526", "zbt-wg3526-16M"},
			Target:     "ramips/mt7621",
		}},
		{"mediatek-filogic-openwrt_one-squashfs-sysupgrade.itb", imagemap.Entry{
			Label:      "OpenWrt One (mediatek/filogic)",
			Boards:     []string{"OpenWrt One"},
			BoardNames: []string{"openwrt,one"},
			Target:     "mediatek/filogic",
		}},
	}
	for _, tt := range tests {
		got, ok := all.Entry(tt.typ)
		if assert.True(t, ok, tt.typ) {
			assert.Empty(t, cmp.Diff(tt.want, got), tt.typ)
		}
	}
	for _, typ := range all.Types() {
		assert.NotContains(t, typ, "factory", "only sysupgrade images become types")
		assert.NotContains(t, typ, "initramfs")
		assert.False(t, strings.HasPrefix(typ, "openwrt-"), typ)
	}
	assert.Equal(t, []string{"ramips-mt7621-ubnt_edgerouter-x-squashfs-sysupgrade.bin"},
		all.TypesFor("", "ubnt-erx"))
	assert.Equal(t, []string{"ramips-mt7621-tplink_archer-a6-v3-squashfs-sysupgrade.bin"},
		all.TypesFor("TP-Link Archer C6 v3", ""))

	// Imported entries merged over the built-in map replace equal types and
	// rank above built-in entries of other types.
	merged := imagemap.OpenWrt().Merge(all)
	got := merged.TypesFor("GL.iNet GL-AR150", "glinet,gl-ar150")
	assert.Equal(t, "ath79-generic-glinet_gl-ar150-squashfs-sysupgrade.bin", got[0])
	assert.Contains(t, got, "ar71xx-generic-gl-ar150-squashfs-sysupgrade.bin")
}

func TestImportProfilesConfigImageTypes(t *testing.T) {
	t.Parallel()
	const doc = `{"target": "x86/64", "profiles": {"generic": {
		"images": [
			{"name": "openwrt-23.05.3-x86-64-generic-squashfs-combined.img.gz", "type": "combined"},
			{"name": "openwrt-23.05.3-x86-64-generic-squashfs-combined-efi.img.gz", "type": "combined-efi"},
			{"name": "openwrt-23.05.3-x86-64-generic-squashfs-rootfs.img.gz", "type": "rootfs"}],
		"supported_devices": [], "titles": [{"title": "Generic x86/64"}]}}}`
	_, err := imagemap.ImportProfiles(strings.NewReader(doc))
	require.ErrorIs(t, err, imagemap.ErrInvalidProfiles)
	assert.ErrorContains(t, err, "types found: combined, combined-efi, rootfs")

	m, err := imagemap.ImportProfilesConfig(strings.NewReader(doc), &imagemap.ImportConfig{ImageTypes: []string{"combined", "combined-efi"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"x86-64-generic-squashfs-combined-efi.img.gz", "x86-64-generic-squashfs-combined.img.gz"}, m.Types())
	assert.Equal(t, []string{"Generic x86/64"}, m.Boards("x86-64-generic-squashfs-combined.img.gz"))
}

func TestImportProfilesRejectsBadInput(t *testing.T) {
	t.Parallel()
	img := `{"name": "openwrt-23.05.3-ath79-generic-acme_x1-squashfs-sysupgrade.bin", "type": "sysupgrade"}`
	tests := []struct {
		name, doc, msg string
	}{
		{"not JSON", `hello`, "invalid character"},
		{"empty", ``, "unexpected end"},
		{"truncated", `{"target": "ath79/generic", "profiles": {`, "unexpected end"},
		{"list", `[]`, "(top level)"},
		{"missing target", `{"profiles": {}}`, `"target"`},
		{"target not string", `{"target": 1, "profiles": {}}`, `field "target": got a JSON number, want a string`},
		{"missing profiles", `{"target": "ath79/generic"}`, `"profiles"`},
		{"profiles list", `{"target": "a/b", "profiles": []}`, `field "profiles": got a JSON array, want an object`},
		{"profile string", `{"target": "a/b", "profiles": {"acme_x1": "x"}}`, `profile "acme_x1": field "(top level)"`},
		{"images object", `{"target": "a/b", "profiles": {"acme_x1": {"images": {}}}}`, `profile "acme_x1": field "images": got a JSON object, want a list`},
		{"supported_devices string", `{"target": "a/b", "profiles": {"acme_x1": {"images": [` + img + `], "supported_devices": "acme,x1"}}}`, `field "supported_devices": got a JSON string, want a list`},
		{"titles object", `{"target": "a/b", "profiles": {"acme_x1": {"images": [` + img + `], "titles": {"model": "X1"}}}}`, `field "titles"`},
		{"title model number", `{"target": "a/b", "profiles": {"acme_x1": {"images": [` + img + `], "titles": [{"model": 1}]}}}`, `field "titles.model"`},
		{"image name missing", `{"target": "a/b", "profiles": {"acme_x1": {"images": [{"type": "sysupgrade"}], "titles": [{"title": "X"}]}}}`, `profile "acme_x1": field "images[0].name": empty`},
		{"no boards", `{"target": "a/b", "profiles": {"acme_x1": {"images": [` + img + `], "titles": [], "supported_devices": []}}}`, `profile "acme_x1": fields "titles" and "supported_devices"`},
		{"no sysupgrade", `{"target": "a/b", "profiles": {"acme_x1": {"images": [{"name": "f.bin", "type": "factory"}]}}}`, "no image of type sysupgrade"},
		{"duplicate type", `{"target": "a/b", "profiles": {
			"acme_x1": {"images": [` + img + `], "titles": [{"title": "X"}]},
			"acme_x2": {"images": [` + img + `], "titles": [{"title": "Y"}]}}}`, `profile "acme_x2": image type "ath79-generic-acme_x1-squashfs-sysupgrade.bin" also comes from profile "acme_x1"`},
		{"name with space", `{"target": "a/b", "profiles": {"acme_x1": {"images": [{"name": "a b.bin", "type": "sysupgrade"}], "titles": [{"title": "X"}]}}}`, "white space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := imagemap.ImportProfiles(strings.NewReader(tt.doc))
			require.Error(t, err)
			assert.Nil(t, m)
			assert.ErrorIs(t, err, imagemap.ErrInvalidProfiles)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestImportProfilesSizeLimit(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("testdata", "profiles", "ath79-generic.json"))
	require.NoError(t, err)

	_, err = imagemap.ImportProfilesConfig(bytes.NewReader(doc), &imagemap.ImportConfig{MaxSize: int64(len(doc)) - 1})
	assert.ErrorIs(t, err, imagemap.ErrTooLarge)
	m, err := imagemap.ImportProfilesConfig(bytes.NewReader(doc), &imagemap.ImportConfig{MaxSize: int64(len(doc))})
	require.NoError(t, err)
	assert.Equal(t, 26, m.Len())

	// The default limit stops an endless stream after 64 MiB + 1 byte.
	_, err = imagemap.ImportProfiles(endless{})
	assert.ErrorIs(t, err, imagemap.ErrTooLarge)

	_, err = imagemap.ImportProfiles(failingReader{})
	assert.ErrorContains(t, err, "disk on fire")
}

// endless is a reader that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }
