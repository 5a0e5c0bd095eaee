package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// What the simulated fleet is: TP-Link Archer C7 v2 routers on OpenWrt
// 22.03.5, to be upgraded to 23.05.3.
const (
	simModel        = "TP-Link Archer C7 v2"
	simBoard        = "tplink,archer-c7-v2"
	simImageType    = "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
	simOldVersion   = "22.03.5"
	simOldRelease   = "OpenWrt 22.03.5 r20134-5f15225c1e"
	simNewVersion   = "23.05.3"
	simNewRelease   = "OpenWrt 23.05.3 r23809-234f1a2efa"
	simCategoryName = "Archer C7 v2 (simulated)"
	simGroup        = "simulated"
)

// fleet holds the simulated devices by device ID and gives the upgrader
// their credentials.
type fleet struct {
	mu   sync.Mutex
	devs map[string]*openwrttest.Device
}

func newFleet() *fleet { return &fleet{devs: map[string]*openwrttest.Device{}} }

// errNoCredentials is what a device outside the simulated fleet gets: this
// example knows no real device's credentials.
var errNoCredentials = errors.New("nms: no credentials for this device (only simulated devices have some in this example)")

// credentials is the openwrt.CredentialsFunc: the device's current address,
// its user and password, and its pinned host key (always verified).
func (f *fleet) credentials(_ context.Context, d store.Device) (openwrt.Credentials, error) {
	f.mu.Lock()
	dev := f.devs[d.ID]
	f.mu.Unlock()
	if dev == nil {
		return openwrt.Credentials{}, errNoCredentials
	}
	return openwrt.Credentials{
		Address: dev.Addr(), User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
		HostKeyCallback: openwrt.PinnedKey(dev.HostKey()),
	}, nil
}

// device returns the simulated device of a device ID.
func (f *fleet) device(id string) *openwrttest.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.devs[id]
}

// ids returns the IDs of the simulated devices.
func (f *fleet) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.devs))
	for id := range f.devs {
		out = append(out, id)
	}
	return out
}

// start starts n simulated devices, spread over orgs, and registers them.
// Devices of an earlier run (group "simulated", kept by a PostgreSQL store)
// are deactivated first: nobody answers at their addresses any more.
func (f *fleet) start(ctx context.Context, eng *upgrader.Engine, n int, orgs []string, rebootDelay time.Duration) error {
	old, err := eng.Store().ListDevices(ctx, store.DeviceFilter{Group: simGroup})
	if err != nil {
		return err
	}
	for _, d := range old {
		if d.Active && f.device(d.ID) == nil {
			d.Active = false
			if _, err := eng.Store().PutDevice(ctx, d); err != nil {
				return fmt.Errorf("deactivating the simulated device %s of an earlier run: %w", d.ID, err)
			}
		}
	}
	for i := range n {
		id := uuid.NewString()
		dev, err := openwrttest.New(openwrttest.Config{
			Model: simModel, BoardName: simBoard, UUID: id, Release: simOldRelease,
			SCP: true, RebootDelay: rebootDelay,
		})
		if err != nil {
			return err
		}
		if err := dev.Start(); err != nil {
			_ = dev.Close()
			return err
		}
		f.mu.Lock()
		f.devs[id] = dev
		f.mu.Unlock()
		_, err = eng.RegisterDevice(ctx, store.Device{
			ID: id, Organization: orgs[i%len(orgs)], Name: fmt.Sprintf("sim-%02d", i+1),
			Group: simGroup, Location: fmt.Sprintf("lab-%c", 'a'+i%2),
			Model: simModel, BoardName: simBoard, OSIdentifier: simOldRelease,
			Connection: openwrt.Connection, Address: dev.Addr(), Active: true,
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Close stops every simulated device.
func (f *fleet) Close() {
	f.mu.Lock()
	devs := f.devs
	f.devs = map[string]*openwrttest.Device{}
	f.mu.Unlock()
	for _, d := range devs {
		_ = d.Close()
	}
}

// seeded is the simulated catalog.
type seeded struct {
	Category           store.Category
	OldBuild, NewBuild store.Build
	OldImage, NewImage store.Image
}

// seedCatalog makes sure the shared category of the simulated devices
// exists with a build of the release they run (so that registering a device
// records its firmware) and one of the release to upgrade to, each with its
// image. It reuses what an earlier run left in a persistent store.
func seedCatalog(ctx context.Context, eng *upgrader.Engine, size int64) (seeded, error) {
	var s seeded
	st := eng.Store()
	cats, err := st.ListCategories(ctx, store.CategoryFilter{Name: simCategoryName})
	if err != nil {
		return s, err
	}
	for _, c := range cats {
		if c.Organization == "" {
			s.Category = c
		}
	}
	if s.Category.ID == "" {
		s.Category, err = eng.CreateCategory(ctx, store.Category{Name: simCategoryName,
			Description: "Routers started by examples/nms --simulate"})
		if err != nil {
			return s, err
		}
	}
	if s.OldBuild, s.OldImage, err = seedBuild(ctx, eng, s.Category, simOldVersion, simOldRelease, size); err != nil {
		return s, err
	}
	if s.NewBuild, s.NewImage, err = seedBuild(ctx, eng, s.Category, simNewVersion, simNewRelease, size); err != nil {
		return s, err
	}
	return s, nil
}

// seedBuild finds or creates the build of version and its image.
func seedBuild(ctx context.Context, eng *upgrader.Engine, c store.Category, version, release string, size int64) (store.Build, store.Image, error) {
	st := eng.Store()
	builds, err := st.ListBuilds(ctx, store.BuildFilter{CategoryID: c.ID})
	if err != nil {
		return store.Build{}, store.Image{}, err
	}
	var b store.Build
	for _, x := range builds {
		if x.Version == version {
			b = x
		}
	}
	if b.ID == "" {
		b, err = eng.CreateBuild(ctx, store.Build{CategoryID: c.ID, Version: version, OSIdentifier: release,
			Changelog: "Simulated OpenWrt " + version})
		if err != nil {
			return b, store.Image{}, err
		}
	}
	ims, err := st.ListImages(ctx, store.ImageFilter{BuildID: b.ID, Type: simImageType})
	if err != nil {
		return b, store.Image{}, err
	}
	if len(ims) > 0 {
		return b, ims[0], nil
	}
	sim := openwrttest.Image{Boards: []string{simBoard}, Release: release, Size: size, Fwtool: true}
	im, err := eng.UploadImage(ctx, store.Image{BuildID: b.ID, Type: simImageType,
		Name: "openwrt-" + version + "-" + simImageType}, sim.Reader())
	return b, im, err
}
