package imagemap_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

const (
	fixtureMetaJSON  = `{ "metadata_version": "1.1", "compat_version": "1.0", "supported_devices":["tplink,archer-c7-v2","archer-c7-v2"], "version": { "dist": "OpenWrt", "version": "23.05.3", "revision": "r23809-234f1a2efa", "target": "ath79/generic", "board": "tplink_archer-c7-v2" } }` + "\n"
	fixtureSignature = "untrusted comment: signed by key 0123456789abcdef\nRWQBI0VniavN7w==\n"
)

// fixtureBody is the image body of the testdata/fwtool images.
func fixtureBody() []byte {
	b := make([]byte, 5000)
	for i := range b {
		b[i] = byte((i*7 + 3) % 251)
	}
	return b
}

var fixtureMetadata = imagemap.Metadata{
	MetadataVersion:  "1.1",
	CompatVersion:    "1.0",
	SupportedDevices: []string{"tplink,archer-c7-v2", "archer-c7-v2"},
	Version: imagemap.Version{
		Dist: "OpenWrt", Version: "23.05.3", Revision: "r23809-234f1a2efa",
		Target: "ath79/generic", Board: "tplink_archer-c7-v2",
	},
}

var ignoreRaw = cmpopts.IgnoreFields(imagemap.Metadata{}, "Raw")

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fwtool", name))
	require.NoError(t, err)
	return b
}

// buildImage returns body followed by a metadata block for m, as fwtool -I
// writes it.
func buildImage(t testing.TB, body []byte, m imagemap.Metadata) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, imagemap.AppendMetadata(&buf, bytes.NewReader(body), &m))
	return buf.Bytes()
}

func TestReadMetadataFwtoolImages(t *testing.T) {
	t.Parallel()
	for name, signed := range map[string]bool{
		"archer-c7-v2-metadata.bin": false,
		"archer-c7-v2-signed.bin":   true,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			img := readFixture(t, name)
			md, err := imagemap.ReadMetadata(bytes.NewReader(img), int64(len(img)))
			require.NoError(t, err)
			want := fixtureMetadata
			want.Signed = signed
			assert.Empty(t, cmp.Diff(&want, md, ignoreRaw))
			assert.JSONEq(t, fixtureMetaJSON, string(md.Raw))
			assert.True(t, md.Supports("tplink,archer-c7-v2"))
			assert.True(t, md.Supports(" TPLINK,Archer-C7-V2 "))
			assert.False(t, md.Supports("tplink,archer-c7-v5"))
			assert.False(t, md.Supports(""))
			require.NoError(t, imagemap.VerifyCRC(context.Background(), bytes.NewReader(img), int64(len(img))))
		})
	}
}

func TestWriterMatchesFwtool(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := imagemap.NewWriter(&buf)
	_, err := w.Write(fixtureBody())
	require.NoError(t, err)
	require.NoError(t, w.AppendMetadata(&imagemap.Metadata{Raw: []byte(fixtureMetaJSON)}))
	assert.Equal(t, readFixture(t, "archer-c7-v2-metadata.bin"), buf.Bytes(), "metadata block differs from fwtool -I")
	require.NoError(t, w.AppendSignature([]byte(fixtureSignature)))
	assert.Equal(t, readFixture(t, "archer-c7-v2-signed.bin"), buf.Bytes(), "signature block differs from fwtool -S")
	assert.Equal(t, int64(buf.Len()), w.Written())
}

func TestMetadataRoundTrip(t *testing.T) {
	t.Parallel()
	in := imagemap.Metadata{
		MetadataVersion:     "1.1",
		CompatVersion:       "2.0",
		CompatMessage:       "Config cannot be migrated from swconfig to DSA",
		SupportedDevices:    []string{"acme,x1"},
		NewSupportedDevices: []string{"acme,x1-dsa"},
		Version:             imagemap.Version{Dist: "OpenWrt", Version: "SNAPSHOT", Revision: "r1-abc", Target: "ramips/mt7621", Board: "acme_x1"},
	}
	for _, bodyLen := range []int{0, 1, 4096} {
		img := buildImage(t, bytes.Repeat([]byte{0xa5}, bodyLen), in)
		md, err := imagemap.ReadMetadata(bytes.NewReader(img), int64(len(img)))
		require.NoError(t, err)
		assert.Empty(t, cmp.Diff(&in, md, ignoreRaw))
		assert.NoError(t, imagemap.VerifyCRC(context.Background(), bytes.NewReader(img), int64(len(img))))
	}
}

func TestReadMetadataNoMetadata(t *testing.T) {
	t.Parallel()
	var sigOnly bytes.Buffer
	w := imagemap.NewWriter(&sigOnly)
	_, _ = w.Write(fixtureBody())
	require.NoError(t, w.AppendSignature([]byte("sig")))

	for name, img := range map[string][]byte{
		"empty":          nil,
		"short":          []byte("FWx0"),
		"plain image":    fixtureBody(),
		"signature only": sigOnly.Bytes(),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			md, err := imagemap.ReadMetadata(bytes.NewReader(img), int64(len(img)))
			assert.ErrorIs(t, err, imagemap.ErrNoMetadata)
			assert.NotErrorIs(t, err, imagemap.ErrCorruptMetadata)
			assert.Nil(t, md)
			assert.ErrorIs(t, imagemap.VerifyCRC(context.Background(), bytes.NewReader(img), int64(len(img))), imagemap.ErrNoMetadata)
		})
	}
}

// trailerAt returns the offset of the last trailer of img.
func trailerAt(img []byte) int { return len(img) - 16 }

func TestReadMetadataCorrupt(t *testing.T) {
	t.Parallel()
	good := buildImage(t, fixtureBody(), fixtureMetadata)
	withJSON := func(doc string) []byte {
		return buildImage(t, fixtureBody(), imagemap.Metadata{Raw: []byte(doc)})
	}
	setSize := func(size uint32) []byte {
		img := bytes.Clone(good)
		binary.BigEndian.PutUint32(img[trailerAt(img)+12:], size)
		return img
	}
	tests := []struct {
		name    string
		img     []byte
		size    int64 // 0: len(img)
		wantErr error
		msg     string
	}{
		{"block size smaller than trailer", setSize(15), 0, imagemap.ErrCorruptMetadata, "smaller than the trailer"},
		{"block size zero", setSize(0), 0, imagemap.ErrCorruptMetadata, "smaller than the trailer"},
		{"block without header", setSize(16 + 4), 0, imagemap.ErrCorruptMetadata, "header"},
		{"block larger than image", setSize(uint32(len(good)) + 1), 0, imagemap.ErrCorruptMetadata, "before the start"},
		{"block larger than cap", setSize(imagemap.MaxMetadataSize + 17), 0, imagemap.ErrCorruptMetadata, "limit"},
		{"block size max uint32", setSize(0xffffffff), 0, imagemap.ErrCorruptMetadata, "limit"},
		{"header version", func() []byte {
			img := bytes.Clone(good)
			binary.BigEndian.PutUint32(img[trailerAt(img)-(len(good)-5000-16):], 7)
			return img
		}(), 0, imagemap.ErrCorruptMetadata, "header version 7"},
		{"invalid JSON", withJSON(`{"supported_devices": [`), 0, imagemap.ErrCorruptMetadata, "JSON"},
		{"JSON list", withJSON(`["a"]`), 0, imagemap.ErrCorruptMetadata, "must be an object"},
		{"JSON null", withJSON(`null`), 0, imagemap.ErrCorruptMetadata, "must be an object"},
		{"blank JSON", withJSON(" \n"), 0, imagemap.ErrCorruptMetadata, ""},
		{"devices as string", withJSON(`{"supported_devices": "acme,x1"}`), 0, imagemap.ErrCorruptMetadata, `"supported_devices"`},
		{"version as string", withJSON(`{"version": "23.05"}`), 0, imagemap.ErrCorruptMetadata, `"version"`},
		{"board as number", withJSON(`{"version": {"board": 1}}`), 0, imagemap.ErrCorruptMetadata, `"version.board"`},
		{"size larger than reader", good, int64(len(good)) + 100, io.ErrUnexpectedEOF, "size larger"},
		{"negative size", good, -1, nil, "negative"},
		{"too many blocks", func() []byte {
			var buf bytes.Buffer
			w := imagemap.NewWriter(&buf)
			for range 9 {
				require.NoError(t, w.AppendSignature([]byte("s")))
			}
			return buf.Bytes()
		}(), 0, imagemap.ErrCorruptMetadata, "more than 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			size := tt.size
			if size == 0 {
				size = int64(len(tt.img))
			}
			md, err := imagemap.ReadMetadata(bytes.NewReader(tt.img), size)
			require.Error(t, err)
			assert.Nil(t, md)
			if tt.wantErr != nil {
				assert.ErrorIs(t, err, tt.wantErr)
			}
			assert.NotErrorIs(t, err, imagemap.ErrNoMetadata)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestMetadataNumbersAccepted(t *testing.T) {
	t.Parallel()
	md, err := imagemap.ParseMetadata([]byte(`{"metadata_version": 1.1, "compat_version": 1, "supported_devices": []}` + "\n\x00\x00"))
	require.NoError(t, err)
	assert.Equal(t, "1.1", md.MetadataVersion)
	assert.Equal(t, "1", md.CompatVersion)
	_, err = imagemap.ParseMetadata([]byte(`{"compat_version": true}`))
	assert.ErrorIs(t, err, imagemap.ErrCorruptMetadata)
}

func TestVerifyCRC(t *testing.T) {
	t.Parallel()
	signed := readFixture(t, "archer-c7-v2-signed.bin")
	metaStart := 5000
	sigTrailer := trailerAt(signed)
	tests := []struct {
		name string
		flip int // byte offset to corrupt
		msg  string
	}{
		{"first byte of body", 0, "CRC"},
		{"last byte of body", metaStart - 1, "CRC"},
		{"metadata JSON", metaStart + 20, "CRC"},
		{"signature data", sigTrailer - 3, "CRC"},
		{"metadata trailer crc field", metaStart + 8 + len(fixtureMetaJSON) + 4, "CRC"},
		{"signature trailer crc field", sigTrailer + 4, "CRC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			img := bytes.Clone(signed)
			img[tt.flip] ^= 0x01
			err := imagemap.VerifyCRC(context.Background(), bytes.NewReader(img), int64(len(img)))
			assert.ErrorIs(t, err, imagemap.ErrCorruptMetadata)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}

	t.Run("context cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := imagemap.VerifyCRC(ctx, bytes.NewReader(signed), int64(len(signed)))
		assert.ErrorIs(t, err, context.Canceled)
	})
}

// spyReaderAt records the lowest offset read.
type spyReaderAt struct {
	r      io.ReaderAt
	lowest int64
	bytes  int64
}

func (s *spyReaderAt) ReadAt(p []byte, off int64) (int, error) {
	s.lowest = min(s.lowest, off)
	s.bytes += int64(len(p))
	return s.r.ReadAt(p, off)
}

func TestReadMetadataReadsOnlyTheTail(t *testing.T) {
	t.Parallel()
	img := buildImage(t, bytes.Repeat([]byte{0}, 1<<20), fixtureMetadata)
	blockLen := int64(len(img) - 1<<20)
	spy := &spyReaderAt{r: bytes.NewReader(img), lowest: int64(len(img))}
	_, err := imagemap.ReadMetadata(spy, int64(len(img)))
	require.NoError(t, err)
	assert.Equal(t, int64(1<<20), spy.lowest, "read below the metadata block")
	assert.Equal(t, blockLen, spy.bytes, "read more than the block and its trailer")
}

func TestWriterRejectsOversizedBlock(t *testing.T) {
	t.Parallel()
	w := imagemap.NewWriter(io.Discard)
	err := w.AppendMetadata(&imagemap.Metadata{Raw: []byte(`"` + strings.Repeat("x", imagemap.MaxMetadataSize) + `"`)})
	assert.ErrorContains(t, err, "limit")
	assert.Zero(t, w.Written())
}

func TestParseMetadataLeadingWhiteSpace(t *testing.T) {
	t.Parallel()
	md, err := imagemap.ParseMetadata([]byte("\n  {\"supported_devices\":[\"acme,x1\"]}"))
	require.NoError(t, err)
	assert.Equal(t, []string{"acme,x1"}, md.SupportedDevices)
	for _, bad := range []string{" null", "\n[]", "   "} {
		_, err := imagemap.ParseMetadata([]byte(bad))
		assert.ErrorIs(t, err, imagemap.ErrCorruptMetadata, "%q", bad)
	}
}

func TestMetadataBoards(t *testing.T) {
	t.Parallel()
	plain := &imagemap.Metadata{CompatVersion: "1.0", SupportedDevices: []string{"a,b", "c,d"}}
	assert.Equal(t, []string{"a,b", "c,d"}, plain.Boards())
	assert.True(t, plain.Supports("C,D"))
	dsa := &imagemap.Metadata{CompatVersion: "1.1", SupportedDevices: []string{"a long message for older releases"},
		NewSupportedDevices: []string{"x,y"}}
	assert.Equal(t, []string{"x,y"}, dsa.Boards())
	assert.False(t, dsa.Supports("a long message for older releases"))
	msgOnly := &imagemap.Metadata{CompatVersion: "2.0", SupportedDevices: []string{"message"}}
	assert.Empty(t, msgOnly.Boards(), "with compat_version other than 1.0 supported_devices is a message")
	noCompat := &imagemap.Metadata{SupportedDevices: []string{"e,f"}}
	assert.Equal(t, []string{"e,f"}, noCompat.Boards(), "no compat_version means 1.0")
	var none *imagemap.Metadata
	assert.Empty(t, none.Boards())
}
