package openwrt_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// TestWrongRecordNeverBringsAWrongImage registers an Archer C7 v5 as a v2
// (its record's board name and model are the v2's) and upgrades it with the
// v2 image, which has no fwtool metadata to say which boards it is for: the
// engine chose the image by the record, the device says otherwise, so the
// dry run's checks say would-abort and the upgrade aborts before anything
// is uploaded. A device whose record is right is upgraded.
func TestWrongRecordNeverBringsAWrongImage(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	ctx := ctxT(t)
	dev, err := openwrttest.New(openwrttest.Config{UUID: uuid.NewString(), Model: "TP-Link Archer C7 v5",
		BoardName: "tplink,archer-c7-v5"})
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { dev.Close() })
	f.mu.Lock()
	f.devs[dev.Config().UUID] = dev
	f.mu.Unlock()
	wrong, err := f.eng.RegisterDevice(context.Background(), store.Device{ID: dev.Config().UUID,
		Model: openwrttest.DefaultModel, BoardName: openwrttest.DefaultBoardName, OSIdentifier: dev.Release(),
		Connection: openwrt.Connection, Active: true})
	require.NoError(t, err)
	right, rightDev := f.device(t, openwrttest.Config{})

	im, err := f.st.Image(ctx, f.image.ID)
	require.NoError(t, err)
	require.Empty(t, im.Boards, "the image carries no metadata of its own")
	require.True(t, f.eng.Fits(im, wrong), "by its record, the device takes the image")

	build, err := f.st.Build(ctx, im.BuildID)
	require.NoError(t, err)
	plan, err := f.eng.DryRunBatch(ctx, upgrader.BatchRequest{BuildID: build.ID, Firmwareless: true},
		upgrader.DryRunOptions{Check: true})
	require.NoError(t, err)
	verdicts := map[string]upgrader.Verdict{}
	for _, e := range plan.Selected {
		require.NotNil(t, e.Check, e.Device.ID)
		verdicts[e.Device.ID] = e.Check.Verdict
		if e.Device.ID == wrong.ID {
			assert.Equal(t, status.ReasonNoImageForBoard, e.Check.Reason)
		}
	}
	assert.Equal(t, map[string]upgrader.Verdict{wrong.ID: upgrader.VerdictWouldAbort, right.ID: upgrader.VerdictReady}, verdicts)

	op, err := f.eng.Upgrade(ctx, upgrader.Request{DeviceID: wrong.ID, ImageID: im.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Aborted, op.State)
	assert.Equal(t, status.ReasonNoImageForBoard, op.Reason)
	assert.Zero(t, dev.Flashed())
	assert.False(t, didFlash(dev))
	for _, argv := range dev.Executed() {
		assert.NotContains(t, []string{"scp", "sysupgrade", "sha256sum"}, argv[0], "nothing uploaded or tested: %q", argv)
	}
	for _, name := range dev.Files() {
		assert.False(t, strings.HasPrefix(name, "/tmp/") && strings.HasSuffix(name, ".bin"), "the image never reached the device: %s", name)
	}

	op, err = f.eng.Upgrade(ctx, upgrader.Request{DeviceID: right.ID, ImageID: im.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State, op.Reason)
	assert.Equal(t, 1, rightDev.Flashed())
}
