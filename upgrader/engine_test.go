package upgrader_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testType  = "test-board-squashfs-sysupgrade.bin"
	testBoard = "test,board"
	testModel = "Test Board v1"
	testOS    = "TestOS 2.0 r1"
)

func testMap(t testing.TB) *imagemap.Map {
	t.Helper()
	m, err := imagemap.New(map[string]imagemap.Entry{
		testType:                              {Label: "Test board", Boards: []string{testModel}, BoardNames: []string{testBoard}},
		"other-board-squashfs-sysupgrade.bin": {Label: "Other", Boards: []string{"Other Board"}, BoardNames: []string{"other,board"}},
	})
	require.NoError(t, err)
	return m
}

type bundle struct {
	eng    *upgrader.Engine
	st     *memory.Store
	fake   *upgradertest.Fake
	reg    *upgrader.Registry
	files  *upgrader.MemFiles
	device store.Device
	image  store.Image
	build  store.Build
	other  store.Image // an image for another board
}

func fastRetry() upgrader.RetryPolicy {
	return upgrader.RetryPolicy{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond, RandomizationFactor: -1}
}

func setup(t testing.TB, fake *upgradertest.Fake, mod func(*upgrader.Config)) *bundle {
	t.Helper()
	ctx := context.Background()
	st := memory.New()
	reg := upgrader.NewRegistry()
	require.NoError(t, reg.Register("fake", fake))
	files := upgrader.NewMemFiles()
	cfg := &upgrader.Config{
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Retry:    fastRetry(),
		ImageMap: testMap(t),
		Files:    files,
		Workers:  4,
	}
	if mod != nil {
		mod(cfg)
	}
	eng, err := upgrader.NewEngine(st, reg, cfg)
	require.NoError(t, err)
	cat, err := eng.CreateCategory(ctx, store.Category{Organization: "org1", Name: "routers"})
	require.NoError(t, err)
	b, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "2.0", OSIdentifier: testOS})
	require.NoError(t, err)
	im, err := eng.UploadImage(ctx, store.Image{BuildID: b.ID, Type: testType}, strings.NewReader("firmware bytes"))
	require.NoError(t, err)
	other, err := eng.UploadImage(ctx, store.Image{BuildID: b.ID, Type: "other-board-squashfs-sysupgrade.bin"}, strings.NewReader("other bytes"))
	require.NoError(t, err)
	d, err := eng.RegisterDevice(ctx, store.Device{ID: "dev-1", Organization: "org1", Model: testModel, BoardName: testBoard,
		Connection: "fake", Active: true, OSIdentifier: "TestOS 1.0"})
	require.NoError(t, err)
	return &bundle{eng: eng, st: st, fake: fake, reg: reg, files: files, device: d, image: im, build: b, other: other}
}

func (b *bundle) addDevice(t testing.TB, id string) store.Device {
	t.Helper()
	d := b.device
	d.ID = id
	d, err := b.eng.RegisterDevice(context.Background(), d)
	require.NoError(t, err)
	return d
}

func logLines(t testing.TB, st store.Operations, id string) []string {
	t.Helper()
	entries, err := st.Logs(context.Background(), id, 0, 0)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Line)
	}
	return out
}

func TestUpgradeSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{ReadImage: true}, nil)
	ctx := context.Background()
	op, err := b.eng.Upgrade(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State)
	assert.Equal(t, status.ReasonNone, op.Reason)
	assert.Equal(t, 100, op.Progress)
	assert.Equal(t, 1, op.Attempt)
	assert.Equal(t, status.PhaseVerifying, op.Phase)
	assert.False(t, op.FinishedAt.IsZero())
	assert.Equal(t, "org1", op.Organization)

	df, err := b.st.DeviceFirmware(ctx, b.device.ID)
	require.NoError(t, err)
	assert.Equal(t, store.DeviceFirmware{DeviceID: b.device.ID, ImageID: b.image.ID, Installed: true}, store.DeviceFirmware{DeviceID: df.DeviceID, ImageID: df.ImageID, Installed: df.Installed})
	d, err := b.st.Device(ctx, b.device.ID)
	require.NoError(t, err)
	assert.Equal(t, testOS, d.OSIdentifier, "the device's OS identifier follows the build it now runs")
	name := b.image.Name
	if name == "" {
		name = b.image.ID
	}
	assert.Contains(t, logLines(t, b.st, op.ID), "success: the upgrader reports that the device runs image "+name,
		"an upgrader that proves nothing specific (no upgrader.Prover call) gets a generic success line")
}

func TestRetriesThenSuccess(t *testing.T) {
	t.Parallel()
	rec := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("connection refused"))
	b := setup(t, &upgradertest.Fake{Results: []error{rec, rec}}, nil)
	op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State)
	assert.Equal(t, 3, op.Attempt)
	assert.Equal(t, 3, b.fake.Attempts(op.ID))
	retries := 0
	for _, l := range logLines(t, b.st, op.ID) {
		if strings.Contains(l, "recoverable failure (connection-failed)") && strings.Contains(l, "retrying in") {
			retries++
		}
	}
	assert.Equal(t, 2, retries)
}

func TestRetriesExhausted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		reason status.Reason
		state  status.State
		want   status.Reason
	}{
		{"ConnectionFailed", status.ReasonConnectionFailed, status.Failed, status.ReasonMaxRetriesExceeded},
		{"UploadCorrupt", status.ReasonUploadCorrupt, status.Aborted, status.ReasonUploadCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := upgrader.Recoverable(tc.reason, errors.New("transient"))
			b := setup(t, &upgradertest.Fake{Results: []error{rec, rec, rec, rec, rec, rec}}, func(c *upgrader.Config) {
				c.Retry.MaxRetries = 3
			})
			op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
			require.NoError(t, err)
			assert.Equal(t, tc.state, op.State)
			assert.Equal(t, tc.want, op.Reason)
			assert.Equal(t, 4, b.fake.Attempts(op.ID), "first attempt + 3 retries")
		})
	}
}

func TestNoRetryAfterFlashing(t *testing.T) {
	t.Parallel()
	rec := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("lost"))
	b := setup(t, &upgradertest.Fake{Results: []error{rec}, FailAt: status.PhaseRebooting}, nil)
	op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Failed, op.State)
	assert.Equal(t, status.ReasonFlashFailed, op.Reason)
	assert.Equal(t, 1, b.fake.Attempts(op.ID))
}

// TestEveryPathEnds walks every outcome an attempt can have, at every phase,
// and checks the operation always ends terminal with the expected state.
func TestEveryPathEnds(t *testing.T) {
	t.Parallel()
	outcomes := []struct {
		name   string
		err    error
		before status.State // outcome before flashing
		after  status.State // outcome at or after flashing
	}{
		{"Aborted", upgrader.Aborted(status.ReasonIdentityMismatch, errors.New("x")), status.Aborted, status.Failed},
		{"NotNeeded", upgrader.NotNeeded(status.ReasonAlreadyInstalled, nil), status.Success, status.Success},
		{"Recoverable", upgrader.Recoverable(status.ReasonUploadFailed, errors.New("x")), status.Failed, status.Failed},
		{"Failed", upgrader.Failed(status.ReasonFlashFailed, errors.New("x")), status.Failed, status.Failed},
		{"Plain", errors.New("plain"), status.Failed, status.Failed},
		{"Cancelled", upgrader.ErrCancelled, status.Cancelled, status.Failed},
		{"DeadlineError", context.DeadlineExceeded, status.Failed, status.Failed},
	}
	for _, oc := range outcomes {
		for _, p := range status.Phases() {
			t.Run(oc.name+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				errs := []error{oc.err, oc.err, oc.err, oc.err, oc.err}
				b := setup(t, &upgradertest.Fake{Results: errs, FailAt: p}, nil)
				op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
				require.NoError(t, err)
				require.True(t, op.State.Terminal(), "operation left %s", op.State)
				want := oc.before
				if p.AfterPointOfNoReturn() {
					want = oc.after
				}
				assert.Equal(t, want, op.State, "reason %s", op.Reason)
				assert.NotEqual(t, status.ReasonNone, op.Reason)
			})
		}
	}
}

func TestUpgraderPanicEndsFailed(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	require.NoError(t, b.reg.Register("panicky", panicUpgrader{}))
	d := b.device
	d.ID, d.Connection = "dev-panic", "panicky"
	_, err := b.eng.RegisterDevice(context.Background(), d)
	require.NoError(t, err)
	op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Failed, op.State)
	assert.Equal(t, status.ReasonUpgraderError, op.Reason)
}

type panicUpgrader struct{}

func (panicUpgrader) Upgrade(context.Context, *upgrader.Job) error { panic("boom") }

func TestTimeoutBeforeFlashing(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	defer close(hold)
	b := setup(t, &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseUpload}, func(c *upgrader.Config) {
		c.OperationTimeout = 200 * time.Millisecond
	})
	op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Failed, op.State)
	assert.Equal(t, status.ReasonTimeout, op.Reason)
	assert.Equal(t, 0, b.fake.Flashed(op.ID))
	assert.Equal(t, 0, b.fake.Verified(op.ID))
}

func TestTimeoutAfterFlashingIsVerified(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		verify error
		state  status.State
		reason status.Reason
	}{
		{"VerifiedOK", nil, status.Success, status.ReasonNone},
		{"VerifyFails", upgrader.Failed(status.ReasonOldFirmwareAfterReboot, errors.New("old")), status.Failed, status.ReasonTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hold := make(chan struct{})
			defer close(hold)
			b := setup(t, &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseRebooting, VerifyResult: tc.verify}, func(c *upgrader.Config) {
				c.OperationTimeout = 200 * time.Millisecond
			})
			op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
			require.NoError(t, err)
			assert.Equal(t, tc.state, op.State)
			assert.Equal(t, tc.reason, op.Reason)
			assert.Equal(t, 1, b.fake.Verified(op.ID))
			assert.Equal(t, 1, b.fake.Flashed(op.ID))
		})
	}
}

func TestCancelPending(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ctx := context.Background()
	op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	c, err := b.eng.Cancel(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, c.State)
	assert.Equal(t, status.ReasonCancelledByUser, c.Reason)
	end, err := b.eng.Run(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, end.State)
	assert.Equal(t, 0, b.fake.Attempts(op.ID))
	_, err = b.eng.Cancel(ctx, op.ID)
	assert.ErrorIs(t, err, upgrader.ErrNotCancellable)
}

// waitPhase waits until the operation reaches phase p.
func waitPhase(t *testing.T, st store.Operations, id string, p status.Phase) {
	t.Helper()
	require.Eventually(t, func() bool {
		op, err := st.Operation(context.Background(), id)
		return err == nil && op.Phase == p
	}, 10*time.Second, time.Millisecond)
}

func TestCancelWhileUploading(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	defer close(hold)
	b := setup(t, &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseUpload}, nil)
	ctx := context.Background()
	op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	done := make(chan store.Operation)
	go func() {
		end, _ := b.eng.Run(ctx, op.ID)
		done <- end
	}()
	waitPhase(t, b.st, op.ID, status.PhaseUpload)
	_, err = b.eng.Cancel(ctx, op.ID)
	require.NoError(t, err)
	end := <-done
	assert.Equal(t, status.Cancelled, end.State)
	assert.Equal(t, status.PhaseUpload, end.Phase)
	assert.Equal(t, 0, b.fake.Flashed(op.ID))
}

func TestCancelRefusedWhileFlashing(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	b := setup(t, &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseFlashing}, nil)
	ctx := context.Background()
	op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	done := make(chan store.Operation)
	go func() {
		end, _ := b.eng.Run(ctx, op.ID)
		done <- end
	}()
	waitPhase(t, b.st, op.ID, status.PhaseFlashing)
	_, err = b.eng.Cancel(ctx, op.ID)
	require.ErrorIs(t, err, upgrader.ErrNotCancellable)
	close(hold)
	end := <-done
	assert.Equal(t, status.Success, end.State)
}

// TestCancelRacesFlashing races Cancel against the attempt's move into
// flashing many times: exactly one wins each time.
func TestCancelRacesFlashing(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ctx := context.Background()
	cancelWins, flashWins := 0, 0
	for i := range 60 {
		d := b.addDevice(t, fmt.Sprintf("race-%d", i))
		op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
		require.NoError(t, err)
		done := make(chan store.Operation)
		go func() {
			end, _ := b.eng.Run(ctx, op.ID)
			done <- end
		}()
		// Wait until the attempt is past the image test, then race.
		require.Eventually(t, func() bool {
			o, _ := b.st.Operation(ctx, op.ID)
			return o.Phase.Order() >= status.PhaseUpload.Order() || o.State.Terminal()
		}, 10*time.Second, 10*time.Microsecond)
		_, cerr := b.eng.Cancel(ctx, op.ID)
		end := <-done
		flashed := b.fake.Flashed(op.ID)
		if cerr == nil {
			cancelWins++
			assert.Equal(t, status.Cancelled, end.State)
			assert.Equal(t, 0, flashed, "cancel won but the device was flashed")
		} else {
			flashWins++
			assert.ErrorIs(t, cerr, upgrader.ErrNotCancellable)
			assert.Equal(t, status.Success, end.State)
			assert.Equal(t, 1, flashed)
		}
	}
	t.Logf("cancel won %d times, flashing won %d times", cancelWins, flashWins)
}

func TestUnknownConnectionAbortsAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	d := b.device
	d.ID, d.Connection = "dev-x", "telnet"
	_, err := b.eng.RegisterDevice(context.Background(), d)
	require.NoError(t, err)
	op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Aborted, op.State)
	assert.Equal(t, status.ReasonUnknownConnection, op.Reason)
	assert.Contains(t, strings.Join(logLines(t, b.st, op.ID), "\n"), `"telnet"`)
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, &upgradertest.Fake{}, nil)

	inactive := b.device
	inactive.ID, inactive.Active = "dev-off", false
	_, err := b.eng.RegisterDevice(ctx, inactive)
	require.NoError(t, err)

	otherOrg := b.device
	otherOrg.ID, otherOrg.Organization = "dev-org2", "org2"
	_, err = b.eng.RegisterDevice(ctx, otherOrg)
	require.NoError(t, err)

	unknownBoard := b.device
	unknownBoard.ID, unknownBoard.Model, unknownBoard.BoardName = "dev-nomodel", "", ""
	_, err = b.eng.RegisterDevice(ctx, unknownBoard)
	require.NoError(t, err)

	busy := b.addDevice(t, "dev-busy")
	_, err = b.eng.Create(ctx, upgrader.Request{DeviceID: busy.ID, ImageID: b.image.ID})
	require.NoError(t, err)

	for _, tc := range []struct {
		name   string
		req    upgrader.Request
		reason status.Reason
	}{
		{"Deactivated", upgrader.Request{DeviceID: inactive.ID, ImageID: b.image.ID}, status.ReasonDeviceDeactivated},
		{"OtherOrganization", upgrader.Request{DeviceID: otherOrg.ID, ImageID: b.image.ID}, status.ReasonOrganizationMismatch},
		{"BoardMismatch", upgrader.Request{DeviceID: b.device.ID, ImageID: b.other.ID}, status.ReasonNoImageForBoard},
		{"UnknownBoard", upgrader.Request{DeviceID: unknownBoard.ID, ImageID: b.image.ID}, status.ReasonNoImageForBoard},
		{"SecondOperation", upgrader.Request{DeviceID: busy.ID, ImageID: b.image.ID}, status.ReasonAnotherUpgradeInProgress},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := b.st.ListOperations(ctx, store.OperationFilter{})
			require.NoError(t, err)
			_, err = b.eng.Upgrade(ctx, tc.req)
			var re *upgrader.RefusedError
			require.ErrorAs(t, err, &re)
			assert.ErrorIs(t, err, upgrader.ErrRefused)
			assert.Equal(t, tc.reason, re.Reason)
			after, err := b.st.ListOperations(ctx, store.OperationFilter{})
			require.NoError(t, err)
			assert.Len(t, after, len(before), "a refused upgrade creates no operation")
		})
	}
	_, err = b.eng.Upgrade(ctx, upgrader.Request{DeviceID: "nope", ImageID: b.image.ID})
	assert.ErrorIs(t, err, store.ErrNotFound)
}

func TestConcurrentSecondOperationRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.eng.Create(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else if errors.Is(err, upgrader.ErrRefused) {
				refused++
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, ok)
	assert.Equal(t, 19, refused)
}

func TestDeactivatedWhileQueuedAborts(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ctx := context.Background()
	op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	d := b.device
	d.Active = false
	_, err = b.eng.RegisterDevice(ctx, d)
	require.NoError(t, err)
	end, err := b.eng.Run(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Aborted, end.State)
	assert.Equal(t, status.ReasonDeviceDeactivated, end.Reason)
}

func TestEventsInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{ReadImage: true}, nil)
	ch, unsub := b.eng.Subscribe(1024)
	defer unsub()
	op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	var kinds []upgrader.EventKind
	var phases []status.Phase
	var states []status.State
	for len(ch) > 0 {
		ev := <-ch
		require.Equal(t, op.ID, ev.OperationID)
		kinds = append(kinds, ev.Kind)
		switch ev.Kind {
		case upgrader.EventOperationPhase:
			phases = append(phases, ev.Phase)
		case upgrader.EventOperationState:
			states = append(states, ev.State)
		}
	}
	require.NotEmpty(t, kinds)
	assert.Equal(t, upgrader.EventOperationCreated, kinds[0])
	assert.Equal(t, []status.State{status.InProgress, status.Success}, states)
	assert.Equal(t, status.Phases(), phases)
	assert.Contains(t, kinds, upgrader.EventOperationProgress)
	assert.Contains(t, kinds, upgrader.EventOperationLog)
}

func TestSlowSubscriberNeverBlocks(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	_, unsub := b.eng.Subscribe(1) // never read
	defer unsub()
	for i := range 10 {
		d := b.addDevice(t, fmt.Sprintf("slow-%d", i))
		op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
		require.NoError(t, err)
		require.Equal(t, status.Success, op.State)
	}
	assert.Greater(t, b.eng.DroppedEvents(), uint64(100))
}

func TestDroppedCountReported(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ch, unsub := b.eng.Subscribe(2)
	defer unsub()
	_, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	<-ch
	<-ch
	// The buffer was full; the next event delivered carries the count.
	d := b.addDevice(t, "dev-2")
	_, err = b.eng.Create(context.Background(), upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	ev := <-ch
	assert.Greater(t, ev.Dropped, uint64(10))
}

func TestEnqueueAndStopDrains(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{StepDelay: time.Millisecond}, nil)
	ctx := context.Background()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, b.eng.Start(ctx))
	var ids []string
	for i := range 20 {
		d := b.addDevice(t, fmt.Sprintf("q-%d", i))
		op, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
		require.NoError(t, err)
		ids = append(ids, op.ID)
	}
	for _, id := range ids[:5] {
		end, err := b.eng.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, status.Success, end.State)
	}
	require.NoError(t, b.eng.Stop(ctx))
	require.NoError(t, b.eng.Stop(ctx), "Stop is idempotent")
	// Stop drains what was running; nothing stays in progress.
	ops, err := b.st.ListOperations(ctx, store.OperationFilter{States: []status.State{status.InProgress}})
	require.NoError(t, err)
	for _, op := range ops {
		assert.Equal(t, status.PhaseNone, op.Phase, "operation %s left mid-attempt", op.ID)
	}
}

func TestQueuedRetriesDoNotHoldWorkers(t *testing.T) {
	t.Parallel()
	rec := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("down"))
	b := setup(t, &upgradertest.Fake{Results: []error{rec}}, func(c *upgrader.Config) {
		c.Workers = 1
		c.Retry = upgrader.RetryPolicy{InitialInterval: time.Hour, RandomizationFactor: -1}
	})
	require.NoError(t, b.reg.Register("fake-ok", &upgradertest.Fake{}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, b.eng.Start(ctx))
	defer b.eng.Stop(ctx)
	first, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		op, _ := b.st.Operation(ctx, first.ID)
		return op.Attempt == 1 && op.Phase == status.PhaseNone && !op.NextAttemptAt.IsZero()
	}, 10*time.Second, time.Millisecond)
	// The only worker is free: a second device's operation runs while the
	// first waits an hour for its retry.
	d := b.device
	d.ID, d.Connection = "dev-2", "fake-ok"
	_, err = b.eng.RegisterDevice(ctx, d)
	require.NoError(t, err)
	second, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	end, err := b.eng.Wait(ctx, second.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Success, end.State)
	c, err := b.eng.Cancel(ctx, first.ID)
	require.NoError(t, err, "an operation waiting for a retry can be cancelled")
	assert.Equal(t, status.Cancelled, c.State)
}

func TestStopInterruptsAndStartResumes(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	fake := &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseUpload}
	b := setup(t, fake, nil)
	ctx, cancelAll := context.WithTimeout(context.Background(), time.Minute)
	defer cancelAll()
	require.NoError(t, b.eng.Start(ctx))
	op, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	waitPhase(t, b.st, op.ID, status.PhaseUpload)
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, b.eng.Stop(sctx), context.DeadlineExceeded)
	mid, err := b.st.Operation(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.InProgress, mid.State)
	assert.Equal(t, status.PhaseNone, mid.Phase, "interrupted before flashing: waiting to resume")
	close(hold)

	eng2, err := upgrader.NewEngine(b.st, b.reg, &upgrader.Config{ImageMap: testMap(t), Files: b.files, Retry: fastRetry(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.NoError(t, eng2.Start(ctx))
	defer eng2.Stop(ctx)
	end, err := eng2.Wait(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.Success, end.State)
	assert.Equal(t, 2, end.Attempt)
}

// TestCrashAfterFlashingIsVerifiedNotReflashed simulates a worker that died
// while the device was flashing: the next engine verifies, never flashes.
func TestCrashAfterFlashingIsVerifiedNotReflashed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		verify error
		state  status.State
	}{
		{"Verified", nil, status.Success},
		{"NotVerified", upgrader.Failed(status.ReasonUnreachableAfterFlash, errors.New("gone")), status.Failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := &upgradertest.Fake{VerifyResult: tc.verify}
			b := setup(t, fake, nil)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
			require.NoError(t, err)
			_, err = b.st.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
				Phase: store.Ptr(status.PhaseFlashing), Attempt: store.Ptr(1)})
			require.NoError(t, err)
			require.NoError(t, b.eng.Start(ctx))
			defer b.eng.Stop(ctx)
			end, err := b.eng.Wait(ctx, op.ID)
			require.NoError(t, err)
			assert.Equal(t, tc.state, end.State)
			assert.Equal(t, 0, fake.Attempts(op.ID), "never flashed again")
			assert.Equal(t, 1, fake.Verified(op.ID))
		})
	}
}

func TestCallerContextEnds(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	defer close(hold)
	b := setup(t, &upgradertest.Fake{Hold: hold, HoldAt: status.PhaseMemory}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	op, err := b.eng.Upgrade(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Cancelled, op.State, "a synchronous upgrade whose caller gives up before flashing ends cancelled")
}

func TestCreateImage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, &upgradertest.Fake{}, func(c *upgrader.Config) { c.MaxImageSize = 1024 })
	countImages := func() int {
		ims, err := b.st.ListImages(ctx, store.ImageFilter{})
		require.NoError(t, err)
		return len(ims)
	}
	n := countImages()

	t.Run("TooLarge", func(t *testing.T) {
		_, err := b.eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Type: "x-" + testType}, bytes.NewReader(make([]byte, 1025)))
		assert.ErrorIs(t, err, upgrader.ErrImageTooLarge)
		assert.Equal(t, n, countImages())
	})
	t.Run("UnknownType", func(t *testing.T) {
		_, err := b.eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Type: "mystery-sysupgrade.bin"}, strings.NewReader("abc"))
		assert.ErrorIs(t, err, upgrader.ErrUnknownImageType)
		assert.Equal(t, n, countImages())
	})
	t.Run("UnknownTypeWithMetadata", func(t *testing.T) {
		var img bytes.Buffer
		require.NoError(t, imagemap.AppendMetadata(&img, strings.NewReader("kernel+rootfs"),
			&imagemap.Metadata{SupportedDevices: []string{"acme,router-x"}}))
		im, err := b.eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Type: "acme-router-x-sysupgrade.bin"}, &img)
		require.NoError(t, err)
		assert.Equal(t, []string{"acme,router-x"}, im.Boards)
		d := b.device
		d.ID, d.Model, d.BoardName = "acme-1", "ACME Router X", "acme,router-x"
		_, err = b.eng.RegisterDevice(ctx, d)
		require.NoError(t, err)
		op, err := b.eng.Upgrade(ctx, upgrader.Request{DeviceID: d.ID, ImageID: im.ID})
		require.NoError(t, err)
		assert.Equal(t, status.Success, op.State)
	})
	t.Run("ChecksumMismatch", func(t *testing.T) {
		_, err := b.eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Type: "other-board-squashfs-sysupgrade.bin",
			SHA256: strings.Repeat("a", 64)}, strings.NewReader("abc"))
		var ve *store.ValidationError
		require.ErrorAs(t, err, &ve)
		assert.Equal(t, "SHA256", ve.Field)
	})
	t.Run("TypeFromFileName", func(t *testing.T) {
		im, err := b.eng.UploadImage(ctx, store.Image{BuildID: b.build.ID, Name: "openwrt-23.05.3-" + testType}, strings.NewReader("abc"))
		// the same type as the setup's image: the store refuses the duplicate
		assert.ErrorIs(t, err, store.ErrConflict, "%+v", im)
	})
	t.Run("HashAndSize", func(t *testing.T) {
		got, err := b.st.Image(ctx, b.image.ID)
		require.NoError(t, err)
		assert.Equal(t, int64(len("firmware bytes")), got.Size)
		sum := sha256.Sum256([]byte("firmware bytes"))
		assert.Equal(t, hex.EncodeToString(sum[:]), got.SHA256)
		rc, err := b.files.Open(ctx, b.image.ID)
		require.NoError(t, err)
		data, _ := io.ReadAll(rc)
		assert.Equal(t, "firmware bytes", string(data))
	})
}

func TestDeviceFirmwareDetection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, &upgradertest.Fake{}, nil)
	_, err := b.st.DeviceFirmware(ctx, b.device.ID)
	assert.ErrorIs(t, err, store.ErrNotFound, "OS 1.0 has no build")
	d := b.device
	d.OSIdentifier = testOS
	_, err = b.eng.RegisterDevice(ctx, d)
	require.NoError(t, err)
	df, err := b.st.DeviceFirmware(ctx, d.ID)
	require.NoError(t, err)
	assert.Equal(t, b.image.ID, df.ImageID, "the image of the build with the device's OS identifier that fits its board")
	assert.True(t, df.Installed)
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	st := memory.New()
	reg := upgrader.NewRegistry()
	for _, cfg := range []*upgrader.Config{
		{Workers: -1},
		{OperationTimeout: -time.Second},
		{MaxImageSize: -5},
		{Retry: upgrader.RetryPolicy{Multiplier: 0.5}},
		{EventBuffer: -1},
	} {
		_, err := upgrader.NewEngine(st, reg, cfg)
		assert.Error(t, err, "%+v", cfg)
	}
	_, err := upgrader.NewEngine(nil, reg, nil)
	assert.Error(t, err)
	_, err = upgrader.NewEngine(st, nil, nil)
	assert.Error(t, err)
	_, err = upgrader.NewEngine(st, reg, nil)
	assert.NoError(t, err)
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	reg := upgrader.NewRegistry()
	require.NoError(t, reg.Register("a", &upgradertest.Fake{}))
	assert.Error(t, reg.Register("a", &upgradertest.Fake{}))
	assert.Error(t, reg.Register("", &upgradertest.Fake{}))
	assert.Error(t, reg.Register("b", nil))
	_, ok := reg.Lookup("b")
	assert.False(t, ok)
}

func TestRetryPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := upgrader.RetryPolicy{RandomizationFactor: -1}
	assert.Equal(t, 60*time.Second, p.Delay(1))
	assert.Equal(t, 120*time.Second, p.Delay(2))
	assert.Equal(t, 240*time.Second, p.Delay(3))
	assert.Equal(t, 480*time.Second, p.Delay(4))
	assert.Equal(t, 600*time.Second, p.Delay(5), "capped")
	r := upgrader.RetryPolicy{}
	for range 50 {
		d := r.Delay(1)
		assert.GreaterOrEqual(t, d, 30*time.Second)
		assert.LessOrEqual(t, d, 90*time.Second)
	}
}

// TestQueuedRetryTimesOutAtDeadline: an operation waiting for a retry that
// is due after its deadline ends at the deadline, not at the retry.
func TestQueuedRetryTimesOutAtDeadline(t *testing.T) {
	t.Parallel()
	rec := upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("down"))
	b := setup(t, &upgradertest.Fake{Results: []error{rec, rec}}, func(c *upgrader.Config) {
		c.Retry = upgrader.RetryPolicy{InitialInterval: time.Hour, RandomizationFactor: -1}
		c.OperationTimeout = 300 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, b.eng.Start(ctx))
	defer b.eng.Stop(ctx)
	op, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	end, err := b.eng.Wait(ctx, op.ID)
	require.NoError(t, err, "the operation must end at its deadline, long before the hour-long retry")
	assert.Equal(t, status.Failed, end.State)
	assert.Equal(t, status.ReasonTimeout, end.Reason)
	assert.Equal(t, 1, b.fake.Attempts(op.ID))
}

// TestRunRacingWorkersRunsOneAttempt: a host calling Run on an operation
// the workers also run never causes two attempts at once.
func TestRunRacingWorkersRunsOneAttempt(t *testing.T) {
	t.Parallel()
	fake := &upgradertest.Fake{StepDelay: 5 * time.Millisecond}
	b := setup(t, fake, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, b.eng.Start(ctx))
	defer b.eng.Stop(ctx)
	op, err := b.eng.Enqueue(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			end, err := b.eng.Run(ctx, op.ID)
			assert.NoError(t, err)
			assert.Equal(t, status.Success, end.State)
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, fake.Attempts(op.ID), "one attempt, however many callers")
	assert.Equal(t, 1, fake.Flashed(op.ID))
}
