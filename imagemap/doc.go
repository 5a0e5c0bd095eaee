// Package imagemap decides which firmware image fits which device, so that
// an operator never flashes an image onto a board it was not built for.
//
// A [Map] maps image types — sysupgrade file names without their
// "openwrt-[version-]" prefix, see [TypeFromFileName] — to the device model
// strings (/tmp/sysinfo/model) and board names (/tmp/sysinfo/board_name) the
// image supports. [OpenWrt] returns a built-in map of common OpenWrt devices;
// hosts merge their own entries over it with [Map.Merge], [Map.With] or a
// JSON file read by [LoadJSON], or import OpenWrt's per-target profiles.json
// with [ImportProfiles].
//
// The package also reads the metadata that OpenWrt's fwtool appends to
// sysupgrade images ([ReadMetadata], [VerifyCRC]) and writes it ([Writer],
// [AppendMetadata]), so that an image can be checked against a device before
// it is uploaded.
//
// imagemap imports nothing else of this module.
package imagemap
