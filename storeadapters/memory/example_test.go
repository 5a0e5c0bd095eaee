package memory_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
)

// catalog fills s with a category, a build, an image of it and a device that
// runs nothing known yet, and returns the device and the image.
func catalog(ctx context.Context, s *memory.Store) (store.Device, store.Image) {
	cat, err := s.CreateCategory(ctx, store.Category{Organization: "acme", Name: "Archer C7"})
	if err != nil {
		panic(err)
	}
	build, err := s.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3",
		OSIdentifier: "OpenWrt 23.05.3 r23809-234f1a2efa"})
	if err != nil {
		panic(err)
	}
	// The store keeps what describes an image; its bytes live in the
	// engine's Files (upgrader.Engine.UploadImage fills Size and SHA256).
	sum := sha256.Sum256([]byte("firmware"))
	img, err := s.CreateImage(ctx, store.Image{BuildID: build.ID,
		Type: "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
		Name: "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
		Size: 8, SHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		panic(err)
	}
	dev, err := s.PutDevice(ctx, store.Device{ID: "ap-lobby", Organization: "acme", Model: "TP-Link Archer C7 v2",
		BoardName: "tplink,archer-c7-v2", Connection: "openwrt-ssh", Address: "192.0.2.10", Active: true})
	if err != nil {
		panic(err)
	}
	return dev, img
}

// Every record round-trips through the store; the store fills in IDs
// (UUIDv7), timestamps and the organization a record inherits.
func ExampleNew() {
	ctx := context.Background()
	s := memory.New()
	dev, img := catalog(ctx, s)
	fmt.Println("image of organization:", img.Organization)

	op, err := s.CreateOperation(ctx, store.Operation{DeviceID: dev.ID, ImageID: img.ID})
	if err != nil {
		panic(err)
	}
	fmt.Println("created:", op.State, op.Organization, op.ID != "", !op.CreatedAt.IsZero())

	// One non-terminal operation per device.
	_, err = s.CreateOperation(ctx, store.Operation{DeviceID: dev.ID, ImageID: img.ID})
	fmt.Println("second one:", errors.Is(err, store.ErrDeviceBusy))

	// Updates are compare-and-set on the state the caller expects.
	op, err = s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
		Phase: store.Ptr(status.PhaseConnecting), Log: []string{"connecting to 192.0.2.10"}})
	fmt.Println("started:", op.State, op.Phase, err)
	op, err = s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: status.Success,
		Progress: store.Ptr(status.ProgressDone), Log: []string{"the device runs 23.05.3"}})
	fmt.Println("ended:", op.State, op.Progress, err)
	_, err = s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: status.Failed})
	fmt.Println("changed again:", errors.Is(err, store.ErrInvalidTransition))

	_, err = s.PutDeviceFirmware(ctx, store.DeviceFirmware{DeviceID: dev.ID, ImageID: img.ID, Installed: true})
	if err != nil {
		panic(err)
	}
	fw, _ := s.DeviceFirmware(ctx, dev.ID)
	fmt.Println("firmware installed:", fw.ImageID == img.ID, fw.Installed)

	logs, _ := s.Logs(ctx, op.ID, 0, 0)
	for _, l := range logs {
		fmt.Println("log", l.Seq, l.Line)
	}
	ops, _ := s.ListOperations(ctx, store.OperationFilter{DeviceID: dev.ID, States: []status.State{status.Success}})
	fmt.Println("successful operations of the device:", len(ops))

	_, err = s.Device(ctx, "ap-nowhere")
	fmt.Println(err)
	// Output:
	// image of organization: acme
	// created: pending acme true true
	// second one: true
	// started: in-progress connecting <nil>
	// ended: success 100 <nil>
	// changed again: true
	// firmware installed: true true
	// log 1 connecting to 192.0.2.10
	// log 2 the device runs 23.05.3
	// successful operations of the device: 1
	// store: not found: device "ap-nowhere"
}

// A claim gives one engine an operation for the length of a lease, with a
// fencing token that every write of the attempt carries: once another
// claim took the operation over, the old holder's writes are refused.
func ExampleStore_ClaimOperations() {
	ctx := context.Background()
	s := memory.New()
	dev, img := catalog(ctx, s)
	op, err := s.CreateOperation(ctx, store.Operation{DeviceID: dev.ID, ImageID: img.ID})
	if err != nil {
		panic(err)
	}

	claimed, err := s.ClaimOperations(ctx, "engine-a", 10, time.Minute)
	if err != nil {
		panic(err)
	}
	fmt.Println("engine-a claimed:", len(claimed), "token", claimed[0].Token, "owner", claimed[0].LeaseOwner)

	// While the lease lives nobody else gets the operation.
	more, _ := s.ClaimOperations(ctx, "engine-b", 10, time.Minute)
	fmt.Println("engine-b claimed:", len(more))
	_, err = s.ClaimOperation(ctx, op.ID, "engine-b", time.Minute)
	fmt.Println("engine-b by ID:", errors.Is(err, store.ErrLeased))

	// engine-a gives the operation up; engine-b takes it with a new token.
	if err := s.ReleaseOperation(ctx, op.ID, claimed[0].Token); err != nil {
		panic(err)
	}
	taken, err := s.ClaimOperation(ctx, op.ID, "engine-b", time.Minute)
	fmt.Println("engine-b by ID:", taken.Token, taken.LeaseOwner, err)

	// engine-a's token is stale now.
	err = s.SetProgress(ctx, op.ID, claimed[0].Token, 10)
	fmt.Println("engine-a writes:", errors.Is(err, store.ErrStaleToken))
	renewals, _ := s.RenewLeases(ctx, "engine-a", time.Minute,
		[]store.Lease{{OperationID: op.ID, Token: claimed[0].Token}})
	fmt.Println("engine-a renews:", renewals[0].Status)
	renewals, _ = s.RenewLeases(ctx, "engine-b", time.Minute,
		[]store.Lease{{OperationID: op.ID, Token: taken.Token}})
	fmt.Println("engine-b renews:", renewals[0].Status)
	// Output:
	// engine-a claimed: 1 token 1 owner engine-a
	// engine-b claimed: 0
	// engine-b by ID: true
	// engine-b by ID: 2 engine-b <nil>
	// engine-a writes: true
	// engine-a renews: lost
	// engine-b renews: held
}

// A batch and its operations are stored at once, split into waves; an idle
// batch starts nothing until it is started, and then only its current wave.
func ExampleStore_CreateBatch() {
	ctx := context.Background()
	s := memory.New()
	_, img := catalog(ctx, s)
	var ops []store.Operation
	for _, id := range []string{"ap-1", "ap-2", "ap-3", "ap-4"} {
		if _, err := s.PutDevice(ctx, store.Device{ID: id, Organization: "acme", Connection: "openwrt-ssh", Active: true}); err != nil {
			panic(err)
		}
		ops = append(ops, store.Operation{DeviceID: id, ImageID: img.ID})
	}
	b, ops, err := s.CreateBatch(ctx, store.Batch{Organization: "acme", BuildID: img.BuildID, Name: "spring rollout",
		Rollout: store.Rollout{Waves: []store.WaveSize{{Count: 1}, {Percent: 100}}}}, ops)
	if err != nil {
		panic(err)
	}
	for _, op := range ops {
		fmt.Printf("%s wave %d\n", op.DeviceID, op.Wave)
	}
	fmt.Println(b.State, b.Total(), "operations,", len(b.WaveTallies), "waves")

	claimed, _ := s.ClaimOperations(ctx, "engine-a", 10, time.Minute)
	fmt.Println("claimed while idle:", len(claimed))

	b, _ = s.SetBatchState(ctx, b.ID, status.BatchIdle, status.BatchInProgress)
	claimed, _ = s.ClaimOperations(ctx, "engine-a", 10, time.Minute)
	fmt.Println("claimed once started:", len(claimed), claimed[0].DeviceID)
	// Output:
	// ap-1 wave 0
	// ap-2 wave 1
	// ap-3 wave 1
	// ap-4 wave 1
	// idle 4 operations, 2 waves
	// claimed while idle: 0
	// claimed once started: 1 ap-1
}
