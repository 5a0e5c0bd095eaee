package openwrt

import (
	"strconv"
	"strings"
)

// Release identifies what a device runs, or what an image installs: the
// distribution, its version and the source revision. It is parsed from
// DISTRIB_DESCRIPTION, whose format changed over the years:
//
//	"OpenWrt Attitude Adjustment 12.09"   12.09, 14.07 (codename, no revision)
//	'OpenWrt Chaos Calmer 15.05.1'        15.05
//	'LEDE Reboot 17.01.7 r4030-6028f00df0' 17.01 (LEDE, with a codename)
//	'OpenWrt 23.05.6 r24106-10cc5fcd00'   18.06 and later
//
// Two releases are the same when their versions are, and their revisions
// too where both carry one: the codename and the distribution name (LEDE,
// OpenWrt) are not part of the identity.
type Release struct {
	Dist     string // "OpenWrt" or "LEDE"
	Version  string // "23.05.6", "12.09", "SNAPSHOT"
	Revision string // "r24106-10cc5fcd00", "" when not given
	// Major and Minor are the numbers of Version ("23" and "5" → 23, 5);
	// both 0 when Version is not numeric (SNAPSHOT, custom builds).
	Major, Minor int
}

// ParseRelease parses a DISTRIB_DESCRIPTION value (quotes already removed).
// ok is false when no version can be found in it.
func ParseRelease(desc string) (r Release, ok bool) {
	fields := strings.Fields(desc)
	if len(fields) == 0 {
		return r, false
	}
	r.Dist = fields[0]
	for _, f := range fields[1:] {
		switch {
		case r.Version == "" && (isVersion(f) || strings.EqualFold(f, "SNAPSHOT")):
			r.Version = f
		case r.Version != "" && r.Revision == "" && isRevision(f):
			r.Revision = f
		}
	}
	if r.Version == "" {
		return r, false
	}
	r.Major, r.Minor = versionNumbers(r.Version)
	return r, true
}

// isVersion reports a release number: digits and dots with at least one
// dot ("12.09", "23.05.6", "24.10.0-rc1").
func isVersion(s string) bool {
	base, _, _ := strings.Cut(s, "-")
	parts := strings.Split(base, ".")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		if _, err := strconv.Atoi(p); err != nil {
			return false
		}
	}
	return true
}

// isRevision reports a source revision as OpenWrt's getver.sh writes it:
// "r" and a number, with "+N" for N local commits on top of upstream, and
// an optional "-hash" ("r4030-6028f00df0", "r23809+15-aaaa", "r1234").
func isRevision(s string) bool {
	if len(s) < 2 || s[0] != 'r' {
		return false
	}
	num, _, _ := strings.Cut(s[1:], "-")
	upstream, local, hasLocal := strings.Cut(num, "+")
	if _, err := strconv.Atoi(upstream); err != nil {
		return false
	}
	if hasLocal {
		if _, err := strconv.Atoi(local); err != nil {
			return false
		}
	}
	return true
}

func versionNumbers(v string) (int, int) {
	base, _, _ := strings.Cut(v, "-")
	parts := strings.Split(base, ".")
	if len(parts) < 2 {
		return 0, 0
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return major, minor
}

// Same reports whether r and o identify the same release: equal versions,
// and equal revisions when both have one.
func (r Release) Same(o Release) bool {
	if !strings.EqualFold(r.Version, o.Version) {
		return false
	}
	return r.Revision == "" || o.Revision == "" || r.Revision == o.Revision
}

// String returns "dist version revision".
func (r Release) String() string {
	return strings.TrimSpace(strings.Join([]string{r.Dist, r.Version, r.Revision}, " "))
}

// known reports a numeric release; unknown ones (SNAPSHOT, custom) are
// taken to support everything the newest release does.
func (r Release) known() bool { return r.Major > 0 }

// atLeast reports whether r is release major.minor or later. Unknown
// releases count as the newest.
func (r Release) atLeast(major, minor int) bool {
	if !r.known() {
		return true
	}
	return r.Major > major || (r.Major == major && r.Minor >= minor)
}

// Capabilities is what a device's release supports, as far as the
// upgrader is concerned (read from OpenWrt's sysupgrade and busybox
// defaults at each release tag).
type Capabilities struct {
	Release Release
	// SHA256 is busybox's sha256sum (17.01 on); md5sum is everywhere.
	SHA256 bool
	// Test is "sysupgrade --test" (-T, 14.07 on).
	Test bool
	// Options holds the sysupgrade option letters the release accepts.
	Options string
	// IgnoreMinorCompat is --ignore-minor-compat-version (22.03 on).
	IgnoreMinorCompat bool
	// CompatCheck is sysupgrade's compat_version check (21.02 on).
	CompatCheck bool
	// UbusHandover is the hand-over to procd through ubus, which makes
	// sysupgrade exit 246 with "(Connection failed)" while the flash goes
	// on (22.03 on; before, the session simply drops).
	UbusHandover bool
	// MemAvailable is the MemAvailable line of /proc/meminfo (15.05 on:
	// the kernels of 12.09 and 14.07 predate it).
	MemAvailable bool
}

// CapabilitiesOf returns what release r supports.
func CapabilitiesOf(r Release) Capabilities {
	c := Capabilities{Release: r, Options: "cnF"}
	c.Test = r.atLeast(14, 7)
	c.MemAvailable = r.atLeast(15, 5)
	if r.atLeast(17, 1) {
		c.SHA256 = true
		c.Options += "p"
	}
	if r.atLeast(19, 7) {
		c.Options += "ouk"
	}
	c.CompatCheck = r.atLeast(21, 2)
	c.IgnoreMinorCompat = r.atLeast(22, 3)
	c.UbusHandover = r.atLeast(22, 3)
	return c
}
