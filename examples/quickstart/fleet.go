package main

// The simulated fleet: OpenWrt routers running in this process, each an
// openwrttest.Device that speaks real SSH on a loopback address. In a real
// deployment this file is your inventory and your secret store.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// board is a kind of hardware, as OpenWrt names it.
type board struct {
	Model  string // /tmp/sysinfo/model
	Name   string // /tmp/sysinfo/board_name
	Target string // DISTRIB_TARGET
	Arch   string // DISTRIB_ARCH
	// ImageType is the sysupgrade image OpenWrt builds for the board ("":
	// the quickstart's build has none).
	ImageType string
}

var (
	archerC7v2 = board{Model: "TP-Link Archer C7 v2", Name: "tplink,archer-c7-v2", Target: "ath79/generic", Arch: "mips_24kc",
		ImageType: "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"}
	archerC7v5 = board{Model: "TP-Link Archer C7 v5", Name: "tplink,archer-c7-v5", Target: "ath79/generic", Arch: "mips_24kc"}
	glMT300Nv2 = board{Model: "GL.iNet GL-MT300N-V2", Name: "glinet,gl-mt300n-v2", Target: "ramips/mt76x8", Arch: "mipsel_24kc",
		ImageType: "ramips-mt76x8-glinet_gl-mt300n-v2-squashfs-sysupgrade.bin"}
)

// member is one device of the fleet, and how its upgrade must end.
type member struct {
	Name    string
	Release string // the OpenWrt series it runs, e.g. "19.07"
	Board   board  // what the inventory says the device is
	// Really is what the device really is, when the inventory is wrong.
	Really *board
	// PoweredOff: the device is off when the rollout starts, and switched
	// on a moment after the rollout found it offline.
	PoweredOff bool
	// Want is how its operation must end; "" when the plan must skip the
	// device, for the reason WantSkip.
	Want     status.State
	WantSkip upgrader.SkipReason
}

// members is the quickstart's fleet. The batch orders devices by name, so
// ap-lab (a lab device, the natural canary) comes first.
var members = []member{
	{Name: "ap-lab", Release: "23.05", Board: archerC7v2, Want: status.Success},
	{Name: "ap-lobby", Release: "19.07", Board: archerC7v2, Want: status.Success},
	{Name: "ap-office", Release: "21.02", Board: archerC7v2, Want: status.Success},
	// The inventory says Archer C7 v2, but someone swapped in a v5: the
	// upgrader reads the board from the device and aborts before uploading.
	{Name: "ap-roof", Release: "22.03", Board: archerC7v2, Really: &archerC7v5, Want: status.Aborted},
	// Already runs the target release: the plan leaves it out.
	{Name: "ap-spare", Release: targetSeries, Board: archerC7v2, WantSkip: upgrader.SkipAlreadyOnBuild},
	// Switched off when the rollout starts: the batch finds it offline,
	// waits, and upgrades it once it is back.
	{Name: "ap-store", Release: "22.03", Board: archerC7v2, PoweredOff: true, Want: status.Success},
	{Name: "mesh-garden", Release: "22.03", Board: glMT300Nv2, Want: status.Success},
	{Name: "mesh-patio", Release: "23.05", Board: glMT300Nv2, Want: status.Success},
}

// Simulation timings: a real router takes a minute or two to flash and
// reboot; these keep the quickstart short.
const (
	simRebootDelay = 1500 * time.Millisecond // down after a flash
	simPowerOnWait = 500 * time.Millisecond  // from "found offline" to "switched on"
)

// simDevice is a member of the fleet with its simulated device.
type simDevice struct {
	member
	ID      string // the device's UUID: `uci get openwisp.http.uuid` prints it
	Addr    string // host:port, the same when the device is off
	Sim     *openwrttest.Device
	Started bool // the simulator was started (switched on)
}

// fleet is the running simulated fleet.
type fleet struct {
	mu      sync.Mutex
	devices []*simDevice // in members' order
	byID    map[string]*simDevice
}

// startFleet creates a simulated device for each member and starts the
// ones that are on.
func startFleet(ms []member) (*fleet, error) {
	f := &fleet{byID: map[string]*simDevice{}}
	for _, m := range ms {
		d, err := f.add(m)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("device %s: %w", m.Name, err)
		}
		f.devices = append(f.devices, d)
		f.byID[d.ID] = d
	}
	return f, nil
}

// add creates the simulated device of m, and starts it unless it is off.
func (f *fleet) add(m member) (*simDevice, error) {
	hw := m.Board
	if m.Really != nil {
		hw = *m.Really
	}
	d := &simDevice{member: m, ID: uuid.NewString()}
	cfg := openwrttest.Config{
		Model: hw.Model, BoardName: hw.Name, Target: hw.Target, Arch: hw.Arch,
		UUID: d.ID, Release: openwrttest.ReleaseDescription(m.Release),
		SCP: true, RebootDelay: simRebootDelay,
	}
	if m.PoweredOff {
		// A device that is off still has its address: reserve a port
		// for it, so connecting to it is refused until it starts.
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		cfg.Addr = addr
	}
	sim, err := openwrttest.New(cfg)
	if err != nil {
		return nil, err
	}
	d.Sim = sim
	d.Addr = cfg.Addr
	if !m.PoweredOff {
		if err := sim.Start(); err != nil {
			return nil, err
		}
		d.Started = true
		d.Addr = sim.Addr()
	}
	return d, nil
}

// freeAddr returns an address nobody listens on, for a device that is
// off: a free port on a loopback address of its own where the system routes
// all of 127/8 to the loopback (Linux), so that no other program takes the
// port meanwhile; else a free port on 127.0.0.1.
func freeAddr() (string, error) {
	own := fmt.Sprintf("127.%d.%d.%d", 200+rand.IntN(50), rand.IntN(256), 1+rand.IntN(254))
	var err error
	for _, host := range []string{own, "127.0.0.1"} {
		var ln net.Listener
		if ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err == nil {
			defer ln.Close()
			return ln.Addr().String(), nil
		}
	}
	return "", err
}

// Inventory returns the devices as the host's inventory records them,
// for Engine.RegisterDevice: what the inventory says, which is not always
// what the device is.
func (f *fleet) Inventory() []store.Device {
	out := make([]store.Device, 0, len(f.devices))
	for _, d := range f.devices {
		out = append(out, store.Device{
			ID: d.ID, Name: d.Name, Model: d.Board.Model, BoardName: d.Board.Name,
			OSIdentifier: openwrttest.ReleaseDescription(d.Release),
			Connection:   openwrt.Connection, Address: d.Addr, Active: true,
		})
	}
	return out
}

// Credentials is the openwrt upgrader's CredentialsFunc: the host's answer
// to "how do I log in to this device, and which host key must it show?",
// asked on every attempt and every reconnection. A real host reads its
// secret store and known_hosts (openwrt.KnownHosts); the simulated devices
// all have the same password and a host key of their own.
func (f *fleet) Credentials(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
	dev := f.device(d.ID)
	if dev == nil {
		return openwrt.Credentials{}, fmt.Errorf("no credentials for device %s", d.ID)
	}
	return openwrt.Credentials{
		Address:         d.Address,
		User:            openwrttest.DefaultUser,
		Password:        openwrttest.DefaultPassword,
		HostKeyCallback: openwrt.PinnedKey(dev.Sim.HostKey()),
	}, nil
}

func (f *fleet) device(id string) *simDevice {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byID[id]
}

// switchOnWhenFoundOffline plays the person who switches a powered-off
// device on: a moment after the engine reports that the rollout found the
// device offline (its operation went back to pending), the device starts.
// It reacts to the engine's events, not to a timer, so the rollout always
// meets the device offline first. switched is called with the name of each
// device switched on; stop ends it.
func (f *fleet) switchOnWhenFoundOffline(eng *upgrader.Engine, switched func(name string)) (stop func()) {
	events, unsubscribe := eng.Subscribe(0)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for ev := range events {
			if ev.Kind != upgrader.EventOperationState || ev.State != status.Pending || ev.Reason != status.ReasonConnectionFailed {
				continue
			}
			d := f.device(ev.DeviceID)
			if d == nil || !d.PoweredOff {
				continue
			}
			wg.Go(func() {
				if f.switchOn(d, done) {
					switched(d.Name)
				}
			})
		}
	})
	return func() {
		unsubscribe()
		close(done)
		wg.Wait()
	}
}

// switchOn starts d after simPowerOnWait, unless done closes first. It
// reports whether it started d.
func (f *fleet) switchOn(d *simDevice, done <-chan struct{}) bool {
	select {
	case <-time.After(simPowerOnWait):
	case <-done:
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d.Started || d.Sim.Start() != nil {
		return false
	}
	d.Started = true
	return true
}

// Close stops every simulated device.
func (f *fleet) Close() {
	for _, d := range f.devices {
		d.Sim.Close()
	}
}
