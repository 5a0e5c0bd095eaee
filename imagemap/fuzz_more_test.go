package imagemap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
)

// More fuzz targets (fuzz_test.go has profiles.json and image trailers):
// a host's custom map in JSON (FuzzParseJSON), an image's fwtool metadata
// document (FuzzParseMetadata), and what a device and an image's file name
// say about the board (FuzzBoardLookup).

// fzMaxInput bounds a fuzzed document.
const fzMaxInput = 64 << 10

// fzShort is s for a failure message: its start when it is long (the
// fuzzer writes the whole input to testdata).
func fzShort[T ~string | ~[]byte](s T) string {
	const keep = 256
	if len(s) <= keep {
		return string(s)
	}
	return string(s[:keep]) + fmt.Sprintf("…(%d bytes)", len(s))
}

// fzCustomJSON writes entries in the documented custom-map format, the
// form ParseJSON reads.
func fzCustomJSON(tb testing.TB, entries map[string]imagemap.Entry) []byte {
	tb.Helper()
	type entry struct {
		Label      string   `json:"label,omitempty"`
		Boards     []string `json:"boards,omitempty"`
		BoardNames []string `json:"board_names,omitempty"`
		Target     string   `json:"target,omitempty"`
	}
	doc := map[string]entry{}
	for typ, e := range entries {
		doc[typ] = entry{e.Label, e.Boards, e.BoardNames, e.Target}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func fzEntries(m *imagemap.Map) map[string]imagemap.Entry {
	out := map[string]imagemap.Entry{}
	for _, typ := range m.Types() {
		out[typ], _ = m.Entry(typ)
	}
	return out
}

// FuzzParseJSON: a custom map is refused, or read into entries that are
// well formed, fit their own boards and read back the same once written in
// the documented format. LoadJSON and ParseJSON agree.
func FuzzParseJSON(f *testing.F) {
	f.Add([]byte(`{"ath79-generic-acme_x1-squashfs-sysupgrade.bin": {"label": "ACME X1", "boards": ["ACME X1", "ACME X1 Pro"], "board_names": ["acme,x1"], "target": "ath79/generic"}, "names-only.bin": {"board_names": ["acme,x2"]}}`))
	f.Add([]byte(` {} `))
	f.Add([]byte(`{"x.bin": {"boards": [" ACME X1 ", "acme x1"]}}`))
	f.Add([]byte(`{"x.bin": {"boards": "ACME"}}`))
	f.Add([]byte(`{"x.bin": {"boards": ["A"]}, "x.bin": {"boards": ["B"]}}`))
	f.Add([]byte(`{"a b": {"boards": ["A"]}} {}`))
	f.Add([]byte(`{"x.bin": {"boards": [null], "colour": "red"}}`))
	f.Add([]byte(`[]`))
	// The built-in map and imported profiles, written as custom maps.
	builtin := imagemap.OpenWrt()
	some := map[string]imagemap.Entry{}
	for _, typ := range builtin.Types()[:8] {
		some[typ], _ = builtin.Entry(typ)
	}
	f.Add(fzCustomJSON(f, some))
	files, _ := filepath.Glob(filepath.Join("testdata", "profiles", "*.json"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		m, err := imagemap.ImportProfiles(bytes.NewReader(b))
		if err != nil {
			f.Fatal(err)
		}
		entries := fzEntries(m)
		for len(entries) > 3 { // small seeds: the fuzzer mutates them faster
			for k := range entries {
				delete(entries, k)
				break
			}
		}
		f.Add(fzCustomJSON(f, entries))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fzMaxInput {
			return
		}
		m, err := imagemap.ParseJSON(data)
		loaded, lerr := imagemap.LoadJSON(bytes.NewReader(data))
		if (err == nil) != (lerr == nil) {
			t.Fatalf("ParseJSON(%s): %v, LoadJSON: %v", fzShort(data), err, lerr)
		}
		if err != nil {
			if m != nil || loaded != nil {
				t.Fatalf("ParseJSON(%s): a map with the error %v", fzShort(data), err)
			}
			var ee *imagemap.EntryError
			if errors.As(err, &ee) && !errors.Is(err, imagemap.ErrInvalidEntry) {
				t.Fatalf("ParseJSON(%s): %v does not match ErrInvalidEntry", fzShort(data), err)
			}
			return
		}
		entries := fzEntries(m)
		if diff := cmp.Diff(entries, fzEntries(loaded)); diff != "" {
			t.Fatalf("ParseJSON and LoadJSON of %s differ:\n%s", fzShort(data), diff)
		}
		for typ, e := range entries {
			fzCheckEntry(t, m, typ, e)
		}
		doc := fzCustomJSON(t, entries)
		back, err := imagemap.ParseJSON(doc)
		if err != nil {
			t.Fatalf("ParseJSON(%s) read, but the entries written back %s do not: %v", fzShort(data), fzShort(doc), err)
		}
		if diff := cmp.Diff(entries, fzEntries(back), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("ParseJSON(%s): written back and read again, the entries changed:\n%s", fzShort(data), diff)
		}
	})
}

// fzCheckEntry checks one entry of m as New promises it: a file-name type,
// a trimmed label, trimmed and distinct board strings, each of which finds
// the type (also with surrounding white space).
func fzCheckEntry(t *testing.T, m *imagemap.Map, typ string, e imagemap.Entry) {
	t.Helper()
	if typ == "" || strings.IndexFunc(typ, unicode.IsSpace) >= 0 || strings.ContainsAny(typ, `/\`) {
		t.Fatalf("image type %q accepted", typ)
	}
	if e.Label == "" || e.Label != strings.TrimSpace(e.Label) || e.Target != strings.TrimSpace(e.Target) {
		t.Fatalf("entry %q: label %q, target %q", typ, e.Label, e.Target)
	}
	if len(e.Boards)+len(e.BoardNames) == 0 {
		t.Fatalf("entry %q without boards", typ)
	}
	for _, list := range [][]string{e.Boards, e.BoardNames} {
		seen := map[string]bool{}
		for _, b := range list {
			k := strings.ToLower(b)
			if b == "" || b != strings.TrimFunc(b, unicode.IsSpace) || seen[k] {
				t.Fatalf("entry %q: board %q empty, untrimmed or repeated in %q", typ, b, list)
			}
			seen[k] = true
		}
	}
	for _, b := range e.BoardNames {
		for _, v := range []string{b, " " + b + "\t", strings.ToLower(b)} {
			if !m.Fits(typ, "", v) || !slices.Contains(m.TypesFor("", v), typ) {
				t.Fatalf("entry %q: board name %q does not find it", typ, v)
			}
		}
	}
	for _, b := range e.Boards {
		for _, v := range []string{b, "\n" + b + " ", strings.ToLower(b)} {
			if !m.Fits(typ, v, "") || !slices.Contains(m.TypesFor(v, ""), typ) {
				t.Fatalf("entry %q: model %q does not find it", typ, v)
			}
		}
	}
}

// FuzzParseMetadata: an image's fwtool metadata document is refused with
// ErrCorruptMetadata, or read into fields that an image written from them
// carries back unchanged (fields or raw document), with a valid CRC.
func FuzzParseMetadata(f *testing.F) {
	for _, name := range []string{"archer-c7-v2-metadata.bin", "archer-c7-v2-signed.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", "fwtool", name))
		if err != nil {
			f.Fatal(err)
		}
		md, err := imagemap.ReadMetadata(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(md.Raw))
	}
	for _, r := range openwrttest.Releases() {
		if md := openwrttest.NewImage(r, "tplink,archer-c7-v2", 1024).FwtoolMetadata(); md != nil {
			f.Add([]byte(md.Raw))
		}
	}
	for _, s := range []string{
		`{"metadata_version": 1.1, "compat_version": 2.0, "compat_message": "new layout", "supported_devices": ["Please use the factory image"], "new_supported_devices": ["acme,x1"], "version": {}}` + "\n\x00\x00",
		`{"supported_devices": ["a,b", ""], "version": {"dist": "OpenWrt", "version": "SNAPSHOT"}}`,
		`{"supported_devices": "a,b"}`, `null`, `[]`, `{"compat_version": true}`, `{"version": []}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if len(doc) > fzMaxInput {
			return
		}
		md, err := imagemap.ParseMetadata(doc)
		if err != nil {
			if md != nil || !errors.Is(err, imagemap.ErrCorruptMetadata) {
				t.Fatalf("ParseMetadata(%s) = %+v, %v: want nil and ErrCorruptMetadata", fzShort(doc), md, err)
			}
			return
		}
		fields := *md
		fields.Raw = nil
		for _, m := range []*imagemap.Metadata{&fields, md} {
			var img bytes.Buffer
			if err := imagemap.AppendMetadata(&img, strings.NewReader("kernel+rootfs"), m); err != nil {
				t.Fatalf("ParseMetadata(%s): writing %+v: %v", fzShort(doc), m, err)
			}
			back, err := imagemap.ReadMetadata(bytes.NewReader(img.Bytes()), int64(img.Len()))
			if err != nil {
				t.Fatalf("ParseMetadata(%s): the written image reads %v", fzShort(doc), err)
			}
			if diff := cmp.Diff(md, back, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(imagemap.Metadata{}, "Raw")); diff != "" {
				t.Fatalf("ParseMetadata(%s): written and read back, the metadata changed:\n%s", fzShort(doc), diff)
			}
			if err := imagemap.VerifyCRC(context.Background(), bytes.NewReader(img.Bytes()), int64(img.Len())); err != nil {
				t.Fatalf("ParseMetadata(%s): CRC of the written image: %v", fzShort(doc), err)
			}
		}
		if md.Supports("") {
			t.Fatalf("ParseMetadata(%s): supports an empty board name", fzShort(doc))
		}
		for _, b := range md.Boards() {
			if strings.TrimSpace(b) == "" {
				continue
			}
			if !md.Supports(b) || !md.Supports(" "+b+"\t") {
				t.Fatalf("ParseMetadata(%s): board %q of %q is not supported", fzShort(doc), b, md.Boards())
			}
		}
	})
}

// FuzzBoardLookup: an image's file name gives a type without its directory
// and release prefix; the board a device reports finds, in the built-in
// map, only types that fit it, best first, whatever white space surrounds
// it.
func FuzzBoardLookup(f *testing.F) {
	m := imagemap.OpenWrt()
	types := m.Types()
	for i, r := range openwrttest.Releases() {
		typ := types[i*len(types)/len(openwrttest.Releases())]
		e, _ := m.Entry(typ)
		model, board := "", ""
		if len(e.Boards) > 0 {
			model = e.Boards[0]
		}
		if len(e.BoardNames) > 0 {
			board = e.BoardNames[0]
		}
		f.Add(openwrttest.NewImage(r, "tplink,archer-c7-v2", 1024).FileName(), model, board)
		f.Add("/srv/images/openwrt-"+r+"-"+typ, strings.ToUpper(model), " "+board)
	}
	f.Add(`C:\images\lede-17.01.4-ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin`, "TP-Link Archer C7 v2", "")
	f.Add("openwrt-24.10.0-rc1-r28304-6dacba30a7-ath79-generic-x.bin", "", "tplink,archer-c7-v5")
	f.Add("openwrt-", "", "")
	f.Add("openwrt-23.05-SNAPSHOT-", "TP-Link Archer C7 v2", "tplink,archer-c7-v5")
	f.Fuzz(func(t *testing.T, name, model, board string) {
		if len(name)+len(model)+len(board) > fzMaxInput {
			return
		}
		typ := imagemap.TypeFromFileName(name)
		base := name[strings.LastIndexAny(name, `/\`)+1:]
		if strings.ContainsAny(typ, `/\`) || !strings.HasSuffix(base, typ) || (base != "" && typ == "") {
			t.Fatalf("TypeFromFileName(%q) = %q", fzShort(name), typ)
		}
		for _, dir := range []string{"/tmp/", `C:\x\`, "a/b\\"} {
			if got := imagemap.TypeFromFileName(dir + base); got != typ {
				t.Fatalf("TypeFromFileName(%q) = %q, but of %q %q", fzShort(name), typ, fzShort(dir+base), got)
			}
		}
		if g := imagemap.Generation(model); g != 0 && g != 1 {
			t.Fatalf("Generation(%q) = %d", fzShort(model), g)
		}

		got := m.TypesFor(model, board)
		seen := map[string]bool{}
		for _, typ := range got {
			if seen[typ] || !m.Fits(typ, model, board) {
				t.Fatalf("TypesFor(%q, %q) = %q: %q repeated or not fitting", fzShort(model), fzShort(board), got, typ)
			}
			seen[typ] = true
		}
		best, ok := m.Best(model, board)
		if ok != (len(got) > 0) || (ok && best != got[0]) {
			t.Fatalf("TypesFor(%q, %q) = %q, Best = %q, %v", fzShort(model), fzShort(board), got, best, ok)
		}
		padded := m.TypesFor(" "+model+"\n", "\t"+board+" ")
		if !cmp.Equal(seen, fzSet(padded), cmpopts.EquateEmpty()) {
			t.Fatalf("TypesFor(%q, %q) = %q, but with white space around them %q", fzShort(model), fzShort(board), got, padded)
		}
	})
}

func fzSet(list []string) map[string]bool {
	out := map[string]bool{}
	for _, s := range list {
		out[s] = true
	}
	return out
}
