package upgrader_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// The tests of custom device kinds: an upgrader (ImageMatcher) or the host
// (Config.Compatibility) decides which images fit which devices, instead of
// the OpenWrt image map.

const (
	camKind = "acme-cam"           // the connection kind of the cameras
	camX200 = "acme-cam-x200.fw"   // the image type of the X200 cameras
	camX300 = "acme-cam-x300.fw"   // the image type of the X300 cameras
	camOS1  = "AcmeOS 1.0"         // the old build's OS identifier
	camOS2  = "AcmeOS 2.0"         // the new build's
	routerK = "fake"               // the connection kind of the OpenWrt-like routers
	camWhat = `"acme-cam"`         // how messages name the cameras' upgrader
	mapWhat = "the image map"      // how messages name the OpenWrt rule
	hostWhy = "Compatibility.Fits" // how messages name the host's rule
)

// camUpgrader is a Fake that decides image compatibility itself, as an
// upgrader of cameras does: an image of type "acme-cam-<model>.fw" fits the
// cameras of that model, and it knows every image type of that form.
type camUpgrader struct {
	*upgradertest.Fake
}

var _ upgrader.ImageMatcher = camUpgrader{}

func (camUpgrader) FitsImage(im store.Image, d store.Device) bool {
	return d.Model != "" && im.Type == "acme-cam-"+strings.ToLower(d.Model)+".fw"
}

func (camUpgrader) KnowsImage(up upgrader.ImageUpload) bool {
	return strings.HasPrefix(up.Image.Type, "acme-cam-") && strings.HasSuffix(up.Image.Type, ".fw")
}

// panicMatcher is an ImageMatcher with bugs: both its methods panic.
type panicMatcher struct{ *upgradertest.Fake }

func (panicMatcher) FitsImage(store.Image, store.Device) bool { panic("FitsImage bug") }
func (panicMatcher) KnowsImage(upgrader.ImageUpload) bool     { panic("KnowsImage bug") }

// fitBundle is an engine with OpenWrt-like routers (connection "fake", the
// image map decides) and cameras (connection "acme-cam", camUpgrader
// decides), and one build ("2.0") with an image for each.
type fitBundle struct {
	eng    *upgrader.Engine
	st     *memory.Store
	reg    *upgrader.Registry
	router *upgradertest.Fake
	cam    camUpgrader
	cat    store.Category
	build  store.Build
	owrt   store.Image // testType, for the routers
	x200   store.Image // camX200, for the X200 cameras
}

func setupFit(t *testing.T, mod func(*upgrader.Config)) *fitBundle {
	t.Helper()
	ctx := context.Background()
	b := &fitBundle{st: memory.New(), reg: upgrader.NewRegistry(), router: &upgradertest.Fake{}, cam: camUpgrader{&upgradertest.Fake{}}}
	require.NoError(t, b.reg.Register(routerK, b.router))
	require.NoError(t, b.reg.Register(camKind, b.cam))
	cfg := &upgrader.Config{
		Logger: slog.New(slog.DiscardHandler), Retry: fastRetry(), ImageMap: testMap(t), Workers: 4,
		PollInterval: 10 * time.Millisecond, MaintenanceInterval: 10 * time.Millisecond,
	}
	if mod != nil {
		mod(cfg)
	}
	var err error
	b.eng, err = upgrader.NewEngine(b.st, b.reg, cfg)
	require.NoError(t, err)
	b.cat, err = b.eng.CreateCategory(ctx, store.Category{Organization: "org1", Name: "mixed fleet"})
	require.NoError(t, err)
	b.build, err = b.eng.CreateBuild(ctx, store.Build{CategoryID: b.cat.ID, Version: "2.0", OSIdentifier: camOS2})
	require.NoError(t, err)
	// The router image first: a rule that wrongly asked the image map for
	// a camera would pick it.
	b.owrt = b.upload(t, b.build, testType, "router firmware 2.0")
	b.x200 = b.upload(t, b.build, camX200, "camera firmware 2.0")
	return b
}

func (b *fitBundle) upload(t *testing.T, build store.Build, typ, content string) store.Image {
	t.Helper()
	im, err := b.eng.UploadImage(context.Background(), store.Image{BuildID: build.ID, Type: typ}, strings.NewReader(content))
	require.NoError(t, err)
	return im
}

// device registers a device of org1; kind "fake" is a router, "acme-cam" a
// camera.
func (b *fitBundle) device(t *testing.T, id, kind, model, board, osID string) store.Device {
	t.Helper()
	d, err := b.eng.RegisterDevice(context.Background(), store.Device{ID: id, Organization: "org1", Model: model, BoardName: board,
		Connection: kind, Active: true, OSIdentifier: osID})
	require.NoError(t, err)
	return d
}

func (b *fitBundle) start(t *testing.T) {
	t.Helper()
	require.NoError(t, b.eng.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.eng.Stop(ctx)
	})
}

func (b *fitBundle) imageCount(t *testing.T) int {
	t.Helper()
	ims, err := b.st.ListImages(context.Background(), store.ImageFilter{})
	require.NoError(t, err)
	return len(ims)
}

// requireRefused checks that err refuses an image for the device's board,
// naming who decided.
func requireRefused(t *testing.T, err error, decidedBy string) {
	t.Helper()
	var re *upgrader.RefusedError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, status.ReasonNoImageForBoard, re.Reason)
	assert.Contains(t, err.Error(), decidedBy)
}

// TestFitPrecedence: the device's upgrader decides for its kind when it is
// an ImageMatcher (the image map is not consulted, even for a camera that
// reports a board name the map knows); the OpenWrt rule decides for the
// others; the host's FitsFunc, when it decides, comes before both.
func TestFitPrecedence(t *testing.T) {
	t.Parallel()
	hostDeny, hostAllow := "r-denied", "c-allowed" // devices the host decides for
	b := setupFit(t, func(c *upgrader.Config) {
		c.Compatibility.FitsFunc = func(im store.Image, d store.Device) upgrader.Decision {
			switch d.ID {
			case hostDeny:
				return upgrader.Deny
			case hostAllow:
				return upgrader.Allow
			}
			return upgrader.Defer
		}
	})
	ctx := context.Background()
	var metaImg bytes.Buffer
	require.NoError(t, imagemap.AppendMetadata(&metaImg, strings.NewReader("kernel+rootfs"),
		&imagemap.Metadata{SupportedDevices: []string{"acme,router-x"}}))
	meta, err := b.eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Type: "acme-router-x-sysupgrade.bin"}, &metaImg)
	require.NoError(t, err)

	router := store.Device{ID: "r1", Model: testModel, BoardName: testBoard, Connection: routerK}
	routerX := store.Device{ID: "r2", Model: "ACME Router X", BoardName: "acme,router-x", Connection: routerK}
	blank := store.Device{ID: "r3", Connection: routerK}
	orphan := store.Device{ID: "o1", Model: testModel, BoardName: testBoard, Connection: "nobody-registered-this"}
	camMapped := store.Device{ID: "c1", Model: "X200", BoardName: testBoard, Connection: camKind}
	camOther := store.Device{ID: "c2", Model: "X300", Connection: camKind}
	for _, c := range []struct {
		name string
		im   store.Image
		d    store.Device
		want bool
	}{
		{"RouterTakesItsMappedType", b.owrt, router, true},
		{"RouterRefusesACameraImage", b.x200, router, false},
		{"RouterTakesAnImageWhoseMetadataNamesItsBoard", meta, routerX, true},
		{"RouterRefusesAnImageOfAnotherBoard", meta, router, false},
		{"DeviceWithoutModelOrBoardFitsNothingUnderTheOpenWrtRule", b.owrt, blank, false},
		{"KindWithoutUpgraderGetsTheOpenWrtRule", b.owrt, orphan, true},
		{"CameraTakesItsModelsImage", b.x200, camMapped, true},
		{"CameraRefusesARouterImageItsBoardNameWouldMatchInTheMap", b.owrt, camMapped, false},
		{"CameraRefusesAnotherModelsImage", b.x200, camOther, false},
		{"HostDenyBeatsTheImageMap", b.owrt, store.Device{ID: hostDeny, Model: testModel, BoardName: testBoard, Connection: routerK}, false},
		{"HostDenyBeatsTheUpgrader", b.x200, store.Device{ID: hostDeny, Model: "X200", Connection: camKind}, false},
		{"HostAllowBeatsTheUpgrader", b.x200, store.Device{ID: hostAllow, Model: "X300", Connection: camKind}, true},
		{"HostAllowBeatsTheImageMap", b.x200, store.Device{ID: hostAllow, Connection: routerK}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, b.eng.Fits(c.im, c.d))
		})
	}
}

// TestCustomKindUpgrades: a camera is upgraded with an image whose type is
// in no image map, accepted at upload because its upgrader knows it; Create
// refuses the images its upgrader says do not fit, naming who decided, and
// the routers keep the OpenWrt rule.
func TestCustomKindUpgrades(t *testing.T) {
	t.Parallel()
	b := setupFit(t, nil)
	ctx := context.Background()
	_, inMap := testMap(t).Entry(camX200)
	require.False(t, inMap, "the camera image type must be in no image map")
	assert.Equal(t, camX200, b.x200.Type, "UploadImage accepted the camera image")
	assert.Empty(t, b.x200.Boards)

	cam := b.device(t, "cam-1", camKind, "X200", testBoard, "")
	op, err := b.eng.Upgrade(ctx, upgrader.Request{DeviceID: cam.ID, ImageID: b.x200.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	assert.Equal(t, 1, b.cam.Flashed(op.ID))
	df, err := b.st.DeviceFirmware(ctx, cam.ID)
	require.NoError(t, err)
	assert.Equal(t, b.x200.ID, df.ImageID)
	d, err := b.st.Device(ctx, cam.ID)
	require.NoError(t, err)
	assert.Equal(t, camOS2, d.OSIdentifier)

	_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: cam.ID, ImageID: b.owrt.ID})
	requireRefused(t, err, camWhat)
	other := b.device(t, "cam-2", camKind, "X300", "", "")
	_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: other.ID, ImageID: b.x200.ID})
	requireRefused(t, err, camWhat)
	router := b.device(t, "router-1", routerK, testModel, testBoard, "")
	_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: router.ID, ImageID: b.x200.ID})
	requireRefused(t, err, mapWhat)
	ops, err := b.st.ListOperations(ctx, store.OperationFilter{})
	require.NoError(t, err)
	assert.Len(t, ops, 1, "a refused request stores no operation")

	op, err = b.eng.Upgrade(ctx, upgrader.Request{DeviceID: router.ID, ImageID: b.owrt.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	assert.Equal(t, 1, b.router.Flashed(op.ID))
}

// hardwareDB is a host's own record of which image types each device
// takes: FitsFunc allows those and denies the rest for the devices it
// lists, and defers for the others.
type hardwareDB struct {
	mu    sync.Mutex
	types map[string][]string // device ID -> image types
}

func (h *hardwareDB) set(id string, types ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.types[id] = types
}

func (h *hardwareDB) fits(im store.Image, d store.Device) upgrader.Decision {
	h.mu.Lock()
	defer h.mu.Unlock()
	types, ok := h.types[d.ID]
	switch {
	case !ok:
		return upgrader.Defer
	case strings.Contains(strings.Join(types, "\n")+"\n", im.Type+"\n"):
		return upgrader.Allow
	}
	return upgrader.Deny
}

// TestHostCompatibilityOverrides: Config.Compatibility decides before the
// upgraders and the image map, at upload (KnowsFunc) and for every device
// (FitsFunc), and every attempt asks it again.
func TestHostCompatibilityOverrides(t *testing.T) {
	t.Parallel()
	db := &hardwareDB{types: map[string][]string{}}
	var asked []upgrader.ImageUpload
	var askedMu sync.Mutex
	b := setupFit(t, func(c *upgrader.Config) {
		c.Compatibility = upgrader.Compatibility{
			FitsFunc: db.fits,
			KnowsFunc: func(up upgrader.ImageUpload) upgrader.Decision {
				askedMu.Lock()
				asked = append(asked, up)
				askedMu.Unlock()
				switch up.Category.Name {
				case "lab widgets":
					return upgrader.Allow
				case "quarantine":
					return upgrader.Deny
				}
				return upgrader.Defer
			},
		}
	})
	ctx := context.Background()

	t.Run("KnowsFuncAllowsATypeNobodyElseKnows", func(t *testing.T) {
		cat, err := b.eng.CreateCategory(ctx, store.Category{Organization: "org1", Name: "lab widgets"})
		require.NoError(t, err)
		build, err := b.eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "0.9"})
		require.NoError(t, err)
		widget := b.upload(t, build, "widget.bin", "widget firmware")
		askedMu.Lock()
		last := asked[len(asked)-1]
		askedMu.Unlock()
		assert.Equal(t, "widget.bin", last.Image.Type)
		assert.Equal(t, int64(len("widget firmware")), last.Image.Size, "the host is asked about the stored image")
		assert.Equal(t, build.ID, last.Build.ID)
		assert.Equal(t, cat.ID, last.Category.ID)
		assert.Equal(t, "org1", last.Image.Organization)
		assert.Empty(t, last.Image.ID, "not stored yet")

		// FitsFunc allows it on a device the image map and its upgrader
		// know nothing about, and the upgrade runs.
		w := b.device(t, "widget-1", routerK, "Widget", "", "")
		_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: w.ID, ImageID: widget.ID})
		requireRefused(t, err, mapWhat)
		db.set(w.ID, "widget.bin")
		op, err := b.eng.Upgrade(ctx, upgrader.Request{DeviceID: w.ID, ImageID: widget.ID})
		require.NoError(t, err)
		assert.Equal(t, status.Success, op.State, "reason %s", op.Reason)

		// The host changes its mind after the operation was created: the
		// attempt asks again and aborts, untouched.
		op, err = b.eng.Create(ctx, upgrader.Request{DeviceID: w.ID, ImageID: widget.ID})
		require.NoError(t, err)
		db.set(w.ID)
		op, err = b.eng.Run(ctx, op.ID)
		require.NoError(t, err)
		assert.Equal(t, status.Aborted, op.State)
		assert.Equal(t, status.ReasonNoImageForBoard, op.Reason)
		assert.Equal(t, 0, b.router.Attempts(op.ID), "the upgrader never ran")
	})

	t.Run("KnowsFuncDeniesATypeInTheImageMap", func(t *testing.T) {
		cat, err := b.eng.CreateCategory(ctx, store.Category{Organization: "org1", Name: "quarantine"})
		require.NoError(t, err)
		build, err := b.eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "6.6.6"})
		require.NoError(t, err)
		n := b.imageCount(t)
		_, err = b.eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: testType}, strings.NewReader("x"))
		require.ErrorIs(t, err, upgrader.ErrUnknownImageType)
		assert.Contains(t, err.Error(), "Config.Compatibility.KnowsFunc")
		assert.Equal(t, n, b.imageCount(t), "nothing stored")
	})

	t.Run("KnowsFuncDefersToTheUpgraders", func(t *testing.T) {
		cat, err := b.eng.CreateCategory(ctx, store.Category{Organization: "org1", Name: "cameras"})
		require.NoError(t, err)
		build, err := b.eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "3.0"})
		require.NoError(t, err)
		b.upload(t, build, camX300, "x300 firmware") // the camera upgrader knows it
		_, err = b.eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: "mystery.bin"}, strings.NewReader("x"))
		require.ErrorIs(t, err, upgrader.ErrUnknownImageType)
	})

	t.Run("FitsFuncDeniesWhatTheMapAndTheUpgraderAllow", func(t *testing.T) {
		router := b.device(t, "router-1", routerK, testModel, testBoard, "")
		cam := b.device(t, "cam-1", camKind, "X200", "", "")
		require.True(t, b.eng.Fits(b.owrt, router))
		require.True(t, b.eng.Fits(b.x200, cam))
		db.set(router.ID)
		db.set(cam.ID, "something-else.fw")
		_, err := b.eng.Create(ctx, upgrader.Request{DeviceID: router.ID, ImageID: b.owrt.ID})
		requireRefused(t, err, hostWhy)
		_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: cam.ID, ImageID: b.x200.ID})
		requireRefused(t, err, hostWhy)
	})
}

// TestUploadRefusesATypeNobodyKnows: an image type in no image map, with no
// boards in its metadata, that no registered upgrader knows is refused with
// ErrUnknownImageType and a message saying whom it asked; neither its record
// nor its bytes are kept. A panicking ImageMatcher refuses, and does not
// bring the engine down.
func TestUploadRefusesATypeNobodyKnows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	files, err := upgrader.NewDirFiles(dir)
	require.NoError(t, err)
	b := setupFit(t, func(c *upgrader.Config) { c.Files = files })
	require.NoError(t, b.reg.Register("buggy", panicMatcher{&upgradertest.Fake{}}))
	before, err := os.ReadDir(dir)
	require.NoError(t, err)
	n := b.imageCount(t)

	for _, typ := range []string{"mystery.bin", "acme-cam-x200.bin", "camera.fw"} {
		_, err = b.eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Type: typ}, strings.NewReader("who knows"))
		require.ErrorIs(t, err, upgrader.ErrUnknownImageType, typ)
		assert.Contains(t, err.Error(), `asked the upgraders of "acme-cam", "buggy"`)
	}
	assert.Equal(t, n, b.imageCount(t), "no image record")
	after, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, after, len(before), "no image file")

	// A panicking FitsImage says no.
	d := b.device(t, "bug-1", "buggy", testModel, testBoard, "")
	_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: b.owrt.ID})
	requireRefused(t, err, `"buggy"`)

	// Without any ImageMatcher registered the message says so.
	reg := upgrader.NewRegistry()
	require.NoError(t, reg.Register(routerK, &upgradertest.Fake{}))
	eng, err := upgrader.NewEngine(b.st, reg, &upgrader.Config{Logger: slog.New(slog.DiscardHandler), ImageMap: testMap(t)})
	require.NoError(t, err)
	_, err = eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Type: camX300}, strings.NewReader("abc"))
	require.ErrorIs(t, err, upgrader.ErrUnknownImageType)
	assert.Contains(t, err.Error(), "no registered upgrader decides image compatibility itself")
}

// TestBatchOverMixedKinds: one build with a router image and a camera
// image; devices of both kinds. The running firmware is detected with each
// kind's rule, the plan (and the dry run) gives each device the image of
// its kind and skips the others with SkipNoImageForBoard and who decided,
// Enqueue refuses alike, and the batch upgrades the selected devices.
func TestBatchOverMixedKinds(t *testing.T) {
	t.Parallel()
	b := setupFit(t, nil)
	ctx := context.Background()
	old, err := b.eng.CreateBuild(ctx, store.Build{CategoryID: b.cat.ID, Version: "1.0", OSIdentifier: camOS1})
	require.NoError(t, err)
	oldRouter := b.upload(t, old, testType, "router firmware 1.0")
	oldCam := b.upload(t, old, camX200, "camera firmware 1.0")

	r1 := b.device(t, "r1", routerK, testModel, testBoard, camOS1)
	r2 := b.device(t, "r2", routerK, "Mystery Router", "mystery,board", camOS1)
	c1 := b.device(t, "c1", camKind, "X200", testBoard, camOS1) // a board name the image map knows
	c2 := b.device(t, "c2", camKind, "X300", "", camOS1)        // no image of build 2.0 fits
	c3 := b.device(t, "c3", camKind, "X200", "", "")            // no firmware known

	for id, want := range map[string]string{r1.ID: oldRouter.ID, c1.ID: oldCam.ID} {
		df, err := b.st.DeviceFirmware(ctx, id)
		require.NoError(t, err, id)
		assert.Equal(t, want, df.ImageID, "firmware of %s detected with its kind's rule", id)
	}
	for _, id := range []string{r2.ID, c2.ID} {
		_, err := b.st.DeviceFirmware(ctx, id)
		assert.ErrorIs(t, err, store.ErrNotFound, "no image of build 1.0 fits %s", id)
	}

	req := upgrader.BatchRequest{BuildID: b.build.ID, Name: "mixed", Firmwareless: true}
	check := func(t *testing.T, plan upgrader.Plan) {
		t.Helper()
		got := map[string]string{}
		for _, e := range plan.Selected {
			got[e.Device.ID] = e.Image.ID
		}
		assert.Equal(t, map[string]string{r1.ID: b.owrt.ID, c1.ID: b.x200.ID, c3.ID: b.x200.ID}, got)
		detail := map[string]string{}
		for _, e := range plan.Skipped {
			assert.Equal(t, upgrader.SkipNoImageForBoard, e.Skip, e.Device.ID)
			detail[e.Device.ID] = e.Detail
		}
		require.Len(t, detail, 2)
		assert.Contains(t, detail[c2.ID], camWhat)
		assert.Contains(t, detail[r2.ID], mapWhat)
	}
	plan, err := b.eng.PlanBatch(ctx, req)
	require.NoError(t, err)
	check(t, plan)
	dry, err := b.eng.DryRunBatch(ctx, req, upgrader.DryRunOptions{Check: true})
	require.NoError(t, err)
	check(t, dry)
	for _, e := range dry.Selected {
		assert.Equal(t, upgrader.VerdictUnchecked, e.Check.Verdict, "the fakes are no Checkers")
	}

	b.start(t)
	_, err = b.eng.Enqueue(ctx, upgrader.Request{DeviceID: c2.ID, ImageID: b.x200.ID})
	requireRefused(t, err, camWhat)
	_, err = b.eng.Enqueue(ctx, upgrader.Request{DeviceID: c1.ID, ImageID: b.owrt.ID})
	requireRefused(t, err, camWhat)

	batch, plan, err := b.eng.CreateBatch(ctx, req)
	require.NoError(t, err)
	check(t, plan)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := b.eng.WaitBatch(wctx, batch.ID)
	require.NoError(t, err)
	assert.Equal(t, status.BatchSuccess, st.State, st.Summary)
	for id, want := range map[string]string{r1.ID: b.owrt.ID, c1.ID: b.x200.ID, c3.ID: b.x200.ID} {
		df, err := b.st.DeviceFirmware(ctx, id)
		require.NoError(t, err, id)
		assert.Equal(t, want, df.ImageID, "%s now runs its kind's image", id)
	}
	ops, err := b.st.ListOperations(ctx, store.OperationFilter{BatchID: batch.ID})
	require.NoError(t, err)
	flashed := 0
	for _, op := range ops {
		flashed += b.cam.Flashed(op.ID) + b.router.Flashed(op.ID)
	}
	assert.Equal(t, 3, flashed, "each selected device flashed once, by its own upgrader")
	for _, id := range []string{r2.ID, c2.ID} {
		ops, err := b.st.ListOperations(ctx, store.OperationFilter{DeviceID: id})
		require.NoError(t, err)
		assert.Empty(t, ops, "skipped device %s got no operation", id)
	}
}
