package openwrttest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"strings"
)

// The fwtool format (OpenWrt package/system/fwtool) is described in
// imagemap/fwtool.go, which writes it for Image. This file builds the
// metadata document the way OpenWrt's build does and reads it back from an
// uploaded file the way "fwtool -q -i" does.

const (
	fwMagic       = 0x46577830 // "FWx0"
	fwTrailerSize = 16
	fwHeaderSize  = 8
	fwTypeInfo    = 1
	// fwBufLen is fwtool's BUFLEN: METADATA_MAXLEN (30 KiB) +
	// SIGNATURE_MAXLEN (1 KiB) + 1 KiB. A larger block is a "Size error".
	fwBufLen = 30<<10 + 1<<10 + 1<<10
	// tailSize is how much of the end of every file is kept: enough for the
	// largest metadata block and a signature block after it.
	tailSize = fwBufLen + 1<<10 + 2*fwTrailerSize
)

// metadataDoc renders the fwtool metadata JSON that OpenWrt's build
// (include/image-commands.mk, metadata_json, echoed into "fwtool -I")
// appends to an image of release rel for boards, whitespace included:
//
//   - 17.01 and 18.06: supported_devices and version {dist, version,
//     revision, board}, board being the target ("ath79");
//   - 19.07: metadata_version "1.0" and version.target, board being the
//     device name ("tplink_archer-c7-v2");
//   - 21.02 and later (and any image with a compat version other than
//     "1.0"): metadata_version "1.1", compat_version, compat_message when
//     set, and, for compat versions other than "1.0", the boards in
//     new_supported_devices while supported_devices holds one human message
//     for older devices.
func metadataDoc(rel string, boards []string, compat, message, target string) []byte {
	p := ProfileFor(rel)
	r := parseRelease(rel)
	if compat == "" {
		compat = "1.0"
	}
	q := func(s string) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s)
		return strings.TrimSuffix(b.String(), "\n")
	}
	devices := func() string {
		qs := make([]string, len(boards))
		for i, b := range boards {
			qs[i] = q(b)
		}
		return "[" + strings.Join(qs, ",") + "]"
	}
	devName := ""
	if len(boards) > 0 {
		devName = strings.ReplaceAll(boards[0], ",", "_")
	}
	board, _, _ := strings.Cut(target, "/")
	// Each element is one line of the make variable; make joins them with
	// one space, and a false $(if) leaves an empty line.
	var lines []string
	cond := func(ok bool, s string) string {
		if ok {
			return s
		}
		return ""
	}
	switch {
	case p.atLeast("21.02") || compat != "1.0":
		legacy := strings.Join(boards, " ") + " - Image version mismatch: image " + compat +
			", device 1.0. Please wipe config during upgrade (force required) or reinstall. " +
			cond(message != "", "Reason: "+message) + cond(message == "", "Please check documentation ...")
		lines = []string{"{ ", `"metadata_version": "1.1",`, `"compat_version": ` + q(compat) + ",",
			cond(message != "", `"compat_message": `+q(message)+","),
			cond(compat != "1.0", `"new_supported_devices": `+devices()+`, "supported_devices": [`+q(legacy)+"],"),
			cond(compat == "1.0", `"supported_devices":`+devices()+","),
			`"version": {`, `"dist": ` + q(r.Dist) + ",", `"version": ` + q(r.Version) + ",",
			`"revision": ` + q(r.Revision) + ",", `"target": ` + q(target) + ",", `"board": ` + q(devName), "}", "}"}
	case p.atLeast("19.07"):
		lines = []string{"{ ", `"metadata_version": "1.0",`, `"supported_devices":` + devices() + ",",
			`"version": {`, `"dist": ` + q(r.Dist) + ",", `"version": ` + q(r.Version) + ",",
			`"revision": ` + q(r.Revision) + ",", `"target": ` + q(target) + ",", `"board": ` + q(devName), "}", "}"}
	default:
		lines = []string{"{ ", `"supported_devices":` + devices() + ",",
			`"version": {`, `"dist": ` + q(r.Dist) + ",", `"version": ` + q(r.Version) + ",",
			`"revision": ` + q(r.Revision) + ",", `"board": ` + q(board), "}", "}"}
	}
	return []byte(strings.Join(lines, " ") + "\n") // echo adds the newline
}

// fwtoolMetadata returns the metadata document of f as "fwtool -q -i" finds
// it: walking the trailers back from the end, each must carry the magic and
// the CRC of everything before it; signature blocks are skipped, and the
// first metadata block with a version-0 header is the answer. found is
// false where fwtool fails ("Data not found", "CRC error", "Size error",
// or a block reaching before the kept tail of the file).
func (f *file) fwtoolMetadata() (doc []byte, found bool) {
	tailStart := f.size - int64(len(f.tail))
	at := func(off, n int64) ([]byte, bool) {
		if off < tailStart || n < 0 || off+n > f.size {
			return nil, false
		}
		return f.tail[off-tailStart : off-tailStart+n], true
	}
	end := f.size
	for range 8 {
		tr, ok := at(end-fwTrailerSize, fwTrailerSize)
		if !ok || binary.BigEndian.Uint32(tr[0:4]) != fwMagic {
			return nil, false
		}
		trailerAt := end - fwTrailerSize
		before, _ := at(tailStart, trailerAt-tailStart)
		if ^crc32.Update(f.tailCRC, crc32.IEEETable, before) != binary.BigEndian.Uint32(tr[4:8]) {
			return nil, false
		}
		dataLen := int64(binary.BigEndian.Uint32(tr[12:16])) - fwTrailerSize
		if dataLen > fwBufLen {
			return nil, false
		}
		data, ok := at(trailerAt-dataLen, dataLen)
		if !ok {
			return nil, false
		}
		end = trailerAt - dataLen
		if tr[8] == fwTypeInfo && len(data) >= fwHeaderSize && binary.BigEndian.Uint32(data[0:4]) == 0 {
			return data[fwHeaderSize:], true
		}
	}
	return nil, false
}

// metadata is the part of an fwtool metadata document sysupgrade reads, with
// jshn's semantics.
type metadata struct {
	compat  string
	message string
	// lists holds the string elements of supported_devices and
	// new_supported_devices; a key that is absent or not an array or object
	// is missing (json_select fails).
	lists   map[string][]string
	release string // the release the image installs, from "version"
}

// parseMetadata loads doc as jshn's json_load does: the first JSON value
// must be an object (json-c ignores what follows). ok is false where
// json_load fails ("Failed to parse message data").
func parseMetadata(doc []byte) (md metadata, ok bool) {
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return md, false
	}
	str := func(raw json.RawMessage) string {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			return n.String()
		}
		return ""
	}
	md.compat = str(obj["compat_version"])
	md.message = str(obj["compat_message"])
	md.lists = make(map[string][]string)
	for _, k := range []string{"supported_devices", "new_supported_devices"} {
		raw, found := obj[k]
		if !found {
			continue
		}
		var arr []json.RawMessage
		var m map[string]json.RawMessage
		switch {
		case json.Unmarshal(raw, &arr) == nil && arr != nil:
			list := make([]string, 0, len(arr))
			for _, e := range arr {
				list = append(list, str(e))
			}
			md.lists[k] = list
		case json.Unmarshal(raw, &m) == nil && m != nil:
			md.lists[k] = []string{}
		}
	}
	var v struct {
		Dist, Version, Revision string
	}
	if raw, found := obj["version"]; found && json.Unmarshal(raw, &v) == nil && v.Version != "" {
		md.release = releaseFromParts(v.Dist, v.Version, v.Revision)
	}
	return md, true
}

// releaseFromParts is the DISTRIB_DESCRIPTION of a build: 17.01 carries
// the "Reboot" codename, 12.09 to 15.05 their codename and no revision.
func releaseFromParts(dist, version, revision string) string {
	if dist == "" {
		dist = "OpenWrt"
	}
	parts := []string{dist}
	if i := profileIndex(version); i >= 0 {
		p := profiles[i]
		if c := parseRelease(p.Description).Codename; c != "" {
			parts = append(parts, c)
		}
		if !p.atLeast("17.01") {
			revision = ""
		}
	}
	parts = append(parts, version)
	if revision != "" {
		parts = append(parts, revision)
	}
	return strings.Join(parts, " ")
}

// tailWriter keeps the last tailSize bytes written and the CRC-32 of the
// bytes before them, so that fwtool's CRC of any trailer in the tail can be
// checked without keeping the file.
type tailWriter struct {
	tail []byte
	crc  uint32 // crc32 (IEEE) of the bytes before tail
}

var _ io.Writer = (*tailWriter)(nil)

func (t *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= tailSize {
		t.crc = crc32.Update(t.crc, crc32.IEEETable, t.tail)
		t.crc = crc32.Update(t.crc, crc32.IEEETable, p[:len(p)-tailSize])
		t.tail = append(t.tail[:0], p[len(p)-tailSize:]...)
		return n, nil
	}
	if over := len(t.tail) + len(p) - tailSize; over > 0 {
		t.crc = crc32.Update(t.crc, crc32.IEEETable, t.tail[:over])
		t.tail = append(t.tail[:0], t.tail[over:]...)
	}
	t.tail = append(t.tail, p...)
	return n, nil
}
