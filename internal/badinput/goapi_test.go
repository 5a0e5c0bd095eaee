package badinput_test

// Rows of the public Go API.

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// goCase is a Go API row: setup prepares the world (before the snapshot),
// act gives the bad input, check judges the error. The harness then
// requires the store and its files as they were (or as delta allows) and
// the devices untouched (or read only, as contact allows).
type goCase struct {
	name, input, want, proves, defect string

	noWorld bool // the row builds what it tests itself (a config)
	setup   func(w *goWorld)
	act     func(w *goWorld) error
	check   func(t *testing.T, w *goWorld, err error)
	contact contact
	// delta, when set, judges what changed in the store instead of
	// requiring no change at all.
	delta func(t *testing.T, w *goWorld, before, after snapshot)
}

func (c goCase) row() row {
	return row{surface: surfaceGo, name: c.name, input: c.input, want: c.want, proves: c.proves, defect: c.defect,
		run: func(t *testing.T) { c.run(t) }}
}

func (c goCase) run(t *testing.T) {
	var w *goWorld
	if !c.noWorld {
		w = newGoWorld(t)
		if c.setup != nil {
			c.setup(w)
		}
	}
	var before snapshot
	var marks []deviceMark
	if w != nil {
		before, marks = w.snapshot(), markDevices(w.devices)
	}
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("the bad input made the code panic: %v", p)
			}
		}()
		return c.act(w)
	}()
	c.check(t, w, err)
	if w == nil {
		return
	}
	after := w.snapshot()
	if c.delta != nil {
		c.delta(t, w, before, after)
	} else {
		requireSame(t, before, after, c.name)
	}
	requireUntouched(t, w.devices, marks, c.contact)
}

// Checks of an error.

type check = func(t *testing.T, w *goWorld, err error)

// mentioning requires err's text to name the problem.
func mentioning(t *testing.T, err error, words ...string) {
	t.Helper()
	for _, s := range words {
		assert.Containsf(t, err.Error(), s, "the error does not say %q", s)
	}
}

// is requires an error matching target (errors.Is) that mentions words.
func is(target error, words ...string) check {
	return func(t *testing.T, _ *goWorld, err error) {
		t.Helper()
		require.ErrorIs(t, err, target)
		mentioning(t, err, words...)
	}
}

// invalid requires a *store.ValidationError on field that mentions words.
func invalid(field string, words ...string) check {
	return func(t *testing.T, _ *goWorld, err error) {
		t.Helper()
		var ve *store.ValidationError
		require.ErrorAs(t, err, &ve, "want a *store.ValidationError, got %v", err)
		require.ErrorIs(t, err, store.ErrInvalid)
		assert.Equal(t, field, ve.Field, "the field named: %v", err)
		mentioning(t, err, words...)
	}
}

// refused requires a *upgrader.RefusedError with reason, mentioning words.
func refused(reason status.Reason, words ...string) check {
	return func(t *testing.T, _ *goWorld, err error) {
		t.Helper()
		var re *upgrader.RefusedError
		require.ErrorAs(t, err, &re, "want a *upgrader.RefusedError, got %v", err)
		require.ErrorIs(t, err, upgrader.ErrRefused)
		assert.Equal(t, reason, re.Reason, "reason of %v", err)
		mentioning(t, err, words...)
	}
}

// plainError requires an error (the API has no sentinel for it) that
// mentions words.
func plainError(words ...string) check {
	return func(t *testing.T, _ *goWorld, err error) {
		t.Helper()
		require.Error(t, err)
		mentioning(t, err, words...)
	}
}

// both runs two checks.
func both(a, b check) check {
	return func(t *testing.T, w *goWorld, err error) {
		t.Helper()
		a(t, w, err)
		b(t, w, err)
	}
}

// notRevealing requires err to say nothing of the other tenant's records.
func notRevealing(w func(*goWorld) []string) check {
	return func(t *testing.T, gw *goWorld, err error) {
		t.Helper()
		for _, s := range w(gw) {
			assert.NotContainsf(t, err.Error(), s, "the error reveals %q of the other organization", s)
		}
	}
}

// otherTenant lists what the rows' caller (orgA) must not learn of orgB.
func otherTenant(w *goWorld) []string {
	return []string{orgB, w.otherImage.Name, w.otherBuild.Version, w.otherCat.Name, w.other.rec.Name}
}

// Bad images.

// metadataFor returns fwtool metadata naming boards, as a 23.05 build
// writes it.
func metadataFor(boards ...string) *imagemap.Metadata {
	raw, _ := json.Marshal(map[string]any{
		"metadata_version": "1.1", "compat_version": "1.0", "supported_devices": boards,
		"version": map[string]any{"dist": "OpenWrt", "version": "23.05.3", "revision": "r23809-234f1a2efa",
			"target": "ath79/generic", "board": strings.ReplaceAll(boards[0], ",", "_")},
	})
	return &imagemap.Metadata{Raw: raw}
}

// c7Sim is a c7 image of the given size with its fwtool metadata.
func c7Sim(size int64) openwrttest.Image {
	return openwrttest.Image{Boards: []string{c7Board}, Release: openwrttest.ReleaseDescription(newSeries),
		Size: size, Fwtool: true}
}

func uploadCase(name, input, want, proves, file string, im openwrttest.Image, c check) goCase {
	return goCase{name: name, input: input, want: want, proves: proves,
		act: func(w *goWorld) error { _, err := w.upload(file, im); return err }, check: c}
}

func goImageRows() []goCase {
	c7Name := openwrttest.NewImage(newSeries, c7Board, 0).FileName()
	bad := c7Sim(imageSize)
	bad.Metadata = &imagemap.Metadata{Raw: []byte(`{"supported_devices": ["tplink,archer-c7-v2"`)}
	crc := c7Sim(imageSize)
	crc.BadCRC = true
	const nothing = "nothing stored: no record, no bytes in Files"
	return []goCase{
		{name: "image/empty", input: "UploadImage of an empty file", proves: nothing,
			want: "upgrader.ErrImageInvalid (\"the image is empty\")",
			act: func(w *goWorld) error {
				_, err := w.eng.UploadImage(w.ctx, store.Image{BuildID: w.build.ID, Name: c7Name}, strings.NewReader(""))
				return err
			}, check: is(upgrader.ErrImageInvalid, "empty")},
		uploadCase("image/over-size-limit", "UploadImage of Config.MaxImageSize+1 bytes",
			"upgrader.ErrImageTooLarge naming the limit", nothing+", though the bytes were streamed to Files first",
			c7Name, c7Sim(maxImage+1), is(upgrader.ErrImageTooLarge, "262144")),
		uploadCase("image/corrupt-metadata", "fwtool metadata whose JSON is cut short",
			"upgrader.ErrImageInvalid naming the metadata", nothing, c7Name, bad, is(upgrader.ErrImageInvalid, "metadata")),
		uploadCase("image/bad-crc", "fwtool metadata with a wrong CRC in its trailer",
			"upgrader.ErrImageInvalid naming the CRC", nothing, c7Name, crc, is(upgrader.ErrImageInvalid, "CRC")),
		uploadCase("image/unknown-type", `"firmware.bin": a type in no image map, no fwtool metadata`,
			"upgrader.ErrUnknownImageType naming the type", nothing, "firmware.bin",
			openwrttest.Image{Boards: []string{c7Board}, Release: openwrttest.ReleaseDescription(newSeries), Size: imageSize},
			is(upgrader.ErrUnknownImageType, `"firmware.bin"`)),
		{name: "image/sha256-mismatch", input: "Image.SHA256 set by the caller that the bytes do not have",
			want: "*store.ValidationError on SHA256 with both digests", proves: nothing,
			act: func(w *goWorld) error {
				_, err := w.eng.UploadImage(w.ctx, store.Image{BuildID: w.build.ID, Name: "x-sysupgrade.bin",
					SHA256: strings.Repeat("ab", 32)}, c7Sim(imageSize).Reader())
				return err
			}, check: invalid("SHA256", strings.Repeat("ab", 32))},
		uploadCase("image/name-parent-path", `name "../../etc/passwd"`, "*store.ValidationError on Name (a plain file name)",
			nothing+"; the name never becomes a path on the device", "../../etc/passwd", c7Sim(imageSize),
			invalid("Name", "plain file name")),
		uploadCase("image/name-subdirectory", `name "a/b.bin"`, "*store.ValidationError on Name (a plain file name)",
			nothing, "a/b.bin", c7Sim(imageSize), invalid("Name", "plain file name")),
		uploadCase("image/name-backslash", `name "a\b.bin"`, "*store.ValidationError on Name (a plain file name)",
			nothing, `a\b.bin`, c7Sim(imageSize), invalid("Name", "plain file name")),
		uploadCase("image/name-rm-rf-root", `name "; rm -rf /" (ends with a path separator)`,
			"*store.ValidationError on Name (a plain file name)", nothing+"; the error names the field that is wrong",
			"; rm -rf /", c7Sim(imageSize), invalid("Name", "plain file name")),
		uploadCase("image/name-dot-dot", `name ".."`, "*store.ValidationError on Name", nothing, "..", c7Sim(imageSize),
			invalid("Name", `".."`)),
		{name: "image/name-not-utf8", input: `name "fw\xff.bin" (not UTF-8)`,
			want: "*store.ValidationError saying the name is not valid UTF-8", proves: nothing,
			act: func(w *goWorld) error { _, err := w.upload("fw\xff.bin", c7Sim(imageSize)); return err },
			check: func(t *testing.T, _ *goWorld, err error) {
				var ve *store.ValidationError
				require.ErrorAs(t, err, &ve, "want a *store.ValidationError, got %v", err)
				// The type is derived from the name, so either may be named.
				assert.Contains(t, []string{"Name", "Type"}, ve.Field)
				mentioning(t, err, "UTF-8")
			}},
		{name: "image/unknown-build", input: "UploadImage into a build ID that does not exist",
			want: "store.ErrNotFound naming the build", proves: nothing,
			act: func(w *goWorld) error {
				_, err := w.eng.UploadImage(w.ctx, store.Image{BuildID: "no-such-build", Name: c7Name}, c7Sim(imageSize).Reader())
				return err
			}, check: is(store.ErrNotFound, "no-such-build")},
		{name: "image/malformed-build-id", input: `build ID " b\n" (white space, a control character)`,
			want: "*store.ValidationError on BuildID", proves: nothing,
			act: func(w *goWorld) error {
				_, err := w.eng.UploadImage(w.ctx, store.Image{BuildID: " b\n", Name: c7Name}, c7Sim(imageSize).Reader())
				return err
			}, check: invalid("BuildID")},
		{name: "image/nil-reader", input: "UploadImage with a nil io.Reader",
			want: "an error saying the reader is nil, no panic", proves: nothing,
			act: func(w *goWorld) error {
				_, err := w.eng.UploadImage(w.ctx, store.Image{BuildID: w.build.ID, Name: c7Name}, nil)
				return err
			}, check: plainError("nil reader")},
		uploadCase("image/duplicate-type", "a second image of a type the build already has",
			"store.ErrConflict naming the type", nothing+": the first image and its bytes are intact",
			"openwrt-23.05.2-"+imagemap.TypeFromFileName(c7Name), c7Sim(imageSize), is(store.ErrConflict, imagemap.TypeFromFileName(c7Name))),
		{name: "image/wrong-board-create", input: "Create: the c7 image for a device of another board (GL-AR300M)",
			want:   "accepted at upload; Create refuses: *upgrader.RefusedError no-image-for-board naming the board",
			proves: "no operation stored, no device contacted",
			act: func(w *goWorld) error {
				_, err := w.eng.Create(w.ctx, upgrader.Request{DeviceID: w.gl.rec.ID, ImageID: w.image.ID})
				return err
			}, check: refused(status.ReasonNoImageForBoard, glBoard)},
		{name: "image/wrong-board-enqueue", input: "Enqueue (engine started): the c7 image for a GL-AR300M",
			want: "*upgrader.RefusedError no-image-for-board", proves: "no operation stored or run, no device contacted",
			setup: func(w *goWorld) { w.start() },
			act: func(w *goWorld) error {
				_, err := w.eng.Enqueue(w.ctx, upgrader.Request{DeviceID: w.gl.rec.ID, ImageID: w.image.ID})
				return err
			}, check: refused(status.ReasonNoImageForBoard, glBoard)},
		{name: "image/wrong-board-batch", input: "CreateBatch of the c7 build for the GL-AR300M only",
			want:   "upgrader.ErrNothingSelected; the plan skips the device with no-image-for-board",
			proves: "no batch, no operation, no device contacted",
			act: func(w *goWorld) error {
				_, plan, err := w.eng.CreateBatch(w.ctx, upgrader.BatchRequest{BuildID: w.build.ID,
					DeviceIDs: []string{w.gl.rec.ID}, Firmwareless: true})
				if err == nil || len(plan.Skipped) != 1 || plan.Skipped[0].Skip != upgrader.SkipNoImageForBoard {
					return errors.Join(err, errors.New("the plan does not skip the device for its board"))
				}
				return err
			}, check: is(upgrader.ErrNothingSelected)},
		{name: "image/metadata-contradicts-name",
			input:  "a file named for the C7 (its type is the C7's in the image map) whose fwtool metadata names only the GL-AR300M, then Upgrade of a C7",
			want:   "refused before any device is contacted: ErrImageInvalid at upload, or *upgrader.RefusedError no-image-for-board at Create",
			proves: "the image never reaches the board its name claims, and no operation is started only to be aborted on the device",
			setup:  func(w *goWorld) { w.otherBuildOfA() },
			act: func(w *goWorld) error {
				im := c7Sim(imageSize)
				im.Boards = []string{glBoard}
				im.Metadata = metadataFor(glBoard)
				up, err := w.eng.UploadImage(w.ctx, store.Image{BuildID: w.otherBuildOfA(), Name: w.sim.FileName()}, im.Reader())
				if err != nil {
					return err
				}
				op, err := w.eng.Upgrade(w.ctx, upgrader.Request{DeviceID: w.c7.rec.ID, ImageID: up.ID})
				if err == nil {
					return errors.New("Upgrade accepted the request: the operation ended " + string(op.State) + " (" + string(op.Reason) + ")")
				}
				return err
			},
			check: func(t *testing.T, w *goWorld, err error) {
				var re *upgrader.RefusedError
				if errors.As(err, &re) {
					assert.Equal(t, status.ReasonNoImageForBoard, re.Reason)
					return
				}
				require.ErrorIs(t, err, upgrader.ErrImageInvalid)
			},
			delta: func(t *testing.T, w *goWorld, before, after snapshot) {
				// The image itself may be accepted (its bytes and record);
				// nothing else may change.
				after.Images = slices.DeleteFunc(after.Images, func(im store.Image) bool { return im.BuildID == w.buildOfA.ID })
				for k := range after.Files {
					if _, ok := before.Files[k]; !ok {
						delete(after.Files, k)
					}
				}
				requireSame(t, before, after, "metadata contradicts name")
			}},
	}
}

// otherBuildOfA makes (once) a second build of the shared category, for an
// image whose type the world's build already has.
func (w *goWorld) otherBuildOfA() string {
	if w.buildOfA.ID == "" {
		b, err := w.eng.CreateBuild(w.ctx, store.Build{CategoryID: w.cat.ID, Version: "23.05-contradiction"})
		require.NoError(w.t, err)
		w.buildOfA = b
	}
	return w.buildOfA.ID
}

// Accepted names: they must reach the device's shell as one word.

func goShellNameRows() []goCase {
	var out []goCase
	for _, tc := range []struct{ name, file string }{
		{"semicolons", "fw; reboot; .bin"},
		{"command-substitution", "$(reboot).bin"},
		{"backticks", "`reboot`.bin"},
		{"quotes", `it's "v2".bin`},
		{"spaces", "my image  v2.bin"},
		{"newline", "fw\nreboot\n.bin"},
		{"glob-and-option", "-rf *.bin"},
	} {
		out = append(out, goCase{name: "name-reaches-shell-quoted/" + tc.name,
			input:  "an image named " + quoteForPeople(tc.file) + ", upgraded on a simulated 22.03 device",
			want:   "accepted; success; the device ran the path /tmp/NAME as one word in every command, and no other command",
			proves: "file names never become shell syntax on the device (the simulator parses commands as busybox ash)",
			act: func(w *goWorld) error {
				return shellNameUpgrade(w, tc.file)
			},
			check: func(t *testing.T, w *goWorld, err error) { require.NoError(t, err) },
			delta: func(t *testing.T, w *goWorld, before, after snapshot) {}, // an accepted upgrade changes the store
		}.accepted())
	}
	return out
}

// accepted marks a row whose input is accepted: it checks the devices
// itself.
func (c goCase) accepted() goCase {
	c.contact = contactAccepted
	return c
}

// contactAccepted: the input is accepted and the row checks what reached
// the device itself.
const contactAccepted contact = -1

// quoteForPeople shows a file name as Markdown code, with its newlines as
// \n.
func quoteForPeople(s string) string {
	s = strings.ReplaceAll(s, "\n", `\n`)
	if strings.Contains(s, "`") {
		return "`` " + s + " ``"
	}
	return "`" + s + "`"
}

// shellNameUpgrade uploads the world's image under file, upgrades the c7
// with it and checks what the device ran.
func shellNameUpgrade(w *goWorld, file string) error {
	t := w.t
	im, err := w.eng.UploadImage(w.ctx, store.Image{BuildID: w.build.ID, Name: file}, c7Sim(imageSize).Reader())
	if err != nil {
		return err
	}
	require.Equal(t, file, im.Name)
	op, err := w.eng.Upgrade(w.ctx, upgrader.Request{DeviceID: w.c7.rec.ID, ImageID: im.ID})
	require.NoError(t, err)
	require.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	dev := w.c7.dev
	remote := openwrt.DefaultRemoteDir + "/" + file

	// The flash got the whole path as its image.
	flashes := dev.Flashes()
	require.Len(t, flashes, 1)
	assert.Equal(t, remote, flashes[0].Path)
	assert.Equal(t, im.SHA256, flashes[0].SHA256)

	// Every word that holds the name is the whole path: the name was
	// never split, cut or expanded.
	used := 0
	for _, argv := range dev.Executed() {
		for _, a := range argv {
			if strings.Contains(a, file) {
				used++
				assert.Equal(t, remote, a, "a word holding the name in %q", argv)
			}
		}
	}
	assert.GreaterOrEqual(t, used, 3, "the path was checksummed, tested and flashed")
	assert.Contains(t, dev.Executed(), []string{"sysupgrade", "--test", "-c", remote})
	assert.Contains(t, dev.Executed(), []string{"sysupgrade", "-v", "-c", remote})

	// No other command ran than those an upgrade runs.
	known := []string{"uci", "cat", "rm", "sync", "echo", "df", "scp", "sha256sum", "md5sum", "sysupgrade", "mkdir", "ls", "ubus"}
	for _, argv := range dev.Executed() {
		assert.Containsf(t, known, argv[0], "the device ran %q", argv)
	}
	// Nothing else was written on the device but the checksum file.
	for _, f := range dev.Files() {
		assert.Contains(t, []string{openwrt.ChecksumFile}, f, "file left on the device")
	}
	return nil
}

// Options.

func optionCase(name, opts, want string, words ...string) goCase {
	return goCase{name: "options/" + name, input: "Request.Options " + opts,
		want:   want,
		proves: "refused by Create before anything is stored: no operation, no device contacted",
		act: func(w *goWorld) error {
			_, err := w.eng.Create(w.ctx, upgrader.Request{DeviceID: w.c7.rec.ID, ImageID: w.image.ID, Options: json.RawMessage(opts)})
			return err
		},
		check: both(refused(status.ReasonInvalidOptions, words...),
			func(t *testing.T, _ *goWorld, err error) { require.ErrorIs(t, err, openwrt.ErrInvalidOptions) }),
	}
}

// abortedOnDevice judges a row whose options only the device's release
// can refuse: one operation, ended aborted with reason before anything was
// uploaded; nothing else changed.
func abortedOnDevice(reason status.Reason) func(t *testing.T, w *goWorld, before, after snapshot) {
	return func(t *testing.T, w *goWorld, before, after snapshot) {
		var added []store.Operation
		for _, op := range after.Operations {
			if !slices.ContainsFunc(before.Operations, func(o store.Operation) bool { return o.ID == op.ID }) {
				added = append(added, op)
			}
		}
		require.Len(t, added, 1, "one operation")
		op := added[0]
		assert.Equal(t, status.Aborted, op.State)
		assert.Equal(t, reason, op.Reason)
		assert.Less(t, op.Phase.Order(), status.PhaseUpload.Order(), "aborted before the upload, at %s", op.Phase)
		after.Operations = slices.DeleteFunc(after.Operations, func(o store.Operation) bool { return o.ID == op.ID })
		delete(after.Logs, op.ID)
		requireSame(t, before, after, "besides the aborted operation")
	}
}

// addRelease adds a C7 of orgA running the last release of series.
func addRelease(series string) func(w *goWorld) {
	return func(w *goWorld) { w.add(orgA, c7Model, c7Board, openwrttest.ReleaseDescription(series)) }
}

// added is the device a row's setup added last.
func (w *goWorld) added() *sim { return w.devices[len(w.devices)-1] }

func goOptionRows() []goCase {
	const invalidOpts = "*upgrader.RefusedError invalid-options wrapping openwrt.ErrInvalidOptions"
	return []goCase{
		optionCase("unknown-letter", `{"sysupgrade":"c,x"}`, invalidOpts+`, naming "x"`, `"x"`),
		optionCase("unknown-letter-key", `{"c":true,"x":true}`, invalidOpts+`, naming "x"`, `"x"`),
		optionCase("not-a-flag", `{"sysupgrade":"--test"}`, invalidOpts+" (sysupgrade's own --test is not an option)", "unknown flag"),
		optionCase("conflicting-letters", `{"sysupgrade":"n,c"}`, invalidOpts+" (n drops the configuration c keeps)", "contradicts"),
		optionCase("conflicting-with-default", `{"n":true}`, invalidOpts+" (c is on by default)", "contradicts"),
		optionCase("wrong-type-letters", `{"sysupgrade":3}`, invalidOpts),
		optionCase("wrong-type-boolean", `{"F":"yes"}`, invalidOpts+`, naming "F"`, `"F"`),
		optionCase("wrong-type-ignore-minor", `{"ignore_minor_compat_version":"yes"}`, invalidOpts, "ignore_minor_compat_version"),
		optionCase("both-forms", `{"sysupgrade":"c","F":true}`, invalidOpts),
		optionCase("not-an-object", `["c"]`, invalidOpts),
		optionCase("malformed-json", `{"sysupgrade":`, invalidOpts),
		{name: "options/unsupported-by-19.07", input: `--ignore-minor-compat-version ({"ignore_minor_compat_version":true}) for a 19.07 device, which lacks it`,
			want:   "accepted by Create (its release is the device's to say); the attempt ends aborted invalid-options after reading the release, before any upload",
			proves: "the device is only read: no file, no service stopped, no sysupgrade; the operation ends, nothing else is stored",
			setup:  addRelease("19.07"),
			act: func(w *goWorld) error {
				op, err := w.eng.Upgrade(w.ctx, upgrader.Request{DeviceID: w.added().rec.ID, ImageID: w.image.ID,
					Options: json.RawMessage(`{"sysupgrade":"c","ignore_minor_compat_version":true}`)})
				if err == nil && op.State != status.Aborted {
					return errors.New("the operation ended " + string(op.State))
				}
				return err
			},
			check: func(t *testing.T, w *goWorld, err error) { require.NoError(t, err) },
			delta: abortedOnDevice(status.ReasonInvalidOptions), contact: contactReadOnly},
		{name: "options/unsupported-by-15.05", input: `-p ({"sysupgrade":"c,p"}) for a 15.05 device (-p came with 17.01)`,
			want:   "the attempt ends aborted invalid-options before any upload",
			proves: "the device is only read; the operation ends, nothing else is stored",
			setup:  addRelease("15.05"),
			act: func(w *goWorld) error {
				op, err := w.eng.Upgrade(w.ctx, upgrader.Request{DeviceID: w.added().rec.ID, ImageID: w.image.ID,
					Options: json.RawMessage(`{"sysupgrade":"c,p"}`)})
				if err == nil && op.State != status.Aborted {
					return errors.New("the operation ended " + string(op.State))
				}
				return err
			},
			check: func(t *testing.T, w *goWorld, err error) { require.NoError(t, err) },
			delta: abortedOnDevice(status.ReasonInvalidOptions), contact: contactReadOnly},
		{name: "options/unsupported-dry-run", input: "DryRunBatch with checks, --ignore-minor-compat-version, a 19.07 device",
			want:   "the device's verdict is would-abort invalid-options with a failed options check",
			proves: "a dry run stores nothing and only reads the device",
			setup:  addRelease("19.07"),
			act: func(w *goWorld) error {
				plan, err := w.eng.DryRunBatch(w.ctx, upgrader.BatchRequest{BuildID: w.build.ID, DeviceIDs: []string{w.added().rec.ID},
					Firmwareless: true, Options: json.RawMessage(`{"ignore_minor_compat_version":true}`)}, upgrader.DryRunOptions{Check: true})
				if err != nil {
					return err
				}
				if len(plan.Selected) != 1 || plan.Selected[0].Check == nil {
					return errors.New("the device was not selected and checked")
				}
				c := plan.Selected[0].Check
				if c.Verdict != upgrader.VerdictWouldAbort || c.Reason != status.ReasonInvalidOptions ||
					!slices.ContainsFunc(c.Checks, func(ch upgrader.Check) bool { return ch.Name == upgrader.CheckOptions && !ch.OK }) {
					return errors.New("verdict " + string(c.Verdict) + " (" + string(c.Reason) + ")")
				}
				return nil
			},
			check: func(t *testing.T, w *goWorld, err error) { require.NoError(t, err) }, contact: contactReadOnly},
		{name: "options/batch-invalid", input: `CreateBatch with Options {"sysupgrade":"c,x"}`,
			want:   "refused: an error naming the options (invalid-options), or ErrNothingSelected with every device skipped invalid-options",
			proves: "no batch, no operation, no device contacted",
			act: func(w *goWorld) error {
				_, plan, err := w.eng.CreateBatch(w.ctx, upgrader.BatchRequest{BuildID: w.build.ID, DeviceIDs: []string{w.c7.rec.ID},
					Firmwareless: true, Options: json.RawMessage(`{"sysupgrade":"c,x"}`)})
				if errors.Is(err, upgrader.ErrNothingSelected) &&
					(len(plan.Skipped) != 1 || plan.Skipped[0].Skip != upgrader.SkipInvalidOptions) {
					return errors.New("nothing selected, but not for the options")
				}
				return err
			},
			check: func(t *testing.T, w *goWorld, err error) {
				require.Error(t, err)
				if !errors.Is(err, upgrader.ErrNothingSelected) {
					require.ErrorIs(t, err, openwrt.ErrInvalidOptions)
				}
			}},
	}
}

// IDs and tenants.

func goIDRows() []goCase {
	create := func(dev, img func(w *goWorld) string) func(w *goWorld) error {
		return func(w *goWorld) error {
			_, err := w.eng.Create(w.ctx, upgrader.Request{DeviceID: dev(w), ImageID: img(w)})
			return err
		}
	}
	id := func(s string) func(*goWorld) string { return func(*goWorld) string { return s } }
	c7 := func(w *goWorld) string { return w.c7.rec.ID }
	image := func(w *goWorld) string { return w.image.ID }
	const nothing = "no operation stored, no device contacted"
	return []goCase{
		{name: "ids/unknown-device", input: "Create for a device ID nobody registered", want: "store.ErrNotFound naming the ID",
			proves: nothing, act: create(id("0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f"), image),
			check: is(store.ErrNotFound, "0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f")},
		{name: "ids/unknown-image", input: "Create with an image ID that does not exist", want: "store.ErrNotFound naming the ID",
			proves: nothing, act: create(c7, id("no-such-image")), check: is(store.ErrNotFound, "no-such-image")},
		{name: "ids/malformed-device", input: "Create for device ID \"a\\x00b\" (a NUL), then \"\" (empty)",
			want: "store.ErrNotFound or *store.ValidationError, no panic", proves: nothing,
			act: func(w *goWorld) error {
				_, err1 := w.eng.Create(w.ctx, upgrader.Request{DeviceID: "a\x00b", ImageID: w.image.ID})
				_, err2 := w.eng.Create(w.ctx, upgrader.Request{DeviceID: "", ImageID: w.image.ID})
				if err1 == nil || err2 == nil {
					return nil
				}
				return errors.Join(err1, err2)
			},
			check: func(t *testing.T, _ *goWorld, err error) {
				require.Error(t, err, "both are refused")
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					assert.True(t, errors.Is(e, store.ErrNotFound) || errors.Is(e, store.ErrInvalid), "%v", e)
				}
			}},
		{name: "ids/unknown-operation", input: "Cancel of an operation ID that does not exist", want: "store.ErrNotFound naming the ID",
			proves: "nothing changes", act: func(w *goWorld) error { _, err := w.eng.Cancel(w.ctx, "no-such-op"); return err },
			check: is(store.ErrNotFound, "no-such-op")},
		{name: "ids/unknown-batch", input: "PauseBatch, ResumeBatch, CancelBatch and RetryBatch of a batch ID that does not exist",
			want: "store.ErrNotFound from each", proves: "nothing changes",
			act: func(w *goWorld) error {
				_, e1 := w.eng.PauseBatch(w.ctx, "no-such-batch")
				_, e2 := w.eng.ResumeBatch(w.ctx, "no-such-batch")
				_, e3 := w.eng.CancelBatch(w.ctx, "no-such-batch")
				_, _, e4 := w.eng.RetryBatch(w.ctx, "no-such-batch", nil, true)
				for _, e := range []error{e1, e2, e3, e4} {
					if !errors.Is(e, store.ErrNotFound) {
						return errors.Join(errors.New("not ErrNotFound"), e)
					}
				}
				return e1
			}, check: is(store.ErrNotFound, "no-such-batch")},
		{name: "ids/other-org-image", input: "Create for an acme device with an image of globex (the other tenant)",
			want:   "*upgrader.RefusedError organization-mismatch that names nothing of globex's records",
			proves: nothing + "; the other tenant's organization, image, build and category stay unnamed",
			act:    create(c7, func(w *goWorld) string { return w.otherImage.ID }),
			check:  both(refused(status.ReasonOrganizationMismatch), notRevealing(otherTenant))},
		{name: "ids/other-org-device-in-batch", input: "CreateBatch of acme naming globex's device by ID",
			want:   "upgrader.ErrNothingSelected; the plan skips it as other-organization and holds nothing but its ID",
			proves: "no batch, no operation; nothing of globex's device (name, model, group, address) is returned",
			act: func(w *goWorld) error {
				_, plan, err := w.eng.CreateBatch(w.ctx, upgrader.BatchRequest{BuildID: w.build.ID, Organization: orgA,
					DeviceIDs: []string{w.other.rec.ID}, Firmwareless: true})
				if len(plan.Selected) != 0 || len(plan.Skipped) != 1 {
					return errors.New("the plan lists more than the skipped device")
				}
				e := plan.Skipped[0]
				if e.Skip != upgrader.SkipOtherOrg || (e.Device != store.Device{ID: w.other.rec.ID}) || e.Image.ID != "" {
					b, _ := json.Marshal(e)
					return errors.New("the plan entry reveals more than the ID: " + string(b))
				}
				return err
			}, check: is(upgrader.ErrNothingSelected)},
		{name: "ids/other-org-build-in-batch", input: "CreateBatch for organization acme of globex's build",
			want:   "*upgrader.RefusedError organization-mismatch that names nothing of globex's records",
			proves: "no batch, no operation, no device contacted; globex's organization stays unnamed",
			act: func(w *goWorld) error {
				_, _, err := w.eng.CreateBatch(w.ctx, upgrader.BatchRequest{BuildID: w.otherBuild.ID, Organization: orgA, Firmwareless: true})
				return err
			}, check: both(refused(status.ReasonOrganizationMismatch), notRevealing(otherTenant))},
		{name: "ids/deactivated-device", input: "Create for a device registered with Active false",
			want: "*upgrader.RefusedError device-deactivated", proves: nothing,
			setup: func(w *goWorld) {
				d := w.c7.rec
				d.Active = false
				_, err := w.eng.RegisterDevice(w.ctx, d)
				require.NoError(w.t, err)
			},
			act: create(c7, image), check: refused(status.ReasonDeviceDeactivated)},
		{name: "ids/device-busy", input: "a second Create for a device whose first operation is pending",
			want: "*upgrader.RefusedError another-upgrade-in-progress", proves: "the first operation is kept as it was, no second one stored",
			setup: func(w *goWorld) {
				_, err := w.eng.Create(w.ctx, upgrader.Request{DeviceID: w.c7.rec.ID, ImageID: w.image.ID})
				require.NoError(w.t, err)
			},
			act: create(c7, image), check: refused(status.ReasonAnotherUpgradeInProgress)},
	}
}

// Configurations.

func goConfigRows() []goCase {
	reg := func() *upgrader.Registry { return upgrader.NewRegistry() }
	engine := func(cfg *upgrader.Config) func(*goWorld) error {
		return func(*goWorld) error {
			e, err := upgrader.NewEngine(memory.New(), reg(), cfg)
			if err == nil && e == nil {
				return errors.New("NewEngine returned neither an engine nor an error")
			}
			return err
		}
	}
	ow := func(cfg *openwrt.Config) func(*goWorld) error {
		return func(*goWorld) error { _, err := openwrt.New(cfg); return err }
	}
	withCreds := func(cfg openwrt.Config) *openwrt.Config {
		cfg.CredentialsFunc = noCredentials
		return &cfg
	}
	const proves = "NewEngine refuses with a clear error, returns no engine and does not panic"
	const provesOW = "openwrt.New refuses with a clear error and does not panic"
	c := func(name, input, want string, act func(*goWorld) error, chk check, p string) goCase {
		return goCase{name: "config/" + name, input: input, want: want, proves: p, noWorld: true, act: act, check: chk}
	}
	return []goCase{
		c("nil-store", "NewEngine(nil, reg, nil)", "an error naming the nil store",
			func(*goWorld) error { _, err := upgrader.NewEngine(nil, reg(), nil); return err }, plainError("nil store"), proves),
		c("nil-registry", "NewEngine(store, nil, nil)", "an error naming the nil registry",
			func(*goWorld) error { _, err := upgrader.NewEngine(memory.New(), nil, nil); return err }, plainError("nil registry"), proves),
		c("negative-workers", "Config.Workers -1", "an error naming Workers", engine(&upgrader.Config{Workers: -1}), plainError("Workers"), proves),
		c("negative-operation-timeout", "Config.OperationTimeout -1s", "an error saying timeouts must not be negative",
			engine(&upgrader.Config{OperationTimeout: -time.Second}), plainError("negative"), proves),
		c("negative-verify-timeout", "Config.VerifyTimeout -1s", "an error saying timeouts must not be negative",
			engine(&upgrader.Config{VerifyTimeout: -time.Second}), plainError("negative"), proves),
		c("zero-timeouts-are-defaults", "upgrader.Config with every duration 0 (and a nil Config); openwrt.Config with every duration 0",
			"accepted: 0 means the documented default (OperationTimeout 25 min, LeaseDuration 30 s, ...)",
			func(*goWorld) error {
				for _, cfg := range []*upgrader.Config{nil, {}} {
					e, err := upgrader.NewEngine(memory.New(), reg(), cfg)
					if err != nil {
						return err
					}
					got := e.Config()
					if got.OperationTimeout != upgrader.DefaultOperationTimeout || got.VerifyTimeout != upgrader.DefaultVerifyTimeout ||
						got.LeaseDuration != upgrader.DefaultLeaseDuration || got.Retry.InitialInterval != upgrader.DefaultRetryInitial {
						return errors.New("a zero duration did not become its default")
					}
				}
				_, err := openwrt.New(withCreds(openwrt.Config{}))
				return err
			},
			func(t *testing.T, _ *goWorld, err error) { require.NoError(t, err) }, "zero is not an error but the default, as documented"),
		c("lease-under-minimum", "Config.LeaseDuration 1ms (under MinLeaseDuration)", "an error naming LeaseDuration and the minimum",
			engine(&upgrader.Config{LeaseDuration: time.Millisecond}), plainError("LeaseDuration", "MinLeaseDuration"), proves),
		c("negative-poll-interval", "Config.PollInterval -1ms", "an error naming PollInterval",
			engine(&upgrader.Config{PollInterval: -time.Millisecond}), plainError("PollInterval"), proves),
		c("negative-max-image-size", "Config.MaxImageSize -5 (not NoImageSizeLimit)", "an error naming MaxImageSize",
			engine(&upgrader.Config{MaxImageSize: -5}), plainError("MaxImageSize"), proves),
		c("event-buffer-over-max", "Config.EventBuffer MaxEventBuffer+1", "an error naming EventBuffer",
			engine(&upgrader.Config{EventBuffer: upgrader.MaxEventBuffer + 1}), plainError("EventBuffer"), proves),
		c("retry-multiplier-nan", "RetryPolicy.Multiplier NaN", "an error naming Multiplier",
			engine(&upgrader.Config{Retry: upgrader.RetryPolicy{Multiplier: math.NaN()}}), plainError("Multiplier", "NaN"), proves),
		c("retry-multiplier-inf", "RetryPolicy.Multiplier +Inf", "an error naming Multiplier",
			engine(&upgrader.Config{Retry: upgrader.RetryPolicy{Multiplier: math.Inf(1)}}), plainError("Multiplier"), proves),
		c("retry-multiplier-below-one", "RetryPolicy.Multiplier 0.5 (waits that shrink)", "an error naming Multiplier",
			engine(&upgrader.Config{Retry: upgrader.RetryPolicy{Multiplier: 0.5}}), plainError("Multiplier"), proves),
		c("retry-randomization-nan", "RetryPolicy.RandomizationFactor NaN", "an error naming RandomizationFactor",
			engine(&upgrader.Config{Retry: upgrader.RetryPolicy{RandomizationFactor: math.NaN()}}), plainError("RandomizationFactor"), proves),
		c("retry-negative-interval", "RetryPolicy.InitialInterval -1s", "an error saying intervals must not be negative",
			engine(&upgrader.Config{Retry: upgrader.RetryPolicy{InitialInterval: -time.Second}}), plainError("negative"), proves),
		c("retry-negative-max-retries", "RetryPolicy.MaxRetries -1",
			"accepted: a negative MaxRetries means no retries, as documented (Config().Retry.MaxRetries is 0); the CLI refuses --retries -1",
			func(*goWorld) error {
				e, err := upgrader.NewEngine(memory.New(), reg(), &upgrader.Config{Retry: upgrader.RetryPolicy{MaxRetries: -1}})
				if err == nil && e.Config().Retry.MaxRetries != 0 {
					return errors.New("MaxRetries -1 became a number of retries")
				}
				return err
			}, func(t *testing.T, _ *goWorld, err error) { require.NoError(t, err) }, "the documented meaning, not a silent default"),
		c("offline-randomization-inf", "OfflinePolicy.RandomizationFactor -Inf", "an error naming RandomizationFactor",
			engine(&upgrader.Config{Offline: upgrader.OfflinePolicy{RandomizationFactor: math.Inf(-1)}}), plainError("offline policy", "RandomizationFactor"), proves),
		c("offline-negative-max-wait", "OfflinePolicy.MaxWait -1ns", "an error saying durations must not be negative",
			engine(&upgrader.Config{Offline: upgrader.OfflinePolicy{MaxWait: -1}}), plainError("offline policy", "negative"), proves),
		c("openwrt-nil-config", "openwrt.New(nil)", "an error saying CredentialsFunc is required",
			ow(nil), plainError("CredentialsFunc"), provesOW),
		c("openwrt-negative-command-timeout", "openwrt.Config.CommandTimeout -1s", "an error naming CommandTimeout",
			ow(withCreds(openwrt.Config{CommandTimeout: -time.Second})), plainError("CommandTimeout"), provesOW),
		c("openwrt-negative-upload-timeout", "openwrt.Config.UploadTimeout -1s", "an error naming UploadTimeout",
			ow(withCreds(openwrt.Config{UploadTimeout: -time.Second})), plainError("UploadTimeout"), provesOW),
		c("openwrt-negative-reconnect-retries", "openwrt.Config.ReconnectMaxRetries -1", "an error naming ReconnectMaxRetries",
			ow(withCreds(openwrt.Config{ReconnectMaxRetries: -1})), plainError("ReconnectMaxRetries"), provesOW),
		c("openwrt-unknown-upload-method", `openwrt.Config.UploadMethods ["ftp"]`, `an error naming the method "ftp"`,
			ow(withCreds(openwrt.Config{UploadMethods: []openwrt.UploadMethod{"ftp"}})), plainError(`"ftp"`), provesOW),
		c("openwrt-bad-service-name", `openwrt.Config.Services ["../../sbin/reboot"]`, "an error naming the service",
			ow(withCreds(openwrt.Config{Services: []string{"../../sbin/reboot"}})), plainError("../../sbin/reboot"), provesOW),
		c("registry-typed-nil", "Registry.Register of a typed nil *openwrt.Upgrader, and of an empty kind",
			"an error for each; nothing registered",
			func(*goWorld) error {
				r := upgrader.NewRegistry()
				var nilUp *openwrt.Upgrader
				e1 := r.Register(openwrt.Connection, nilUp)
				up, err := openwrt.New(withCreds(openwrt.Config{}))
				if err != nil {
					return err
				}
				e2 := r.Register("", up)
				if _, ok := r.Lookup(openwrt.Connection); ok {
					return errors.New("the typed nil was registered")
				}
				if e1 == nil || e2 == nil {
					return nil
				}
				return errors.Join(e1, e2)
			}, func(t *testing.T, _ *goWorld, err error) { require.Error(t, err, "both refused") },
			"a nil upgrader never reaches an attempt (it would panic there)"),
	}
}

// Rollout policies.

func goRolloutRows() []goCase {
	validate := func(r store.Rollout) func(*goWorld) error { return func(*goWorld) error { return r.Validate() } }
	c := func(name, input, want string, act func(*goWorld) error, chk check) goCase {
		return goCase{name: "rollout/" + name, input: input, want: want, noWorld: true, act: act, check: chk,
			proves: "Rollout.Validate refuses it on its own, before any store sees it"}
	}
	parseWindow := func(s string) func(*goWorld) error {
		return func(*goWorld) error {
			w, err := store.ParseWindow(s)
			if err != nil {
				return err
			}
			return store.Rollout{Windows: []store.Window{w}}.Validate()
		}
	}
	batch := func(name, input string, r store.Rollout, field string) goCase {
		return goCase{name: "rollout/" + name, input: input,
			want:   "*store.ValidationError on " + field,
			proves: "CreateBatch refuses before anything is stored: no batch, no operation, no device contacted",
			act: func(w *goWorld) error {
				_, _, err := w.eng.CreateBatch(w.ctx, upgrader.BatchRequest{BuildID: w.build.ID,
					DeviceIDs: []string{w.c7.rec.ID}, Firmwareless: true, Rollout: r})
				return err
			}, check: invalid(field)}
	}
	many := make([]store.WaveSize, store.MaxWaves+1)
	for i := range many {
		many[i] = store.WaveSize{Count: i + 1}
	}
	return []goCase{
		c("waves-over-100", "Waves [150%]", "*store.ValidationError on Waves naming 150%",
			validate(store.Rollout{Waves: []store.WaveSize{{Percent: 150}}}), invalid("Waves", "150%")),
		c("waves-parse-over-100", `store.ParseWaves("1,150%")`, "*store.ValidationError on Waves naming 150%",
			func(*goWorld) error { _, err := store.ParseWaves("1,150%"); return err }, invalid("Waves", "150%")),
		c("wave-count-and-percent", "WaveSize{Count: 1, Percent: 10}", "*store.ValidationError on Waves",
			validate(store.Rollout{Waves: []store.WaveSize{{Count: 1, Percent: 10}}}), invalid("Waves", "not both")),
		c("too-many-waves", "MaxWaves+1 waves", "*store.ValidationError on Waves",
			validate(store.Rollout{Waves: many}), invalid("Waves")),
		c("failure-threshold-over-100", "FailureThreshold 120", "*store.ValidationError on FailureThreshold naming 120%",
			validate(store.Rollout{FailureThreshold: store.Ptr(120.0)}), invalid("FailureThreshold", "120%")),
		c("failure-threshold-negative", "FailureThreshold -1", "*store.ValidationError on FailureThreshold",
			validate(store.Rollout{FailureThreshold: store.Ptr(-1.0)}), invalid("FailureThreshold")),
		c("failure-threshold-nan", "FailureThreshold NaN", "*store.ValidationError on FailureThreshold",
			validate(store.Rollout{FailureThreshold: store.Ptr(math.NaN())}), invalid("FailureThreshold", "NaN")),
		c("success-threshold-inf", "SuccessThreshold +Inf", "*store.ValidationError on SuccessThreshold",
			validate(store.Rollout{SuccessThreshold: store.Ptr(math.Inf(1))}), invalid("SuccessThreshold")),
		c("window-empty", `window "05:00-05:00"`, "*store.ValidationError on Windows (empty or the whole day)",
			parseWindow("05:00-05:00"), invalid("Windows", "05:00-05:00")),
		c("window-whole-day", `window "00:00-24:00"`, "*store.ValidationError on Windows",
			parseWindow("00:00-24:00"), invalid("Windows")),
		c("window-bad-time", `window "25:00-26:00"`, "*store.ValidationError on Windows naming 25:00",
			parseWindow("25:00-26:00"), invalid("Windows", "25:00")),
		c("window-bad-time-zone", `window "01:00-05:00 Mars/Olympus"`, "*store.ValidationError on Windows naming the zone",
			parseWindow("01:00-05:00 Mars/Olympus"), invalid("Windows", "Mars/Olympus")),
		c("window-local-zone", `window "01:00-05:00 Local"`, "*store.ValidationError: Local differs from machine to machine",
			parseWindow("01:00-05:00 Local"), invalid("Windows", "Local")),
		c("window-bad-zone-in-struct", `Window{TimeZone: "Mars/Olympus"} built without ParseWindow`, "*store.ValidationError on Windows",
			validate(store.Rollout{Windows: []store.Window{{Start: 3600, End: 7200, TimeZone: "Mars/Olympus"}}}), invalid("Windows", "Mars/Olympus")),
		c("rate-negative-period", "StartRate{Count: 5, Per: -1s}", "*store.ValidationError on StartRate",
			validate(store.Rollout{StartRate: store.Rate{Count: 5, Per: -time.Second}}), invalid("StartRate", "period")),
		c("rate-period-over-max", "StartRate{Count: 5, Per: 48h}", "*store.ValidationError on StartRate naming the bound",
			validate(store.Rollout{StartRate: store.Rate{Count: 5, Per: 48 * time.Hour}}), invalid("StartRate", "24h")),
		c("rate-negative-count", "StartRate{Count: -1}", "*store.ValidationError on StartRate",
			validate(store.Rollout{StartRate: store.Rate{Count: -1}}), invalid("StartRate", "negative")),
		{name: "rollout/rate-zero-period", input: "StartRate{Count: 5, Per: 0}", noWorld: true,
			want:   "accepted: a zero period is a minute, as documented (Rate.Period)",
			proves: "zero is the documented default, never a division by zero",
			act: func(*goWorld) error {
				r := store.Rollout{StartRate: store.Rate{Count: 5}}
				if err := r.Validate(); err != nil {
					return err
				}
				if r.StartRate.Period() != time.Minute {
					return errors.New("the period is " + r.StartRate.Period().String())
				}
				return nil
			}, check: func(t *testing.T, _ *goWorld, err error) { require.NoError(t, err) }},
		{name: "rollout/window-inverted", input: `window "22:00-04:00" (End before Start)`, noWorld: true,
			want:   "accepted: the window spans midnight, as documented (in at 23:00 and 03:00, out at 12:00)",
			proves: "an inverted window is not an error but the night, never an empty window that would start nothing",
			act: func(*goWorld) error {
				w, err := store.ParseWindow("22:00-04:00")
				if err != nil {
					return err
				}
				if err := (store.Rollout{Windows: []store.Window{w}}).Validate(); err != nil {
					return err
				}
				at := func(h int) time.Time { return time.Date(2025, 1, 1, h, 0, 0, 0, time.UTC) }
				if !w.Contains(at(23)) || !w.Contains(at(3)) || w.Contains(at(12)) {
					return errors.New("the window is not the night")
				}
				return nil
			}, check: func(t *testing.T, _ *goWorld, err error) { require.NoError(t, err) }},
		c("group-limit-without-key", "GroupLimit 1 without GroupBy", "*store.ValidationError on GroupBy",
			validate(store.Rollout{GroupLimit: 1}), invalid("GroupBy")),
		c("negative-caps", "MaxConcurrent -1, then MinFinished -1, then WaveWait -1ns", "*store.ValidationError on each field",
			func(*goWorld) error {
				var errs []error
				for _, r := range []store.Rollout{{MaxConcurrent: -1}, {MinFinished: -1}, {WaveWait: -1}} {
					if err := r.Validate(); err == nil {
						return nil
					} else {
						errs = append(errs, err)
					}
				}
				return errors.Join(errs...)
			}, func(t *testing.T, _ *goWorld, err error) {
				require.ErrorIs(t, err, store.ErrInvalid)
				mentioning(t, err, "MaxConcurrent", "MinFinished", "WaveWait")
			}),
		batch("create-batch-waves-over-100", "CreateBatch with Waves [150%]", store.Rollout{Waves: []store.WaveSize{{Percent: 150}}}, "Waves"),
		batch("create-batch-bad-zone", `CreateBatch with a window in "Mars/Olympus"`,
			store.Rollout{Windows: []store.Window{{Start: 3600, End: 7200, TimeZone: "Mars/Olympus"}}}, "Windows"),
		{name: "rollout/set-rollout-invalid", input: "SetRollout of a held batch to FailureThreshold 120",
			want:   "*store.ValidationError on FailureThreshold",
			proves: "the batch keeps its rollout: an update is not applied half-way",
			setup: func(w *goWorld) {
				_, _, err := w.eng.CreateBatch(w.ctx, upgrader.BatchRequest{BuildID: w.build.ID, DeviceIDs: []string{w.c7.rec.ID},
					Firmwareless: true, Hold: true, Rollout: store.Rollout{FailureThreshold: store.Ptr(20.0)}})
				require.NoError(w.t, err)
			},
			act: func(w *goWorld) error {
				bs, err := w.st.ListBatches(w.ctx, store.BatchFilter{})
				require.NoError(w.t, err)
				require.Len(w.t, bs, 1)
				_, err = w.eng.SetRollout(w.ctx, bs[0].ID, store.Rollout{FailureThreshold: store.Ptr(120.0)})
				return err
			}, check: invalid("FailureThreshold", "120%")},
	}
}

// noCredentials is a CredentialsFunc for configurations that are never
// used to reach a device.
func noCredentials(context.Context, store.Device) (openwrt.Credentials, error) {
	return openwrt.Credentials{}, errors.New("no device")
}

func goRows() []row {
	var cases []goCase
	cases = append(cases, goImageRows()...)
	cases = append(cases, goShellNameRows()...)
	cases = append(cases, goOptionRows()...)
	cases = append(cases, goIDRows()...)
	cases = append(cases, goConfigRows()...)
	cases = append(cases, goRolloutRows()...)
	rows := make([]row, len(cases))
	for i, c := range cases {
		rows[i] = c.row()
	}
	return rows
}
