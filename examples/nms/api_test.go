package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
)

// page is a list answer.
type page[T any] struct {
	Count    *int    `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  []T     `json:"results"`
}

// createdBatch is the answer of POST build/{id}/upgrade/.
type createdBatch struct {
	Batch string    `json:"batch"`
	Plan  planView  `json:"plan"`
	Body  batchView `json:"batch_upgrade_operation"`
}

// TestCatalogImageRoundTrip creates a category and a build, uploads an
// image as multipart/form-data and downloads it back byte for byte (whole
// and a range), all in one organization, which another cannot see.
func TestCatalogImageRoundTrip(t *testing.T) {
	t.Parallel()
	r := setup(t, 0, nil)

	var cat categoryView
	must(t, http.StatusCreated, r.do(t, "POST", "category/", "acme",
		map[string]any{"name": "Archer C7", "description": "lab routers"})).decode(t, &cat)
	require.NotNil(t, cat.Organization)
	assert.Equal(t, "acme", *cat.Organization, "a scoped caller creates in its organization")

	var build buildView
	must(t, http.StatusCreated, r.do(t, "POST", "build/", "acme",
		map[string]any{"category": cat.ID, "version": "23.05.3", "os": simNewRelease})).decode(t, &build)
	assert.Equal(t, cat.ID, build.Category)

	sim := openwrttest.Image{Boards: []string{simBoard}, Release: simNewRelease, Size: 300 << 10, Fwtool: true}
	want := sim.Bytes()
	var img imageView
	res := must(t, http.StatusCreated, r.upload(t, build.ID, "acme", "openwrt-23.05.3-"+simImageType, sim.Reader()))
	res.decode(t, &img)
	assert.Equal(t, simImageType, img.Type, "the type comes from the OpenWrt file name")
	assert.Equal(t, int64(len(want)), img.Size)
	assert.Equal(t, sim.SHA256(), img.SHA256)
	assert.Contains(t, img.Boards, simBoard, "the boards come from the image's fwtool metadata")
	assert.Equal(t, fmt.Sprintf("%sbuild/%s/image/%s/", apiPrefix, build.ID, img.ID), res.header.Get("Location"))

	dl := must(t, http.StatusOK, r.do(t, "GET", r.srv.URL+img.File, "acme", nil))
	assert.Equal(t, want, dl.body, "the download is the upload, byte for byte")
	assert.Equal(t, "application/octet-stream", dl.header.Get("Content-Type"))
	assert.Equal(t, `attachment; filename=openwrt-23.05.3-`+simImageType, dl.header.Get("Content-Disposition"))
	assert.Equal(t, `"`+sim.SHA256()+`"`, dl.header.Get("ETag"))
	part := must(t, http.StatusPartialContent, r.do(t, "GET", r.srv.URL+img.File, "acme", nil, "Range", "bytes=1000-1999"))
	assert.Equal(t, want[1000:2000], part.body)

	var detail imageView
	must(t, http.StatusOK, r.do(t, "GET", fmt.Sprintf("build/%s/image/%s/", build.ID, img.ID), "acme", nil)).decode(t, &detail)
	assert.Equal(t, img, detail)
	var images page[imageView]
	must(t, http.StatusOK, r.do(t, "GET", fmt.Sprintf("build/%s/image/", build.ID), "acme", nil)).decode(t, &images)
	require.NotNil(t, images.Count)
	assert.Equal(t, 1, *images.Count)

	// Another organization sees none of it.
	must(t, http.StatusNotFound, r.do(t, "GET", r.srv.URL+img.File, "globex", nil))
	must(t, http.StatusNotFound, r.do(t, "GET", fmt.Sprintf("build/%s/", build.ID), "globex", nil))
	must(t, http.StatusNotFound, r.do(t, "GET", fmt.Sprintf("category/%s/", cat.ID), "globex", nil))
	var cats page[categoryView]
	must(t, http.StatusOK, r.do(t, "GET", "category/", "globex", nil)).decode(t, &cats)
	assert.Empty(t, cats.Results)
	must(t, http.StatusOK, r.do(t, "GET", "category/?organization=acme", "", nil)).decode(t, &cats)
	assert.Len(t, cats.Results, 1, "without a scope, ?organization= filters")
	must(t, http.StatusOK, r.do(t, "GET", "category/?organization=globex", "", nil)).decode(t, &cats)
	assert.Empty(t, cats.Results)
}

// TestBatchUpgradeOverTheAPI dry-runs a batch upgrade (nothing created,
// nothing touched), starts it, lets four simulated devices be upgraded
// over SSH, then reads the operations page by page, with filters.
func TestBatchUpgradeOverTheAPI(t *testing.T) {
	t.Parallel()
	r := setup(t, 4, []string{"acme"})
	build := r.app.seed.NewBuild.ID
	before := r.records(t)

	var dry struct {
		DryRun bool     `json:"dry_run"`
		Plan   planView `json:"plan"`
	}
	must(t, http.StatusOK, r.do(t, "GET", "build/"+build+"/upgrade/?check=1", "acme", nil)).decode(t, &dry)
	assert.True(t, dry.DryRun)
	require.Len(t, dry.Plan.Selected, 4)
	for _, e := range dry.Plan.Selected {
		require.NotNil(t, e.Check, "?check=1 checks every device")
		assert.Equal(t, "ready", string(e.Check.Verdict), "device %s: %+v", e.DeviceName, e.Check)
	}
	must(t, http.StatusOK, r.do(t, "POST", "build/"+build+"/upgrade/?dry_run=1", "acme", map[string]any{"location": "lab-a"})).decode(t, &dry)
	assert.Len(t, dry.Plan.Selected, 2, "the dry run takes the body's filters")
	assert.Equal(t, before, r.records(t), "a dry run creates nothing")
	for _, id := range r.app.fleet.ids() {
		assert.Zero(t, r.app.fleet.device(id).Flashed(), "a dry run flashes nothing")
	}

	var created createdBatch
	res := must(t, http.StatusCreated, r.do(t, "POST", "build/"+build+"/upgrade/", "acme",
		map[string]any{"name": "spring", "rollout": map[string]any{"max_concurrent": 2, "waves": "50%,100%"}}))
	res.decode(t, &created)
	assert.Equal(t, apiPrefix+"batch-upgrade-operation/"+created.Batch+"/", res.header.Get("Location"))
	assert.Equal(t, []int{2, 2}, created.Plan.WaveSizes)
	assert.Equal(t, 2, created.Body.Rollout.MaxConcurrent)
	assert.Equal(t, "50%,100%", created.Body.Rollout.Waves)

	st := r.waitBatch(t, created.Batch)
	require.Equal(t, status.BatchSuccess, st.State, st.Summary)
	for _, id := range r.app.fleet.ids() {
		dev := r.app.fleet.device(id)
		assert.Equal(t, 1, dev.Flashed())
		assert.Equal(t, simNewRelease, dev.Release(), "the device runs the new release")
	}

	var batch batchView
	must(t, http.StatusOK, r.do(t, "GET", "batch-upgrade-operation/"+created.Batch+"/", "acme", nil)).decode(t, &batch)
	assert.Equal(t, status.BatchSuccess, batch.Status)
	assert.Equal(t, 4, batch.Counts["success"])
	assert.Equal(t, 4, batch.Done)
	assert.Equal(t, 2, batch.Waves)

	// Page numbers.
	var p1, p2 page[operationView]
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/?batch="+created.Batch+"&page_size=3", "acme", nil)).decode(t, &p1)
	require.NotNil(t, p1.Count)
	assert.Equal(t, 4, *p1.Count)
	assert.Len(t, p1.Results, 3)
	assert.Nil(t, p1.Previous)
	require.NotNil(t, p1.Next)
	must(t, http.StatusOK, r.do(t, "GET", *p1.Next, "acme", nil)).decode(t, &p2)
	assert.Len(t, p2.Results, 1)
	assert.Nil(t, p2.Next)
	require.NotNil(t, p2.Previous)
	seen := map[string]bool{}
	devices := map[string]bool{}
	for _, op := range append(p1.Results, p2.Results...) {
		seen[op.ID] = true
		devices[op.Device] = true
		assert.Equal(t, status.Success, op.Status)
		assert.Equal(t, 100, op.Progress)
	}
	assert.Len(t, seen, 4, "the pages hold every operation once")
	assert.Len(t, devices, 4)

	// A keyset cursor walks the same operations.
	var c1, c2 page[operationView]
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/?batch="+created.Batch+"&cursor=&page_size=3", "acme", nil)).decode(t, &c1)
	assert.Nil(t, c1.Count)
	require.NotNil(t, c1.Next)
	must(t, http.StatusOK, r.do(t, "GET", *c1.Next, "acme", nil)).decode(t, &c2)
	assert.Nil(t, c2.Next)
	var walked []string
	for _, op := range append(c1.Results, c2.Results...) {
		walked = append(walked, op.ID)
	}
	assert.Len(t, walked, 4)
	assert.True(t, slices.IsSorted(walked), "the cursor walks in ID order")

	// Filters and the organization boundary.
	var ops page[operationView]
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/?status=success,failed&organization=acme", "", nil)).decode(t, &ops)
	assert.Equal(t, 4, *ops.Count)
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/?status=failed", "acme", nil)).decode(t, &ops)
	assert.Equal(t, 0, *ops.Count)
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/?location=lab-b", "acme", nil)).decode(t, &ops)
	assert.Equal(t, 2, *ops.Count)
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/?organization=globex", "", nil)).decode(t, &ops)
	assert.Equal(t, 0, *ops.Count)
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/", "globex", nil)).decode(t, &ops)
	assert.Equal(t, 0, *ops.Count)
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/?organization=acme", "globex", nil)).decode(t, &ops)
	assert.Equal(t, 0, *ops.Count, "a filter does not widen the caller's scope")
	opID := p1.Results[0].ID
	must(t, http.StatusNotFound, r.do(t, "GET", "upgrade-operation/"+opID+"/", "globex", nil))
	must(t, http.StatusNotFound, r.do(t, "GET", "batch-upgrade-operation/"+created.Batch+"/", "globex", nil))

	var op operationView
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/"+opID+"/", "acme", nil)).decode(t, &op)
	require.NotEmpty(t, op.Log, "the detail carries the log")
	assert.Contains(t, op.Log[len(op.Log)-1].Line, "success")

	var dev deviceView
	must(t, http.StatusOK, r.do(t, "GET", "device/"+op.Device+"/", "acme", nil)).decode(t, &dev)
	require.NotNil(t, dev.Firmware)
	assert.Equal(t, r.app.seed.NewImage.ID, dev.Firmware.Image, "the device firmware is the new image")
	assert.True(t, dev.Firmware.Installed)

	var batches page[batchView]
	must(t, http.StatusOK, r.do(t, "GET", "batch-upgrade-operation/?status=success", "acme", nil)).decode(t, &batches)
	assert.Equal(t, 1, *batches.Count)
	must(t, http.StatusOK, r.do(t, "GET", "batch-upgrade-operation/", "globex", nil)).decode(t, &batches)
	assert.Equal(t, 0, *batches.Count)
}

// TestOrganizationBoundary spreads the fleet over two organizations and
// checks what each sees, what it may create, and that its batch upgrade
// selects only its own devices.
func TestOrganizationBoundary(t *testing.T) {
	t.Parallel()
	r := setup(t, 4, []string{"acme", "globex"})

	var devs page[deviceView]
	must(t, http.StatusOK, r.do(t, "GET", "device/", "acme", nil)).decode(t, &devs)
	require.Equal(t, 2, *devs.Count)
	var globexDev string
	for _, d := range devs.Results {
		assert.Equal(t, "acme", d.Organization)
	}
	must(t, http.StatusOK, r.do(t, "GET", "device/", "", nil)).decode(t, &devs)
	assert.Equal(t, 4, *devs.Count)
	must(t, http.StatusOK, r.do(t, "GET", "device/?organization=globex", "", nil)).decode(t, &devs)
	require.Equal(t, 2, *devs.Count)
	globexDev = devs.Results[0].ID
	must(t, http.StatusNotFound, r.do(t, "GET", "device/"+globexDev+"/", "acme", nil))
	must(t, http.StatusNotFound, r.do(t, "GET", "device/"+globexDev+"/upgrade-operation/", "acme", nil))
	must(t, http.StatusNotFound, r.do(t, "PUT", "device/"+globexDev+"/", "acme", map[string]any{"image": r.app.seed.NewImage.ID}))
	must(t, http.StatusOK, r.do(t, "GET", "device/"+globexDev+"/", "globex", nil))

	// Shared records are visible to everyone, and read-only for scoped
	// callers.
	var builds page[buildView]
	must(t, http.StatusOK, r.do(t, "GET", "build/", "acme", nil)).decode(t, &builds)
	assert.Equal(t, 2, *builds.Count, "the shared builds are listed")
	before := r.records(t)
	must(t, http.StatusForbidden, r.do(t, "POST", "category/", "acme", map[string]any{"name": "x", "organization": "globex"}))
	must(t, http.StatusForbidden, r.do(t, "POST", "build/", "acme", map[string]any{"category": r.app.seed.Category.ID, "version": "24.10"}))
	sim := openwrttest.Image{Boards: []string{simBoard}, Release: simNewRelease, Size: 64 << 10}
	must(t, http.StatusForbidden, r.upload(t, r.app.seed.NewBuild.ID, "acme", "x-"+simImageType, sim.Reader(), "type", "other-"+simImageType))
	assert.Equal(t, before, r.records(t), "refused requests store nothing")

	// A scoped batch upgrade of a shared build selects the caller's devices
	// and tells nothing of the others.
	var created createdBatch
	must(t, http.StatusCreated, r.do(t, "POST", "build/"+r.app.seed.NewBuild.ID+"/upgrade/", "acme",
		map[string]any{"hold": true})).decode(t, &created)
	require.Len(t, created.Plan.Selected, 2)
	for _, e := range created.Plan.Selected {
		assert.NotEqual(t, globexDev, e.Device)
	}
	assert.Empty(t, created.Plan.Skipped, "the other organization's devices are not listed to a scoped caller")
	require.NotNil(t, created.Body.Organization)
	assert.Equal(t, "acme", *created.Body.Organization)
	assert.Equal(t, status.BatchIdle, created.Body.Status, "hold creates the batch without starting it")

	must(t, http.StatusNotFound, r.do(t, "GET", "batch-upgrade-operation/"+created.Batch+"/", "globex", nil))
	must(t, http.StatusNotFound, r.do(t, "POST", "batch-upgrade-operation/"+created.Batch+"/cancel/", "globex", nil))
	must(t, http.StatusNotFound, r.do(t, "GET", "events/?batch="+created.Batch, "globex", nil))
	must(t, http.StatusNotFound, r.do(t, "GET", "events/?batch="+created.Batch+"&organization=globex", "", nil))
	must(t, http.StatusForbidden, r.do(t, "GET", "events/?organization=globex", "acme", nil))
	var ops page[operationView]
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/", "globex", nil)).decode(t, &ops)
	assert.Equal(t, 0, *ops.Count)
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/", "acme", nil)).decode(t, &ops)
	require.Equal(t, 2, *ops.Count)
	must(t, http.StatusNotFound, r.do(t, "POST", "upgrade-operation/"+ops.Results[0].ID+"/cancel/", "globex", nil))

	var batch batchView
	must(t, http.StatusOK, r.do(t, "POST", "batch-upgrade-operation/"+created.Batch+"/cancel/", "acme", nil)).decode(t, &batch)
	assert.Equal(t, status.BatchCancelled, batch.Status)
	assert.Equal(t, 2, batch.Counts["cancelled"])
	for _, id := range r.app.fleet.ids() {
		assert.Empty(t, r.app.fleet.device(id).Commands(), "a held, then cancelled batch never reached a device")
	}
}

// TestCancelOperation cancels one operation of a held batch, is refused a
// second cancel, then starts the batch: the other device is upgraded, the
// cancelled one is never contacted.
func TestCancelOperation(t *testing.T) {
	t.Parallel()
	r := setup(t, 2, []string{"acme"})
	var created createdBatch
	must(t, http.StatusCreated, r.do(t, "POST", "build/"+r.app.seed.NewBuild.ID+"/upgrade/", "",
		map[string]any{"hold": true})).decode(t, &created)

	var ops page[operationView]
	must(t, http.StatusOK, r.do(t, "GET", "upgrade-operation/?batch="+created.Batch, "", nil)).decode(t, &ops)
	require.Len(t, ops.Results, 2)
	victim, other := ops.Results[0], ops.Results[1]

	busy := must(t, http.StatusConflict, r.do(t, "PUT", "device/"+other.Device+"/", "acme",
		map[string]any{"image": r.app.seed.NewImage.ID})).json(t)
	assert.Equal(t, string(status.ReasonAnotherUpgradeInProgress), busy["reason"], "a device with an operation under way is busy")

	var op operationView
	must(t, http.StatusOK, r.do(t, "POST", "upgrade-operation/"+victim.ID+"/cancel/", "acme", nil)).decode(t, &op)
	assert.Equal(t, status.Cancelled, op.Status)
	again := must(t, http.StatusConflict, r.do(t, "POST", "upgrade-operation/"+victim.ID+"/cancel/", "acme", nil)).json(t)
	assert.NotEmpty(t, again["detail"])
	must(t, http.StatusNotFound, r.do(t, "POST", "upgrade-operation/"+store0ID+"/cancel/", "", nil))

	var batch batchView
	must(t, http.StatusOK, r.do(t, "POST", "batch-upgrade-operation/"+created.Batch+"/start/", "", nil)).decode(t, &batch)
	assert.NotEqual(t, status.BatchIdle, batch.Status)
	st := r.waitBatch(t, created.Batch)
	assert.Equal(t, status.BatchCancelled, st.State, "a batch with a cancelled operation ends cancelled")
	assert.Equal(t, 1, st.Counts[status.Success])
	assert.Equal(t, 1, st.Counts[status.Cancelled])
	assert.Empty(t, r.app.fleet.device(victim.Device).Commands(), "the cancelled device was never contacted")
	assert.Equal(t, simNewRelease, r.app.fleet.device(other.Device).Release())
	must(t, http.StatusConflict, r.do(t, "POST", "batch-upgrade-operation/"+created.Batch+"/pause/", "", nil))
}

// store0ID is a well-formed ID nothing has.
const store0ID = "00000000-0000-7000-8000-000000000000"

// TestDeviceFirmwareUpgrade upgrades one device with PUT device/{id}/, as
// changing a device firmware's image does in openwisp.
func TestDeviceFirmwareUpgrade(t *testing.T) {
	t.Parallel()
	r := setup(t, 1, []string{"acme"})
	id := r.app.fleet.ids()[0]

	var before deviceView
	must(t, http.StatusOK, r.do(t, "GET", "device/"+id+"/firmware/", "acme", nil)).decode(t, &before)
	require.NotNil(t, before.Firmware, "registering the device detected its firmware")
	assert.Equal(t, r.app.seed.OldImage.ID, before.Firmware.Image)

	var put struct {
		Op operationView `json:"upgrade_operation"`
	}
	must(t, http.StatusAccepted, r.do(t, "PUT", "device/"+id+"/", "acme",
		map[string]any{"image": r.app.seed.NewImage.ID, "upgrade_options": map[string]any{"c": true}})).decode(t, &put)
	assert.Equal(t, id, put.Op.Device)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	end, err := r.app.eng.Wait(ctx, put.Op.ID)
	require.NoError(t, err)
	require.Equal(t, status.Success, end.State, "reason %s", end.Reason)

	var after deviceView
	must(t, http.StatusOK, r.do(t, "GET", "device/"+id+"/", "acme", nil)).decode(t, &after)
	require.NotNil(t, after.Firmware)
	assert.Equal(t, r.app.seed.NewImage.ID, after.Firmware.Image)
	assert.True(t, after.Firmware.Installed)
	var ops page[operationView]
	must(t, http.StatusOK, r.do(t, "GET", "device/"+id+"/upgrade-operation/", "acme", nil)).decode(t, &ops)
	require.Equal(t, 1, *ops.Count)
	assert.JSONEq(t, `{"c": true}`, string(ops.Results[0].UpgradeOptions))
	assert.Equal(t, simNewRelease, r.app.fleet.device(id).Release())
}
