// Command customupgrader plugs a custom upgrader into fwupgrader: ACME
// cameras, which are not OpenWrt, take their firmware over an HTTPS API
// (upload, check, flash, reboot, report the version).
//
// It starts three simulated cameras on 127.0.0.1 (real TCP and TLS, each
// with its own certificate and token), registers the ACME upgrader under
// its own connection kind ("acme-http"), uploads the firmware files of two
// builds, and upgrades every camera to the new build in one batch, printing
// the phases and log lines as they happen and what each camera runs at the
// end. The upgrader decides which images fit its cameras itself
// (upgrader.ImageMatcher): no OpenWrt image map entry is involved. It exits
// 1 unless every camera ends up running the new firmware.
//
//	go run ./examples/customupgrader
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const (
	oldVersion  = "2.3.1"
	newVersion  = "2.4.0"
	oldFirmware = "AcmeOS " + oldVersion
	newFirmware = "AcmeOS " + newVersion
	imageSize   = 2 << 20 // payload bytes of each firmware file
)

// fleet is the host's inventory of cameras.
var fleet = []struct{ serial, name, model string }{
	{"ACME-X200-0001", "lobby", "X200"},
	{"ACME-X200-0002", "garage", "X200"},
	{"ACME-X300-0001", "roof", "X300"},
}

// models are the camera models the builds have an image for.
var models = []string{"X200", "X300"}

// result is how one camera ended.
type result struct {
	Device, Name string
	State        status.State
	Reason       status.Reason
	// Firmware is what the camera itself reports running at the end.
	Firmware string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if _, err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "customupgrader:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) ([]result, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out = &lockedWriter{w: out} // the batch's events are printed from another goroutine

	// 1. The cameras. Their tokens and certificates are the host's to
	// keep: here, in memory.
	lab := map[string]*camera{}
	tokens := map[string]string{}
	names := map[string]string{}
	for _, f := range fleet {
		token := randomToken()
		cam, err := startCamera(cameraConfig{Serial: f.serial, Model: f.model, Firmware: oldFirmware, Token: token,
			RebootDelay: 500 * time.Millisecond})
		if err != nil {
			return nil, err
		}
		defer cam.Close()
		lab[f.serial], tokens[f.serial], names[f.serial] = cam, token, f.name
		fmt.Fprintf(out, "camera %-7s %s (%s) on %s, running %q\n", f.name, f.serial, f.model, cam.URL(), cam.Firmware())
	}

	// 2. The ACME upgrader under its own connection kind. The host hands
	// out a camera's address, token and pinned certificate on every attempt.
	acme := &acmeUpgrader{
		credentialsFunc: func(ctx context.Context, d store.Device) (credentials, error) {
			cam, ok := lab[d.ID]
			if !ok {
				return credentials{}, fmt.Errorf("no camera %q in the inventory", d.ID)
			}
			return credentials{URL: cam.URL(), Token: tokens[d.ID], Certificate: cam.Certificate()}, nil
		},
		rebootTimeout: 30 * time.Second,
		pollInterval:  100 * time.Millisecond,
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(connection, acme); err != nil {
		return nil, err
	}
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}

	// 3. The catalog: the build the cameras run and the new one, with an
	// image per model each. The image types are in no image map: UploadImage
	// takes them because the ACME upgrader knows them (KnowsImage).
	cat, err := eng.CreateCategory(ctx, store.Category{Name: "ACME cameras"})
	if err != nil {
		return nil, err
	}
	var newBuild store.Build
	for _, v := range []struct{ version, firmware string }{{oldVersion, oldFirmware}, {newVersion, newFirmware}} {
		b, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: v.version, OSIdentifier: v.firmware})
		if err != nil {
			return nil, err
		}
		for _, m := range models {
			im, err := eng.UploadImage(ctx, store.Image{BuildID: b.ID, Type: imageType(m), Name: fmt.Sprintf("acmeos-%s-%s.fw", v.version, strings.ToLower(m))},
				bytes.NewReader(buildFirmware(v.firmware, []string{m}, imageSize)))
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(out, "image %s (%s): %d bytes\n", im.Name, im.Type, im.Size)
		}
		newBuild = b
	}
	// A file that nobody knows is refused, and nothing is stored.
	_, err = eng.UploadImage(ctx, store.Image{BuildID: newBuild.ID, Type: "acme-cam-x200.bin"}, strings.NewReader("not firmware"))
	if !errors.Is(err, upgrader.ErrUnknownImageType) {
		return nil, fmt.Errorf("an image type nobody knows was not refused: %v", err)
	}
	fmt.Fprintf(out, "refused, as it should be: %v\n", err)

	// 4. The cameras as the host's inventory knows them. The build they run
	// is recognised by its OS identifier, and the image they run is picked
	// with the upgrader's FitsImage.
	for _, f := range fleet {
		if _, err := eng.RegisterDevice(ctx, store.Device{ID: f.serial, Name: f.name, Model: f.model, OSIdentifier: oldFirmware,
			Connection: connection, Address: strings.TrimPrefix(lab[f.serial].URL(), "https://"), Active: true}); err != nil {
			return nil, err
		}
	}

	// 5. One batch upgrades every camera to the new build, two at a time.
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = eng.Stop(sctx)
	}()
	events, unsubscribe := eng.Subscribe(0)
	var printing sync.WaitGroup
	printing.Add(1)
	go func() {
		defer printing.Done()
		show(out, events, names)
	}()
	batch, plan, err := eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: newBuild.ID, Name: "AcmeOS " + newVersion,
		Rollout: store.Rollout{MaxConcurrent: 2}})
	if err != nil {
		unsubscribe()
		printing.Wait()
		return nil, err
	}
	fmt.Fprintf(out, "batch %q: %d cameras selected, %d skipped\n", batch.Name, len(plan.Selected), len(plan.Skipped))
	for _, s := range plan.Selected {
		fmt.Fprintf(out, "  %-7s gets %s\n", s.Device.Name, s.Image.Name)
	}
	for _, s := range plan.Skipped {
		fmt.Fprintf(out, "  %-7s skipped: %s (%s)\n", s.Device.Name, s.Skip, s.Detail)
	}
	st, err := eng.WaitBatch(ctx, batch.ID)
	unsubscribe()
	printing.Wait()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "\nbatch %s: %s\n", st.State, st.Summary)

	// 6. What each camera runs now, as the camera itself says.
	ops, err := eng.Store().ListOperations(ctx, store.OperationFilter{BatchID: batch.ID})
	if err != nil {
		return nil, err
	}
	var results []result
	var behind []string
	for _, op := range ops {
		r := result{Device: op.DeviceID, Name: names[op.DeviceID], State: op.State, Reason: op.Reason, Firmware: lab[op.DeviceID].Firmware()}
		results = append(results, r)
		fmt.Fprintf(out, "%-7s %s: %s", r.Name, r.Device, r.State)
		if r.Reason != status.ReasonNone {
			fmt.Fprintf(out, " (%s)", r.Reason)
		}
		fmt.Fprintf(out, ", runs %q\n", r.Firmware)
	}
	for _, f := range fleet {
		if fw := lab[f.serial].Firmware(); fw != newFirmware {
			behind = append(behind, fmt.Sprintf("%s runs %q", f.name, fw))
		}
	}
	if len(behind) > 0 || len(results) != len(fleet) {
		return results, fmt.Errorf("not every camera runs %q: %s", newFirmware, strings.Join(behind, ", "))
	}
	return results, nil
}

// show prints the batch's phases, upload progress and log lines as they
// happen.
func show(out io.Writer, events <-chan upgrader.Event, names map[string]string) {
	lastTenth := map[string]int{}
	for ev := range events {
		name := names[ev.DeviceID]
		switch ev.Kind {
		case upgrader.EventOperationPhase:
			lastTenth[ev.DeviceID] = ev.Progress / 10
			fmt.Fprintf(out, "%-7s [%3d%%] phase %s\n", name, ev.Progress, ev.Phase)
		case upgrader.EventOperationProgress:
			// The upload fills 20-60 %: a line per tenth.
			if ev.Progress > status.ProgressChecksum && ev.Progress < status.ProgressUploaded && ev.Progress/10 != lastTenth[ev.DeviceID] {
				lastTenth[ev.DeviceID] = ev.Progress / 10
				fmt.Fprintf(out, "%-7s [%3d%%] uploading\n", name, ev.Progress)
			}
		case upgrader.EventOperationLog:
			fmt.Fprintf(out, "%-7s        %s\n", name, ev.Line)
		case upgrader.EventOperationState:
			switch {
			case ev.State.Terminal() && ev.Reason != status.ReasonNone:
				fmt.Fprintf(out, "%-7s        -> %s (%s)\n", name, ev.State, ev.Reason)
			case ev.State.Terminal():
				fmt.Fprintf(out, "%-7s        -> %s\n", name, ev.State)
			}
		}
	}
}

// randomToken makes a camera's API token.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
