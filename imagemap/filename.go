package imagemap

import (
	"regexp"
	"strings"
)

// distPrefixes are the distribution prefixes TypeFromFileName strips.
var distPrefixes = []string{"openwrt-", "lede-"}

// versionPart matches the version part OpenWrt puts after the distribution
// prefix of release images: "23.05.3-", "24.10.0-rc1-", "23.05-snapshot-",
// "snapshot-", "17.01.4-".
var versionPart = regexp.MustCompile(`(?i)^(?:\d+\.\d+(?:\.\d+)?(?:-rc\d+)?(?:-snapshot)?|snapshot)-`)

// revisionPart matches the revision code custom and release-branch builds
// put after the version: "r23809-234f1a2efa-", "r23000-". No OpenWrt target
// name starts with "r" and digits.
var revisionPart = regexp.MustCompile(`^r\d+(?:-[0-9a-f]{7,12})?-`)

// TypeFromFileName returns the image type of a sysupgrade file name: the
// name without any directory part ("/" or `\` separated), without the
// distribution prefix "openwrt-" (or "lede-", used by LEDE 17.01), and
// without the version part that follows it in release builds. Version parts
// recognised (case-insensitively): "X.Y-", "X.Y.Z-", each optionally
// followed by "-rcN" and/or "-snapshot" ("24.10.0-rc1-", "23.05-SNAPSHOT-"),
// and "snapshot-"; after a version, a revision code ("r23809-234f1a2efa-",
// "r23000-", as custom and release-branch builds write) is stripped too.
// Snapshot builds carry no version part and need none stripped.
//
//	openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin
//	openwrt-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin
//	    -> ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin
//
// A name without a recognised prefix is returned unchanged (minus any
// directory), so custom image names are their own type. The prefix match is
// case-sensitive, as OpenWrt writes it.
func TypeFromFileName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	for _, p := range distPrefixes {
		rest, ok := strings.CutPrefix(name, p)
		if !ok || rest == "" {
			continue
		}
		if loc := versionPart.FindStringIndex(rest); loc != nil && loc[1] < len(rest) {
			rest = rest[loc[1]:]
			if loc := revisionPart.FindStringIndex(rest); loc != nil && loc[1] < len(rest) {
				rest = rest[loc[1]:]
			}
		}
		return rest
	}
	return name
}
