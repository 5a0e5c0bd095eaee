package imagemap

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// The fwtool format (OpenWrt package/system/fwtool): blocks appended to the
// end of an image, each followed by a 16-byte big-endian trailer
//
//	magic  uint32  "FWx0" (0x46577830)
//	crc32  uint32  see below
//	type   uint8   0 signature, 1 metadata
//	pad    [3]byte
//	size   uint32  block data + trailer, in bytes
//
// A metadata block's data starts with an 8-byte header (version uint32,
// must be 0; flags uint32) followed by the JSON document. A signature block
// may follow the metadata block. A trailer's crc32 is the CRC-32 (IEEE,
// reflected, initial value 0xFFFFFFFF, no final XOR: the bitwise NOT of
// crc32.ChecksumIEEE) of every byte of the file before that trailer.

const (
	fwMagic         = 0x46577830
	fwTrailerSize   = 16
	fwHeaderSize    = 8
	fwTypeSignature = 0
	fwTypeInfo      = 1
	// maxFwBlocks bounds how many trailers ReadMetadata walks back over.
	maxFwBlocks = 8
)

// MaxMetadataSize is the largest fwtool block (data without its trailer)
// that ReadMetadata reads into memory: 1 MiB. fwtool itself writes at most
// 30 KiB of metadata and 1 KiB of signature; larger blocks are rejected.
const MaxMetadataSize = 1 << 20

// ErrNoMetadata reports an image that carries no fwtool metadata block: the
// last 16 bytes are not an fwtool trailer (or only a signature block is
// there). Many valid images have none (x86 combined images, older or
// non-OpenWrt builds); it is not a sign of corruption and callers should
// fall back to other checks rather than fail the image.
var ErrNoMetadata = errors.New("imagemap: image has no fwtool metadata")

// ErrCorruptMetadata is matched (with errors.Is) by every error reporting an
// fwtool trailer or block that is present but malformed: impossible sizes,
// a bad header, invalid JSON, a CRC mismatch.
var ErrCorruptMetadata = errors.New("imagemap: corrupt fwtool metadata")

// Version is the "version" object of fwtool metadata.
type Version struct {
	Dist     string `json:"dist"`     // "OpenWrt"
	Version  string `json:"version"`  // "23.05.3" or "SNAPSHOT"
	Revision string `json:"revision"` // "r23809-234f1a2efa"
	Target   string `json:"target"`   // "ath79/generic"
	Board    string `json:"board"`    // the OpenWrt device name, "tplink_archer-c7-v2"
}

// Metadata is the metadata fwtool appends to an OpenWrt sysupgrade image.
type Metadata struct {
	// MetadataVersion is "metadata_version" ("1.1").
	MetadataVersion string
	// CompatVersion is "compat_version" ("1.0" unless the device's flash
	// layout or configuration changed incompatibly).
	CompatVersion string
	// CompatMessage is "compat_message", set with a non-1.0 CompatVersion.
	CompatMessage string
	// SupportedDevices is "supported_devices": the board names
	// (/tmp/sysinfo/board_name) sysupgrade accepts the image for.
	SupportedDevices []string
	// NewSupportedDevices is "new_supported_devices", set when the image
	// changes the board name.
	NewSupportedDevices []string
	// Version is "version".
	Version Version
	// Raw is the JSON document as found in the image. When writing, a
	// non-empty Raw is written verbatim instead of the fields above.
	Raw json.RawMessage
	// Signed reports that a signature block follows the metadata block
	// (set by ReadMetadata; ignored when writing).
	Signed bool
}

// Boards returns the board names the image is for, as sysupgrade reads
// them: NewSupportedDevices when present; otherwise SupportedDevices, except
// for an image whose CompatVersion is not 1.0, where SupportedDevices holds
// a message for older releases (why they cannot take the image), not board
// names. It may be empty.
func (m *Metadata) Boards() []string {
	if m == nil {
		return nil
	}
	if len(m.NewSupportedDevices) > 0 {
		return m.NewSupportedDevices
	}
	if cv := strings.TrimSpace(m.CompatVersion); cv != "" && cv != "1.0" {
		return nil
	}
	return m.SupportedDevices
}

// Supports reports whether boardName is one of m.Boards(), compared as Map
// compares board names (trimmed, case-insensitive). It is false for an
// empty boardName.
func (m *Metadata) Supports(boardName string) bool {
	return m != nil && matchAny(m.Boards(), boardName) > 0
}

// metadataJSON is the JSON shape of Metadata.
type metadataJSON struct {
	MetadataVersion     flexString `json:"metadata_version,omitempty"`
	CompatVersion       flexString `json:"compat_version,omitempty"`
	CompatMessage       string     `json:"compat_message,omitempty"`
	NewSupportedDevices []string   `json:"new_supported_devices,omitempty"`
	SupportedDevices    []string   `json:"supported_devices"`
	Version             Version    `json:"version"`
}

// flexString accepts a JSON string or number ("1.1" or 1.1).
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("want a string or a number, got %s", describeRaw(b))
	}
	*f = flexString(n)
	return nil
}

// trailer is a decoded fwtool trailer.
type trailer struct {
	magic, crc uint32
	typ        uint8
	size       uint32
}

func decodeTrailer(b []byte) trailer {
	return trailer{
		magic: binary.BigEndian.Uint32(b[0:4]),
		crc:   binary.BigEndian.Uint32(b[4:8]),
		typ:   b[8],
		size:  binary.BigEndian.Uint32(b[12:16]),
	}
}

// block is an fwtool block found by walking trailers back from the end.
type block struct {
	trailer
	trailerAt int64 // offset of the trailer
	dataAt    int64 // offset of the block data
}

// walkBlocks walks fwtool trailers back from the end of the image until it
// finds a metadata block, and returns the blocks it passed, the metadata
// block last. It reads only the trailers.
func walkBlocks(r io.ReaderAt, size int64) ([]block, error) {
	if size < 0 {
		return nil, fmt.Errorf("imagemap: negative image size %d", size)
	}
	var blocks []block
	end := size
	var buf [fwTrailerSize]byte
	for i := 0; ; i++ {
		if end < fwTrailerSize {
			if i == 0 {
				return nil, ErrNoMetadata
			}
			return nil, fmt.Errorf("%w: a signature block but no metadata block before it", ErrNoMetadata)
		}
		at := end - fwTrailerSize
		if err := readAt(r, buf[:], at); err != nil {
			return nil, fmt.Errorf("imagemap: reading fwtool trailer at offset %d of %d: %w", at, size, err)
		}
		t := decodeTrailer(buf[:])
		if t.magic != fwMagic {
			if i == 0 {
				return nil, ErrNoMetadata
			}
			return nil, fmt.Errorf("%w: a signature block but no metadata block before it", ErrNoMetadata)
		}
		if i == maxFwBlocks {
			return nil, fmt.Errorf("%w: more than %d fwtool blocks", ErrCorruptMetadata, maxFwBlocks)
		}
		if t.size < fwTrailerSize {
			return nil, fmt.Errorf("%w: trailer at offset %d: block size %d is smaller than the trailer", ErrCorruptMetadata, at, t.size)
		}
		dataLen := int64(t.size) - fwTrailerSize
		if dataLen > MaxMetadataSize {
			return nil, fmt.Errorf("%w: trailer at offset %d: block of %d bytes exceeds the %d-byte limit", ErrCorruptMetadata, at, dataLen, MaxMetadataSize)
		}
		if int64(t.size) > end {
			return nil, fmt.Errorf("%w: trailer at offset %d: block size %d reaches before the start of the image", ErrCorruptMetadata, at, t.size)
		}
		b := block{trailer: t, trailerAt: at, dataAt: at - dataLen}
		blocks = append(blocks, b)
		if t.typ == fwTypeInfo {
			if dataLen < fwHeaderSize {
				return nil, fmt.Errorf("%w: metadata block at offset %d: %d bytes is shorter than its %d-byte header", ErrCorruptMetadata, b.dataAt, dataLen, fwHeaderSize)
			}
			return blocks, nil
		}
		// A signature block or a type this package does not know:
		// skip it, as fwtool does, and look at the block before.
		end = b.dataAt
	}
}

// readAt fills p from r at off. A ReaderAt may report io.EOF along with a
// full read at the end of its input; that is success.
func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return readErr(err)
}

// readErr makes a short read at the end of the reader explicit.
func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w (is the size larger than the image?)", io.ErrUnexpectedEOF)
	}
	return err
}

// ReadMetadata reads the fwtool metadata of an image of the given size from
// r. It reads only the trailers and the metadata block at the end of the
// image (at most MaxMetadataSize bytes plus a few trailers), never the image
// body, so its cost does not depend on the image size. It does not verify
// the CRC; call VerifyCRC for that (it reads the whole image).
//
// It returns ErrNoMetadata (and a nil *Metadata) for an image without a
// metadata block, an error wrapping ErrCorruptMetadata for a trailer or block
// that is malformed (a size smaller than a trailer, larger than
// MaxMetadataSize or than the image, a header version other than 0, JSON
// that is not an object or has fields of the wrong type), and a wrapped
// io.ErrUnexpectedEOF when size exceeds what r holds.
func ReadMetadata(r io.ReaderAt, size int64) (*Metadata, error) {
	blocks, err := walkBlocks(r, size)
	if err != nil {
		return nil, err
	}
	b := blocks[len(blocks)-1]
	data := make([]byte, b.trailerAt-b.dataAt)
	if err := readAt(r, data, b.dataAt); err != nil {
		return nil, fmt.Errorf("imagemap: reading fwtool metadata at offset %d: %w", b.dataAt, err)
	}
	if v := binary.BigEndian.Uint32(data[:4]); v != 0 {
		return nil, fmt.Errorf("%w: metadata block at offset %d: header version %d, want 0", ErrCorruptMetadata, b.dataAt, v)
	}
	md, err := parseMetadata(data[fwHeaderSize:])
	if err != nil {
		return nil, err
	}
	for _, b := range blocks[:len(blocks)-1] {
		md.Signed = md.Signed || b.typ == fwTypeSignature // other block types are not signatures
	}
	return md, nil
}

// ParseMetadata parses a fwtool metadata JSON document (as written by
// OpenWrt's build, or extracted with "fwtool -i"). Errors wrap
// ErrCorruptMetadata.
func ParseMetadata(doc []byte) (*Metadata, error) {
	return parseMetadata(doc)
}

func parseMetadata(doc []byte) (*Metadata, error) {
	// OpenWrt's build writes the JSON with echo: tolerate the newline and
	// any NUL padding after the document.
	doc = []byte(strings.TrimRight(string(doc), "\x00 \t\r\n"))
	var j metadataJSON
	if err := json.Unmarshal(doc, &j); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if field == "" {
				return nil, fmt.Errorf("%w: JSON must be an object, got a %s", ErrCorruptMetadata, te.Value)
			}
			return nil, fmt.Errorf("%w: field %q: got a JSON %s, want %s", ErrCorruptMetadata, field, te.Value, jsonKind(te.Type.String()))
		}
		return nil, fmt.Errorf("%w: %w", ErrCorruptMetadata, err)
	}
	if trimmed := bytes.TrimLeft(doc, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' { // "null" decodes without error
		return nil, fmt.Errorf("%w: JSON must be an object", ErrCorruptMetadata)
	}
	return &Metadata{
		MetadataVersion:     string(j.MetadataVersion),
		CompatVersion:       string(j.CompatVersion),
		CompatMessage:       j.CompatMessage,
		SupportedDevices:    j.SupportedDevices,
		NewSupportedDevices: j.NewSupportedDevices,
		Version:             j.Version,
		Raw:                 json.RawMessage(doc),
	}, nil
}

// crcChunk is the read size VerifyCRC uses.
const crcChunk = 64 << 10

// VerifyCRC checks the CRC of every fwtool trailer at the end of an image
// (the metadata block's and any signature block's) as fwtool does, by
// streaming the whole image once through a fixed 64 KiB buffer: its time is
// proportional to the image size, its memory is not. It returns
// ErrNoMetadata for an image without metadata, an error wrapping
// ErrCorruptMetadata on a mismatch or a malformed trailer, and ctx.Err()
// when ctx ends first.
func VerifyCRC(ctx context.Context, r io.ReaderAt, size int64) error {
	blocks, err := walkBlocks(r, size)
	if err != nil {
		return err
	}
	buf := make([]byte, crcChunk)
	var crc uint32 // crc32 package convention; fwtool's register is ^crc
	var off int64
	// Trailers in file order: blocks were found from the end backwards.
	for i := len(blocks) - 1; i >= 0; i-- {
		b := blocks[i]
		for off < b.trailerAt {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(int64(len(buf)), b.trailerAt-off)
			if err := readAt(r, buf[:n], off); err != nil {
				return fmt.Errorf("imagemap: reading image at offset %d: %w", off, err)
			}
			crc = crc32.Update(crc, crc32.IEEETable, buf[:n])
			off += n
		}
		if got := ^crc; got != b.crc {
			return fmt.Errorf("%w: trailer at offset %d: CRC 0x%08x, computed 0x%08x", ErrCorruptMetadata, b.trailerAt, b.crc, got)
		}
	}
	return nil
}

// Writer writes an image and appends fwtool blocks to it, keeping the
// running CRC the trailers need. Write the image body with Write (or
// io.Copy), then call AppendMetadata and optionally AppendSignature. It is
// meant for tests and tools that build images; it is not safe for
// concurrent use.
type Writer struct {
	w   io.Writer
	crc uint32 // crc32 package convention
	n   int64
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes p to the image body.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.crc = crc32.Update(w.crc, crc32.IEEETable, p[:n])
	w.n += int64(n)
	return n, err
}

// Written returns the number of bytes written so far, blocks included.
func (w *Writer) Written() int64 { return w.n }

// AppendMetadata appends a metadata block holding m: m.Raw verbatim when it
// is non-empty, otherwise the JSON encoding of m's fields. It fails when
// the JSON exceeds MaxMetadataSize minus the 8-byte header.
func (w *Writer) AppendMetadata(m *Metadata) error {
	doc := []byte(m.Raw)
	if len(doc) == 0 {
		var err error
		doc, err = json.Marshal(metadataJSON{
			MetadataVersion:     flexString(m.MetadataVersion),
			CompatVersion:       flexString(m.CompatVersion),
			CompatMessage:       m.CompatMessage,
			NewSupportedDevices: m.NewSupportedDevices,
			SupportedDevices:    m.SupportedDevices,
			Version:             m.Version,
		})
		if err != nil {
			return fmt.Errorf("imagemap: encoding metadata: %w", err)
		}
	}
	data := make([]byte, fwHeaderSize, fwHeaderSize+len(doc))
	return w.appendBlock(fwTypeInfo, append(data, doc...))
}

// AppendSignature appends a signature block holding sig (fwtool -S).
func (w *Writer) AppendSignature(sig []byte) error {
	return w.appendBlock(fwTypeSignature, sig)
}

func (w *Writer) appendBlock(typ uint8, data []byte) error {
	if len(data) > MaxMetadataSize {
		return fmt.Errorf("imagemap: fwtool block of %d bytes exceeds the %d-byte limit", len(data), MaxMetadataSize)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("imagemap: writing fwtool block: %w", err)
	}
	var t [fwTrailerSize]byte
	binary.BigEndian.PutUint32(t[0:4], fwMagic)
	binary.BigEndian.PutUint32(t[4:8], ^w.crc)
	t[8] = typ
	binary.BigEndian.PutUint32(t[12:16], uint32(len(data)+fwTrailerSize))
	if _, err := w.Write(t[:]); err != nil {
		return fmt.Errorf("imagemap: writing fwtool trailer: %w", err)
	}
	return nil
}

// AppendMetadata copies the image body from image to w and appends a
// metadata block holding m, producing what OpenWrt's "fwtool -I" produces.
func AppendMetadata(w io.Writer, image io.Reader, m *Metadata) error {
	fw := NewWriter(w)
	if _, err := io.Copy(fw, image); err != nil {
		return fmt.Errorf("imagemap: copying image: %w", err)
	}
	return fw.AppendMetadata(m)
}
