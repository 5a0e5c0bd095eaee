package devicesim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
)

// Image is a simulated firmware image. Its bytes are a header line,
//
//	FWSIM1 {"boards":["tplink,archer-c7-v2"],"release":"OpenWrt 23.05.3 r23809-234f1a2efa"}\n
//
// followed by a deterministic pseudo-random payload (ChaCha8 seeded with the
// SHA-256 of the header line) up to Size bytes in total. sysupgrade accepts
// an image whose Boards contain the device's board name or model, and the
// device runs Release after the flash.
type Image struct {
	// Boards are the supported board names (or models).
	Boards []string
	// Release is the DISTRIB_DESCRIPTION the device runs after the flash.
	Release string
	// Size is the total size in bytes. An image is never shorter than its
	// header line.
	Size int64
}

// Header returns the first line of the image, newline included.
func (im Image) Header() []byte {
	js, _ := json.Marshal(imageHeader{Boards: im.Boards, Release: im.Release})
	return append(append([]byte(ImageMagic), js...), '\n')
}

// Len returns the image's length in bytes.
func (im Image) Len() int64 { return max(im.Size, int64(len(im.Header()))) }

// Reader streams the image without holding it in memory.
func (im Image) Reader() io.Reader {
	h := im.Header()
	seed := sha256.Sum256(h)
	return &imageReader{header: h, rng: rand.NewChaCha8(seed), left: im.Len()}
}

// Open returns the image as an io.ReadCloser, the shape of an upgrader's
// image source.
func (im Image) Open() (io.ReadCloser, error) { return io.NopCloser(im.Reader()), nil }

// SHA256 returns the hex SHA-256 of the image, computed by streaming it.
func (im Image) SHA256() string {
	h := sha256.New()
	_, _ = io.Copy(h, im.Reader())
	return hex.EncodeToString(h.Sum(nil))
}

type imageReader struct {
	header []byte
	rng    *rand.ChaCha8
	left   int64
}

func (r *imageReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
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
	r.left -= int64(len(p))
	return len(p), nil
}
