package pge2e_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// TestCancelAcrossProcesses cancels, from one process (A: an engine over
// the same database, never started), an attempt that another process (B)
// is running: B is uploading a 1 MiB image read at 16 KiB/s (the upload
// would take about a minute) to a device short of memory, for which it
// stopped the device's services. The cancel reaches B's attempt (at its
// next cancel checkpoint or lease renewal, whichever comes first): the
// upload stops, the operation ends cancelled, the device is never flashed,
// its services run again and the partial image is removed from its RAM.
// Nothing here waits for the upload to end: were the cancel not to reach
// B, the services would stay stopped for a minute and the test would fail
// waiting for them.
func TestCancelAcrossProcesses(t *testing.T) {
	url := pgtest.URL(t)
	r := newRig(t, url, rigOpts{imageSize: 1 << 20})
	ds := r.devices(1, func(int) openwrttest.Config {
		return openwrttest.Config{RebootDelay: 500 * time.Millisecond, Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}
	}, nil)
	d, dev := ds[0], r.dev(ds[0].ID)
	ctx := context.Background()
	op, err := r.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: r.image.ID})
	require.NoError(t, err)

	spec := r.engineSpec("engine-b")
	spec.ReadRate = 16 << 10
	b := r.spawn(spec)

	// B uploads: its upload reported progress, and it stopped services.
	deadline := time.Now().Add(60 * time.Second)
	var stopped []string
	for {
		require.False(t, b.exited(), "engine-b exited: %v\n%s", b.err, tail(b.log, 4000))
		require.True(t, time.Now().Before(deadline), "engine-b never uploaded")
		cur, err := r.st.Operation(ctx, op.ID)
		require.NoError(t, err)
		require.False(t, cur.State.Terminal(), "the operation ended %s (%s) before the cancel:\n%s", cur.State, cur.Reason, r.logText(op.ID))
		if cur.LeaseOwner == b.owner && cur.Phase == status.PhaseUpload && cur.Progress > status.ProgressChecksum {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for svc, running := range dev.Services() {
		if !running {
			stopped = append(stopped, svc)
		}
	}
	require.NotEmpty(t, stopped, "engine-b stopped services to make room for the image")
	t.Logf("engine-b uploads; stopped services %v", stopped)

	// Cancel from process A.
	aSpec := r.engineSpec("engine-a")
	aSpec.Role, aSpec.OperationID, aSpec.ResultFile = roleCancel, op.ID, filepath.Join(r.dir, "cancel.json")
	a := r.spawn(aSpec)
	<-a.done
	a.checkClean(t)
	raw, err := os.ReadFile(aSpec.ResultFile)
	require.NoError(t, err)
	var res cancelResult
	require.NoError(t, json.Unmarshal(raw, &res))
	require.Empty(t, res.Err, "Cancel in engine-a")
	assert.Equal(t, status.Cancelled, res.State)

	// B's attempt stops and puts the device right.
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, left := dev.File("/tmp/" + r.image.Name)
		running := true
		for _, ok := range dev.Services() {
			running = running && ok
		}
		if running && !left {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the cancel, the device still has services stopped (%v) or the image in RAM (%v); the log:\n%s",
				dev.Services(), left, r.logText(op.ID))
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.stop(t)
	b.checkClean(t)

	end, err := r.st.Operation(ctx, op.ID)
	require.NoError(t, err)
	logs := r.logText(op.ID)
	t.Logf("the operation's log:\n%s", logs)
	assert.Equal(t, status.Cancelled, end.State)
	assert.Equal(t, status.ReasonCancelledByUser, end.Reason)
	assert.Equal(t, status.PhaseUpload, end.Phase, "it never went past the upload")
	assert.Equal(t, b.owner, end.LeaseOwner, "engine-b ran it")
	assert.Contains(t, logs, "cancelled by user")
	assert.Contains(t, logs, "Stopped services started again")
	assert.NotContains(t, logs, "Upgrade operation in progress")
	assert.Empty(t, dev.Flashes(), "the device was never flashed")
	assert.Empty(t, flashCommands(dev), "no flash command reached the device")
	assert.Zero(t, dev.Reboots())
	assert.Equal(t, openwrttest.DefaultRelease, dev.Release())
	for svc, running := range dev.Services() {
		assert.True(t, running, "service %s runs again", svc)
	}
	_, left := dev.File("/tmp/" + r.image.Name)
	assert.False(t, left, "the partial image is removed from the device's RAM")
	for _, c := range dev.Commands() {
		assert.False(t, strings.HasPrefix(c, "'sysupgrade' '-v'"), "flash command %q", c)
	}
}
