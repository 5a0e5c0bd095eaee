package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// The engine section: the engine's own cost per operation, with an
// upgrader that succeeds at once without reporting anything. N operations,
// each on a device of its own, are enqueued one by one after Start and
// waited for, by an engine with 8 workers: on the memory store, then on
// PostgreSQL (a pool of 16 connections: the workers, the producer, the
// enqueuer, the waiter and the engine's loops). The time is from Start to
// the last operation's end.

// noop is an upgrader that succeeds at once.
type noop struct{}

func (noop) Upgrade(context.Context, *upgrader.Job) error { return nil }

const (
	noopType  = "test-board-squashfs-sysupgrade.bin"
	noopBoard = "test,board"
	noopModel = "Test Board v1"
)

func engineSection(ctx context.Context, r *run) error {
	n := r.set.engineOps
	mem, err := engineRun(ctx, memory.New(), func(st store.Store, tmpl store.Device) ([]string, error) {
		ids := make([]string, n)
		for i := range ids {
			d := tmpl
			d.ID = "bench-" + strconv.Itoa(i)
			if _, err := st.PutDevice(ctx, d); err != nil {
				return nil, err
			}
			ids[i] = d.ID
		}
		return ids, nil
	}, n)
	if err != nil {
		return fmt.Errorf("memory store: %w", err)
	}
	memName := fmt.Sprintf("engine overhead, memory store (%d operations)", n)
	r.add(memName, float64(mem.Microseconds())/float64(n), "µs/op", nil, fmt.Sprintf("%.0f operations/s", float64(n)/mem.Seconds()))

	pgName := fmt.Sprintf("engine overhead, PostgreSQL (%d operations)", n)
	ratioName := "engine overhead, PostgreSQL / memory store"
	pool, skip, err := pgPool(ctx, 16)
	if skip != "" || err != nil {
		if err != nil {
			skip = err.Error()
		}
		r.skip(pgName, "µs/op", nil, skip)
		r.skip(ratioName, "×", nil, skip)
		return nil
	}
	defer pool.Close()
	p, err := newPGSchema(ctx, pool)
	if err != nil {
		return err
	}
	defer p.drop()
	pgt, err := engineRun(ctx, p.s, func(_ store.Store, tmpl store.Device) ([]string, error) {
		return p.devices(ctx, "bench-", n, tmpl)
	}, n)
	if err != nil {
		return fmt.Errorf("PostgreSQL: %w", err)
	}
	r.add(pgName, float64(pgt.Microseconds())/float64(n), "µs/op", nil, fmt.Sprintf("%.0f operations/s", float64(n)/pgt.Seconds()))
	r.add(ratioName, pgt.Seconds()/mem.Seconds(), "×", nil, "measured one after the other in this run")
	return nil
}

// engineRun runs n no-op operations through an engine over st, whose
// devices addDevices makes like a template, and returns the time from
// Start to the last operation's end.
func engineRun(ctx context.Context, st store.Store, addDevices func(store.Store, store.Device) ([]string, error), n int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	m, err := imagemap.New(map[string]imagemap.Entry{
		noopType: {Label: "Test board", Boards: []string{noopModel}, BoardNames: []string{noopBoard}},
	})
	if err != nil {
		return 0, err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register("noop", noop{}); err != nil {
		return 0, err
	}
	eng, err := upgrader.NewEngine(st, reg, &upgrader.Config{
		Logger: slog.New(slog.DiscardHandler),
		Retry: upgrader.RetryPolicy{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond,
			RandomizationFactor: upgrader.NoRetryRandomization},
		ImageMap: m,
		Files:    upgrader.NewMemFiles(),
		Workers:  8,
	})
	if err != nil {
		return 0, err
	}
	cat, err := eng.CreateCategory(ctx, store.Category{Organization: "org1", Name: "routers"})
	if err != nil {
		return 0, err
	}
	build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "2.0", OSIdentifier: "TestOS 2.0 r1"})
	if err != nil {
		return 0, err
	}
	im, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: noopType}, strings.NewReader("firmware bytes"))
	if err != nil {
		return 0, err
	}
	devices, err := addDevices(st, store.Device{Organization: "org1", Model: noopModel, BoardName: noopBoard,
		Connection: "noop", Active: true, OSIdentifier: "TestOS 1.0"})
	if err != nil {
		return 0, err
	}
	ids := make([]string, len(devices))
	start := time.Now()
	if err := eng.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = eng.Stop(sctx)
	}()
	for i, d := range devices {
		op, err := eng.Enqueue(ctx, upgrader.Request{DeviceID: d, ImageID: im.ID})
		if err != nil {
			return 0, err
		}
		ids[i] = op.ID
	}
	for _, id := range ids {
		op, err := eng.Wait(ctx, id)
		if err != nil {
			return 0, err
		}
		if op.State != status.Success {
			return 0, fmt.Errorf("operation %s ended %s (%s)", id, op.State, op.Reason)
		}
	}
	return time.Since(start), nil
}
