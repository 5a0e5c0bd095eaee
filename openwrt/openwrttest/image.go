package openwrttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"strings"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

// Image is a simulated firmware image: a sysupgrade file for one release
// and its boards, which a Device checks and flashes as OpenWrt does. Build
// one with NewImage (the release's own fwtool metadata included), then
// change fields for the unusual cases (compat versions, corrupt or missing
// metadata). Images are values: nothing is held in memory, the bytes are
// generated again by every Reader, identical each time, so an image of any
// size costs nothing until it is read.
//
// Its bytes are a header line,
//
//	FWSIM1 {"boards":["tplink,archer-c7-v2"],"release":"OpenWrt 23.05.3 r23809-234f1a2efa"}\n
//
// followed by a deterministic pseudo-random payload (ChaCha8 seeded with the
// SHA-256 of the header line) and, when the image has fwtool metadata, the
// metadata block OpenWrt's build appends ("fwtool -I"): the 8-byte block
// header, the JSON document and the 16-byte trailer with the CRC of every
// byte before it, written with imagemap.Writer. The whole is Len bytes.
//
// The header line stands for a vendor header: the simulated
// platform_check_image accepts it when Boards names the device's board_name
// (never its model). The metadata is what sysupgrade's fwtool check reads
// from the uploaded file, never from its name: its supported_devices (or
// new_supported_devices) and compat_version decide, on releases that check
// them, whether the device takes the image. The upgrader package's
// Engine.UploadImage reads the same metadata for the image's Boards.
type Image struct {
	// Boards are the supported board names (/tmp/sysinfo/board_name).
	Boards []string
	// Release is the DISTRIB_DESCRIPTION the device runs after the flash,
	// e.g. "OpenWrt 23.05.3 r23809-234f1a2efa". It also chooses the format
	// of the fwtool metadata and the file name.
	Release string
	// Size is the total size in bytes. An image is never shorter than its
	// header line and metadata block (less than 1 KiB): 0 makes the
	// smallest image.
	Size int64

	// Fwtool appends fwtool metadata as the build of Release writes it (see
	// Image.FwtoolMetadata): supported_devices are Boards, version is read
	// from Release and Target. NewImage sets it for 17.01 and later, whose
	// builds append metadata; false (the zero value) appends none.
	Fwtool bool
	// CompatVersion is the metadata's compat_version; "" is "1.0". A value
	// other than "1.0" implies Fwtool and, as OpenWrt does, moves Boards to
	// new_supported_devices and puts a message for older devices in
	// supported_devices.
	CompatVersion string
	// CompatMessage is the metadata's compat_message (DEVICE_COMPAT_MESSAGE),
	// e.g. "Config cannot be migrated from swconfig to DSA".
	CompatMessage string
	// Target is the metadata's version.target. Defaults to DefaultTarget.
	Target string
	// Metadata, when non-nil, is appended instead of the generated metadata
	// (its Raw verbatim when non-empty, for corrupt documents), whatever
	// Fwtool says.
	Metadata *imagemap.Metadata
	// BadCRC writes the metadata trailer with a wrong CRC: fwtool then finds
	// no metadata.
	BadCRC bool
}

// NewImage returns the sysupgrade image an OpenWrt build of release makes
// for board, size bytes long: the way for a host's test to get an image a
// Device takes. The result is a plain Image; set its fields for anything
// else (Target, CompatVersion, more Boards, ...).
//
// release is a series ("23.05", for its last point release, see
// ReleaseDescription), a version ("23.05.3") or a whole DISTRIB_DESCRIPTION
// ("OpenWrt 23.05.3 r23809-234f1a2efa", kept as it is); Image.Release holds
// the description, which is what a flashed device then reports and what a
// build's OS identifier should be. "" is DefaultRelease. board "" is
// DefaultBoardName. size 0 (or less than the header and metadata) makes
// the smallest image.
//
// Images of 17.01 and later carry the fwtool metadata their build appends
// (supported_devices [board] and version; metadata_version from 19.07;
// compat_version "1.0" from 21.02), which sysupgrade and the upgrader
// package read; older ones carry none, as those builds appended none.
func NewImage(release, board string, size int64) Image {
	if board == "" {
		board = DefaultBoardName
	}
	rel := imageRelease(release)
	return Image{
		Boards:  []string{board},
		Release: rel,
		Size:    max(size, 0),
		Fwtool:  ProfileFor(rel).Fwtool,
	}
}

// imageRelease turns a series or a version into a DISTRIB_DESCRIPTION; a
// description is returned as it is.
func imageRelease(release string) string {
	release = strings.TrimSpace(release)
	if release == "" {
		return DefaultRelease
	}
	r := parseRelease(release)
	if r.Dist != "" {
		return release // a description already
	}
	p := ProfileFor(release)
	if r.Version == p.Release || r.Version == parseRelease(p.Description).Version {
		return p.Description
	}
	return releaseFromParts(parseRelease(p.Description).Dist, r.Version, r.Revision)
}

// FileName returns the file name the build of the image's release gives
// it, in the form of 17.01 and later builds:
// "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
// ("lede-" for LEDE releases; no version part for snapshots). As a
// store.Image's Name, it gives the upgrader package the image's type
// (imagemap.TypeFromFileName): the part after the version.
func (im Image) FileName() string {
	r := parseRelease(im.Release)
	parts := []string{"openwrt"}
	if r.Dist != "" {
		parts[0] = strings.ToLower(r.Dist)
	}
	if r.Version != "" && r.Version != "SNAPSHOT" {
		parts = append(parts, r.Version)
	}
	target := im.Target
	if target == "" {
		target = DefaultTarget
	}
	parts = append(parts, strings.ReplaceAll(target, "/", "-"))
	if len(im.Boards) > 0 {
		parts = append(parts, strings.ReplaceAll(im.Boards[0], ",", "_"))
	}
	return strings.Join(append(parts, "squashfs", "sysupgrade.bin"), "-")
}

// Header returns the first line of the image, newline included.
func (im Image) Header() []byte {
	js, _ := json.Marshal(imageHeader{Boards: im.Boards, Release: im.Release})
	return append(append([]byte(imageMagic), js...), '\n')
}

// hasMetadata reports whether the image ends with an fwtool metadata block.
func (im Image) hasMetadata() bool {
	return im.Metadata != nil || im.Fwtool || (im.CompatVersion != "" && im.CompatVersion != "1.0")
}

// metadataBlock returns the metadata to append, or nil.
func (im Image) metadataBlock() *imagemap.Metadata {
	switch {
	case im.Metadata != nil:
		return im.Metadata
	case !im.hasMetadata():
		return nil
	}
	target := im.Target
	if target == "" {
		target = DefaultTarget
	}
	return &imagemap.Metadata{Raw: metadataDoc(im.Release, im.Boards, im.CompatVersion, im.CompatMessage, target)}
}

// FwtoolMetadata returns the fwtool metadata appended to the image, parsed
// by imagemap, or nil when there is none. Its Raw is the document as
// written, e.g. for a 23.05.3 image:
//
//	{  "metadata_version": "1.1", "compat_version": "1.0",   "supported_devices":["tplink,archer-c7-v2"], "version": { "dist": "OpenWrt", "version": "23.05.3", "revision": "r23809-234f1a2efa", "target": "ath79/generic", "board": "tplink_archer-c7-v2" } }
func (im Image) FwtoolMetadata() *imagemap.Metadata {
	m := im.metadataBlock()
	if m == nil {
		return nil
	}
	if len(m.Raw) == 0 {
		return m
	}
	md, err := imagemap.ParseMetadata(m.Raw)
	if err != nil {
		return &imagemap.Metadata{Raw: m.Raw}
	}
	return md
}

// block returns the bytes of the metadata block for a body whose writer
// state is fw, with the CRC spoiled when BadCRC is set.
func (im Image) block(fw *imagemap.Writer, sink *captureSink) []byte {
	m := im.metadataBlock()
	if m == nil {
		return nil
	}
	sink.capture = true
	if err := fw.AppendMetadata(m); err != nil {
		return nil // too large: no block
	}
	b := sink.buf.Bytes()
	if im.BadCRC && len(b) >= fwTrailerSize {
		b[len(b)-fwTrailerSize+4] ^= 0xff
	}
	return b
}

// blockLen returns the length of the metadata block.
func (im Image) blockLen() int64 {
	var sink captureSink
	return int64(len(im.block(imagemap.NewWriter(&sink), &sink)))
}

// Len returns the image's length in bytes.
func (im Image) Len() int64 {
	return max(im.Size, int64(len(im.Header()))+im.blockLen())
}

// Reader streams the image without holding it in memory.
func (im Image) Reader() io.Reader {
	h := im.Header()
	seed := sha256.Sum256(h)
	r := &imageReader{im: im, header: h, rng: rand.NewChaCha8(seed)}
	r.fw = imagemap.NewWriter(&r.sink)
	r.body = im.Len() - im.blockLen()
	return r
}

// Open returns the image as an io.ReadCloser, the shape of an upgrader's
// image source.
func (im Image) Open() (io.ReadCloser, error) { return io.NopCloser(im.Reader()), nil }

// Bytes returns the whole image. Meant for small images in tests.
func (im Image) Bytes() []byte {
	b, _ := io.ReadAll(im.Reader())
	return b
}

// SHA256 returns the hex SHA-256 of the image, computed by streaming it.
func (im Image) SHA256() string {
	h := sha256.New()
	_, _ = io.Copy(h, im.Reader())
	return hex.EncodeToString(h.Sum(nil))
}

// captureSink discards what imagemap.Writer writes for the body (the
// reader hands those bytes out itself) and keeps the metadata block.
type captureSink struct {
	capture bool
	buf     bytes.Buffer
}

func (s *captureSink) Write(p []byte) (int, error) {
	if s.capture {
		return s.buf.Write(p)
	}
	return len(p), nil
}

type imageReader struct {
	im     Image
	header []byte
	rng    *rand.ChaCha8
	body   int64 // body bytes left: header and payload
	fw     *imagemap.Writer
	sink   captureSink
	tail   []byte // the metadata block, once the body is done
	done   bool
}

func (r *imageReader) Read(p []byte) (int, error) {
	if r.body <= 0 {
		if !r.done {
			r.done = true
			r.tail = r.im.block(r.fw, &r.sink)
		}
		if len(r.tail) == 0 {
			return 0, io.EOF
		}
		n := copy(p, r.tail)
		r.tail = r.tail[n:]
		return n, nil
	}
	if int64(len(p)) > r.body {
		p = p[:r.body]
	}
	n := 0
	if len(r.header) > 0 {
		n = copy(p, r.header)
		r.header = r.header[n:]
	}
	if n < len(p) {
		// ChaCha8.Read yields the same stream whatever the chunk sizes.
		_, _ = r.rng.Read(p[n:])
	}
	_, _ = r.fw.Write(p) // the running CRC of the body
	r.body -= int64(len(p))
	return len(p), nil
}
