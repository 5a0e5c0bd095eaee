package upgrader_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// An engine over the memory store upgrades one device with a scripted
// upgrader, while a subscriber watches the phases go by.
func Example() {
	ctx := context.Background()
	reg := upgrader.NewRegistry()
	_ = reg.Register("fake", &upgradertest.Fake{})
	m, _ := imagemap.New(map[string]imagemap.Entry{
		"acme-ap1-squashfs-sysupgrade.bin": {Boards: []string{"ACME AP1"}, BoardNames: []string{"acme,ap1"}},
	})
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{
		ImageMap: m,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		panic(err)
	}

	cat, _ := eng.CreateCategory(ctx, store.Category{Name: "access points"})
	build, _ := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1.1", OSIdentifier: "ACME OS 1.1"})
	img, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: "acme-ap1-squashfs-sysupgrade.bin"},
		strings.NewReader("the firmware"))
	if err != nil {
		panic(err)
	}
	dev, _ := eng.RegisterDevice(ctx, store.Device{ID: "ap-1", Model: "ACME AP1", BoardName: "acme,ap1",
		Connection: "fake", Active: true})

	events, unsubscribe := eng.Subscribe(0)
	defer unsubscribe()
	op, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: dev.ID, ImageID: img.ID})
	if err != nil {
		panic(err)
	}
	for len(events) > 0 {
		if ev := <-events; ev.Kind == upgrader.EventOperationPhase {
			fmt.Println("phase:", ev.Phase)
		}
	}
	fmt.Println("state:", op.State, "progress:", op.Progress)
	fw, _ := eng.Store().DeviceFirmware(ctx, dev.ID)
	fmt.Println("installed:", fw.ImageID == img.ID && fw.Installed)
	// Output:
	// phase: connecting
	// phase: identity
	// phase: checksum
	// phase: memory
	// phase: upload
	// phase: image-test
	// phase: flashing
	// phase: rebooting
	// phase: verifying
	// state: success progress: 100
	// installed: true
}
