package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// The reconnect section: how long after a rebooted device answers SSH
// again its operation is recorded a success, with the defaults of
// openwrt.Config and upgrader.Config (only the credentials and a quiet
// logger set).
//
// Each device reboots for a little longer than DefaultReconnectDelay (its
// address silent meanwhile: connection attempts time out, as on a real
// network), so the upgrader is already trying to reconnect when the device
// comes back. The devices' reboot times differ by a prime number of
// milliseconds so that they come back at different points of the
// upgrader's retry cycle. They are upgraded at once, one operation each,
// by one engine; the time a device listens again comes from the simulator
// (WaitDown, then WaitUp), the time of the success from the store
// (Operation.FinishedAt).

func reconnectSection(ctx context.Context, r *run) error {
	n, reboot := r.set.reconnectRuns, r.set.reconnectReboot
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()

	type device struct {
		id  string
		dev *openwrttest.Device
		up  time.Time
		err error
	}
	devs := make([]*device, n)
	for i := range devs {
		id := uuid.NewString()
		d, err := openwrttest.New(openwrttest.Config{UUID: id, RebootDelay: reboot + time.Duration(i)*131*time.Millisecond,
			Faults: openwrttest.Faults{SilentReboot: true}})
		if err != nil {
			return err
		}
		defer d.Close()
		if err := d.Start(); err != nil {
			return err
		}
		devs[i] = &device{id: id, dev: d}
	}
	byID := map[string]*openwrttest.Device{}
	for _, d := range devs {
		byID[d.id] = d.dev
	}
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(_ context.Context, d store.Device) (openwrt.Credentials, error) {
			dev := byID[d.ID]
			if dev == nil {
				return openwrt.Credentials{}, fmt.Errorf("unknown device %s", d.ID)
			}
			return openwrt.Credentials{Address: dev.Addr(), User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
				HostKeyCallback: dev.HostKeyCallback()}, nil
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		return err
	}
	st := memory.New()
	eng, err := upgrader.NewEngine(st, reg, &upgrader.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	cat, err := eng.CreateCategory(ctx, store.Category{Name: "archer-c7"})
	if err != nil {
		return err
	}
	build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3", OSIdentifier: batchRelease})
	if err != nil {
		return err
	}
	sim := openwrttest.NewImage(batchRelease, openwrttest.DefaultBoardName, 1<<20)
	img, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Name: sim.FileName()}, sim.Reader())
	if err != nil {
		return err
	}
	for _, d := range devs {
		if _, err := eng.RegisterDevice(ctx, store.Device{ID: d.id, Model: d.dev.Config().Model, BoardName: d.dev.Config().BoardName,
			OSIdentifier: d.dev.Release(), Connection: openwrt.Connection, Active: true}); err != nil {
			return err
		}
	}
	if err := eng.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = eng.Stop(sctx)
	}()

	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() {
			if d.err = d.dev.WaitDown(ctx); d.err == nil {
				if d.err = d.dev.WaitUp(ctx); d.err == nil {
					d.up = time.Now()
				}
			}
		})
	}
	r.logf("%d devices, each rebooting in about %s", n, reboot)
	ops := make([]string, n)
	for i, d := range devs {
		op, err := eng.Enqueue(ctx, upgrader.Request{DeviceID: d.id, ImageID: img.ID})
		if err != nil {
			return err
		}
		ops[i] = op.ID
	}
	var after []time.Duration
	var each []string
	for i, d := range devs {
		op, err := eng.Wait(ctx, ops[i])
		if err != nil {
			return err
		}
		if op.State != status.Success {
			return fmt.Errorf("device %s: operation %s ended %s (%s)", d.id, op.ID, op.State, op.Reason)
		}
		if d.dev.Flashed() != 1 || d.dev.Release() != sim.Release {
			return fmt.Errorf("device %s: flashed %d times, runs %q", d.id, d.dev.Flashed(), d.dev.Release())
		}
		wg.Wait()
		if d.err != nil {
			return fmt.Errorf("device %s: %w", d.id, d.err)
		}
		a := op.FinishedAt.Sub(d.up)
		after = append(after, a)
		each = append(each, a.Round(time.Millisecond).String())
	}
	r.add("from SSH answering again to success recorded (median)", median(after).Seconds(), "s", atMost(1, "≤ 1 s"),
		fmt.Sprintf("%d devices, defaults (first reconnection %s after the flash, then every %s, each connect bounded by %s): %s",
			n, openwrt.DefaultReconnectDelay, openwrt.DefaultReconnectRetryDelay, openwrt.DefaultReconnectDialTimeout, strings.Join(each, ", ")))
	return nil
}
