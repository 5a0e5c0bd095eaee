package imagemap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

func FuzzImportProfiles(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "profiles", "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed files: %v", err)
	}
	// Seeds are the fixtures cut down to two profiles each: small inputs
	// keep the fuzzer fast (mutating and minimising 20 KiB documents is
	// slow); the full fixtures are covered by TestImportProfilesFixtures.
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(shrinkProfiles(f, b, 2))
	}
	f.Add([]byte(`{"target": "a/b", "profiles": {"x": {"images": [{"name": "openwrt-1.2-x.bin", "type": "sysupgrade"}], "titles": [{"title": "X"}], "supported_devices": ["x,y"]}}}`))
	f.Add([]byte(`{"target": "a/b", "profiles": {"x": {"images": [{"name": "", "type": "sysupgrade"}]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := imagemap.ImportProfiles(bytes.NewReader(data))
		if err != nil {
			if m != nil {
				t.Fatal("non-nil map with an error")
			}
			if !errors.Is(err, imagemap.ErrInvalidProfiles) {
				t.Fatalf("error does not wrap ErrInvalidProfiles: %v", err)
			}
			return
		}
		if m.Len() == 0 {
			t.Fatal("success with an empty map")
		}
		// Every imported entry must be well formed and fit its own boards.
		for _, typ := range m.Types() {
			e, ok := m.Entry(typ)
			if !ok || e.Label == "" || len(e.Boards)+len(e.BoardNames) == 0 || e.Target == "" {
				t.Fatalf("malformed entry %q: %+v", typ, e)
			}
			for _, b := range e.Boards {
				if !m.Fits(typ, b, "") {
					t.Fatalf("%q does not fit its board %q", typ, b)
				}
			}
			for _, n := range e.BoardNames {
				if len(m.TypesFor("", n)) == 0 {
					t.Fatalf("board name %q of %q finds nothing", n, typ)
				}
			}
		}
	})
}

// shrinkProfiles keeps the first n profiles of a profiles.json document
// and drops the package lists.
func shrinkProfiles(f *testing.F, doc []byte, n int) []byte {
	var top map[string]json.RawMessage
	var profiles map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		f.Fatal(err)
	}
	if err := json.Unmarshal(top["profiles"], &profiles); err != nil {
		f.Fatal(err)
	}
	keep := map[string]json.RawMessage{}
	for _, id := range slices.Sorted(maps.Keys(profiles))[:n] {
		keep[id] = profiles[id]
	}
	top["profiles"], _ = json.Marshal(keep)
	delete(top, "default_packages")
	out, err := json.Marshal(top)
	if err != nil {
		f.Fatal(err)
	}
	return out
}

func FuzzReadMetadata(f *testing.F) {
	// Small images carrying the fwtool fixtures' metadata and signature:
	// the full 5 KiB fixtures are covered by TestReadMetadataFwtoolImages.
	for _, signed := range []bool{false, true} {
		var img bytes.Buffer
		w := imagemap.NewWriter(&img)
		_, _ = w.Write([]byte("kernel+rootfs"))
		if err := w.AppendMetadata(&imagemap.Metadata{Raw: []byte(fixtureMetaJSON)}); err != nil {
			f.Fatal(err)
		}
		if signed {
			_ = w.AppendSignature([]byte(fixtureSignature))
		}
		f.Add(img.Bytes())
		f.Add(img.Bytes()[20:]) // a block reaching before the start
	}
	var small bytes.Buffer
	w := imagemap.NewWriter(&small)
	_ = w.AppendMetadata(&imagemap.Metadata{SupportedDevices: []string{"a,b"}})
	_ = w.AppendSignature([]byte("sig"))
	f.Add(small.Bytes())
	f.Add([]byte("FWx0"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		md, err := imagemap.ReadMetadata(bytes.NewReader(data), int64(len(data)))
		crcErr := imagemap.VerifyCRC(context.Background(), bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if md != nil {
				t.Fatal("non-nil metadata with an error")
			}
			if !errors.Is(err, imagemap.ErrNoMetadata) && !errors.Is(err, imagemap.ErrCorruptMetadata) {
				t.Fatalf("unclassified error: %v", err)
			}
			if errors.Is(err, imagemap.ErrNoMetadata) && !errors.Is(crcErr, imagemap.ErrNoMetadata) {
				t.Fatalf("ReadMetadata found no metadata, VerifyCRC says %v", crcErr)
			}
			return
		}
		if len(md.Raw) == 0 || md.Raw[0] != '{' {
			t.Fatalf("raw JSON %q", md.Raw)
		}
		if crcErr != nil && !errors.Is(crcErr, imagemap.ErrCorruptMetadata) {
			t.Fatalf("VerifyCRC: unclassified error: %v", crcErr)
		}
		// Re-encoding what was read must read back the same.
		var buf bytes.Buffer
		if err := imagemap.AppendMetadata(&buf, bytes.NewReader(nil), md); err != nil {
			t.Fatal(err)
		}
		again, err := imagemap.ReadMetadata(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if !bytes.Equal(again.Raw, md.Raw) {
			t.Fatalf("raw changed: %q -> %q", md.Raw, again.Raw)
		}
		if err := imagemap.VerifyCRC(context.Background(), bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
			t.Fatalf("CRC of re-encoded image: %v", err)
		}
	})
}
