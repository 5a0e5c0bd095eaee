package upgradertest_test

import (
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

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// setup returns an engine over the memory store whose "fake" devices are
// upgraded by f, a device of that kind and an image that fits it. Retries
// wait 10 ms instead of a minute.
func setup(f *upgradertest.Fake) (*upgrader.Engine, store.Device, store.Image) {
	ctx := context.Background()
	reg := upgrader.NewRegistry()
	if err := reg.Register("fake", f); err != nil {
		panic(err)
	}
	m, err := imagemap.New(map[string]imagemap.Entry{
		"acme-ap1-sysupgrade.bin": {Boards: []string{"ACME AP1"}, BoardNames: []string{"acme,ap1"}},
	})
	if err != nil {
		panic(err)
	}
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{
		ImageMap: m,
		Logger:   slog.New(slog.DiscardHandler),
		Retry: upgrader.RetryPolicy{InitialInterval: 10 * time.Millisecond,
			RandomizationFactor: upgrader.NoRetryRandomization},
	})
	if err != nil {
		panic(err)
	}
	cat, _ := eng.CreateCategory(ctx, store.Category{Name: "access points"})
	build, _ := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "2.0"})
	img, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: "acme-ap1-sysupgrade.bin"},
		strings.NewReader("firmware 2.0"))
	if err != nil {
		panic(err)
	}
	dev, err := eng.RegisterDevice(ctx, store.Device{ID: "ap-1", Model: "ACME AP1", BoardName: "acme,ap1",
		Connection: "fake", Active: true})
	if err != nil {
		panic(err)
	}
	return eng, dev, img
}

// A Fake scripted to fail its first attempt as an unreachable device would:
// the engine retries, and the second attempt succeeds.
func ExampleFake() {
	fake := &upgradertest.Fake{
		Results: []error{upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("no route to host"))},
	}
	eng, dev, img := setup(fake)

	op, err := eng.Upgrade(context.Background(), upgrader.Request{DeviceID: dev.ID, ImageID: img.ID})
	if err != nil {
		panic(err)
	}
	fmt.Println(op.State, op.Reason == status.ReasonNone, "attempts:", op.Attempt)
	fmt.Println("fake attempts:", fake.Attempts(op.ID), "flashed:", fake.Flashed(op.ID))
	// Output:
	// success true attempts: 2
	// fake attempts: 2 flashed: 1
}

// A Fake that holds its attempts in one phase lets a test act while an
// operation is under way: here a cancel during the upload, which wins
// because the attempt has not reached flashing.
func ExampleFake_hold() {
	fake := &upgradertest.Fake{Hold: make(chan struct{}), HoldAt: status.PhaseUpload}
	defer close(fake.Hold)
	eng, dev, img := setup(fake)
	ctx := context.Background()

	events, unsubscribe := eng.Subscribe(0)
	defer unsubscribe()
	done := make(chan store.Operation)
	go func() {
		op, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: dev.ID, ImageID: img.ID})
		if err != nil {
			panic(err)
		}
		done <- op
	}()
	for ev := range events {
		if ev.Kind == upgrader.EventOperationPhase && ev.Phase == status.PhaseUpload {
			if _, err := eng.Cancel(ctx, ev.OperationID); err != nil {
				panic(err)
			}
			break
		}
	}
	op := <-done
	fmt.Println(op.State, op.Reason, "reached:", op.Phase)
	fmt.Println("flashed:", fake.Flashed(op.ID))
	// Output:
	// cancelled cancelled-by-user reached: upload
	// flashed: 0
}

// A Reporter runs an Upgrader without an engine and records what it
// reported. CancelAt plays a user's cancel arriving as the upgrader enters
// a phase: a correct upgrader stops there and never flashes.
func ExampleReporter() {
	rep := &upgradertest.Reporter{CancelAt: status.PhaseImageTest}
	job := &upgrader.Job{
		Operation: store.Operation{ID: "op-1", DeviceID: "ap-1", Attempt: 1},
		Device:    store.Device{ID: "ap-1"},
		Report:    rep,
	}
	err := (&upgradertest.Fake{}).Upgrade(context.Background(), job)
	fmt.Println(errors.Is(err, upgrader.ErrCancelled))
	fmt.Println("entered:", rep.Phases())
	fmt.Println("refused:", rep.Refused())
	// Output:
	// true
	// entered: [connecting identity checksum memory upload]
	// refused: [image-test]
}

// lamp is a simulated device of a made-up kind, what the author of an
// upgrader for that kind tests against (a simulator, or hardware on a
// bench): it runs the image whose SHA-256 it holds.
type lamp struct {
	mu       sync.Mutex
	online   bool
	firmware string
	flashes  int
}

// lampUpgrader is the custom upgrader under test. It finds the lamp of a
// job with find.
type lampUpgrader struct {
	find func(deviceID string) *lamp
}

// Upgrade reports each phase before its step, stops when the reporter
// refuses one (a cancel won, or ctx ended), flashes only after
// Phase(PhaseFlashing) succeeded, and classifies its failures.
func (u lampUpgrader) Upgrade(ctx context.Context, job *upgrader.Job) error {
	l := u.find(job.Device.ID)
	if err := job.Report.Phase(ctx, status.PhaseConnecting); err != nil {
		return err
	}
	l.mu.Lock()
	online := l.online
	l.mu.Unlock()
	if !online {
		return upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("lamp: no answer"))
	}
	if err := job.Report.Phase(ctx, status.PhaseUpload); err != nil {
		return err
	}
	r, err := job.Image.Open(ctx)
	if err != nil {
		return upgrader.Recoverable(status.ReasonUploadFailed, err)
	}
	h := sha256.New()
	_, err = io.Copy(h, r)
	r.Close()
	if err != nil {
		return upgrader.Recoverable(status.ReasonUploadFailed, err)
	}
	if err := job.Report.Phase(ctx, status.PhaseFlashing); err != nil {
		return err // a cancel won the race with the flash: leave the lamp alone
	}
	l.mu.Lock()
	l.firmware, l.flashes = hex.EncodeToString(h.Sum(nil)), l.flashes+1
	l.mu.Unlock()
	if err := job.Report.Phase(ctx, status.PhaseVerifying); err != nil {
		return err
	}
	if err := u.Verify(ctx, job); err != nil {
		return err
	}
	return job.Report.Progress(ctx, status.ProgressDone)
}

// Verify proves, without flashing, that the lamp runs the job's image.
func (u lampUpgrader) Verify(ctx context.Context, job *upgrader.Job) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l := u.find(job.Device.ID)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.firmware != job.Image.SHA256 {
		return upgrader.Failed(status.ReasonOldFirmwareAfterReboot, errors.New("lamp: runs another image"))
	}
	return nil
}

// lampHarness gives the suite a fresh lamp and the upgrader under test for
// every subtest. The suite asks the lamp, not the upgrader, whether it was
// flashed.
func lampHarness(t *testing.T) upgradertest.Harness {
	l := &lamp{online: true}
	const firmware = "lamp firmware 2.0"
	sum := sha256.Sum256([]byte(firmware))
	return upgradertest.Harness{
		Upgrader: lampUpgrader{find: func(string) *lamp { return l }},
		NewJob: func(t *testing.T) *upgrader.Job {
			return &upgrader.Job{
				Operation: store.Operation{ID: store.NewID(), DeviceID: "lamp-1", Attempt: 1},
				Device:    store.Device{ID: "lamp-1", Connection: "lamp", Active: true},
				Image: upgrader.Image{
					Image: store.Image{ID: "img-1", Size: int64(len(firmware)), SHA256: hex.EncodeToString(sum[:])},
					OpenFunc: func(context.Context) (io.ReadCloser, error) {
						return io.NopCloser(strings.NewReader(firmware)), nil
					},
				},
			}
		},
		FlashCountFunc: func(t *testing.T, job *upgrader.Job) int {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.flashes
		},
		UnreachableFunc: func(t *testing.T, job *upgrader.Job) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.online = false
		},
		Timeout: 30 * time.Second,
	}
}

// The author of an upgrader for another kind of device proves it against
// the Upgrader and Verifier contracts with Run, from a test of the
// upgrader's package, given a harness that makes a job for a fresh device
// and tells whether that device was flashed (see lampHarness above for one
// for a simulated device).
//
// Run needs a *testing.T, so this example is only compiled, not run:
// TestLampUpgrader is what goes into the upgrader's _test.go file. This
// package runs the same test as TestLampUpgraderPassesRun.
func ExampleRun() {
	TestLampUpgrader := func(t *testing.T) {
		upgradertest.Run(t, lampHarness)
	}
	_ = TestLampUpgrader
}

// TestLampUpgraderPassesRun runs ExampleRun's test, so the example's
// upgrader and harness are known to pass the suite.
func TestLampUpgraderPassesRun(t *testing.T) {
	t.Parallel()
	upgradertest.Run(t, lampHarness)
}
