package fwupgrader_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// A whole program in small: the memory store, a registry with one upgrader
// (a scriptable fake here, openwrt.New for real routers, registered under
// openwrt.Connection), an engine whose workers run the operations queued
// with Enqueue, and one upgrade waited for.
func Example() {
	ctx := context.Background()

	reg := upgrader.NewRegistry()
	if err := reg.Register("fake", &upgradertest.Fake{}); err != nil {
		panic(err)
	}
	boards, err := imagemap.New(map[string]imagemap.Entry{ // which image type fits which board
		"acme-ap1-sysupgrade.bin": {Boards: []string{"ACME AP1"}, BoardNames: []string{"acme,ap1"}},
	})
	if err != nil {
		panic(err)
	}
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{
		ImageMap: boards,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	// The catalog (a category, a build, its image) and the host's device.
	cat, _ := eng.CreateCategory(ctx, store.Category{Name: "access points"})
	build, _ := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "2.0", OSIdentifier: "ACME OS 2.0"})
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

	op, err := eng.Enqueue(ctx, upgrader.Request{DeviceID: dev.ID, ImageID: img.ID})
	if err != nil {
		panic(err)
	}
	fmt.Println("queued:", op.State)
	op, err = eng.Wait(ctx, op.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println("ended:", op.State, "at", op.Phase, "progress", op.Progress, "attempts", op.Attempt)
	fw, _ := eng.Store().DeviceFirmware(ctx, dev.ID)
	fmt.Println("ap-1 runs the image:", fw.ImageID == img.ID && fw.Installed)

	// A request that cannot be right is refused before anything is stored,
	// with a typed reason: here, an image built for another board.
	other, _ := eng.RegisterDevice(ctx, store.Device{ID: "cam-1", Model: "ACME Cam", BoardName: "acme,cam",
		Connection: "fake", Active: true})
	_, err = eng.Create(ctx, upgrader.Request{DeviceID: other.ID, ImageID: img.ID})
	var refused *upgrader.RefusedError
	if errors.As(err, &refused) {
		fmt.Println("refused:", refused.Reason, errors.Is(err, upgrader.ErrRefused))
	}
	// Output:
	// queued: pending
	// ended: success at verifying progress 100 attempts 1
	// ap-1 runs the image: true
	// refused: no-image-for-board true
}

// bench is a host's own upgrader for a made-up kind of device, to show the
// seam: report each phase before its step (the flashing one is the
// compare-and-set against a cancel, so nothing may be written before it
// succeeds), and classify every failure.
type bench struct {
	freeBytes map[string]int64 // what each device has room for
}

func (b bench) Upgrade(ctx context.Context, job *upgrader.Job) error {
	if err := job.Report.Phase(ctx, status.PhaseConnecting); err != nil {
		return err
	}
	if err := job.Report.Phase(ctx, status.PhaseMemory); err != nil {
		return err
	}
	if free := b.freeBytes[job.Device.ID]; free < job.Image.Size {
		return upgrader.Aborted(status.ReasonInsufficientMemory,
			fmt.Errorf("%d bytes free, the image needs %d", free, job.Image.Size))
	}
	if err := job.Report.Phase(ctx, status.PhaseUpload); err != nil {
		return err
	}
	r, err := job.Image.Open(ctx)
	if err != nil {
		return upgrader.Recoverable(status.ReasonUploadFailed, err)
	}
	n, err := io.Copy(io.Discard, r) // a real upgrader sends the bytes to the device
	r.Close()
	if err != nil {
		return upgrader.Recoverable(status.ReasonUploadFailed, err)
	}
	_ = job.Report.Log(ctx, fmt.Sprintf("sent %d bytes", n))
	if err := job.Report.Phase(ctx, status.PhaseFlashing); err != nil {
		return err // a cancel won: do not flash
	}
	// ... flash, wait for the reboot ...
	if err := job.Report.Phase(ctx, status.PhaseVerifying); err != nil {
		return err
	}
	// ... prove the device runs the new image, else:
	// return upgrader.Failed(status.ReasonOldFirmwareAfterReboot, err)
	return job.Report.Progress(ctx, status.ProgressDone)
}

// A custom Upgrader plugs into the engine under its own connection kind.
// (upgradertest.Run is the suite that proves such an upgrader.)
func Example_customUpgrader() {
	ctx := context.Background()
	reg := upgrader.NewRegistry()
	if err := reg.Register("bench", bench{freeBytes: map[string]int64{"big": 1 << 20, "small": 4}}); err != nil {
		panic(err)
	}
	boards, _ := imagemap.New(map[string]imagemap.Entry{
		"bench-board.bin": {Boards: []string{"Bench Board"}, BoardNames: []string{"bench,board"}},
	})
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{ImageMap: boards, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	cat, _ := eng.CreateCategory(ctx, store.Category{Name: "bench"})
	build, _ := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "3.1"})
	img, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: "bench-board.bin"}, strings.NewReader("firmware 3.1"))
	if err != nil {
		panic(err)
	}

	for _, id := range []string{"big", "small"} {
		dev, err := eng.RegisterDevice(ctx, store.Device{ID: id, Model: "Bench Board", BoardName: "bench,board",
			Connection: "bench", Active: true})
		if err != nil {
			panic(err)
		}
		op, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: dev.ID, ImageID: img.ID})
		if err != nil {
			panic(err)
		}
		logs, _ := eng.Store().Logs(ctx, op.ID, 0, 0)
		var lines []string
		for _, l := range logs {
			if strings.HasPrefix(l.Line, "sent ") {
				lines = append(lines, l.Line)
			}
		}
		fmt.Printf("%s: %s %q at %s %v\n", id, op.State, op.Reason, op.Phase, lines)
	}
	// Output:
	// big: success "" at verifying [sent 12 bytes]
	// small: aborted "insufficient-memory" at memory []
}
