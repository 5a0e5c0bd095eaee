package imagemap_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

func TestNewRejectsMalformedEntries(t *testing.T) {
	t.Parallel()
	ok := imagemap.Entry{Label: "X", Boards: []string{"Acme X"}}
	tests := []struct {
		name    string
		typ     string
		entry   imagemap.Entry
		field   string
		errType string
	}{
		{"empty type", "", ok, "type", ""},
		{"type with space", "a b.bin", ok, "type", "a b.bin"},
		{"type with slash", "dir/a.bin", ok, "type", "dir/a.bin"},
		{"no boards", "a.bin", imagemap.Entry{Label: "X"}, "boards", "a.bin"},
		{"empty board", "a.bin", imagemap.Entry{Boards: []string{"Acme", "  "}}, "boards", "a.bin"},
		{"empty board name", "a.bin", imagemap.Entry{Boards: []string{"Acme"}, BoardNames: []string{""}}, "board_names", "a.bin"},
		{"duplicate board", "a.bin", imagemap.Entry{Boards: []string{"Acme X", " acme x"}}, "boards", "a.bin"},
		{"duplicate board name", "a.bin", imagemap.Entry{BoardNames: []string{"acme,x", "ACME,X"}}, "board_names", "a.bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := imagemap.New(map[string]imagemap.Entry{tt.typ: tt.entry, "good.bin": ok})
			require.Error(t, err)
			assert.Nil(t, m)
			assert.ErrorIs(t, err, imagemap.ErrInvalidEntry)
			var ee *imagemap.EntryError
			require.True(t, errors.As(err, &ee), "error %v is not an *EntryError", err)
			assert.Equal(t, tt.field, ee.Field)
			assert.Equal(t, tt.errType, ee.Type)
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", tt.field))
		})
	}
}

func TestNewNormalizesAndCopies(t *testing.T) {
	t.Parallel()
	boards := []string{"  Acme X1 \n"}
	m, err := imagemap.New(map[string]imagemap.Entry{
		"acme-x1.bin": {Boards: boards, BoardNames: []string{"acme,x1"}, Target: " acme/generic "},
	})
	require.NoError(t, err)
	boards[0] = "changed"
	e, ok := m.Entry("acme-x1.bin")
	require.True(t, ok)
	want := imagemap.Entry{Label: "acme-x1.bin", Boards: []string{"Acme X1"}, BoardNames: []string{"acme,x1"}, Target: "acme/generic"}
	assert.Empty(t, cmp.Diff(want, e))

	e.Boards[0] = "mutated" // a copy: the map is unchanged
	assert.Equal(t, []string{"Acme X1"}, m.Boards("acme-x1.bin"))
	assert.Nil(t, m.Boards("missing.bin"))
	assert.Nil(t, m.BoardNames("missing.bin"))
	assert.Equal(t, []string{"acme,x1"}, m.BoardNames("acme-x1.bin"))
}

func TestMatchingRules(t *testing.T) {
	t.Parallel()
	m, err := imagemap.New(map[string]imagemap.Entry{
		"x1.bin": {Boards: []string{"Acme X1 v2"}, BoardNames: []string{"acme,x1-v2"}},
	})
	require.NoError(t, err)
	tests := []struct {
		name, model, boardName string
		fits                   bool
	}{
		{"exact model", "Acme X1 v2", "", true},
		{"exact board name", "", "acme,x1-v2", true},
		{"both", "Acme X1 v2", "acme,x1-v2", true},
		{"model only, other board name: the board name decides", "Acme X1 v2", "other,board", false},
		{"board name only, other model", "Other", "acme,x1-v2", true},
		{"model case differs", "ACME x1 V2", "", true},
		{"board name case differs", "", "ACME,X1-V2", true},
		{"surrounding white space", "\t Acme X1 v2\n", " acme,x1-v2 ", true},
		{"inner white space differs", "Acme  X1 v2", "", false},
		{"prefix only", "Acme X1", "acme,x1", false},
		{"longer", "Acme X1 v2 pro", "acme,x1-v2-pro", false},
		{"model in board name slot", "", "Acme X1 v2", false},
		{"board name in model slot", "acme,x1-v2", "", false},
		{"empty", "", "", false},
		{"blank", "  ", "\t", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.fits, m.Fits("x1.bin", tt.model, tt.boardName))
			if tt.fits {
				assert.Equal(t, []string{"x1.bin"}, m.TypesFor(tt.model, tt.boardName))
			} else {
				assert.Nil(t, m.TypesFor(tt.model, tt.boardName))
			}
		})
	}
	assert.False(t, m.Fits("X1.bin", "Acme X1 v2", ""), "image types compare exactly")
	assert.False(t, m.Fits("unknown.bin", "Acme X1 v2", "acme,x1-v2"))
}

func TestTypesForRanking(t *testing.T) {
	t.Parallel()
	base, err := imagemap.New(map[string]imagemap.Entry{
		// same model, legacy vs current target
		"ar71xx-generic-x1-squashfs-sysupgrade.bin":     {Boards: []string{"ACME X1"}, Target: "ar71xx/generic"},
		"ath79-generic-acme_x1-squashfs-sysupgrade.bin": {Boards: []string{"Acme X1"}, BoardNames: []string{"acme,x1"}, Target: "ath79/generic"},
		// same generation, one exact one folded
		"b-folded.bin": {Boards: []string{"acme x1"}, Target: "ramips/mt7621"},
		"a-folded.bin": {Boards: []string{"ACME X1 "}, Target: "ramips/mt7621"},
		"z-exact.bin":  {Boards: []string{"Acme X1"}, Target: "ramips/mt7621"},
	})
	require.NoError(t, err)

	got := base.TypesFor("Acme X1", "")
	want := []string{
		// generation 1, exact, by name
		"ath79-generic-acme_x1-squashfs-sysupgrade.bin",
		"z-exact.bin",
		// generation 1, folded, by name
		"a-folded.bin",
		"b-folded.bin",
		// generation 0
		"ar71xx-generic-x1-squashfs-sysupgrade.bin",
	}
	assert.Empty(t, cmp.Diff(want, got))

	// A board-name match ranks before model-only matches.
	got = base.TypesFor("Acme X1", "acme,x1")
	assert.Equal(t, "ath79-generic-acme_x1-squashfs-sysupgrade.bin", got[0])
	best, ok := base.Best("acme x1", "ACME,X1")
	assert.True(t, ok)
	assert.Equal(t, "ath79-generic-acme_x1-squashfs-sysupgrade.bin", best)

	// An entry merged later (custom) ranks first, even by model only and
	// on a legacy target.
	custom, err := base.With(map[string]imagemap.Entry{
		"custom-x1.bin": {Boards: []string{"acme x1"}, Target: "ar71xx/generic"},
	})
	require.NoError(t, err)
	got = custom.TypesFor("Acme X1", "acme,x1")
	require.Len(t, got, 6)
	assert.Equal(t, "custom-x1.bin", got[0])
	assert.Equal(t, "ath79-generic-acme_x1-squashfs-sysupgrade.bin", got[1])

	_, ok = base.Best("Nobody", "nobody")
	assert.False(t, ok)
}

func TestMergeCustomWins(t *testing.T) {
	t.Parallel()
	base := imagemap.OpenWrt()
	const typ = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	before, ok := base.Entry(typ)
	require.True(t, ok)

	merged, err := base.With(map[string]imagemap.Entry{
		typ:         {Label: "Our C7", Boards: []string{"Our Archer"}},
		"extra.bin": {Boards: []string{"Extra Board"}},
	})
	require.NoError(t, err)
	assert.Equal(t, base.Len()+1, merged.Len())
	e, ok := merged.Entry(typ)
	require.True(t, ok)
	assert.Equal(t, "Our C7", e.Label)
	assert.False(t, merged.Fits(typ, "TP-Link Archer C7 v2", "tplink,archer-c7-v2"), "replaced entry no longer claims the old board")
	assert.True(t, merged.Fits(typ, "Our Archer", ""))
	assert.NotContains(t, merged.TypesFor("", "tplink,archer-c7-v2"), typ)

	// The receiver is untouched.
	after, ok := base.Entry(typ)
	require.True(t, ok)
	assert.Empty(t, cmp.Diff(before, after))
	assert.False(t, base.Fits("extra.bin", "Extra Board", ""))

	_, err = base.With(map[string]imagemap.Entry{"bad.bin": {}})
	assert.ErrorIs(t, err, imagemap.ErrInvalidEntry)
}

func TestNilMap(t *testing.T) {
	t.Parallel()
	var m *imagemap.Map
	assert.Zero(t, m.Len())
	assert.Nil(t, m.Types())
	assert.Nil(t, m.TypesFor("a", "b"))
	assert.False(t, m.Fits("a", "b", "c"))
	other, err := imagemap.New(map[string]imagemap.Entry{"a.bin": {Boards: []string{"A"}}})
	require.NoError(t, err)
	assert.Equal(t, []string{"a.bin"}, m.Merge(other).TypesFor("A", ""))
	assert.Equal(t, 1, other.Merge(nil).Len())
}

func TestConcurrentReads(t *testing.T) {
	t.Parallel()
	m := imagemap.OpenWrt()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 200 {
				assert.NotEmpty(t, m.TypesFor("TP-Link Archer C7 v2", "tplink,archer-c7-v2"))
				assert.True(t, m.Fits("ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin", "", "tplink,archer-c7-v2"))
				_, err := m.With(map[string]imagemap.Entry{fmt.Sprintf("c%d.bin", i): {Boards: []string{"C"}}})
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
}

func TestGeneration(t *testing.T) {
	t.Parallel()
	for target, want := range map[string]int{
		"ar71xx/generic": 0, "ar71xx": 0, "AR71XX/nand": 0, "brcm2708/bcm2710": 0,
		"ath79/generic": 1, "bcm27xx/bcm2710": 1, "": 1, "qualcommax/ipq807x": 1,
	} {
		assert.Equal(t, want, imagemap.Generation(target), target)
	}
}

func TestTypeFromFileName(t *testing.T) {
	t.Parallel()
	const c7 = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	for in, want := range map[string]string{
		"openwrt-23.05.3-" + c7:        c7,
		"openwrt-" + c7:                c7,
		"openwrt-24.10.0-rc1-" + c7:    c7,
		"openwrt-23.05-SNAPSHOT-" + c7: c7,
		"openwrt-snapshot-" + c7:       c7,
		"openwrt-SNAPSHOT-" + c7:       c7,
		"openwrt-19.07-" + c7:          c7,
		"lede-17.01.4-ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin": "ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin",
		"/srv/fw/openwrt-23.05.3-" + c7:                                    c7,
		`C:\fw\openwrt-23.05.3-` + c7:                                      c7,
		c7:                                                                 c7,
		"custom-image.bin":                                                 "custom-image.bin",
		"openwrt-x86-64-generic-ext4-combined.img.gz":                      "x86-64-generic-ext4-combined.img.gz",
		"OpenWrt-23.05.3-" + c7:                                            "OpenWrt-23.05.3-" + c7, // prefix is case-sensitive
		"openwrt-":                                                         "openwrt-",
		"openwrt-23.05.3-":                                                 "23.05.3-",
		"":                                                                 "",
	} {
		assert.Equal(t, want, imagemap.TypeFromFileName(in), in)
	}
}

// TestBoardNameVetoesModel: a device whose board name is known and listed by
// no board name of an entry does not fit it through its model alone.
func TestBoardNameVetoesModel(t *testing.T) {
	t.Parallel()
	m, err := imagemap.New(map[string]imagemap.Entry{
		"ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin": {
			Boards: []string{"TP-Link Archer C7 v2"}, BoardNames: []string{"tplink,archer-c7-v2"}, Target: "ath79/generic"},
		"ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin": {
			Boards: []string{"TP-Link Archer C7 v2"}, Target: "ar71xx/generic"},
	})
	require.NoError(t, err)
	const v2 = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	assert.True(t, m.Fits(v2, "TP-Link Archer C7 v2", "tplink,archer-c7-v2"))
	assert.True(t, m.Fits(v2, "", "tplink,archer-c7-v2"))
	assert.True(t, m.Fits(v2, "TP-Link Archer C7 v2", ""), "no board name: the model decides")
	assert.False(t, m.Fits(v2, "TP-Link Archer C7 v2", "tplink,archer-c7-v5"), "the board name contradicts the model")
	assert.Equal(t, []string{"ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin"},
		m.TypesFor("TP-Link Archer C7 v2", "tplink,archer-c7-v5"), "only the entry without board names is left to the model")
}

func TestTypeFromFileNameRevision(t *testing.T) {
	t.Parallel()
	const typ = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	for _, name := range []string{
		"openwrt-23.05-SNAPSHOT-r23000-" + typ,
		"openwrt-23.05.3-r23809-234f1a2efa-" + typ,
		"openwrt-23.05.3-" + typ,
	} {
		assert.Equal(t, typ, imagemap.TypeFromFileName(name), name)
	}
	assert.Equal(t, "r1-x.bin", imagemap.TypeFromFileName("r1-x.bin"), "no prefix: unchanged")
}
