package openwrt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidOptions is wrapped by every error about sysupgrade options
// (unknown letters, contradictory flags, malformed JSON).
var ErrInvalidOptions = errors.New("openwrt: invalid sysupgrade options")

// Options are the sysupgrade flags an upgrade runs with. The zero value
// flashes with no flag at all: sysupgrade then still keeps the
// configuration files it lists (the conffiles of the installed packages and
// /etc/sysupgrade.conf); only -n drops the configuration. Most callers want
// DefaultOptions, which also keeps every changed file of /etc/ (-c), like
// openwisp does.
//
// The flags are emitted in this fixed order: -c -o -n -u -p -k -F (after
// -v, which the flash command always carries).
type Options struct {
	// KeepConfig (-c): attempt to preserve all changed files in /etc/.
	// Default true.
	KeepConfig bool
	// KeepOverlay (-o): attempt to preserve all changed files in /, except
	// those from packages but including changed confs.
	KeepOverlay bool
	// NoConfig (-n): do not save the configuration over the reflash; the
	// device comes back with factory settings. Refused with KeepConfig or
	// KeepOverlay. The device then also comes back with a new SSH host key
	// (dropbear generates one on first boot), its factory password and no
	// OpenWISP UUID: the host's CredentialsFunc must return credentials and a
	// host key check that accept it, or the reconnection fails and the
	// operation ends failed (unreachable-after-flash).
	NoConfig bool
	// SkipUnchanged (-u): skip from the backup the files that are equal to
	// those in /rom. Only meaningful with KeepConfig or KeepOverlay.
	SkipUnchanged bool
	// NoPartitionRestore (-p): do not attempt to restore the partition table
	// after the flash.
	NoPartitionRestore bool
	// KeepPackageList (-k): include in the backup a list of the installed
	// packages, at /etc/backup/installed_packages.txt.
	KeepPackageList bool
	// Force (-F): flash the image even if sysupgrade's image checks fail.
	// Dangerous. The upgrader's own check of the image's metadata still
	// applies: an image whose metadata does not list the device's board is
	// refused before upload, with or without -F. On 25.12 -F does not make
	// "sysupgrade --test" accept everything.
	Force bool
	// IgnoreMinorCompat (--ignore-minor-compat-version, 22.03 on): flash an
	// image whose compat_version differs from the device's in its minor
	// number while keeping the configuration. Set with the
	// "ignore_minor_compat_version" key (a boolean) in either form.
	IgnoreMinorCompat bool
}

// flagIgnoreMinorCompat is the long option of IgnoreMinorCompat.
const flagIgnoreMinorCompat = "--ignore-minor-compat-version"

// DefaultOptions returns the options used when an operation has none: keep
// the configuration (-c), as openwisp-firmware-upgrader does.
func DefaultOptions() Options { return Options{KeepConfig: true} }

// optionLetters lists the flags in the order they are emitted.
const optionLetters = "conupkF"

func (o *Options) flag(letter byte) *bool {
	switch letter {
	case 'c':
		return &o.KeepConfig
	case 'o':
		return &o.KeepOverlay
	case 'n':
		return &o.NoConfig
	case 'u':
		return &o.SkipUnchanged
	case 'p':
		return &o.NoPartitionRestore
	case 'k':
		return &o.KeepPackageList
	case 'F':
		return &o.Force
	}
	return nil
}

// Validate reports contradictory options: -n (do not keep the
// configuration) together with -c or -o (keep it). The error wraps
// ErrInvalidOptions.
func (o Options) Validate() error {
	if o.NoConfig && (o.KeepConfig || o.KeepOverlay) {
		return fmt.Errorf("%w: n (do not keep the configuration) contradicts c and o (keep it)", ErrInvalidOptions)
	}
	return nil
}

// Letters returns the flags set, as letters in the fixed order, separated
// by commas: "c,F". It is the form ParseOptions reads in the "sysupgrade"
// key.
func (o Options) Letters() string {
	var out []string
	for i := 0; i < len(optionLetters); i++ {
		if *o.flag(optionLetters[i]) {
			out = append(out, optionLetters[i:i+1])
		}
	}
	return strings.Join(out, ",")
}

// Flags returns the command-line flags of the options, in the fixed order
// -c -o -n -u -p -k -F, then --ignore-minor-compat-version.
func (o Options) Flags() []string {
	var out []string
	for i := 0; i < len(optionLetters); i++ {
		if *o.flag(optionLetters[i]) {
			out = append(out, "-"+optionLetters[i:i+1])
		}
	}
	if o.IgnoreMinorCompat {
		out = append(out, flagIgnoreMinorCompat)
	}
	return out
}

// String returns the flags as they appear on the command line.
func (o Options) String() string { return strings.Join(o.Flags(), " ") }

// JSON returns the options in the form stored in an operation's options:
// {"sysupgrade":"c,F"}, plus "ignore_minor_compat_version":true when set.
func (o Options) JSON() json.RawMessage {
	b, _ := json.Marshal(struct {
		Sysupgrade        string `json:"sysupgrade"`
		IgnoreMinorCompat bool   `json:"ignore_minor_compat_version,omitempty"`
	}{o.Letters(), o.IgnoreMinorCompat})
	return b
}

// ignoreMinorKey is the options key of IgnoreMinorCompat.
const ignoreMinorKey = "ignore_minor_compat_version"

// ParseOptions reads the sysupgrade options of an operation
// (store.Operation.Options). It accepts:
//
//   - nothing, null or an object with neither form below: DefaultOptions;
//   - {"sysupgrade": "c,F"}: exactly the flags named, as letters separated
//     by commas, spaces or dashes ("-c -F" and "cF" work too); an empty
//     string means no flag (the configuration is not kept);
//   - openwisp's upgrade_options form, {"c": true, "F": true, "n": false}:
//     each letter a boolean; a letter left out keeps its default (c true,
//     the others false).
//
// In both forms "ignore_minor_compat_version": true adds
// --ignore-minor-compat-version (22.03 and later).
//
// Other keys are ignored (they belong to the engine). Mixing both forms,
// unknown letters, non-boolean letter values and contradictory flags (see
// Validate) are refused with an error wrapping ErrInvalidOptions.
func ParseOptions(raw json.RawMessage) (Options, error) {
	opts := DefaultOptions()
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return opts, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return Options{}, fmt.Errorf("%w: not a JSON object: %v", ErrInvalidOptions, err)
	}
	var letters []byte
	for k := range m {
		if len(k) == 1 && (opts.flag(k[0]) != nil || isLetter(k[0])) {
			letters = append(letters, k[0])
		}
	}
	s, hasString := m["sysupgrade"]
	switch {
	case hasString && len(letters) > 0:
		return Options{}, fmt.Errorf("%w: both \"sysupgrade\" and single-letter keys are set; use one form", ErrInvalidOptions)
	case hasString:
		var str string
		if err := json.Unmarshal(s, &str); err != nil {
			return Options{}, fmt.Errorf("%w: \"sysupgrade\" must be a string of flag letters like \"c,F\"", ErrInvalidOptions)
		}
		o, err := parseLetters(str)
		if err != nil {
			return Options{}, err
		}
		opts = o
	default:
		for _, l := range letters {
			p := opts.flag(l)
			if p == nil {
				return Options{}, fmt.Errorf("%w: unknown flag %q (known: %s)", ErrInvalidOptions, string(l), optionLetters)
			}
			if err := json.Unmarshal(m[string(l)], p); err != nil {
				return Options{}, fmt.Errorf("%w: %q must be true or false", ErrInvalidOptions, string(l))
			}
		}
	}
	if v, ok := m[ignoreMinorKey]; ok {
		if err := json.Unmarshal(v, &opts.IgnoreMinorCompat); err != nil {
			return Options{}, fmt.Errorf("%w: %q must be true or false", ErrInvalidOptions, ignoreMinorKey)
		}
	}
	if err := opts.Validate(); err != nil {
		return Options{}, err
	}
	return opts, nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// parseLetters reads "c,F", "-c -F" or "cF".
func parseLetters(s string) (Options, error) {
	var o Options
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ',', ' ', '-', '\t':
			continue
		}
		p := o.flag(c)
		if p == nil {
			return Options{}, fmt.Errorf("%w: unknown flag %q (known: %s)", ErrInvalidOptions, string(rune(c)), optionLetters)
		}
		*p = true
	}
	return o, nil
}
