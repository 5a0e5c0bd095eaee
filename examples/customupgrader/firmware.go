package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// The ACME camera firmware file: a magic line, the length of a JSON header
// (4 bytes, big-endian), the header, then the payload the camera writes to
// its flash.
//
//	ACMEFW1\n | len | {"firmware":"AcmeOS 2.4.0","models":["X200"]} | payload

const (
	fwMagic        = "ACMEFW1\n"
	maxHeaderBytes = 64 << 10
)

// fwHeader is what an ACME firmware file says about itself.
type fwHeader struct {
	// Firmware is what a camera running it reports (its OS identifier).
	Firmware string `json:"firmware"`
	// Models are the camera models it is built for.
	Models []string `json:"models"`
}

// errNotFirmware is returned for bytes that are not an ACME firmware file.
var errNotFirmware = errors.New("acme: not an ACME camera firmware file")

// buildFirmware returns a firmware file for models with payloadSize bytes
// of payload (derived from the header, so every build differs).
func buildFirmware(firmware string, models []string, payloadSize int) []byte {
	hdr, err := json.Marshal(fwHeader{Firmware: firmware, Models: models})
	if err != nil {
		panic(err) // a struct of strings always marshals
	}
	var b bytes.Buffer
	b.WriteString(fwMagic)
	_ = binary.Write(&b, binary.BigEndian, uint32(len(hdr)))
	b.Write(hdr)
	block := sha256.Sum256(hdr)
	for b.Len() < len(fwMagic)+4+len(hdr)+payloadSize {
		block = sha256.Sum256(block[:])
		b.Write(block[:])
	}
	b.Truncate(len(fwMagic) + 4 + len(hdr) + payloadSize)
	return b.Bytes()
}

// readHeader reads the header at the start of a firmware file.
func readHeader(r io.Reader) (fwHeader, error) {
	var h fwHeader
	magic := make([]byte, len(fwMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != fwMagic {
		return h, errNotFirmware
	}
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil || n == 0 || n > maxHeaderBytes {
		return h, fmt.Errorf("%w: bad header length", errNotFirmware)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(r, raw); err != nil {
		return h, fmt.Errorf("%w: short header", errNotFirmware)
	}
	if err := json.Unmarshal(raw, &h); err != nil || h.Firmware == "" || len(h.Models) == 0 {
		return fwHeader{}, fmt.Errorf("%w: bad header", errNotFirmware)
	}
	return h, nil
}

// supports reports whether the firmware is built for model.
func (h fwHeader) supports(model string) bool {
	return slices.ContainsFunc(h.Models, func(m string) bool { return strings.EqualFold(m, model) })
}
