// Command quickstart upgrades a simulated OpenWrt device end to end: it
// starts an in-process device that speaks real SSH (openwrt/openwrttest),
// creates a category, a build and an image in the memory store, upgrades the
// device with the openwrt upgrader through the engine, and prints the phases
// and the progress as they happen, then the final operation. It exits 1 if
// the operation did not end in success.
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const (
	model      = "TP-Link Archer C7 v2"
	boardName  = "tplink,archer-c7-v2"
	imageType  = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	oldRelease = "OpenWrt 22.03.5 r20134-5f15225c1e"
	newRelease = "OpenWrt 23.05.3 r23809-234f1a2efa"
	imageSize  = 8 << 20
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	deviceID := uuid.NewString()

	// 1. A simulated OpenWrt router, on 127.0.0.1, without sftp-server (like
	// most real ones): the upload falls back to SCP.
	dev, err := openwrttest.New(openwrttest.Config{
		Model: model, BoardName: boardName, UUID: deviceID, Release: oldRelease,
		SCP: true, RebootDelay: 2 * time.Second,
	})
	if err != nil {
		return err
	}
	if err := dev.Start(); err != nil {
		return err
	}
	defer dev.Close()
	fmt.Fprintf(out, "device %s (%s, %s) listening on %s\n", deviceID, model, oldRelease, dev.Addr())

	// 2. The OpenWrt upgrader: the host hands out the address and the
	// credentials on every attempt, and the host key is always checked.
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
			return openwrt.Credentials{
				Address: dev.Addr(), User: "root", Password: openwrttest.DefaultPassword,
				HostKeyCallback: openwrt.PinnedKey(dev.HostKey()),
			}, nil
		},
		ReconnectDelay:      time.Second,
		ReconnectRetryDelay: 500 * time.Millisecond,
		ReconnectMaxRetries: 30,
		Logger:              slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		return err
	}
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}

	// 3. The catalog: a category, a build and its image.
	cat, err := eng.CreateCategory(ctx, store.Category{Name: "Archer C7 routers"})
	if err != nil {
		return err
	}
	build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3", OSIdentifier: newRelease})
	if err != nil {
		return err
	}
	simImage := openwrttest.Image{Boards: []string{boardName}, Release: newRelease, Size: imageSize}
	img, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: imageType,
		Name: "openwrt-23.05.3-" + imageType}, simImage.Reader())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "image %s: %d bytes, sha256 %s…\n", img.Name, img.Size, img.SHA256[:16])

	// 4. The device, as the host's inventory knows it.
	d, err := eng.RegisterDevice(ctx, store.Device{ID: deviceID, Name: "ap-lobby", Model: model, BoardName: boardName,
		OSIdentifier: oldRelease, Connection: openwrt.Connection, Address: dev.Addr(), Active: true})
	if err != nil {
		return err
	}

	// 5. Live progress from the engine's events.
	events, unsubscribe := eng.Subscribe(0)
	defer unsubscribe()
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		show(out, events)
	}()

	start := time.Now()
	op, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: d.ID, ImageID: img.ID})
	unsubscribe()
	<-printed
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "\noperation %s: %s", op.ID, op.State)
	if op.Reason != status.ReasonNone {
		fmt.Fprintf(out, " (%s)", op.Reason)
	}
	fmt.Fprintf(out, ", progress %d%%, %d attempt(s), %s\n", op.Progress, op.Attempt, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(out, "device now runs %q (boot id %s)\n", dev.Release(), dev.BootID())
	if op.State != status.Success {
		return fmt.Errorf("the upgrade ended %s (%s)", op.State, op.Reason)
	}
	return nil
}

// show prints phases, a progress bar and log lines as they arrive.
func show(out io.Writer, events <-chan upgrader.Event) {
	last := -1
	for ev := range events {
		switch ev.Kind {
		case upgrader.EventOperationPhase:
			fmt.Fprintf(out, "\n[%3d%%] phase %s\n", ev.Progress, ev.Phase)
		case upgrader.EventOperationProgress:
			if ev.Progress/5 != last/5 {
				last = ev.Progress
				bar := strings.Repeat("#", ev.Progress/5) + strings.Repeat(".", 20-ev.Progress/5)
				fmt.Fprintf(out, "       [%s] %3d%%\n", bar, ev.Progress)
			}
		case upgrader.EventOperationLog:
			fmt.Fprintf(out, "       log: %s\n", ev.Line)
		case upgrader.EventOperationState:
			fmt.Fprintf(out, "       state: %s %s\n", ev.State, ev.Reason)
		}
		if ev.Dropped > 0 {
			fmt.Fprintf(out, "       (%d events dropped)\n", ev.Dropped)
		}
	}
}
