package upgrader_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// exampleFleet returns an engine whose "fake" devices are upgraded by a
// scriptable fake upgrader, a fleet of ten access points that run build
// 1.0, one of them deactivated, and build 2.0 to upgrade them to. The
// engine polls and advances waves every 10 ms instead of every second.
func exampleFleet() (*upgrader.Engine, store.Build) {
	ctx := context.Background()
	reg := upgrader.NewRegistry()
	if err := reg.Register("fake", &upgradertest.Fake{}); err != nil {
		panic(err)
	}
	m, err := imagemap.New(map[string]imagemap.Entry{
		"acme-ap1-sysupgrade.bin": {Boards: []string{"ACME AP1"}, BoardNames: []string{"acme,ap1"}},
	})
	if err != nil {
		panic(err)
	}
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{
		ImageMap:            m,
		Logger:              slog.New(slog.DiscardHandler),
		PollInterval:        10 * time.Millisecond,
		MaintenanceInterval: 10 * time.Millisecond,
	})
	if err != nil {
		panic(err)
	}
	cat, _ := eng.CreateCategory(ctx, store.Category{Organization: "acme", Name: "access points"})
	var build store.Build
	for _, v := range []string{"1.0", "2.0"} {
		build, err = eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: v, OSIdentifier: "ACME OS " + v})
		if err != nil {
			panic(err)
		}
		_, err = eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: "acme-ap1-sysupgrade.bin"},
			strings.NewReader("firmware "+v))
		if err != nil {
			panic(err)
		}
	}
	for i := 1; i <= 10; i++ {
		// A device that reports the OS of a known build gets that build's
		// image as its firmware record: the fleet of build 1.0.
		_, err := eng.RegisterDevice(ctx, store.Device{ID: fmt.Sprintf("ap-%02d", i), Organization: "acme",
			Location: []string{"north", "south"}[i%2], Model: "ACME AP1", BoardName: "acme,ap1",
			OSIdentifier: "ACME OS 1.0", Connection: "fake", Active: i != 7})
		if err != nil {
			panic(err)
		}
	}
	return eng, build
}

// A mass upgrade of a fleet: plan it, roll it out in waves (a canary,
// then half the fleet, then the rest) with at most two devices at once and
// a failure threshold, and wait for its end.
func Example_batch() {
	ctx := context.Background()
	eng, build := exampleFleet()
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	waves, _ := store.ParseWaves("1,50%")
	req := upgrader.BatchRequest{
		BuildID: build.ID,
		Name:    "2.0 rollout",
		Rollout: store.Rollout{
			Waves:            waves,
			MaxConcurrent:    2,
			FailureThreshold: store.Ptr(20.0), // pause when more than 20 % of a wave fails
			MinFinished:      2,
		},
	}
	plan, err := eng.PlanBatch(ctx, req) // changes nothing
	if err != nil {
		panic(err)
	}
	fmt.Println("selected:", len(plan.Selected), "waves:", plan.WaveSizes)
	for _, e := range plan.Skipped {
		fmt.Println("skipped:", e.Device.ID, e.Skip)
	}

	b, _, err := eng.CreateBatch(ctx, req) // started at once (req.Hold creates it idle)
	if err != nil {
		panic(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := eng.WaitBatch(wctx, b.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(st.State, st.Summary)
	fmt.Println("success:", st.Counts[status.Success])

	fw, _ := eng.Store().DeviceFirmware(ctx, "ap-01")
	img, _ := eng.Store().Image(ctx, fw.ImageID)
	fmt.Println("ap-01 runs build 2.0:", img.BuildID == build.ID && fw.Installed)
	// Output:
	// selected: 9 waves: [1 4 4]
	// skipped: ap-07 deactivated
	// success 9 of 9 done, 0 pending, wave 3 of 3
	// success: 9
	// ap-01 runs build 2.0: true
}

// A dry run plans a batch, checks every selected device without changing
// it (upgraders that implement upgrader.Checker; the fake does not, so its
// devices are unchecked) and creates nothing. Filters narrow the selection.
func ExampleEngine_DryRunBatch() {
	ctx := context.Background()
	eng, build := exampleFleet()

	plan, err := eng.DryRunBatch(ctx, upgrader.BatchRequest{BuildID: build.ID, Location: "north"},
		upgrader.DryRunOptions{Check: true})
	if err != nil {
		panic(err)
	}
	for _, e := range plan.Selected {
		fmt.Println(e.Device.ID, e.Device.Location, "wave", e.Wave, e.Check.Verdict)
	}
	for _, e := range plan.Skipped {
		fmt.Println(e.Device.ID, "skipped:", e.Skip)
	}
	batches, _ := eng.Store().ListBatches(ctx, store.BatchFilter{})
	fmt.Println("batches stored:", len(batches))
	// Output:
	// ap-02 north wave 0 unchecked
	// ap-04 north wave 0 unchecked
	// ap-06 north wave 0 unchecked
	// ap-08 north wave 0 unchecked
	// ap-10 north wave 0 unchecked
	// batches stored: 0
}

// A batch created with Hold waits for StartBatch; a paused batch starts no
// new device until ResumeBatch. Batch says why a batch holds.
func ExampleEngine_PauseBatch() {
	ctx := context.Background()
	eng, build := exampleFleet()

	b, _, err := eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: build.ID, Hold: true})
	if err != nil {
		panic(err)
	}
	st, _ := eng.Batch(ctx, b.ID)
	fmt.Println(st.State, st.Summary)

	if _, err := eng.StartBatch(ctx, b.ID); err != nil {
		panic(err)
	}
	if _, err := eng.PauseBatch(ctx, b.ID); err != nil { // before any engine ran it
		panic(err)
	}
	st, _ = eng.Batch(ctx, b.ID)
	fmt.Println(st.State, st.Summary)

	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)
	if _, err := eng.ResumeBatch(ctx, b.ID); err != nil {
		panic(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err = eng.WaitBatch(wctx, b.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(st.State, st.Summary)
	// Output:
	// idle 0 of 9 done, 9 pending, held (not-started)
	// paused 0 of 9 done, 9 pending, paused (operator)
	// success 9 of 9 done, 0 pending
}
