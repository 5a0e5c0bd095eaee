package store

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/fwupgrader/fwupgrader/status"
)

// Limits on the length of text fields, in characters. Longer values are
// refused with a *ValidationError.
const (
	MaxIDLen           = 64
	MaxNameLen         = 128
	MaxVersionLen      = 32
	MaxOSIdentifierLen = 128
	MaxImageTypeLen    = 255
	MaxTextLen         = 8192 // descriptions, changelogs
	// MaxLogLineLen bounds one log line; longer lines are truncated by
	// AppendLog (device output can be long), not refused.
	MaxLogLineLen = 4096
	// MaxOptionsLen bounds an operation's or batch's encoded options.
	MaxOptionsLen = 16384
)

// NewID returns a new record ID: a UUIDv7 in canonical text form, so that ID
// order is creation order.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// Category groups the builds of one kind of hardware or firmware line.
// A Category with an empty Organization is shared by every organization.
type Category struct {
	ID           string
	Organization string // "" = shared
	Name         string // unique per organization
	Description  string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Build is one firmware release of a category.
type Build struct {
	ID         string
	CategoryID string
	// Organization is the category's organization, filled in by the store.
	Organization string
	Version      string // unique per category
	// OSIdentifier is what a device running this build reports as its OS
	// (on OpenWrt: DISTRIB_DESCRIPTION of /etc/openwrt_release, e.g.
	// "OpenWrt 23.05.3 r23809-234f1a2efa"). Optional; when set it is unique
	// per organization.
	OSIdentifier string
	Changelog    string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Image is one firmware file of a build, for one image type. The bytes live
// outside the store (see the upgrader package's Files); the store keeps what
// describes them.
type Image struct {
	ID      string
	BuildID string
	// Organization is the build's organization, filled in by the store.
	Organization string
	// Type is the image type, unique per build (e.g.
	// "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin").
	Type string
	// Name is the file name uploaded to devices.
	Name string
	// Size in bytes and SHA256 (lowercase hex) of the file.
	Size   int64
	SHA256 string
	// Boards are extra board names the image declares it supports (from
	// its own metadata), used when Type is not in the image map.
	Boards    []string
	CreatedAt time.Time
}

// Device is what fwupgrader knows of one device of the host's inventory.
type Device struct {
	ID           string // the host's ID (for OpenWISP devices, the device UUID)
	Organization string
	Name         string
	Group        string
	Location     string
	Model        string // e.g. "TP-Link Archer C7 v2"
	BoardName    string // e.g. "tplink,archer-c7-v2"
	OSIdentifier string // what the device reports as its OS
	// Connection is the kind of connection, which selects the upgrader
	// (e.g. "openwrt-ssh").
	Connection string
	// Address is the last known address; upgraders ask the host for the
	// current one on every attempt.
	Address   string
	Active    bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// DeviceFirmware records which image a device runs or is meant to run.
type DeviceFirmware struct {
	DeviceID string
	ImageID  string
	// Installed is true once the device is known to run the image.
	Installed bool
	UpdatedAt time.Time
}

// Batch is a mass upgrade of many devices to one build.
type Batch struct {
	ID           string
	Organization string // must match the build's organization unless the build is shared
	BuildID      string
	Name         string
	State        status.BatchState
	// Options holds the upgrade options of the batch's operations, as a
	// JSON object. Stores keep it verbatim.
	Options json.RawMessage
	// Rollout is the batch's rollout policy, enforced by the store at claim
	// time.
	Rollout Rollout
	// Counts of the batch's operations per state, filled in by the store on
	// every read.
	Counts status.Counts

	// The fields below are kept by the store; a new batch leaves them zero.

	// Wave is the current wave (0-based): operations of this wave and of
	// earlier ones may start.
	Wave int
	// WaveTallies counts the operations of each wave; its length is the
	// number of waves.
	WaveTallies []WaveTally
	// WaveSettledAt is when the current wave settled (zero while it has
	// not): the next wave starts Rollout.WaveWait after it.
	WaveSettledAt time.Time
	// PauseReason says why a paused batch is paused.
	PauseReason status.PauseReason
	// CancelRequested is set by CancelBatch: nothing of the batch starts
	// again; operations at or after flashing finish and are verified.
	CancelRequested bool
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Operation is the upgrade of one device to one image.
type Operation struct {
	ID           string
	Organization string // the device's organization, filled in by the store
	DeviceID     string
	ImageID      string
	BatchID      string // "" for a single upgrade
	// Wave is the operation's wave in its batch (0-based), set by the store
	// from the operation's position in CreateBatch.
	Wave  int
	State status.State
	// Phase reached; kept after the operation ends, so a terminal operation
	// tells how far it got.
	Phase    status.Phase
	Progress int
	Reason   status.Reason
	// Options holds the upgrader's options as a JSON object, kept verbatim.
	Options json.RawMessage
	// Attempt is the number of attempts started so far.
	Attempt int
	// NextAttemptAt is when a pending retry becomes due (zero = now).
	NextAttemptAt time.Time
	// Deadline is when the whole operation times out (zero = never).
	Deadline time.Time
	// Token is the fencing token of the operation's latest claim: every
	// claim increments it, and every write a worker makes carries it (see
	// Claims). 0 = never claimed.
	Token int64
	// LeaseOwner is the owner of the latest claim ("" = never claimed) and
	// LeaseExpiresAt when its lease ends (zero once released or ended). A
	// lease is live while LeaseExpiresAt is in the future of the store's
	// clock.
	LeaseOwner     string
	LeaseExpiresAt time.Time
	// Version increases by one on every change of the record; log lines
	// and lease renewals and releases do not count.
	Version    int64
	CreatedAt  time.Time
	UpdatedAt  time.Time
	StartedAt  time.Time // first move to in-progress
	FinishedAt time.Time // move to a terminal state
}

// LogEntry is one line of an operation's log.
type LogEntry struct {
	OperationID string
	Seq         int64 // 1, 2, 3 ... per operation
	Time        time.Time
	Line        string
}

func checkText(record, field, v string, required bool, maxLen int) error {
	if required && strings.TrimSpace(v) == "" {
		return invalid(record, field, "must not be empty")
	}
	if !utf8.ValidString(v) {
		return invalid(record, field, "is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(v); n > maxLen {
		return invalid(record, field, "is %d characters long, the limit is %d", n, maxLen)
	}
	if strings.ContainsRune(v, 0) {
		return invalid(record, field, "contains a NUL character")
	}
	return nil
}

// checkField checks a field of a validation table: those limited to
// MaxIDLen are IDs (or organizations) and get checkID's rules.
func checkField(record, field, v string, required bool, maxLen int) error {
	if maxLen == MaxIDLen {
		return checkID(record, field, v, required)
	}
	return checkText(record, field, v, required, maxLen)
}

// checkID checks an ID field: a non-empty one must not have surrounding
// white space or control characters, so that two IDs that print alike are
// the same ID.
func checkID(record, field, v string, required bool) error {
	if err := checkText(record, field, v, required, MaxIDLen); err != nil {
		return err
	}
	if v == "" {
		return nil
	}
	if strings.TrimSpace(v) != v {
		return invalid(record, field, "has surrounding white space: %q", v)
	}
	if strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return invalid(record, field, "contains a control character: %q", v)
	}
	return nil
}

func checkOptions(record string, o json.RawMessage) error {
	if len(o) == 0 {
		return nil
	}
	if len(o) > MaxOptionsLen {
		return invalid(record, "Options", "is %d bytes long, the limit is %d", len(o), MaxOptionsLen)
	}
	var m map[string]any
	if err := json.Unmarshal(o, &m); err != nil || m == nil {
		return invalid(record, "Options", "is not a JSON object")
	}
	if !utf8.Valid(o) || strings.Contains(string(o), `\u0000`) {
		return invalid(record, "Options", "holds invalid UTF-8 or a NUL character")
	}
	return nil
}

// Validate checks the fields a caller sets. Stores call it before any write.
func (c Category) Validate() error {
	if err := checkID("category", "ID", c.ID, false); err != nil {
		return err
	}
	if err := checkID("category", "Organization", c.Organization, false); err != nil {
		return err
	}
	if err := checkText("category", "Name", c.Name, true, MaxNameLen); err != nil {
		return err
	}
	return checkText("category", "Description", c.Description, false, MaxTextLen)
}

// Validate checks the fields a caller sets.
func (b Build) Validate() error {
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"ID", b.ID, false, MaxIDLen},
		{"CategoryID", b.CategoryID, true, MaxIDLen},
		{"Version", b.Version, true, MaxVersionLen},
		{"OSIdentifier", b.OSIdentifier, false, MaxOSIdentifierLen},
		{"Changelog", b.Changelog, false, MaxTextLen},
	} {
		if err := checkField("build", f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the fields a caller sets.
// CheckImageName refuses what Image.Validate refuses in an image's Name: an
// empty, over-long or non-UTF-8 name, and one that is not a plain file name
// (a path separator, "." or "..").
func CheckImageName(name string) error {
	if err := checkField("image", "Name", name, true, MaxImageTypeLen); err != nil {
		return err
	}
	if strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return invalid("image", "Name", "must be a plain file name, got %q", name)
	}
	return nil
}

func (im Image) Validate() error {
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"ID", im.ID, false, MaxIDLen},
		{"BuildID", im.BuildID, true, MaxIDLen},
		{"Type", im.Type, true, MaxImageTypeLen},
	} {
		if err := checkField("image", f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	if err := CheckImageName(im.Name); err != nil {
		return err
	}
	if im.Size < 0 {
		return invalid("image", "Size", "is negative (%d)", im.Size)
	}
	if len(im.SHA256) != 64 || strings.ToLower(im.SHA256) != im.SHA256 {
		return invalid("image", "SHA256", "must be 64 lowercase hex digits, got %q", im.SHA256)
	}
	if _, err := hex.DecodeString(im.SHA256); err != nil {
		return invalid("image", "SHA256", "must be 64 lowercase hex digits, got %q", im.SHA256)
	}
	for _, b := range im.Boards {
		if err := checkText("image", "Boards", b, true, MaxNameLen); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the fields a caller sets.
func (d Device) Validate() error {
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"ID", d.ID, true, MaxIDLen},
		{"Organization", d.Organization, false, MaxIDLen},
		{"Name", d.Name, false, MaxNameLen},
		{"Group", d.Group, false, MaxNameLen},
		{"Location", d.Location, false, MaxNameLen},
		{"Model", d.Model, false, MaxNameLen},
		{"BoardName", d.BoardName, false, MaxNameLen},
		{"OSIdentifier", d.OSIdentifier, false, MaxOSIdentifierLen},
		{"Connection", d.Connection, false, MaxNameLen},
		{"Address", d.Address, false, MaxNameLen},
	} {
		if err := checkField("device", f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the fields a caller sets.
func (df DeviceFirmware) Validate() error {
	if err := checkID("device firmware", "DeviceID", df.DeviceID, true); err != nil {
		return err
	}
	return checkID("device firmware", "ImageID", df.ImageID, true)
}

// Validate checks the fields a caller sets when creating a batch.
func (b Batch) Validate() error {
	for _, f := range []struct {
		name, v  string
		required bool
		max      int
	}{
		{"ID", b.ID, false, MaxIDLen},
		{"Organization", b.Organization, false, MaxIDLen},
		{"BuildID", b.BuildID, true, MaxIDLen},
		{"Name", b.Name, false, MaxNameLen},
	} {
		if err := checkField("batch", f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	if b.State != "" && b.State != status.BatchIdle && b.State != status.BatchInProgress {
		return invalid("batch", "State", "a new batch starts idle or in-progress, got %q", b.State)
	}
	if b.Wave != 0 || b.WaveTallies != nil || !b.WaveSettledAt.IsZero() || b.PauseReason != "" || b.CancelRequested {
		return invalid("batch", "Wave", "a new batch has no wave, pause or cancel state (the store keeps them)")
	}
	if err := b.Rollout.Validate(); err != nil {
		return err
	}
	return checkOptions("batch", b.Options)
}

// Validate checks the fields a caller sets when creating an operation.
func (op Operation) Validate() error {
	for _, f := range []struct {
		name, v  string
		required bool
	}{
		{"ID", op.ID, false},
		{"DeviceID", op.DeviceID, true},
		{"ImageID", op.ImageID, true},
		{"BatchID", op.BatchID, false},
	} {
		if err := checkID("operation", f.name, f.v, f.required); err != nil {
			return err
		}
	}
	if op.State != "" && op.State != status.Pending {
		return invalid("operation", "State", "a new operation starts pending, got %q", op.State)
	}
	if op.Phase != status.PhaseNone {
		return invalid("operation", "Phase", "a new operation has no phase, got %q", op.Phase)
	}
	if op.Progress != 0 {
		return invalid("operation", "Progress", "a new operation starts at 0, got %d", op.Progress)
	}
	if op.Reason != status.ReasonNone {
		return invalid("operation", "Reason", "a new operation has no reason, got %q", op.Reason)
	}
	if op.Attempt < 0 {
		return invalid("operation", "Attempt", "is negative (%d)", op.Attempt)
	}
	if op.Wave != 0 {
		return invalid("operation", "Wave", "is set by the store, got %d", op.Wave)
	}
	if op.Token != 0 || op.LeaseOwner != "" || !op.LeaseExpiresAt.IsZero() {
		return invalid("operation", "Token", "a new operation has no claim")
	}
	return checkOptions("operation", op.Options)
}

// TruncateLogLine returns line cut to MaxLogLineLen characters, marking the
// cut. Stores apply it in AppendLog.
func TruncateLogLine(line string) string {
	line = strings.ToValidUTF8(strings.ReplaceAll(line, "\x00", ""), "\uFFFD")
	if utf8.RuneCountInString(line) <= MaxLogLineLen {
		return line
	}
	const mark = " …[truncated]"
	r := []rune(line)
	return string(r[:MaxLogLineLen-utf8.RuneCountInString(mark)]) + mark
}
