package imagemap

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
)

// Entry describes one image type: which devices it was built for.
//
// Boards holds model strings as a device reports them in /tmp/sysinfo/model
// (for example "TP-Link Archer C7 v2"); BoardNames holds board names or
// device-tree compatibles as found in /tmp/sysinfo/board_name (for example
// "tplink,archer-c7-v2"). An entry needs at least one string in Boards or
// BoardNames.
type Entry struct {
	// Label is a human-readable name for the image type. Defaults to the
	// image type itself when empty.
	Label string
	// Boards lists device model strings.
	Boards []string
	// BoardNames lists board names / device-tree compatibles.
	BoardNames []string
	// Target is the OpenWrt target/subtarget the image was built for, for
	// example "ath79/generic". It may be empty for custom entries; it
	// decides the target generation (see Generation).
	Target string
}

// ErrInvalidEntry is matched (with errors.Is) by every *EntryError.
var ErrInvalidEntry = errors.New("imagemap: invalid entry")

// EntryError reports a malformed entry. Type is the image type of the entry
// (possibly empty when the type itself is the problem), Field the offending
// field ("type", "label", "boards", "board_names", "target", or a JSON field
// name), and Reason what is wrong with it.
type EntryError struct {
	Type   string
	Field  string
	Reason string
}

// Error implements error.
func (e *EntryError) Error() string {
	return fmt.Sprintf("imagemap: entry %q: field %q: %s", e.Type, e.Field, e.Reason)
}

// Is reports whether target is ErrInvalidEntry.
func (e *EntryError) Is(target error) bool { return target == ErrInvalidEntry }

// Map maps image types to the devices they fit.
//
// A Map is immutable once built: every method is safe for concurrent use,
// and Merge and With return new Maps without touching their receiver. The
// nil *Map is a valid empty map.
//
// # Matching rules
//
// A device is described by its model (/tmp/sysinfo/model) and its board name
// (/tmp/sysinfo/board_name). The board name is the stronger key: when the
// device reports a board name and the entry lists board names, the image
// type fits only if the board name is one of them, whatever the model says
// (a "TP-Link Archer C7 v2" model on board "tplink,archer-c7-v5" does not fit
// the v2 image). Otherwise the type fits when the model is one of the entry's
// Boards or the board name is one of its BoardNames.
// Strings are compared after trimming surrounding white space (unicode.IsSpace)
// and case-insensitively (both sides lowered with strings.ToLower);
// inner white space must match exactly. Empty strings never match anything.
// Image types themselves are file names: they are compared exactly.
//
// # Ranking
//
// When several types fit one device, TypesFor orders them, best first, by:
//
//  1. layer: entries merged later (Merge, With) before the entries they were
//     merged over, so custom entries win over the built-in map;
//  2. match kind: a board-name match before a model-only match;
//  3. target generation: newer generation first (see Generation), so an
//     ath79 image beats an ar71xx image for the same model;
//  4. exactness: a byte-exact match before a trimmed/case-folded one;
//  5. image type, in byte order.
//
// Best returns the first of that list.
type Map struct {
	entries map[string]entry
	models  map[string][]string // folded model -> image types
	names   map[string][]string // folded board name -> image types
	layers  int                 // number of layers; entries use 0..layers-1
}

// entry is an Entry plus the layer it came from.
type entry struct {
	Entry
	layer int
}

// New builds a Map from entries keyed by image type. It validates every
// entry and returns an *EntryError for the first malformed one, in image
// type order: an empty type or one containing white space or '/', an entry
// with no boards and no board names, an empty or duplicate (after
// normalisation) string in Boards or BoardNames. The entries are copied.
func New(entries map[string]Entry) (*Map, error) {
	m := &Map{entries: make(map[string]entry, len(entries)), layers: 1}
	for _, typ := range slices.Sorted(maps.Keys(entries)) {
		e, err := normalizeEntry(typ, entries[typ])
		if err != nil {
			return nil, err
		}
		m.entries[typ] = entry{Entry: e}
	}
	m.index()
	return m, nil
}

// Merge returns a new Map holding the entries of m and of other. Where both
// hold the same image type, other's entry replaces m's; every entry of other
// also ranks above every entry of m in TypesFor. Either may be nil.
func (m *Map) Merge(other *Map) *Map {
	out := &Map{entries: make(map[string]entry, m.Len()+other.Len())}
	base := 0
	if m != nil {
		maps.Copy(out.entries, m.entries)
		base = m.layers
	}
	if other != nil {
		for typ, e := range other.entries {
			e.layer += base
			out.entries[typ] = e
		}
		out.layers = base + other.layers
	} else {
		out.layers = base
	}
	out.index()
	return out
}

// With returns a new Map with entries merged over m, as m.Merge(New(entries)).
// It returns New's error for a malformed entry.
func (m *Map) With(entries map[string]Entry) (*Map, error) {
	o, err := New(entries)
	if err != nil {
		return nil, err
	}
	return m.Merge(o), nil
}

// Len returns the number of image types in m.
func (m *Map) Len() int {
	if m == nil {
		return 0
	}
	return len(m.entries)
}

// Types returns every image type in m, sorted.
func (m *Map) Types() []string {
	if m == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(m.entries))
}

// Entry returns a copy of the entry for imageType (compared exactly) and
// whether it exists.
func (m *Map) Entry(imageType string) (Entry, bool) {
	if m == nil {
		return Entry{}, false
	}
	e, ok := m.entries[imageType]
	if !ok {
		return Entry{}, false
	}
	return cloneEntry(e.Entry), true
}

// Boards returns a copy of the model strings of imageType, or nil when m
// has no such type.
func (m *Map) Boards(imageType string) []string {
	e, _ := m.Entry(imageType)
	return e.Boards
}

// BoardNames returns a copy of the board names of imageType, or nil when m
// has no such type.
func (m *Map) BoardNames(imageType string) []string {
	e, _ := m.Entry(imageType)
	return e.BoardNames
}

// Fits reports whether imageType fits a device with the given model and
// board name: true when either matches the entry (see the matching rules on
// Map). It is false for an unknown image type.
func (m *Map) Fits(imageType, model, boardName string) bool {
	if m == nil {
		return false
	}
	e, ok := m.entries[imageType]
	return ok && fits(e.Entry, model, boardName)
}

// fits applies the matching rules of Map to one entry.
func fits(e Entry, model, boardName string) bool {
	if fold(boardName) != "" && len(e.BoardNames) > 0 {
		return matchAny(e.BoardNames, boardName) > 0
	}
	return matchAny(e.BoardNames, boardName) > 0 || matchAny(e.Boards, model) > 0
}

// TypesFor returns the image types that fit a device with the given model
// and board name, best first (see the ranking rules on Map). It returns nil
// when none fits. Either argument may be empty.
func (m *Map) TypesFor(model, boardName string) []string {
	if m == nil {
		return nil
	}
	type cand struct {
		typ   string
		layer int
		named int // 2 exact, 1 folded, 0 none (board name)
		model int // same, for the model
		gen   int
	}
	seen := map[string]bool{}
	var cands []cand
	add := func(typs []string) {
		for _, typ := range typs {
			if seen[typ] {
				continue
			}
			seen[typ] = true
			e := m.entries[typ]
			if !fits(e.Entry, model, boardName) {
				continue // the model matches, but the board name contradicts it
			}
			cands = append(cands, cand{
				typ:   typ,
				layer: e.layer,
				named: matchAny(e.BoardNames, boardName),
				model: matchAny(e.Boards, model),
				gen:   Generation(e.Target),
			})
		}
	}
	if k := fold(boardName); k != "" {
		add(m.names[k])
	}
	if k := fold(model); k != "" {
		add(m.models[k])
	}
	if len(cands) == 0 {
		return nil
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if a.layer != b.layer {
			return b.layer - a.layer
		}
		if an, bn := a.named > 0, b.named > 0; an != bn {
			if an {
				return -1
			}
			return 1
		}
		if a.gen != b.gen {
			return b.gen - a.gen
		}
		if ae, be := max(a.named, a.model), max(b.named, b.model); ae != be {
			return be - ae
		}
		return strings.Compare(a.typ, b.typ)
	})
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.typ
	}
	return out
}

// Best returns the best image type for a device (the first of TypesFor)
// and whether any type fits.
func (m *Map) Best(model, boardName string) (string, bool) {
	t := m.TypesFor(model, boardName)
	if len(t) == 0 {
		return "", false
	}
	return t[0], true
}

// legacyTargets lists OpenWrt targets that a newer target replaced. Their
// images rank below every other target's for the same device.
var legacyTargets = map[string]bool{
	"ar71xx":   true, // replaced by ath79 (OpenWrt 19.07-21.02)
	"brcm2708": true, // renamed bcm27xx (OpenWrt 21.02)
	"ipq807x":  true, // downstream name; OpenWrt's is qualcommax/ipq807x
}

// Generation returns the target generation of an OpenWrt target such as
// "ar71xx/generic" (only the part before '/' counts): 0 for legacy targets
// that a newer target replaced (ar71xx, brcm2708, ipq807x), 1 for every other
// target, including the empty target of custom entries. Higher is newer.
func Generation(target string) int {
	t, _, _ := strings.Cut(strings.TrimSpace(target), "/")
	if legacyTargets[strings.ToLower(t)] {
		return 0
	}
	return 1
}

// index rebuilds the lookup tables from m.entries.
func (m *Map) index() {
	m.models = map[string][]string{}
	m.names = map[string][]string{}
	for typ, e := range m.entries {
		for _, b := range e.Boards {
			k := fold(b)
			m.models[k] = append(m.models[k], typ)
		}
		for _, b := range e.BoardNames {
			k := fold(b)
			m.names[k] = append(m.names[k], typ)
		}
	}
}

// fold returns the key a board string is indexed under.
func fold(s string) string {
	return strings.ToLower(strings.TrimFunc(s, unicode.IsSpace))
}

// matchAny returns 2 when s equals one of list exactly, 1 when it equals one
// after trimming and case folding, 0 otherwise.
func matchAny(list []string, s string) int {
	k := fold(s)
	if k == "" {
		return 0
	}
	best := 0
	for _, b := range list {
		if b == s {
			return 2
		}
		if fold(b) == k {
			best = 1
		}
	}
	return best
}

// normalizeEntry validates e and returns a trimmed copy.
func normalizeEntry(typ string, e Entry) (Entry, error) {
	if err := validType(typ); err != nil {
		return Entry{}, err
	}
	out := Entry{
		Label:  strings.TrimSpace(e.Label),
		Target: strings.TrimSpace(e.Target),
	}
	if out.Label == "" {
		out.Label = typ
	}
	var err error
	if out.Boards, err = cleanList(typ, "boards", e.Boards); err != nil {
		return Entry{}, err
	}
	if out.BoardNames, err = cleanList(typ, "board_names", e.BoardNames); err != nil {
		return Entry{}, err
	}
	if len(out.Boards) == 0 && len(out.BoardNames) == 0 {
		return Entry{}, &EntryError{Type: typ, Field: "boards", Reason: "no boards: give at least one model in boards or one board name in board_names"}
	}
	return out, nil
}

func validType(typ string) error {
	switch {
	case typ == "":
		return &EntryError{Field: "type", Reason: "empty image type"}
	case strings.IndexFunc(typ, unicode.IsSpace) >= 0:
		return &EntryError{Type: typ, Field: "type", Reason: "image type contains white space"}
	case strings.ContainsAny(typ, `/\`):
		return &EntryError{Type: typ, Field: "type", Reason: "image type is a file name and must not contain a path separator"}
	}
	return nil
}

// cleanList trims every string in list and rejects empty strings and
// duplicates (compared as the matching rules compare them).
func cleanList(typ, field string, list []string) ([]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(list))
	seen := make(map[string]int, len(list))
	for i, s := range list {
		s = strings.TrimFunc(s, unicode.IsSpace)
		if s == "" {
			return nil, &EntryError{Type: typ, Field: field, Reason: fmt.Sprintf("item %d is empty", i)}
		}
		k := fold(s)
		if j, dup := seen[k]; dup {
			return nil, &EntryError{Type: typ, Field: field, Reason: fmt.Sprintf("item %d %q duplicates item %d", i, s, j)}
		}
		seen[k] = i
		out = append(out, s)
	}
	return out, nil
}

func cloneEntry(e Entry) Entry {
	e.Boards = slices.Clone(e.Boards)
	e.BoardNames = slices.Clone(e.BoardNames)
	return e
}
