package imagemap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
)

// DefaultMaxJSONSize is the largest input LoadJSON and ImportProfiles read:
// 64 MiB. Larger input is rejected with ErrTooLarge rather than read.
const DefaultMaxJSONSize = 64 << 20

// ErrTooLarge is returned when JSON input exceeds its size limit.
var ErrTooLarge = errors.New("imagemap: input too large")

// LoadJSON reads a custom map in JSON from r and returns it as a Map (merge
// it over the built-in map with OpenWrt().Merge). It reads at most
// DefaultMaxJSONSize bytes; see ParseJSON for the format.
func LoadJSON(r io.Reader) (*Map, error) {
	data, err := readLimited(r, DefaultMaxJSONSize)
	if err != nil {
		return nil, err
	}
	return ParseJSON(data)
}

// ParseJSON parses a custom map: a JSON object whose keys are image types
// and whose values are objects with the fields
//
//	"label":       string, optional (defaults to the image type)
//	"boards":      list of model strings
//	"board_names": list of board names / compatibles
//	"target":      string, optional ("ath79/generic")
//
// for example
//
//	{"ath79-generic-acme_x1-squashfs-sysupgrade.bin":
//	    {"label": "ACME X1", "boards": ["ACME X1"], "board_names": ["acme,x1"]}}
//
// At least one of boards and board_names must be non-empty. Input is
// rejected — with an *EntryError naming the entry and the field — for a
// duplicate image type (duplicate object key), an empty type, a list given
// as a string or holding a non-string or empty string, an entry with no
// boards, an unknown field, or any other rule of New. Malformed JSON is
// rejected with the decoder's error and offset.
func ParseJSON(data []byte) (*Map, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("imagemap: custom map: %w", err)
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("imagemap: custom map: top level must be an object of image types, got %s", describeToken(tok))
	}
	entries := map[string]Entry{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("imagemap: custom map: %w", err)
		}
		typ := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("imagemap: custom map: entry %q: %w", typ, err)
		}
		if _, dup := entries[typ]; dup {
			return nil, &EntryError{Type: typ, Field: "type", Reason: "duplicate image type"}
		}
		if err := validType(typ); err != nil {
			return nil, err
		}
		e, err := parseEntry(typ, raw)
		if err != nil {
			return nil, err
		}
		entries[typ] = e
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("imagemap: custom map: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("imagemap: custom map: data after the top-level object")
	}
	return New(entries)
}

// parseEntry decodes one entry object, naming the field of any error.
func parseEntry(typ string, raw json.RawMessage) (Entry, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return Entry{}, &EntryError{Type: typ, Reason: "must be an object, got " + describeRaw(raw)}
	}
	var e Entry
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		v := fields[name]
		var err error
		switch name {
		case "label":
			e.Label, err = jsonString(typ, name, v)
		case "target":
			e.Target, err = jsonString(typ, name, v)
		case "boards":
			e.Boards, err = jsonStrings(typ, name, v)
		case "board_names":
			e.BoardNames, err = jsonStrings(typ, name, v)
		default:
			err = &EntryError{Type: typ, Field: name, Reason: "unknown field (known: label, boards, board_names, target)"}
		}
		if err != nil {
			return Entry{}, err
		}
	}
	return e, nil
}

func jsonString(typ, field string, v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", &EntryError{Type: typ, Field: field, Reason: "must be a string, got " + describeRaw(v)}
	}
	return s, nil
}

func jsonStrings(typ, field string, v json.RawMessage) ([]string, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil || items == nil {
		return nil, &EntryError{Type: typ, Field: field, Reason: "must be a list of strings, got " + describeRaw(v)}
	}
	out := make([]string, len(items))
	for i, it := range items {
		if err := json.Unmarshal(it, &out[i]); err != nil || bytes.Equal(bytes.TrimSpace(it), []byte("null")) {
			return nil, &EntryError{Type: typ, Field: field, Reason: fmt.Sprintf("item %d must be a string, got %s", i, describeRaw(it))}
		}
	}
	return out, nil
}

// describeRaw names the JSON kind of v for error messages.
func describeRaw(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '"':
		return "a string"
	case '[':
		return "a list"
	case '{':
		return "an object"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func describeToken(t json.Token) string {
	switch t := t.(type) {
	case json.Delim:
		if t == '[' {
			return "a list"
		}
		return string(t)
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a number"
}

// readLimited reads all of r, failing with ErrTooLarge past limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("imagemap: reading input: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	return data, nil
}
