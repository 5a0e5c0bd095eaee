package imagemap_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/fwupgrader/fwupgrader/imagemap"
)

func ExampleMap_TypesFor() {
	m := imagemap.OpenWrt()
	// A device reports its model and board name in /tmp/sysinfo.
	for _, typ := range m.TypesFor("TP-Link Archer C7 v2", "tplink,archer-c7-v2") {
		fmt.Println(typ)
	}
	fmt.Println(m.Fits("ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin", "TP-Link Archer C7 v2", "tplink,archer-c7-v2"))
	// Output:
	// ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin
	// ar71xx-generic-archer-c7-v2-squashfs-sysupgrade.bin
	// false
}

func ExampleLoadJSON() {
	custom, err := imagemap.LoadJSON(strings.NewReader(`{
		"ramips-mt7621-acme_x1-squashfs-sysupgrade.bin":
			{"label": "ACME X1", "boards": ["ACME X1"], "board_names": ["acme,x1"]}
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	m := imagemap.OpenWrt().Merge(custom)
	fmt.Println(m.Best("", "acme,x1"))

	_, err = imagemap.LoadJSON(strings.NewReader(`{"x.bin": {"boards": "ACME X1"}}`))
	fmt.Println(err)
	// Output:
	// ramips-mt7621-acme_x1-squashfs-sysupgrade.bin true
	// imagemap: entry "x.bin": field "boards": must be a list of strings, got a string
}

func ExampleTypeFromFileName() {
	fmt.Println(imagemap.TypeFromFileName("openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"))
	// Output: ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin
}

func ExampleReadMetadata() {
	// Build an image the way OpenWrt's build does (fwtool -I).
	var img bytes.Buffer
	err := imagemap.AppendMetadata(&img, strings.NewReader("kernel and rootfs..."), &imagemap.Metadata{
		MetadataVersion:  "1.1",
		CompatVersion:    "1.0",
		SupportedDevices: []string{"tplink,archer-c7-v2"},
		Version:          imagemap.Version{Dist: "OpenWrt", Version: "23.05.3", Target: "ath79/generic", Board: "tplink_archer-c7-v2"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	md, err := imagemap.ReadMetadata(bytes.NewReader(img.Bytes()), int64(img.Len()))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(md.Version.Dist, md.Version.Version, md.Version.Target)
	fmt.Println(md.Supports("tplink,archer-c7-v2"), md.Supports("tplink,archer-c7-v5"))

	_, err = imagemap.ReadMetadata(strings.NewReader("an image without metadata"), 25)
	fmt.Println(errors.Is(err, imagemap.ErrNoMetadata))
	// Output:
	// OpenWrt 23.05.3 ath79/generic
	// true false
	// true
}
