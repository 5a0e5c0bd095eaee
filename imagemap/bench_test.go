package imagemap_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

// profilesDoc generates a profiles.json with n devices.
func profilesDoc(tb testing.TB, n int) []byte {
	tb.Helper()
	profiles := map[string]any{}
	for i := range n {
		id := fmt.Sprintf("vendor%d_router-%d", i%50, i)
		profiles[id] = map[string]any{
			"images": []map[string]string{
				{"name": fmt.Sprintf("openwrt-23.05.3-bench-generic-%s-squashfs-sysupgrade.bin", id), "type": "sysupgrade", "filesystem": "squashfs", "sha256": "00"},
				{"name": fmt.Sprintf("openwrt-23.05.3-bench-generic-%s-squashfs-factory.bin", id), "type": "factory", "filesystem": "squashfs", "sha256": "00"},
			},
			"supported_devices": []string{fmt.Sprintf("vendor%d,router-%d", i%50, i)},
			"titles":            []map[string]string{{"vendor": fmt.Sprintf("Vendor%d", i%50), "model": fmt.Sprintf("Router %d", i), "variant": "v1"}},
		}
	}
	b, err := json.Marshal(map[string]any{"target": "bench/generic", "version_number": "23.05.3", "profiles": profiles})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func BenchmarkTypesFor5000(b *testing.B) {
	m, err := imagemap.ImportProfiles(bytes.NewReader(profilesDoc(b, 5000)))
	if err != nil {
		b.Fatal(err)
	}
	if m.Len() != 5000 {
		b.Fatalf("imported %d types", m.Len())
	}
	m = imagemap.OpenWrt().Merge(m)
	b.Run("model+board_name", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if len(m.TypesFor("Vendor21 Router 2521 v1", "vendor21,router-2521")) != 1 {
				b.Fatal("not found")
			}
		}
	})
	b.Run("folded model", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if len(m.TypesFor("  VENDOR21 router 2521 V1 ", "")) != 1 {
				b.Fatal("not found")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if m.TypesFor("Nobody", "nobody,nothing") != nil {
				b.Fatal("found")
			}
		}
	})
	b.Run("Fits", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !m.Fits("bench-generic-vendor21_router-2521-squashfs-sysupgrade.bin", "", "vendor21,router-2521") {
				b.Fatal("does not fit")
			}
		}
	})
}

func BenchmarkImportProfiles5000(b *testing.B) {
	doc := profilesDoc(b, 5000)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := imagemap.ImportProfiles(bytes.NewReader(doc)); err != nil {
			b.Fatal(err)
		}
	}
}

// zeroImage is an io.ReaderAt of size bytes: zeros followed by tail. It
// holds no memory for the zeros, so images of any size cost nothing.
type zeroImage struct {
	size int64
	tail []byte
}

func newZeroImage(tb testing.TB, size int64) *zeroImage {
	tb.Helper()
	// The tail is a metadata block whose CRC covers size-len(block) zeros.
	var block bytes.Buffer
	md := &imagemap.Metadata{
		MetadataVersion: "1.1", CompatVersion: "1.0",
		SupportedDevices: []string{"tplink,archer-c7-v2"},
		Version:          imagemap.Version{Dist: "OpenWrt", Version: "23.05.3", Revision: "r23809-234f1a2efa", Target: "ath79/generic", Board: "tplink_archer-c7-v2"},
	}
	// Feed the zeros through the writer to get the right CRC, discarding
	// them, then keep only the block.
	var sink countingDiscard
	w := imagemap.NewWriter(&sink)
	if _, err := io.CopyN(w, zeroReader{}, size-blockLen(tb, md)); err != nil {
		tb.Fatal(err)
	}
	sink.keep = &block
	if err := w.AppendMetadata(md); err != nil {
		tb.Fatal(err)
	}
	return &zeroImage{size: size, tail: block.Bytes()}
}

func blockLen(tb testing.TB, md *imagemap.Metadata) int64 {
	tb.Helper()
	var buf bytes.Buffer
	if err := imagemap.AppendMetadata(&buf, bytes.NewReader(nil), md); err != nil {
		tb.Fatal(err)
	}
	return int64(buf.Len())
}

type countingDiscard struct{ keep *bytes.Buffer }

func (c *countingDiscard) Write(p []byte) (int, error) {
	if c.keep != nil {
		return c.keep.Write(p)
	}
	return len(p), nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func (z *zeroImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= z.size {
		return 0, io.EOF
	}
	n := 0
	tailStart := z.size - int64(len(z.tail))
	for n < len(p) && off < z.size {
		if off < tailStart {
			k := min(int64(len(p)-n), tailStart-off)
			clear(p[n : n+int(k)])
			n += int(k)
			off += k
			continue
		}
		k := copy(p[n:], z.tail[off-tailStart:])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var imageSizes = []struct {
	name string
	size int64
}{{"1MiB", 1 << 20}, {"32MiB", 32 << 20}, {"256MiB", 256 << 20}}

func BenchmarkReadMetadata(b *testing.B) {
	for _, s := range imageSizes {
		img := newZeroImage(b, s.size)
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				md, err := imagemap.ReadMetadata(img, img.size)
				if err != nil || len(md.SupportedDevices) != 1 {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyCRC(b *testing.B) {
	for _, s := range imageSizes[:2] {
		img := newZeroImage(b, s.size)
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(s.size)
			b.ReportAllocs()
			for b.Loop() {
				if err := imagemap.VerifyCRC(context.Background(), img, img.size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestZeroImage checks the benchmark's synthetic image is a valid one.
func TestZeroImage(t *testing.T) {
	t.Parallel()
	img := newZeroImage(t, 1<<20)
	md, err := imagemap.ReadMetadata(img, img.size)
	if err != nil {
		t.Fatal(err)
	}
	if !md.Supports("tplink,archer-c7-v2") {
		t.Fatal("metadata lost")
	}
	if err := imagemap.VerifyCRC(context.Background(), img, img.size); err != nil {
		t.Fatal(err)
	}
}
