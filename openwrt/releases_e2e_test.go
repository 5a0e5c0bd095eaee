package openwrt_test

// OpenWrt as it really is, release by release: every release profile of the
// simulator upgraded through the engine, and the release-specific refusals
// and outcomes, each checked for its state and reason, what the device
// received, whether it was flashed and whether its services run.

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// addImage stores a simulated image as a new build of the fleet's category
// (osIdentifier may be empty) and returns it.
func (f *fleet) addImage(t *testing.T, version, osIdentifier, name string, im openwrttest.Image) store.Image {
	t.Helper()
	ctx := context.Background()
	b, err := f.eng.Store().Build(ctx, f.image.BuildID)
	require.NoError(t, err)
	build, err := f.eng.CreateBuild(ctx, store.Build{CategoryID: b.CategoryID, Version: version, OSIdentifier: osIdentifier})
	require.NoError(t, err)
	if im.Size == 0 {
		im.Size = 128 << 10
	}
	img, err := f.eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: e2eType, Name: name}, im.Reader())
	require.NoError(t, err)
	return img
}

// servicesRunning requires every service of the device to run.
func servicesRunning(t *testing.T, dev *openwrttest.Device) {
	t.Helper()
	for svc, up := range dev.Services() {
		assert.True(t, up, "service %s left stopped", svc)
	}
}

// ranTool reports whether the device ran a command whose first word is tool.
func ranTool(dev *openwrttest.Device, tool string) bool {
	return slices.ContainsFunc(dev.Executed(), func(argv []string) bool { return len(argv) > 0 && argv[0] == tool })
}

// uploaded reports whether the image reached the device by any method.
func uploaded(dev *openwrttest.Device) bool {
	return slices.ContainsFunc(dev.Commands(), func(c string) bool {
		return strings.HasPrefix(c, "sftp:put") || strings.Contains(c, "'scp'") || strings.HasPrefix(c, "'cat' >")
	})
}

func TestEveryReleaseUpgradesThroughTheEngine(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	img := f.addImage(t, "23.05.3-fwtool", "", "openwrt-23.05.3-fwtool-"+e2eType,
		openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: e2eRelease, Fwtool: true})
	for _, rel := range openwrttest.Releases() {
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			d, dev := f.device(t, openwrttest.Config{Release: openwrttest.ReleaseDescription(rel)})
			before := dev.Release()
			end, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: img.ID})
			require.NoError(t, err)
			logs := strings.Join(logLines(t, f, end.ID), "\n")
			require.Equal(t, status.Success, end.State, "%s: %s\n%s", rel, end.Reason, logs)
			assert.Equal(t, 1, dev.Flashed())
			assert.Equal(t, e2eRelease, dev.Release(), "runs the new release (was %s)", before)
			p := openwrttest.ProfileFor(rel)
			assert.Equal(t, !p.SHA256Sum, ranTool(dev, "md5sum"), "md5sum exactly where busybox has no sha256sum")
			if !p.Test() {
				assert.Contains(t, logs, "--test is not available")
			}
			// The proof came from the image's metadata (the build names no
			// release), compared by version and revision.
			assert.Contains(t, logs, "success: the device runs \""+e2eRelease+"\" (boot id changed)")
		})
	}
}

func logLines(t *testing.T, f *fleet, opID string) []string {
	t.Helper()
	entries, err := f.eng.Store().Logs(context.Background(), opID, 0, 0)
	require.NoError(t, err)
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Line
	}
	return out
}

func TestReleaseSpecificOutcomes(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	board := []string{openwrttest.DefaultBoardName}
	compat11 := f.addImage(t, "23.05.3-dsa", "", "openwrt-23.05.3-dsa-"+e2eType,
		openwrttest.Image{Boards: board, Release: e2eRelease, CompatVersion: "1.1", CompatMessage: "Config cannot be migrated from swconfig to DSA"})
	compat20 := f.addImage(t, "23.05.3-v2", "", "openwrt-23.05.3-v2-"+e2eType,
		openwrttest.Image{Boards: board, Release: e2eRelease, CompatVersion: "2.0", CompatMessage: "New partition layout"})
	// Named like an Archer C7 image, its own metadata says GL-AR150.
	contradicting := f.addImage(t, "23.05.3-ar150", "", "openwrt-23.05.3-"+e2eType,
		openwrttest.Image{Boards: board, Release: e2eRelease, Metadata: &imagemap.Metadata{MetadataVersion: "1.1",
			CompatVersion: "1.0", SupportedDevices: []string{"glinet,gl-ar150"},
			Version: imagemap.Version{Dist: "OpenWrt", Version: "23.05.3", Revision: "r23809-234f1a2efa"}}})
	noIdentity := f.addImage(t, "unnamed", "", "custom-"+e2eType,
		openwrttest.Image{Boards: board, Release: e2eRelease})

	opts := func(s string) json.RawMessage { return json.RawMessage(s) }
	for _, tc := range []struct {
		name    string
		sim     openwrttest.Config
		image   store.Image
		options json.RawMessage
		state   status.State
		reason  status.Reason
		upload  bool // the image reached the device
		flashed bool
		log     string
	}{
		{name: "compat minor refused keeping the config", sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("22.03")},
			image: compat11, state: status.Aborted, reason: status.ReasonImageInvalid, log: "would allow it"},
		{name: "compat minor with -n", sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("22.03")},
			image: compat11, options: opts(`{"sysupgrade":"n"}`), state: status.Success, upload: true, flashed: true},
		{name: "compat minor with the ignore flag", sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("23.05")},
			image: compat11, options: opts(`{"sysupgrade":"c","ignore_minor_compat_version":true}`), state: status.Success, upload: true, flashed: true},
		{name: "ignore flag on 21.02 (no such option)", sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("21.02")},
			image: compat11, options: opts(`{"sysupgrade":"c","ignore_minor_compat_version":true}`), state: status.Aborted, reason: status.ReasonInvalidOptions,
			log: "has no sysupgrade --ignore-minor-compat-version"},
		{name: "compat major refused even with -n", sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("24.10")},
			image: compat20, options: opts(`{"sysupgrade":"n"}`), state: status.Aborted, reason: status.ReasonImageInvalid, log: "incompatible"},
		{name: "no overlay with -c", sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("23.05"), RootFS: openwrttest.RootFSExt4},
			image: f.image, state: status.Aborted, reason: status.ReasonImageInvalid, upload: true, log: "required for '-c'"},
		{name: "an option the release lacks", sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("17.01")},
			image: f.image, options: opts(`{"sysupgrade":"c,o"}`), state: status.Aborted, reason: status.ReasonInvalidOptions, log: "has no sysupgrade -o"},
		{name: "procd refusal", sim: openwrttest.Config{Faults: openwrttest.Faults{ProcdRefusal: true}},
			image: f.image, state: status.Failed, reason: status.ReasonFlashFailed, upload: true, log: "was not flashed"},
		{name: "a long -v listing before the 246 line", sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("23.05"), BackupFiles: 3000},
			image: f.image, state: status.Success, upload: true, flashed: true, log: "expected, the flash goes on"},
		{name: "old firmware with no OS identifier", sim: openwrttest.Config{Faults: openwrttest.Faults{OldFirmwareAfterReboot: true}},
			image: noIdentity, state: status.Failed, reason: status.ReasonOldFirmwareAfterReboot, upload: true, flashed: true,
			log: "the release it ran before the flash"},
		{name: "silent reboot", sim: openwrttest.Config{Faults: openwrttest.Faults{SilentReboot: true}},
			image: f.image, state: status.Success, upload: true, flashed: true},
		{name: "-n: the device comes back with new host keys", sim: openwrttest.Config{Faults: openwrttest.Faults{NewHostKeysAfterReset: true}},
			image: f.image, options: opts(`{"sysupgrade":"n"}`), state: status.Success, upload: true, flashed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, dev := f.device(t, tc.sim)
			end, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: tc.image.ID, Options: tc.options})
			require.NoError(t, err)
			logs := strings.Join(logLines(t, f, end.ID), "\n")
			require.Equal(t, tc.state, end.State, "reason %s; log:\n%s", end.Reason, logs)
			if tc.reason != status.ReasonNone {
				assert.Equal(t, tc.reason, end.Reason, logs)
			}
			assert.Equal(t, tc.upload, uploaded(dev), "the image reached the device")
			flashes := 0
			if tc.flashed {
				flashes = 1
			}
			assert.Equal(t, flashes, dev.Flashed(), "flashes")
			if tc.log != "" {
				assert.Contains(t, logs, tc.log)
			}
			if !tc.flashed {
				servicesRunning(t, dev)
				_, left := dev.File("/tmp/" + tc.image.Name)
				assert.False(t, left, "the uploaded image was removed")
			}
			if tc.state == status.Failed && tc.reason == status.ReasonOldFirmwareAfterReboot {
				_, poisoned := dev.File("/etc/openwisp/firmware_checksum")
				assert.False(t, poisoned, "no checksum recorded for an unproven upgrade")
			}
		})
	}
	// Named like an Archer C7 image, its metadata names only the GL-AR150:
	// the metadata decides (as sysupgrade holds it, even with -F), so the
	// request is refused before any device is contacted.
	for _, options := range []json.RawMessage{nil, opts(`{"sysupgrade":"c,F"}`)} {
		t.Run("metadata contradicts the name "+string(options), func(t *testing.T) {
			t.Parallel()
			d, dev := f.device(t, openwrttest.Config{})
			_, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: contradicting.ID, Options: options})
			var re *upgrader.RefusedError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, status.ReasonNoImageForBoard, re.Reason)
			assert.Empty(t, dev.Executed(), "no device contacted")
			ops, err := f.st.ListOperations(ctxT(t), store.OperationFilter{DeviceID: d.ID})
			require.NoError(t, err)
			assert.Empty(t, ops, "nothing stored")
		})
	}
}

// Images that cannot be right are refused when stored, before any device
// sees them.
func TestBadImagesRefusedAtCreation(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	ctx := context.Background()
	board := []string{openwrttest.DefaultBoardName}
	for name, im := range map[string]openwrttest.Image{
		"bad CRC":          {Boards: board, Release: e2eRelease, Fwtool: true, BadCRC: true},
		"corrupt metadata": {Boards: board, Release: e2eRelease, Metadata: &imagemap.Metadata{Raw: json.RawMessage(`{"supported_devices": "x",`)}},
	} {
		_, err := f.eng.UploadImage(ctx, store.Image{BuildID: f.image.BuildID, Type: e2eType + "." + strings.ReplaceAll(name, " ", "-")}, im.Reader())
		assert.ErrorIs(t, err, upgrader.ErrImageInvalid, name)
	}
	_, err := f.eng.UploadImage(ctx, store.Image{BuildID: f.image.BuildID, Type: e2eType + ".empty"}, strings.NewReader(""))
	assert.ErrorIs(t, err, upgrader.ErrImageInvalid, "empty")
}
