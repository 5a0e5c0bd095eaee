package openwrt_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// An engine upgrades a simulated OpenWrt 22.03 router to 23.05 over real
// SSH: the host key is checked against a known_hosts file, the device's
// identity against its OpenWISP UUID, and the upgrade counts as a success
// only once the device came back from its reboot running the new release.
func Example() {
	ctx := context.Background()
	const deviceID = "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e"

	// The router: OpenWrt 22.03.5 on a TP-Link Archer C7 v2, rebooting in
	// 100 ms rather than a minute.
	router, err := openwrttest.New(openwrttest.Config{UUID: deviceID, RebootDelay: 100 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	if err := router.Start(); err != nil {
		panic(err)
	}
	defer router.Close()
	dir, err := os.MkdirTemp("", "fwupgrader-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, router.KnownHosts(), 0o600); err != nil {
		panic(err)
	}

	// The host's side: credentials (asked on every attempt and every
	// reconnection), the upgrader registered for openwrt.Connection, an
	// engine over the memory store.
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
			hostKeys, err := openwrt.KnownHosts(knownHosts)
			return openwrt.Credentials{Address: router.Addr(), User: "root", Password: openwrttest.DefaultPassword,
				HostKeyCallback: hostKeys}, err
		},
		ReconnectDelay:      50 * time.Millisecond, // a real router keeps answering for a few seconds
		ReconnectRetryDelay: 50 * time.Millisecond,
		ReconnectWindow:     30 * time.Second,
		Logger:              slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		panic(err)
	}
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}

	// The catalog: a 23.05.3 build and its image for the Archer C7 v2 (a
	// simulated one, with the fwtool metadata OpenWrt's build appends). The
	// image type comes from the OpenWrt file name.
	cat, _ := eng.CreateCategory(ctx, store.Category{Name: "Archer C7"})
	build, _ := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3",
		OSIdentifier: "OpenWrt 23.05.3 r23809-234f1a2efa"})
	firmware := openwrttest.Image{Boards: []string{"tplink,archer-c7-v2"},
		Release: "OpenWrt 23.05.3 r23809-234f1a2efa", Size: 256 << 10, Fwtool: true}
	img, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID,
		Name: "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"}, firmware.Reader())
	if err != nil {
		panic(err)
	}
	fmt.Println("image type:", img.Type)
	dev, err := eng.RegisterDevice(ctx, store.Device{ID: deviceID, Model: "TP-Link Archer C7 v2",
		BoardName: "tplink,archer-c7-v2", Connection: openwrt.Connection, Address: router.Addr(), Active: true})
	if err != nil {
		panic(err)
	}

	events, unsubscribe := eng.Subscribe(upgrader.MaxEventBuffer)
	defer unsubscribe()
	op, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: dev.ID, ImageID: img.ID,
		Options: openwrt.DefaultOptions().JSON()})
	if err != nil {
		panic(err)
	}
	for len(events) > 0 {
		if ev := <-events; ev.Kind == upgrader.EventOperationPhase {
			fmt.Println("phase:", ev.Phase)
		}
	}
	fmt.Println("state:", op.State, "progress:", op.Progress)
	fmt.Println("router runs:", router.Release(), "after", router.Flashed(), "flash")
	fmt.Println("flashed with:", router.Flashes()[0].Args[:2])
	// Output:
	// image type: ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin
	// phase: connecting
	// phase: identity
	// phase: checksum
	// phase: memory
	// phase: upload
	// phase: image-test
	// phase: flashing
	// phase: rebooting
	// phase: verifying
	// state: success progress: 100
	// router runs: OpenWrt 23.05.3 r23809-234f1a2efa after 1 flash
	// flashed with: [-v -c]
}

// PinnedKey accepts one host key and nothing else; Probe reads what a device
// is without changing it. A device presenting another key is refused, and
// the refusal is classified: the operation would end aborted.
func ExamplePinnedKey() {
	router, err := openwrttest.New(openwrttest.Config{UUID: "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e"})
	if err != nil {
		panic(err)
	}
	if err := router.Start(); err != nil {
		panic(err)
	}
	defer router.Close()
	impostor, err := openwrttest.New(openwrttest.Config{}) // never started: only its host key is used
	if err != nil {
		panic(err)
	}

	probe := func(pinned openwrt.Credentials) {
		ow, err := openwrt.New(&openwrt.Config{
			CredentialsFunc: func(context.Context, store.Device) (openwrt.Credentials, error) { return pinned, nil },
			Logger:          slog.New(slog.DiscardHandler),
		})
		if err != nil {
			panic(err)
		}
		info, err := ow.Probe(context.Background(), store.Device{ID: "ap-1"})
		if err != nil {
			kind, reason := upgrader.Classify(err)
			fmt.Println("refused:", kind, reason)
			return
		}
		fmt.Printf("%s (%s), %s, uuid %s\n", info.Model, info.BoardName, info.Release, info.UUID)
	}
	creds := openwrt.Credentials{Address: router.Addr(), User: "root", Password: openwrttest.DefaultPassword}
	creds.HostKeyCallback = openwrt.PinnedKey(router.HostKey())
	probe(creds)
	creds.HostKeyCallback = openwrt.PinnedKey(impostor.HostKey())
	probe(creds)
	// Output:
	// TP-Link Archer C7 v2 (tplink,archer-c7-v2), OpenWrt 22.03.5 r20134-5f15225c1e, uuid 5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e
	// refused: aborted host-key-mismatch
}

// Operations carry sysupgrade's flags in either form: the letters, or
// openwisp-firmware-upgrader's booleans. Options.JSON gives the form to
// store in upgrader.Request.Options.
func ExampleParseOptions_forms() {
	for _, raw := range []string{
		`{"sysupgrade": "c,F"}`,
		`{"c": false, "n": true}`,
		`{"sysupgrade": "", "ignore_minor_compat_version": true}`,
		`{"c": "yes"}`,
		`null`, // or nothing: keep the configuration, as openwisp does
	} {
		o, err := openwrt.ParseOptions(json.RawMessage(raw))
		if err != nil {
			fmt.Printf("%-58s error, ErrInvalidOptions: %v\n", raw, errors.Is(err, openwrt.ErrInvalidOptions))
			continue
		}
		fmt.Printf("%-58s %-35q stored as %s\n", raw, o, o.JSON())
	}
	// Output:
	// {"sysupgrade": "c,F"}                                      "-c -F"                             stored as {"sysupgrade":"c,F"}
	// {"c": false, "n": true}                                    "-n"                                stored as {"sysupgrade":"n"}
	// {"sysupgrade": "", "ignore_minor_compat_version": true}    "--ignore-minor-compat-version"     stored as {"sysupgrade":"","ignore_minor_compat_version":true}
	// {"c": "yes"}                                               error, ErrInvalidOptions: true
	// null                                                       "-c"                                stored as {"sysupgrade":"c"}
}

// Credentials print and log without their secrets.
func ExampleCredentials_String() {
	c := openwrt.Credentials{Address: "192.0.2.10", User: "root", Password: "s3cret"}
	fmt.Println(c)
	fmt.Printf("%#v\n", c)
	// Output:
	// root@192.0.2.10 (password: true, keys: 0, host key check: false)
	// openwrt.Credentials{root@192.0.2.10 (password: true, keys: 0, host key check: false)}
}

// What the upgrader does differs from release to release.
func ExampleCapabilitiesOf() {
	for _, desc := range []string{
		"OpenWrt Attitude Adjustment 12.09",
		"LEDE Reboot 17.01.7 r4030-6028f00df0",
		"OpenWrt 23.05.3 r23809-234f1a2efa",
	} {
		r, ok := openwrt.ParseRelease(desc)
		if !ok {
			continue
		}
		c := openwrt.CapabilitiesOf(r)
		fmt.Printf("%-8s sha256sum %-5v --test %-5v options %-10s exit 246 %v\n", r.Version, c.SHA256, c.Test, c.Options, c.UbusHandover)
	}
	// Output:
	// 12.09    sha256sum false --test false options cnF        exit 246 false
	// 17.01.7  sha256sum true  --test true  options cnFp       exit 246 false
	// 23.05.3  sha256sum true  --test true  options cnFpouk    exit 246 true
}
