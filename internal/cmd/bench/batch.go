package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// The batch section: mass upgrades through the engine, the memory store
// and the openwrt upgrader, against simulated devices over real SSH on
// loopback (each device on a loopback address of its own).
//
// The wall time of a batch is from CreateBatch to the batch's end (its
// state polled every 5 ms), every operation a success and every device
// flashed once. The same engine runs a batch of one device, then a batch of
// many, in one run: their ratio is the figure. The devices run in this
// process, so their CPU time counts too.
//
// The peak memory is measured in a child process that runs only the engine,
// the memory store (with the image's bytes in memory, upgrader.MemFiles) and
// the openwrt upgrader, while its devices run in a grandchild: its VmHWM
// (reset when the batch starts) is the library's own peak.

// batchRelease is the release of the batches' image.
const batchRelease = "OpenWrt 23.05.3 r23809-234f1a2efa"

// rig is one engine over a memory store with an openwrt upgrader, and the
// devices it upgrades.
type rig struct {
	st    *memory.Store
	eng   *upgrader.Engine
	build store.Build
	image store.Image

	mu     sync.RWMutex
	local  map[string]*openwrttest.Device // devices in this process
	remote map[string]remoteDevice        // devices in a device host
}

// remoteDevice is a device of another process.
type remoteDevice struct {
	addr string
	key  ssh.PublicKey
}

// newRig makes an engine with workers workers and a catalog with one image
// of imageSize bytes. The openwrt upgrader has generous timeouts (nothing
// times out when a thousand devices share two cores) and reconnects
// reconnectDelay after the flash, then every DefaultReconnectRetryDelay.
func newRig(ctx context.Context, workers int, imageSize int64, reconnectDelay time.Duration) (*rig, error) {
	r := &rig{st: memory.New(), local: map[string]*openwrttest.Device{}, remote: map[string]remoteDevice{}}
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(_ context.Context, d store.Device) (openwrt.Credentials, error) {
			r.mu.RLock()
			dev, rd := r.local[d.ID], r.remote[d.ID]
			r.mu.RUnlock()
			if dev != nil {
				rd = remoteDevice{addr: dev.Addr(), key: dev.HostKey()}
			}
			if rd.addr == "" {
				return openwrt.Credentials{}, fmt.Errorf("unknown device %s", d.ID)
			}
			return openwrt.Credentials{Address: rd.addr, User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
				HostKeyCallback: openwrt.PinnedKey(rd.key)}, nil
		},
		ConnectTimeout: time.Minute, CommandTimeout: 2 * time.Minute, UpgradeTimeout: 2 * time.Minute,
		ReconnectDelay: reconnectDelay, ReconnectWindow: 10 * time.Minute,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		return nil, err
	}
	r.eng, err = upgrader.NewEngine(r.st, reg, &upgrader.Config{
		Workers: workers, Files: upgrader.NewMemFiles(), MaxImageSize: 64 << 20,
		OperationTimeout: time.Hour, VerifyTimeout: time.Hour,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	cat, err := r.eng.CreateCategory(ctx, store.Category{Name: "archer-c7"})
	if err != nil {
		return nil, err
	}
	if r.build, err = r.eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3", OSIdentifier: batchRelease}); err != nil {
		return nil, err
	}
	sim := openwrttest.NewImage(batchRelease, openwrttest.DefaultBoardName, imageSize)
	if r.image, err = r.eng.UploadImage(ctx, store.Image{BuildID: r.build.ID, Name: sim.FileName()}, sim.Reader()); err != nil {
		return nil, err
	}
	return r, nil
}

// addDevices starts n simulated devices rebooting in reboot in this
// process, 16 at a time, and registers them.
func (r *rig) addDevices(ctx context.Context, n int, reboot time.Duration) ([]string, error) {
	ids := make([]string, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ids[i], errs[i] = r.addDevice(ctx, reboot)
		})
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

func (r *rig) addDevice(ctx context.Context, reboot time.Duration) (string, error) {
	id := uuid.NewString()
	dev, err := openwrttest.New(openwrttest.Config{UUID: id, RebootDelay: reboot, NoMD5: true})
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.local[id] = dev // closed by close from now on
	r.mu.Unlock()
	if err := dev.Start(); err != nil {
		return "", err
	}
	return id, r.register(ctx, id, dev.Config().Model, dev.Config().BoardName, dev.Release())
}

func (r *rig) register(ctx context.Context, id, model, board, release string) error {
	_, err := r.eng.RegisterDevice(ctx, store.Device{ID: id, Model: model, BoardName: board, OSIdentifier: release,
		Connection: openwrt.Connection, Active: true})
	return err
}

// close stops the engine, then closes the devices of this process.
func (r *rig) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = r.eng.Stop(ctx)
	r.mu.RLock()
	devs := make([]*openwrttest.Device, 0, len(r.local))
	for _, d := range r.local {
		devs = append(devs, d)
	}
	r.mu.RUnlock()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() { d.Close() })
	}
	wg.Wait()
}

// runBatch upgrades ids in one batch of at most len(ids) at once and
// returns the wall time from CreateBatch to the batch's end and the CPU
// time the process used meanwhile. Every operation must succeed.
func (r *rig) runBatch(ctx context.Context, ids []string) (wall, cpu time.Duration, err error) {
	cpu0 := processCPU()
	start := time.Now()
	b, plan, err := r.eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: r.build.ID, Name: fmt.Sprintf("bench %d", len(ids)),
		DeviceIDs: ids, Firmwareless: true, Rollout: store.Rollout{MaxConcurrent: len(ids)}})
	if err != nil {
		return 0, 0, fmt.Errorf("create the batch: %w", err)
	}
	if len(plan.Selected) != len(ids) {
		return 0, 0, fmt.Errorf("the batch selected %d devices of %d", len(plan.Selected), len(ids))
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := r.eng.Batch(ctx, b.ID)
		if err != nil {
			return 0, 0, err
		}
		if s.State.Terminal() {
			break
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("the batch did not end (%s): %w", s.Summary, ctx.Err())
		case <-tick.C:
		}
	}
	wall, cpu = time.Since(start), processCPU()-cpu0
	ops, err := r.st.ListOperations(ctx, store.OperationFilter{BatchID: b.ID})
	if err != nil {
		return 0, 0, err
	}
	bad := map[string]int{}
	for _, op := range ops {
		if op.State != status.Success {
			bad[fmt.Sprintf("%s/%s", op.State, op.Reason)]++
		}
	}
	if len(ops) != len(ids) || len(bad) > 0 {
		return 0, 0, fmt.Errorf("batch of %d devices: %d operations, not successful: %v", len(ids), len(ops), bad)
	}
	return wall, cpu, nil
}

// checkFlashedOnce checks that each local device of ids was flashed once.
func (r *rig) checkFlashedOnce(ids []string) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, id := range ids {
		if n := r.local[id].Flashed(); n != 1 {
			return fmt.Errorf("device %s was flashed %d times", id, n)
		}
	}
	return nil
}

func batchSection(ctx context.Context, r *run) error {
	n := r.set.batchDevices
	ratioGoal := atMost(3, "≤ 3×")
	if err := raiseFileLimit(uint64(4*n + 1024)); err != nil {
		for _, d := range r.set.batchDelays {
			r.skip(fmt.Sprintf("%d devices / 1 device (%s)", n, d.name), "×", ratioGoal, err.Error())
		}
	} else {
		for _, d := range r.set.batchDelays {
			if err := thousand(ctx, r, d, ratioGoal); err != nil {
				return fmt.Errorf("%s: %w", d.name, err)
			}
		}
	}
	return peakMemory(ctx, r)
}

// thousand measures a batch of one device and a batch of batchDevices with
// the same engine, one after the other.
func thousand(ctx context.Context, r *run, d batchDelay, ratioGoal *goal) error {
	n := r.set.batchDevices
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	rg, err := newRig(ctx, n, r.set.batchImage, d.delay)
	if err != nil {
		return err
	}
	defer rg.close()
	r.logf("%s: starting %d devices", d.name, n+1)
	ids, err := rg.addDevices(ctx, n+1, r.set.batchReboot)
	if err != nil {
		return err
	}
	if err := rg.eng.Start(ctx); err != nil {
		return err
	}
	one, _, err := rg.runBatch(ctx, ids[:1])
	if err != nil {
		return err
	}
	r.logf("%s: 1 device in %s; now %d devices", d.name, one.Round(time.Millisecond), n)
	all, cpu, err := rg.runBatch(ctx, ids[1:])
	if err != nil {
		return err
	}
	if err := rg.checkFlashedOnce(ids); err != nil {
		return err
	}
	r.logf("%s: %d devices in %s", d.name, n, all.Round(time.Millisecond))
	r.add(fmt.Sprintf("batch of 1 device (%s)", d.name), one.Seconds(), "s", nil, "")
	r.add(fmt.Sprintf("batch of %d devices (%s)", n, d.name), all.Seconds(), "s", nil,
		fmt.Sprintf("CPU time of the process (engine and devices) during it: %.1f s, %.2f cores on average of %d",
			cpu.Seconds(), cpu.Seconds()/all.Seconds(), runtime.NumCPU()))
	r.add(fmt.Sprintf("%d devices / 1 device (%s)", n, d.name), all.Seconds()/one.Seconds(), "×", ratioGoal,
		fmt.Sprintf("%d KiB image, devices reboot in %s, one engine with %d workers, at most %d at once; ReconnectDelay %s",
			r.set.batchImage>>10, r.set.batchReboot, n, n, d.delay))
	return nil
}
