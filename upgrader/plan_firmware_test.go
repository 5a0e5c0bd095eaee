package upgrader_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// countingStore counts the device firmware reads of a memory store; it is a
// store.DeviceFirmwareLister.
type countingStore struct {
	*memory.Store
	one, lists atomic.Int64
}

func (c *countingStore) DeviceFirmware(ctx context.Context, id string) (store.DeviceFirmware, error) {
	c.one.Add(1)
	return c.Store.DeviceFirmware(ctx, id)
}

func (c *countingStore) ListDeviceFirmware(ctx context.Context, ids []string) ([]store.DeviceFirmware, error) {
	c.lists.Add(1)
	return c.Store.ListDeviceFirmware(ctx, ids)
}

// plainStore hides every optional capability of the store it wraps.
type plainStore struct{ store.Store }

// TestPlanReadsFirmwareInBulk plans a batch of 2,300 devices on a store
// that lists device firmware in bulk and on the same store without that
// capability: the plans are the same, and the first reads the records in
// a few calls rather than one per device.
func TestPlanReadsFirmwareInBulk(t *testing.T) {
	ctx := context.Background()
	counted := &countingStore{Store: memory.New()}
	engine := func(s store.Store) *upgrader.Engine {
		reg := upgrader.NewRegistry()
		require.NoError(t, reg.Register("fake", &upgradertest.Fake{}))
		eng, err := upgrader.NewEngine(s, reg, &upgrader.Config{ImageMap: testMap(t), Files: upgrader.NewMemFiles()})
		require.NoError(t, err)
		return eng
	}
	bulk, plain := engine(counted), engine(plainStore{counted})
	cat, err := bulk.CreateCategory(ctx, store.Category{Organization: "org1", Name: "routers"})
	require.NoError(t, err)
	oldBuild, err := bulk.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1.0"})
	require.NoError(t, err)
	newBuild, err := bulk.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "2.0"})
	require.NoError(t, err)
	old, err := bulk.UploadImage(ctx, store.Image{BuildID: oldBuild.ID, Type: testType}, strings.NewReader("old"))
	require.NoError(t, err)
	cur, err := bulk.UploadImage(ctx, store.Image{BuildID: newBuild.ID, Type: testType}, strings.NewReader("new"))
	require.NoError(t, err)
	for i := range 2300 {
		d, err := counted.PutDevice(ctx, store.Device{ID: fmt.Sprintf("d%05d", i), Organization: "org1", Model: testModel,
			BoardName: testBoard, Connection: "fake", Active: true})
		require.NoError(t, err)
		switch {
		case i%23 == 0: // no record
		case i%10 == 0:
			_, err = counted.PutDeviceFirmware(ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: cur.ID, Installed: true})
		default:
			_, err = counted.PutDeviceFirmware(ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: old.ID, Installed: true})
		}
		require.NoError(t, err)
	}
	req := upgrader.BatchRequest{BuildID: newBuild.ID, Firmwareless: true}

	counted.one.Store(0)
	want, err := plain.PlanBatch(ctx, req)
	require.NoError(t, err)
	assert.EqualValues(t, 2300, counted.one.Load(), "without the capability: one read per device")
	assert.Zero(t, counted.lists.Load())

	counted.one.Store(0)
	got, err := bulk.PlanBatch(ctx, req)
	require.NoError(t, err)
	assert.Zero(t, counted.one.Load(), "with the capability: no read per device")
	assert.EqualValues(t, 3, counted.lists.Load(), "2,300 devices in chunks of 1,000")

	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("the plans differ (-device by device +bulk):\n%s", diff)
	}
	// Devices without a record are taken (Firmwareless), those on the
	// build skipped, the rest upgraded.
	onBuild := 0
	for i := range 2300 {
		if i%23 != 0 && i%10 == 0 {
			onBuild++
		}
	}
	require.Len(t, got.Selected, 2300-onBuild)
	require.Len(t, got.Skipped, onBuild)
	for _, e := range got.Skipped {
		assert.Equal(t, upgrader.SkipAlreadyOnBuild, e.Skip, e.Device.ID)
	}
}
