package openwrttest_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// rig is what a host's test sets up once: an engine with the memory store
// and the openwrt upgrader, reaching the simulated devices with a key of
// its own and checking each device's host key.
type rig struct {
	eng     *upgrader.Engine
	client  ssh.Signer // the host's SSH key
	devices map[string]*openwrttest.Device
}

// newRig wires the engine as a host does. reconnectWindow bounds how long
// the upgrader waits for a device to come back after its flash.
func newRig(reconnectWindow time.Duration) (*rig, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	client, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	r := &rig{client: client, devices: map[string]*openwrttest.Device{}}
	ow, err := openwrt.New(&openwrt.Config{
		// Asked on every attempt and every reconnection: where the device
		// is now, how to log in, and which host key to trust.
		CredentialsFunc: func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
			dev := r.devices[d.ID]
			if dev == nil {
				return openwrt.Credentials{}, fmt.Errorf("no device %s", d.ID)
			}
			return openwrt.Credentials{
				Address:         dev.Addr(),
				User:            openwrttest.DefaultUser,
				Signers:         []ssh.Signer{r.client},
				HostKeyCallback: dev.HostKeyCallback(),
			}, nil
		},
		ReconnectDelay:      50 * time.Millisecond,
		ReconnectRetryDelay: 50 * time.Millisecond,
		ReconnectWindow:     reconnectWindow,
		Logger:              slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		return nil, err
	}
	r.eng, err = upgrader.NewEngine(memory.New(), reg, &upgrader.Config{Logger: slog.New(slog.DiscardHandler)})
	return r, err
}

// device starts a simulated device that accepts the rig's key and
// registers it in the store under the ID its uci configuration carries.
func (r *rig) device(ctx context.Context, id string, cfg openwrttest.Config) (store.Device, *openwrttest.Device, error) {
	cfg.UUID = id
	cfg.AuthorizedKeys = []ssh.PublicKey{r.client.PublicKey()}
	cfg.RebootDelay = 100 * time.Millisecond
	dev, err := openwrttest.New(cfg)
	if err != nil {
		return store.Device{}, nil, err
	}
	if err := dev.Start(); err != nil {
		return store.Device{}, nil, err
	}
	r.devices[id] = dev
	d, err := r.eng.RegisterDevice(ctx, store.Device{ID: id, Model: dev.Config().Model,
		BoardName: dev.Config().BoardName, OSIdentifier: dev.Release(),
		Connection: openwrt.Connection, Active: true})
	return d, dev, err
}

// image stores a build of release and its image for the default board.
func (r *rig) image(ctx context.Context, release string) (store.Image, error) {
	sim := openwrttest.NewImage(release, openwrttest.DefaultBoardName, 256<<10)
	cat, err := r.eng.CreateCategory(ctx, store.Category{Name: "Archer C7"})
	if err != nil {
		return store.Image{}, err
	}
	build, err := r.eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID,
		Version: release, OSIdentifier: sim.Release})
	if err != nil {
		return store.Image{}, err
	}
	return r.eng.UploadImage(ctx, store.Image{BuildID: build.ID, Name: sim.FileName()}, sim.Reader())
}

// A device on 22.03 upgraded to 23.05 through the engine, the memory store
// and the openwrt upgrader, over real SSH with public-key login and a
// verified host key.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := newRig(10 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	img, err := r.image(ctx, "23.05")
	if err != nil {
		log.Fatal(err)
	}
	d, dev, err := r.device(ctx, "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e",
		openwrttest.Config{Release: openwrttest.ReleaseDescription("22.03")})
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	op, err := r.eng.Upgrade(ctx, upgrader.Request{DeviceID: d.ID, ImageID: img.ID})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("operation:", op.State)
	fmt.Println("device runs:", dev.Release())
	flashes := dev.Flashes()
	fmt.Println("flashed:", len(flashes), "time(s), image", flashes[0].SHA256 == img.SHA256, "keep config", flashes[0].KeepConfig)
	fmt.Println("rebooted:", dev.Reboots())
	// Output:
	// operation: success
	// device runs: OpenWrt 23.05.6 r24232-539228933c
	// flashed: 1 time(s), image true keep config true
	// rebooted: 1
}

// A device that never comes back after its flash: the operation ends
// failed (never success: the device did not prove it runs the image), and
// the device did receive the flash.
func ExampleFaults() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := newRig(500 * time.Millisecond)
	if err != nil {
		log.Fatal(err)
	}
	img, err := r.image(ctx, "23.05")
	if err != nil {
		log.Fatal(err)
	}
	d, dev, err := r.device(ctx, "0d9f3b42-6c1e-4f7a-8a25-3e9b7c1d5f60",
		openwrttest.Config{Faults: openwrttest.Faults{NeverComeBack: true}})
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	op, err := r.eng.Upgrade(ctx, upgrader.Request{DeviceID: d.ID, ImageID: img.ID})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("operation:", op.State, op.Reason)
	fmt.Println("flashed:", dev.Flashed(), "up:", dev.Up())
	// Output:
	// operation: failed unreachable-after-flash
	// flashed: 1 up: false
}

// A test image for a release and a board, with the fwtool metadata that
// release's build appends, read back as sysupgrade and the upgrader read it.
func ExampleNewImage() {
	img := openwrttest.NewImage("23.05.3", "tplink,archer-c7-v2", 1<<20)
	fmt.Println(img.Release)
	fmt.Println(img.FileName())
	fmt.Println(imagemap.TypeFromFileName(img.FileName()))

	b := img.Bytes() // or stream img.Reader() / img.Open() for large images
	md, err := imagemap.ReadMetadata(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(b), md.Boards(), md.Version.Version, md.CompatVersion)

	// Images of releases before 17.01 carry no metadata, as theirs did not.
	old := openwrttest.NewImage("15.05", "", 0)
	fmt.Println(old.Release, old.FwtoolMetadata() == nil)
	// Output:
	// OpenWrt 23.05.3
	// openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin
	// ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin
	// 1048576 [tplink,archer-c7-v2] 23.05.3 1.0
	// OpenWrt Chaos Calmer 15.05.1 true
}

// A device used directly over SSH, as a host's own SSH code would: the
// client configuration logs in with the default password and verifies the
// host key; every command is recorded.
func ExampleDevice() {
	dev, err := openwrttest.New(openwrttest.Config{
		Release: openwrttest.ReleaseDescription("19.07"),
		UUID:    "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := dev.Start(); err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	client, err := ssh.Dial("tcp", dev.Addr(), dev.ClientConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	out, err := run(client, "cat /tmp/sysinfo/board_name; uci get openwisp.http.uuid", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(out)
	fmt.Printf("%q\n", dev.Commands())
	fmt.Printf("%q\n", dev.Executed())
	// Output:
	// tplink,archer-c7-v2
	// 5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e
	// ["cat /tmp/sysinfo/board_name; uci get openwisp.http.uuid"]
	// [["cat" "/tmp/sysinfo/board_name"] ["uci" "get" "openwisp.http.uuid"]]
}

// An image whose compat_version is 1.1 (as OpenWrt's DSA migration made
// them), tested by a 17.01 device: 17.01 knows no compat_version and sees
// the message OpenWrt's build puts in supported_devices for old devices, so
// it refuses the image.
func ExampleImage_compatVersion() {
	img := openwrttest.NewImage("23.05.3", openwrttest.DefaultBoardName, 64<<10)
	img.CompatVersion = "1.1"
	img.CompatMessage = "Config cannot be migrated from swconfig to DSA"
	fmt.Println(img.FwtoolMetadata().NewSupportedDevices)

	dev, err := openwrttest.New(openwrttest.Config{Release: openwrttest.ReleaseDescription("17.01")})
	if err != nil {
		log.Fatal(err)
	}
	if err := dev.Start(); err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	client, err := ssh.Dial("tcp", dev.Addr(), dev.ClientConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	if _, err := run(client, "cat > /tmp/fw.bin", img.Reader()); err != nil {
		log.Fatal(err)
	}
	out, err := run(client, "sysupgrade -T /tmp/fw.bin", nil)
	fmt.Print(out)
	fmt.Println(err)
	// Output:
	// [tplink,archer-c7-v2]
	// Device tplink,archer-c7-v2 not supported by this image
	// Supported devices: tplink,archer-c7-v2 - Image version mismatch: image 1.1, device 1.0. Please wipe config during upgrade (force required) or reinstall. Reason: Config cannot be migrated from swconfig to DSA
	// Image check 'fwtool_check_image' failed.
	// Process exited with status 1
}

// run runs cmd in a new session of client with stdin and returns its
// combined output.
func run(client *ssh.Client, cmd string, stdin io.Reader) (string, error) {
	s, err := client.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	s.Stdin = stdin
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}
