package openwrttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

// TestImageMetadataIsReal reads the metadata of Image back with imagemap:
// the trailer, its CRC and the document are what fwtool writes.
func TestImageMetadataIsReal(t *testing.T) {
	t.Parallel()
	const msg = "Config cannot be migrated from swconfig to DSA"
	for _, tc := range []struct {
		name     string
		im       Image
		doc      string
		boards   []string
		newBoard []string
		compat   string
	}{
		{
			name:   "23.05",
			im:     goodImage,
			doc:    `{  "metadata_version": "1.1", "compat_version": "1.0",   "supported_devices":["tplink,archer-c7-v2"], "version": { "dist": "OpenWrt", "version": "23.05.3", "revision": "r23809-234f1a2efa", "target": "ath79/generic", "board": "tplink_archer-c7-v2" } }`,
			boards: []string{DefaultBoardName}, compat: "1.0",
		},
		{
			name:     "compat 1.1",
			im:       Image{Boards: []string{DefaultBoardName, "tplink,archer-c7-v2-alt"}, Release: newRelease, Size: 1 << 20, CompatVersion: "1.1", CompatMessage: msg},
			doc:      `{  "metadata_version": "1.1", "compat_version": "1.1", "compat_message": "` + msg + `", "new_supported_devices": ["tplink,archer-c7-v2","tplink,archer-c7-v2-alt"], "supported_devices": ["tplink,archer-c7-v2 tplink,archer-c7-v2-alt - Image version mismatch: image 1.1, device 1.0. Please wipe config during upgrade (force required) or reinstall. Reason: ` + msg + `"],  "version": { "dist": "OpenWrt", "version": "23.05.3", "revision": "r23809-234f1a2efa", "target": "ath79/generic", "board": "tplink_archer-c7-v2" } }`,
			boards:   []string{"tplink,archer-c7-v2 tplink,archer-c7-v2-alt - Image version mismatch: image 1.1, device 1.0. Please wipe config during upgrade (force required) or reinstall. Reason: " + msg},
			newBoard: []string{DefaultBoardName, "tplink,archer-c7-v2-alt"}, compat: "1.1",
		},
		{
			name:   "19.07",
			im:     Image{Boards: []string{DefaultBoardName}, Release: ReleaseDescription("19.07"), Size: 5000, Fwtool: true},
			doc:    `{  "metadata_version": "1.0", "supported_devices":["tplink,archer-c7-v2"], "version": { "dist": "OpenWrt", "version": "19.07.10", "revision": "r11427-9ce6aa9d8d", "target": "ath79/generic", "board": "tplink_archer-c7-v2" } }`,
			boards: []string{DefaultBoardName},
		},
		{
			name:   "17.01",
			im:     Image{Boards: []string{DefaultBoardName}, Release: ReleaseDescription("17.01"), Fwtool: true, Target: "ar71xx/generic"},
			doc:    `{  "supported_devices":["tplink,archer-c7-v2"], "version": { "dist": "LEDE", "version": "17.01.7", "revision": "r4030-6028f00df0", "board": "ar71xx" } }`,
			boards: []string{DefaultBoardName},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := tc.im.Bytes()
			require.Equal(t, tc.im.Len(), int64(len(b)))
			require.Equal(t, max(tc.im.Size, int64(len(tc.im.Header()))+tc.im.blockLen()), tc.im.Len())
			sum := sha256.Sum256(b)
			require.Equal(t, hex.EncodeToString(sum[:]), tc.im.SHA256())
			require.NoError(t, imagemap.VerifyCRC(context.Background(), bytes.NewReader(b), int64(len(b))))
			md, err := imagemap.ReadMetadata(bytes.NewReader(b), int64(len(b)))
			require.NoError(t, err)
			assert.Equal(t, tc.doc, string(md.Raw))
			assert.Equal(t, tc.boards, md.SupportedDevices)
			assert.Equal(t, tc.newBoard, md.NewSupportedDevices)
			assert.Equal(t, tc.compat, md.CompatVersion)
			r := parseRelease(tc.im.Release)
			assert.Equal(t, imagemap.Version{Dist: r.Dist, Version: r.Version, Revision: r.Revision, Target: md.Version.Target, Board: md.Version.Board}, md.Version)
			assert.Equal(t, md.SupportedDevices, tc.im.FwtoolMetadata().SupportedDevices)
			// The same body as the image without metadata.
			plain := tc.im
			plain.Fwtool, plain.CompatVersion, plain.Size = false, "", tc.im.Len()-tc.im.blockLen()
			require.True(t, bytes.HasPrefix(b, plain.Bytes()))
		})
	}
	// Images without metadata are as before: Size bytes, header and payload.
	require.Equal(t, int64(100000), Image{Boards: []string{"a"}, Size: 100000}.Len())
	require.Nil(t, testImage.FwtoolMetadata())
}

func TestImageMetadataFaults(t *testing.T) {
	t.Parallel()
	badCRC := goodImage
	badCRC.BadCRC = true
	b := badCRC.Bytes()
	require.ErrorIs(t, imagemap.VerifyCRC(context.Background(), bytes.NewReader(b), int64(len(b))), imagemap.ErrCorruptMetadata)
	corrupt := Image{Boards: []string{DefaultBoardName}, Release: newRelease, Size: 8 << 10, Metadata: &imagemap.Metadata{Raw: []byte(`{"supported_devices": [`)}}
	noList := Image{Boards: []string{DefaultBoardName}, Release: newRelease, Size: 8 << 10, Metadata: &imagemap.Metadata{Raw: []byte(`{"version": {}}`)}}
	for _, tc := range []struct {
		name, rel string
		cfg       Config
		im        Image
		opts      string
		status    int
		out       string // stdout + stderr, undated
	}{
		{"bad CRC: no metadata", "22.03", Config{}, badCRC, "", 0, "DATE upgrade: Image metadata not present\n"},
		{"bad CRC, metadata required", "22.03", Config{RequireImageMetadata: true}, badCRC, "", 1,
			"DATE upgrade: Image metadata not present\nDATE upgrade: Use sysupgrade -F to override this check when downgrading or flashing to vendor firmware\nImage check failed.\n"},
		{"bad CRC, metadata required, -F", "22.03", Config{RequireImageMetadata: true}, badCRC, "-F", 0,
			"DATE upgrade: Image metadata not present\nImage check failed but --force given - will update anyway!\n"},
		{"no metadata 19.07", "19.07", Config{}, testImage, "", 0, "Image metadata not found\n"},
		{"no metadata 17.01 required", "17.01", Config{RequireImageMetadata: true}, testImage, "", 1,
			"Image metadata not found\nUse sysupgrade -F to override this check when downgrading or flashing to vendor firmware\nImage check 'fwtool_check_image' failed.\n"},
		{"no metadata 15.05", "15.05", Config{RequireImageMetadata: true}, testImage, "", 0, ""},
		{"corrupt JSON", "22.03", Config{}, corrupt, "", 1, "Failed to parse message data\nDATE upgrade: Invalid image metadata\nImage check failed.\n"},
		{"corrupt JSON 17.01", "17.01", Config{}, corrupt, "", 1, "Invalid image metadata\nImage check 'fwtool_check_image' failed.\nFailed to parse message data\n"},
		{"no supported_devices", "22.03", Config{}, noList, "", 1, "Image check failed.\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, tc.rel, tc.cfg)
			c := uploadImage(t, d, tc.im, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade -T "+tc.opts+" /tmp/fw.bin", nil)
			assert.Equal(t, tc.status, r.status)
			assert.Equal(t, tc.out, undate(r.stdout+r.stderr))
		})
	}
}

// TestMetadataOnlyImage uploads a file that is no FWSIM image but carries
// real metadata, as an OpenWrt sysupgrade image does.
func TestMetadataOnlyImage(t *testing.T) {
	t.Parallel()
	body := make([]byte, 300<<10)
	_, _ = rand.Read(body)
	build := func(rel string) []byte {
		var buf bytes.Buffer
		m := Image{Boards: []string{DefaultBoardName}, Release: rel, Fwtool: true}.FwtoolMetadata()
		require.NoError(t, imagemap.AppendMetadata(&buf, bytes.NewReader(body), m))
		return buf.Bytes()
	}
	for _, tc := range []struct {
		dev, img string
		ok       bool
	}{
		{"22.03", "23.05", true},
		{"19.07", "17.01", true},
		{"15.05", "19.07", false},
	} {
		t.Run(tc.dev, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, tc.dev, Config{RebootDelay: 50 * time.Millisecond})
			c := dial(t, d)
			require.NoError(t, catUpload(c, "/tmp/fw.bin", bytes.NewReader(build(ReleaseDescription(tc.img)))))
			r := run(t, c, "sysupgrade -T /tmp/fw.bin", nil)
			if !tc.ok {
				require.Equal(t, result{stdout: "Invalid image type.\nImage check 'platform_check_image' failed.\n", status: 1}, r)
				return
			}
			require.Equal(t, 0, r.status, r.stdout+r.stderr)
			run(t, c, "sysupgrade /tmp/fw.bin", nil)
			require.NoError(t, d.WaitReboots(waitCtx(t), 1))
			require.Equal(t, ReleaseDescription(tc.img), d.Release(), "the release comes from the metadata")
		})
	}
}

// TestMetadataAfterUpload checks that the end of a large file survives
// every upload method, so fwtool reads the metadata of what was uploaded.
func TestMetadataAfterUpload(t *testing.T) {
	t.Parallel()
	big := goodImage
	big.Size = 3<<20 + 17
	other := big
	other.Metadata = Image{Boards: []string{"other,board"}, Release: newRelease, Fwtool: true}.FwtoolMetadata()
	for _, m := range uploadMethods {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			d := relDevice(t, "23.05", Config{SFTP: true, SCP: true})
			c := dial(t, d)
			require.NoError(t, m.upload(c, "/tmp/fw.bin", big))
			r := run(t, c, "sysupgrade -T /tmp/fw.bin", nil)
			require.Equal(t, result{}, r)
			require.NoError(t, m.upload(c, "/tmp/fw.bin", other))
			r = run(t, c, "sysupgrade -T /tmp/fw.bin", nil)
			require.Equal(t, 1, r.status)
			require.Contains(t, r.stderr, "not supported by this image")
		})
	}
	t.Run("a corrupted upload fails the CRC", func(t *testing.T) {
		t.Parallel()
		d := relDevice(t, "23.05", Config{Faults: Faults{CorruptUploads: 1}})
		c := uploadImage(t, d, big, "/tmp/fw.bin")
		r := run(t, c, "sysupgrade -T /tmp/fw.bin", nil)
		require.Equal(t, 0, r.status, "the header is intact and metadata is not required")
		require.Equal(t, "DATE upgrade: Image metadata not present\n", undate(r.stderr))
		require.True(t, strings.Contains(run(t, c, "md5sum /tmp/fw.bin", nil).stdout, "  /tmp/fw.bin\n"))
	})
}

func TestTailWriter(t *testing.T) {
	t.Parallel()
	data := make([]byte, 3*tailSize+123)
	_, _ = rand.Read(data)
	for _, chunk := range []int{1, 7, 4096, tailSize - 1, tailSize, tailSize + 5, len(data)} {
		var w tailWriter
		for off := 0; off < len(data); off += chunk {
			_, _ = w.Write(data[off:min(off+chunk, len(data))])
		}
		require.Equal(t, data[len(data)-tailSize:], w.tail, "chunk %d", chunk)
		require.Equal(t, crc32.ChecksumIEEE(data[:len(data)-tailSize]), w.crc, "chunk %d", chunk)
	}
	var w tailWriter
	_, _ = w.Write(data[:100])
	require.Equal(t, data[:100], w.tail, "a short file is all tail")
	require.Zero(t, w.crc)
}

// TestNewImage checks how NewImage reads its release and names its file,
// and that every series' device takes the image of its own series, with
// the metadata required where the release can require it.
func TestNewImage(t *testing.T) {
	t.Parallel()
	const typ = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	for _, tc := range []struct {
		in, release, file string
		fwtool            bool
	}{
		{"23.05", "OpenWrt 23.05.6 r24232-539228933c", "openwrt-23.05.6-" + typ, true},
		{"23.05.3", "OpenWrt 23.05.3", "openwrt-23.05.3-" + typ, true},
		{" OpenWrt 23.05.3 r23809-234f1a2efa", "OpenWrt 23.05.3 r23809-234f1a2efa", "openwrt-23.05.3-" + typ, true},
		{"23.05.3 r23809-234f1a2efa", "OpenWrt 23.05.3 r23809-234f1a2efa", "openwrt-23.05.3-" + typ, true},
		{"17.01", "LEDE Reboot 17.01.7 r4030-6028f00df0", "lede-17.01.7-" + typ, true},
		{"17.01.4", "LEDE Reboot 17.01.4", "lede-17.01.4-" + typ, true},
		{"15.05", "OpenWrt Chaos Calmer 15.05.1", "openwrt-15.05.1-" + typ, false},
		{"", DefaultRelease, "openwrt-22.03.5-" + typ, true},
		{"OpenWrt SNAPSHOT r28000-0123456789", "OpenWrt SNAPSHOT r28000-0123456789", "openwrt-" + typ, true},
	} {
		im := NewImage(tc.in, "", -1)
		assert.Equal(t, tc.release, im.Release, tc.in)
		assert.Equal(t, tc.file, im.FileName(), tc.in)
		assert.Equal(t, typ, imagemap.TypeFromFileName(im.FileName()), tc.in)
		assert.Equal(t, []string{DefaultBoardName}, im.Boards, tc.in)
		assert.Equal(t, tc.fwtool, im.FwtoolMetadata() != nil, tc.in)
		assert.Less(t, im.Len(), int64(1<<10), "size 0 is the smallest image")
	}

	for _, rel := range Releases() {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			im := NewImage(rel, "glinet,gl-ar150", 64<<10)
			require.Equal(t, int64(64<<10), im.Len())
			b := im.Bytes()
			require.Len(t, b, 64<<10)
			p := ProfileFor(rel)
			md, err := imagemap.ReadMetadata(bytes.NewReader(b), int64(len(b)))
			if p.Fwtool {
				require.NoError(t, err)
				require.Equal(t, []string{"glinet,gl-ar150"}, md.Boards())
				require.Equal(t, parseRelease(p.Description).Version, md.Version.Version)
			} else {
				require.ErrorIs(t, err, imagemap.ErrNoMetadata, "builds before 17.01 append none")
			}
			if !p.Test() {
				return // 12.09: no sysupgrade --test
			}
			d := setup(t, Config{Release: ReleaseDescription(rel), BoardName: "glinet,gl-ar150", RequireImageMetadata: p.Fwtool})
			c := uploadImage(t, d, im, "/tmp/fw.bin")
			r := run(t, c, "sysupgrade -T /tmp/fw.bin", nil)
			require.Equal(t, 0, r.status, "%s%s", r.stdout, r.stderr)
			other := NewImage(rel, DefaultBoardName, 64<<10)
			require.NoError(t, catUpload(c, "/tmp/other.bin", other.Reader()))
			require.NotEqual(t, 0, run(t, c, "sysupgrade -T /tmp/other.bin", nil).status, "another board's image")
		})
	}
}
