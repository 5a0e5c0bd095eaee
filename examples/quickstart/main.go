// Command quickstart rolls a new OpenWrt release out to a small fleet, end
// to end, in under ten seconds:
//
//	go run ./examples/quickstart
//
// It starts eight simulated OpenWrt routers in this process
// (openwrt/openwrttest: real SSH on loopback addresses, each behaving as
// the release it runs: 19.07, 21.02, 22.03, 23.05 or 24.10), embeds the
// engine with the memory store, creates a category and a 24.10 build with
// one image per board (with real fwtool metadata), and then:
//
//   - prints the dry run of the mass upgrade: the devices the batch selects,
//     in which wave, the one it skips and why, and the read-only checks of
//     every selected device (reachable, host key, identity, board, memory...);
//   - runs the batch: a canary wave of one device, then the rest, at most
//     three devices at once, pausing if more than a quarter of a wave fails;
//   - shows each device's phase and progress live (redrawn in place on a
//     terminal, plain lines otherwise) and the waves as they change;
//   - prints a table of the results, proved on the devices themselves.
//
// The fleet has its troubles, as real ones do: ap-roof is recorded as an
// Archer C7 v2 but is a v5 (the dry run flags it, the batch aborts it
// before uploading anything), ap-store is switched off when the rollout
// starts (the batch finds it offline, waits, and upgrades it when it comes
// back), and ap-spare already runs 24.10 (the plan skips it).
//
// It exits 0 when every device ended as expected (the last line says so),
// 1 otherwise, with the reason on the last line.
//
// Read this file for the embedding calls; fleet.go simulates the devices,
// display.go prints, results.go checks the outcome.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"golang.org/x/term"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// targetSeries is the release the fleet is upgraded to.
const targetSeries = "24.10"

// targetRelease is its DISTRIB_DESCRIPTION: "OpenWrt 24.10.8 r29233-443ec4032a".
var targetRelease = openwrttest.ReleaseDescription(targetSeries)

// imageSize is the size of each simulated image.
const imageSize = 8 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	// On a terminal the live view redraws a table in place.
	live := term.IsTerminal(int(os.Stdout.Fd())) && os.Getenv("TERM") != "dumb"
	r, err := run(ctx, os.Stdout, live, members)
	stop()
	os.Exit(finish(os.Stdout, r, err))
}

// run starts a simulated fleet of the devices (fleet.go), rolls the build
// out to it and returns what happened.
func run(ctx context.Context, out io.Writer, live bool, devices []member) (*rollout, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler) // the library's own log records (slog.Default() shows them)

	// 1. The fleet: simulated routers on loopback addresses (fleet.go).
	fl, err := startFleet(devices)
	if err != nil {
		return nil, err
	}
	defer fl.Close()

	// 2. The OpenWrt upgrader, registered for the devices whose connection
	// kind is openwrt.Connection. It asks the host for the address and
	// credentials on every attempt; host keys are always verified.
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: fl.Credentials,
		// Real routers take a minute or more to reboot: keep the defaults
		// there. The simulated ones are back within two seconds.
		ReconnectDelay:      200 * time.Millisecond,
		ReconnectRetryDelay: 200 * time.Millisecond,
		Logger:              quiet,
	})
	if err != nil {
		return nil, err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		return nil, err
	}

	// 3. The engine, over the in-process memory store (or your own
	// store.Store, or storeadapters/postgres to share the work between
	// machines). Start launches its workers; Stop drains them.
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{
		Logger: quiet,
		// How often the engine looks for work and moves batches to their
		// next wave (default 1 s), and how long a batch waits for a device
		// it found offline before trying again (default 10 min, growing
		// with the time the device has been offline).
		PollInterval:        100 * time.Millisecond,
		MaintenanceInterval: 100 * time.Millisecond,
		Offline: upgrader.OfflinePolicy{InitialInterval: 1500 * time.Millisecond,
			RandomizationFactor: upgrader.NoRetryRandomization},
	})
	if err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		eng.Stop(sctx)
	}()

	// 4. The catalog: a category, a build of the target release, and one
	// image per board, with fwtool metadata naming the board (as OpenWrt's
	// build appends it). UploadImage reads the boards from the metadata.
	cat, err := eng.CreateCategory(ctx, store.Category{Name: "Office routers"})
	if err != nil {
		return nil, err
	}
	build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID,
		Version: openwrtVersion(targetRelease), OSIdentifier: targetRelease})
	if err != nil {
		return nil, err
	}
	for _, b := range []board{archerC7v2, glMT300Nv2} {
		sim := openwrttest.Image{Boards: []string{b.Name}, Release: targetRelease, Target: b.Target,
			Fwtool: true, Size: imageSize}
		im := store.Image{BuildID: build.ID, Type: b.ImageType,
			Name: "openwrt-" + build.Version + "-" + b.ImageType}
		if _, err := eng.UploadImage(ctx, im, sim.Reader()); err != nil {
			return nil, fmt.Errorf("image for %s: %w", b.Model, err)
		}
	}

	// 5. The inventory: the host registers its devices. A device that
	// reports the OS of a known build (ap-spare, on 24.10) gets that build's
	// image as its firmware record; the others have none yet.
	for _, d := range fl.Inventory() {
		if _, err := eng.RegisterDevice(ctx, d); err != nil {
			return nil, fmt.Errorf("device %s: %w", d.Name, err)
		}
	}

	// 6. The mass upgrade: which devices, in which order, and how to roll
	// it out. The rollout is enforced by the store when operations are
	// claimed, so it holds however many engines share the store.
	req := upgrader.BatchRequest{
		BuildID: build.ID,
		Name:    "office routers to " + build.Version,
		// Devices without a firmware record are selected by board.
		Firmwareless: true,
		// Waves take devices in this order: ap-lab is the canary.
		Order: func(a, b store.Device) int { return cmp.Compare(a.Name, b.Name) },
		Rollout: store.Rollout{
			Waves:    []store.WaveSize{{Count: 1}, {Percent: 100}}, // a canary, then everyone else
			WaveWait: time.Second,                                  // in production: time to look at the canary
			// At most three devices at once.
			MaxConcurrent: 3,
			// Pause the batch when more than 25 % of a wave failed or
			// aborted, counted once two of its devices finished (a wave
			// of one, the canary, once it finished).
			FailureThreshold: new(25.0), // a *float64
			MinFinished:      2,
		},
	}

	// 7. The dry run: the plan and the read-only checks of every selected
	// device, in parallel. Nothing is stored, nothing changes on a device.
	plan, err := eng.DryRunBatch(ctx, req, upgrader.DryRunOptions{Check: true})
	if err != nil {
		return nil, fmt.Errorf("dry run: %w", err)
	}
	printPlan(out, plan, req.Rollout)

	// 8. The rollout, watched through the engine's events: phases,
	// progress and waves (display.go). Subscribe before creating the batch
	// so that no event is missed.
	events, unsubscribe := eng.Subscribe(4096)
	mon := newMonitor(out, live, plan)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		mon.watch(events)
	}()
	// The simulated world: someone switches ap-store on once the batch
	// has found it offline.
	stopSwitching := fl.switchOnWhenFoundOffline(eng, func(name string) {
		mon.note("(simulation) %s was switched on", name)
	})

	started := time.Now()
	b, _, err := eng.CreateBatch(ctx, req) // started at once (req.Hold is false)
	if err == nil {
		mon.batchCreated(b)
		err = wait(ctx, eng, b.ID, mon)
	}
	took := time.Since(started)
	stopSwitching()
	unsubscribe()
	<-watched
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}

	// 9. The results: the batch, its operations, and the devices as they
	// are now (results.go).
	st, err := eng.Batch(ctx, b.ID) // st.Summary: "7 of 7 done, 0 pending, wave 2 of 2"
	if err != nil {
		return nil, err
	}
	r, err := newRollout(ctx, eng.Store(), fl, plan, st, mon, took)
	if err != nil {
		return nil, err
	}
	r.print(out)
	return r, nil
}

// wait waits until batch id ends. A batch paused by its failure threshold
// does not end: it waits for an operator (ResumeBatch, CancelBatch,
// RetryBatch). The quickstart then cancels it, so that the results show
// what went wrong; the devices not started yet end cancelled, untouched.
func wait(ctx context.Context, eng *upgrader.Engine, id string, mon *monitor) error {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-mon.paused:
			stop()
		case <-wctx.Done():
		}
	}()
	_, err := eng.WaitBatch(wctx, id)
	if err == nil || ctx.Err() != nil {
		return err
	}
	mon.note("cancelling the paused batch")
	if _, err := eng.CancelBatch(ctx, id); err != nil {
		return err
	}
	_, err = eng.WaitBatch(ctx, id)
	return err
}

// finish prints the last line, why the quickstart succeeded or failed, and
// returns the exit code.
func finish(out io.Writer, r *rollout, err error) int {
	if err == nil {
		err = r.check()
	}
	if err != nil {
		fmt.Fprintf(out, "FAILED: %v\n", err)
		return 1
	}
	fmt.Fprintf(out, "OK: %s\n", r.verdict())
	return 0
}

// openwrtVersion returns the version of a DISTRIB_DESCRIPTION ("24.10.8").
func openwrtVersion(desc string) string {
	if r, ok := openwrt.ParseRelease(desc); ok {
		return r.Version
	}
	return desc
}
