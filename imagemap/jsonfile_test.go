package imagemap_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

func TestLoadJSON(t *testing.T) {
	t.Parallel()
	const doc = `{
		"ath79-generic-acme_x1-squashfs-sysupgrade.bin": {
			"label": "ACME X1", "boards": ["ACME X1", "ACME X1 Pro"],
			"board_names": ["acme,x1"], "target": "ath79/generic"
		},
		"ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin": {
			"boards": ["Our Lab C7"]
		},
		"names-only.bin": {"board_names": ["acme,x2"]}
	}`
	custom, err := imagemap.LoadJSON(strings.NewReader(doc))
	require.NoError(t, err)
	require.Equal(t, 3, custom.Len())
	e, ok := custom.Entry("ath79-generic-acme_x1-squashfs-sysupgrade.bin")
	require.True(t, ok)
	assert.Empty(t, cmp.Diff(imagemap.Entry{
		Label: "ACME X1", Boards: []string{"ACME X1", "ACME X1 Pro"},
		BoardNames: []string{"acme,x1"}, Target: "ath79/generic",
	}, e))
	e, _ = custom.Entry("names-only.bin")
	assert.Equal(t, "names-only.bin", e.Label, "label defaults to the type")

	m := imagemap.OpenWrt().Merge(custom)
	assert.Equal(t, imagemap.OpenWrt().Len()+2, m.Len())
	assert.True(t, m.Fits("ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin", "Our Lab C7", ""))
	assert.False(t, m.Fits("ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin", "TP-Link Archer C7 v2", ""), "custom entry replaced the built-in one")
	best, ok := m.Best("acme x1 pro", "")
	require.True(t, ok)
	assert.Equal(t, "ath79-generic-acme_x1-squashfs-sysupgrade.bin", best)

	empty, err := imagemap.ParseJSON([]byte(` {} `))
	require.NoError(t, err)
	assert.Zero(t, empty.Len())
}

func TestParseJSONRejectsMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		doc   string
		typ   string // want an *EntryError for this type and field
		field string
		msg   string
	}{
		{"boards as string", `{"a.bin": {"boards": "Acme X1"}}`, "a.bin", "boards", "must be a list of strings, got a string"},
		{"board_names as string", `{"a.bin": {"boards": ["A"], "board_names": "acme,x1"}}`, "a.bin", "board_names", "got a string"},
		{"boards null", `{"a.bin": {"boards": null}}`, "a.bin", "boards", "got null"},
		{"board not string", `{"a.bin": {"boards": ["A", 7]}}`, "a.bin", "boards", "item 1 must be a string, got a number"},
		{"board null", `{"a.bin": {"boards": [null]}}`, "a.bin", "boards", "item 0 must be a string, got null"},
		{"empty board", `{"a.bin": {"boards": ["A", ""]}}`, "a.bin", "boards", "item 1 is empty"},
		{"blank board name", `{"a.bin": {"boards": ["A"], "board_names": [" "]}}`, "a.bin", "board_names", "item 0 is empty"},
		{"no boards", `{"a.bin": {"label": "A"}}`, "a.bin", "boards", "no boards"},
		{"empty lists", `{"a.bin": {"boards": [], "board_names": []}}`, "a.bin", "boards", "no boards"},
		{"empty type", `{"": {"boards": ["A"]}}`, "", "type", "empty image type"},
		{"duplicate type", `{"a.bin": {"boards": ["A"]}, "b.bin": {"boards": ["B"]}, "a.bin": {"boards": ["C"]}}`, "a.bin", "type", "duplicate image type"},
		{"duplicate board", `{"a.bin": {"boards": ["Acme", "ACME"]}}`, "a.bin", "boards", "duplicates item 0"},
		{"label not string", `{"a.bin": {"label": ["A"], "boards": ["A"]}}`, "a.bin", "label", "must be a string, got a list"},
		{"unknown field", `{"a.bin": {"boards": ["A"], "bords": ["B"]}}`, "a.bin", "bords", "unknown field"},
		{"entry not object", `{"a.bin": ["A"]}`, "a.bin", "", "must be an object, got a list"},
		{"entry null", `{"a.bin": null}`, "a.bin", "", "must be an object, got null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := imagemap.ParseJSON([]byte(tt.doc))
			require.Error(t, err)
			assert.Nil(t, m)
			var ee *imagemap.EntryError
			require.True(t, errors.As(err, &ee), "%v is not an *EntryError", err)
			assert.ErrorIs(t, err, imagemap.ErrInvalidEntry)
			assert.Equal(t, tt.typ, ee.Type)
			assert.Equal(t, tt.field, ee.Field)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestParseJSONRejectsBadDocuments(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"empty":         ``,
		"list":          `[]`,
		"string":        `"a"`,
		"truncated":     `{"a.bin": {"boards": ["A"]}`,
		"trailing data": `{} {}`,
		"bad value":     `{"a.bin": {"boards": [}}`,
		"not JSON":      `boards: [A]`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := imagemap.ParseJSON([]byte(doc))
			require.Error(t, err)
			assert.Nil(t, m)
			assert.True(t, strings.HasPrefix(err.Error(), "imagemap: "), err.Error())
		})
	}
	_, err := imagemap.LoadJSON(endless{})
	assert.ErrorIs(t, err, imagemap.ErrTooLarge)
}
