package imagemap

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// ErrInvalidProfiles is matched (with errors.Is) by every error that
// ImportProfiles returns for input of the wrong shape.
var ErrInvalidProfiles = errors.New("imagemap: invalid profiles.json")

// ImportConfig tunes ImportProfilesConfig. The zero value and nil are valid.
type ImportConfig struct {
	// MaxSize is the largest input read, in bytes; larger input fails with
	// ErrTooLarge. Defaults to DefaultMaxJSONSize (64 MiB).
	MaxSize int64
	// ImageTypes lists the profiles.json image "type" values that become
	// image types. Defaults to []string{"sysupgrade"}. x86 images, which
	// OpenWrt lists as "combined" and "combined-efi", need them listed here.
	ImageTypes []string
}

// profilesFile is the part of OpenWrt's profiles.json that is imported.
type profilesFile struct {
	Target        string                     `json:"target"`
	VersionNumber string                     `json:"version_number"`
	Profiles      map[string]json.RawMessage `json:"profiles"`
}

type profile struct {
	Images           []profileImage `json:"images"`
	SupportedDevices []string       `json:"supported_devices"`
	Titles           []profileTitle `json:"titles"`
}

type profileImage struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

type profileTitle struct {
	Title   string `json:"title"`
	Vendor  string `json:"vendor"`
	Model   string `json:"model"`
	Variant string `json:"variant"`
}

// String returns the model string of a title: Title when set, otherwise
// Vendor, Model and Variant joined by single spaces, skipping empty parts.
func (t profileTitle) String() string {
	if s := strings.TrimSpace(t.Title); s != "" {
		return s
	}
	var parts []string
	for _, p := range []string{t.Vendor, t.Model, t.Variant} {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

// ImportProfiles imports the profiles.json that OpenWrt publishes for one
// target (downloads.openwrt.org/releases/<version>/targets/<target>/
// <subtarget>/profiles.json) with the default ImportConfig. See
// ImportProfilesConfig.
func ImportProfiles(r io.Reader) (*Map, error) {
	return ImportProfilesConfig(r, nil)
}

// ImportProfilesConfig imports an OpenWrt profiles.json. Every image of
// every profile whose "type" is in cfg.ImageTypes ("sysupgrade" by default)
// becomes an image type (TypeFromFileName of its "name"), with:
//
//   - Boards: one model string per entry of the profile's "titles": its
//     "title" when present, otherwise "vendor model variant" (empty parts
//     skipped), e.g. "TP-Link Archer C7 v2";
//   - BoardNames: the profile's "supported_devices";
//   - Target: the file's "target"; Label: the first title and the target.
//
// Profiles without such an image are skipped. Titles are what OpenWrt shows
// in its firmware selector; they usually but not always equal the device's
// /tmp/sysinfo/model, which is why board names (the compatibles sysupgrade
// itself checks) rank first in TypesFor.
//
// It reads at most cfg.MaxSize bytes; longer input fails with ErrTooLarge,
// and a read error is returned wrapped. Input of the wrong shape — not an
// object, missing "target" or "profiles", a field of the wrong JSON type, a
// sysupgrade image with no name, a profile with neither titles nor
// supported devices, two profiles yielding one image type, or no image of
// the wanted types at all — fails with an error wrapping ErrInvalidProfiles
// that names the profile and field. It never panics.
func ImportProfilesConfig(r io.Reader, cfg *ImportConfig) (*Map, error) {
	limit := int64(DefaultMaxJSONSize)
	wanted := []string{"sysupgrade"}
	if cfg != nil {
		if cfg.MaxSize > 0 {
			limit = cfg.MaxSize
		}
		if len(cfg.ImageTypes) > 0 {
			wanted = cfg.ImageTypes
		}
	}
	data, err := readLimited(r, limit)
	if err != nil {
		return nil, err
	}
	var f profilesFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, profilesError("", err)
	}
	f.Target = strings.TrimSpace(f.Target)
	if f.Target == "" {
		return nil, fmt.Errorf("%w: missing or empty field \"target\"", ErrInvalidProfiles)
	}
	if f.Profiles == nil {
		return nil, fmt.Errorf("%w: missing field \"profiles\" (an object of profile id to profile)", ErrInvalidProfiles)
	}

	entries := map[string]Entry{}
	source := map[string]string{} // image type -> profile id
	seenTypes := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(f.Profiles)) {
		var p profile
		if err := json.Unmarshal(f.Profiles[id], &p); err != nil {
			return nil, profilesError(id, err)
		}
		var types []string
		for i, img := range p.Images {
			seenTypes[img.Type] = true
			if !slices.Contains(wanted, img.Type) {
				continue
			}
			name := strings.TrimSpace(img.Name)
			if name == "" {
				return nil, fmt.Errorf("%w: profile %q: field \"images[%d].name\": empty", ErrInvalidProfiles, id, i)
			}
			typ := TypeFromFileName(name)
			if other, dup := source[typ]; dup && other != id {
				return nil, fmt.Errorf("%w: profile %q: image type %q also comes from profile %q", ErrInvalidProfiles, id, typ, other)
			}
			if !slices.Contains(types, typ) {
				types = append(types, typ)
			}
		}
		if len(types) == 0 {
			continue
		}
		var boards []string
		for _, t := range p.Titles {
			if s := t.String(); s != "" && !slices.ContainsFunc(boards, func(b string) bool { return fold(b) == fold(s) }) {
				boards = append(boards, s)
			}
		}
		var names []string
		for _, n := range p.SupportedDevices {
			if n = strings.TrimSpace(n); n != "" && !slices.ContainsFunc(names, func(b string) bool { return fold(b) == fold(n) }) {
				names = append(names, n)
			}
		}
		if len(boards) == 0 && len(names) == 0 {
			return nil, fmt.Errorf("%w: profile %q: fields \"titles\" and \"supported_devices\": no device model or board name", ErrInvalidProfiles, id)
		}
		label := id
		if len(boards) > 0 {
			label = boards[0]
		}
		for _, typ := range types {
			source[typ] = id
			entries[typ] = Entry{
				Label:      label + " (" + f.Target + ")",
				Boards:     boards,
				BoardNames: names,
				Target:     f.Target,
			}
		}
	}
	if len(entries) == 0 {
		delete(seenTypes, "")
		return nil, fmt.Errorf("%w: no image of type %s in %d profiles (types found: %s)", ErrInvalidProfiles,
			strings.Join(wanted, ", "), len(f.Profiles), strings.Join(slices.Sorted(maps.Keys(seenTypes)), ", "))
	}
	m, err := New(entries)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidProfiles, err)
	}
	return m, nil
}

// profilesError turns a decoding error into one naming the profile and field.
func profilesError(id string, err error) error {
	where := ""
	if id != "" {
		where = fmt.Sprintf(" profile %q:", id)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return fmt.Errorf("%w:%s field %q: got a JSON %s, want %s", ErrInvalidProfiles, where, field, te.Value, jsonKind(te.Type.String()))
	}
	return fmt.Errorf("%w:%s %w", ErrInvalidProfiles, where, err)
}

// jsonKind names the JSON shape expected for a Go type in error messages.
func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "imagemap."):
		return "an object"
	case goType == "string":
		return "a string"
	}
	return goType
}
