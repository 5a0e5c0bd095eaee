package openwrttest

import (
	"slices"
	"strconv"
	"strings"
)

// FlashOutcome is what the SSH session running sysupgrade sees once the
// flash is handed over (Profile.Flash).
type FlashOutcome int

const (
	// FlashKillsSessions is OpenWrt up to 17.01: sysupgrade itself sends
	// TERM to every process, dropbear included, after printing "Sending TERM
	// to remaining processes ...": the session drops without an exit status.
	FlashKillsSessions FlashOutcome = iota
	// FlashDropsSessions is 18.06 to 21.02: after "Commencing upgrade.
	// Closing all shell sessions." procd's upgraded takes over and the
	// session drops without an exit status.
	FlashDropsSessions
	// FlashUbusError is 22.03 and later: procd stops every service, ubusd
	// included, before it answers "ubus call system sysupgrade", so the ubus
	// client prints "Command failed: ubus call system sysupgrade {...}
	// (Connection failed)" on stderr and sysupgrade exits 246 while the
	// flash goes on. That is the normal outcome, not a fault.
	FlashUbusError
)

// String returns the constant's name.
func (o FlashOutcome) String() string {
	switch o {
	case FlashKillsSessions:
		return "FlashKillsSessions"
	case FlashDropsSessions:
		return "FlashDropsSessions"
	case FlashUbusError:
		return "FlashUbusError"
	}
	return "FlashOutcome(" + strconv.Itoa(int(o)) + ")"
}

// Exit statuses of the ubus client for "ubus call system sysupgrade" on
// 22.03 and later: the negated ubus status, as a byte.
const (
	// ExitUbusConnectionFailed is -UBUS_STATUS_CONNECTION_FAILED (10): the
	// normal end of a flash on 22.03 and later.
	ExitUbusConnectionFailed = 246
	// ExitUbusNotSupported is -UBUS_STATUS_NOT_SUPPORTED (8): procd refused
	// the image and nothing was flashed.
	ExitUbusNotSupported = 248
)

// Profile is how one OpenWrt release series behaves, as far as the
// simulator reproduces it. A device's profile follows the release it runs
// (Config.Release, then the release of each image it flashes). Get one with
// ProfileFor; the facts come from each release tag's sources (base-files
// sbin/sysupgrade and lib/upgrade/*.sh, busybox Config-defaults.in, procd
// system.c, the ubus CLI). Fields not listed differ only in the text of
// messages; see the package documentation.
type Profile struct {
	// Release is the series, "12.09" to "25.12".
	Release string
	// Description is the DISTRIB_DESCRIPTION of the series' last point
	// release (22.03.5, DefaultRelease, for 22.03), as /etc/openwrt_release
	// writes it: "OpenWrt Attitude Adjustment 12.09", "LEDE Reboot 17.01.7
	// r4030-6028f00df0", "OpenWrt 23.05.6 r24232-539228933c".
	Description string
	// BusyBox is the busybox version.
	BusyBox string
	// Kernel is the Linux version "ubus call system board" reports.
	Kernel string
	// SHA256Sum reports whether busybox has sha256sum (17.01 and later).
	// md5sum and free exist in every release, timeout, nohup and stat in
	// none.
	SHA256Sum bool
	// Options are the options sysupgrade accepts; any other word starting
	// with "-" is refused with "Invalid option: X" and exit status 1.
	Options []string
	// HelpStatus is the exit status of "sysupgrade --help": 0 from 24.10,
	// 1 before.
	HelpStatus int
	// Fwtool reports whether sysupgrade checks the fwtool metadata appended
	// to the image (17.01 and later): its supported_devices must name the
	// device's board_name.
	Fwtool bool
	// Compat reports whether the metadata's compat_version is checked
	// against the device's (21.02 and later): a major mismatch is refused, a
	// minor one unless -n (or, from 22.03, --ignore-minor-compat-version).
	Compat bool
	// ForceOnlyForceable reports that -F cannot force past a check that
	// marked the image broken (25.12): the simulated platform check does so
	// for a file that is no image at all.
	ForceOnlyForceable bool
	// Flash is what the SSH session sees once the flash is handed over.
	Flash FlashOutcome
	// Provisioning reports whether the ubus message's options carry
	// "add_provisioning" (25.12).
	Provisioning bool
	// MemAvailable reports whether /proc/meminfo has a MemAvailable line
	// (kernel 3.14 and later: 15.05 on).
	MemAvailable bool
	// SysInfo reports whether /tmp/sysinfo/model and board_name exist (14.07
	// and later; on 12.09 only on the ar71xx, mcs814x and mpc83xx targets,
	// see Device.SysInfo).
	SysInfo bool
	// UbusBoard reports whether "ubus call system board" answers (procd,
	// 14.07 and later; 12.09 prints "Command failed: Not found", exit 4).
	UbusBoard bool
	// BoardName reports whether that answer has board_name (17.01 and
	// later; 14.07 and 15.05 give model only).
	BoardName bool

	rank int // position in profiles
}

// The release series, oldest first. Facts that depend on "from release X"
// compare ranks.
var profiles = func() []Profile {
	base := []string{"-i", "-d", "-v", "-q", "-n", "-c", "-b", "--create-backup", "-r", "--restore-backup", "-f", "-F", "--force", "-h", "--help"}
	opts := func(prev []string, add []string, drop ...string) []string {
		out := slices.DeleteFunc(slices.Clone(prev), func(o string) bool { return slices.Contains(drop, o) })
		return append(out, add...)
	}
	o1209 := base
	o1407 := opts(o1209, []string{"-l", "--list-backup", "-T", "--test"})
	o1701 := opts(o1407, []string{"-p"})
	o1806 := opts(o1701, nil, "-d")
	o1907 := opts(o1806, []string{"-o", "-k", "-u"})
	o2203 := opts(o1907, []string{"--ignore-minor-compat-version"})
	o2410 := opts(o2203, []string{"-s"})
	o2512 := opts(o2410, []string{"-P"})
	p := []Profile{
		{Release: "12.09", Description: "OpenWrt Attitude Adjustment 12.09", BusyBox: "1.19.4", Kernel: "3.3.8", Options: o1209},
		{Release: "14.07", Description: "OpenWrt Barrier Breaker 14.07", BusyBox: "1.22.1", Kernel: "3.10.49", Options: o1407},
		{Release: "15.05", Description: "OpenWrt Chaos Calmer 15.05.1", BusyBox: "1.23.2", Kernel: "3.18.23", Options: o1407},
		{Release: "17.01", Description: "LEDE Reboot 17.01.7 r4030-6028f00df0", BusyBox: "1.25.1", Kernel: "4.4.182", Options: o1701},
		{Release: "18.06", Description: "OpenWrt 18.06.9 r8077-7cbbab7246", BusyBox: "1.28.4", Kernel: "4.9.243", Options: o1806},
		{Release: "19.07", Description: "OpenWrt 19.07.10 r11427-9ce6aa9d8d", BusyBox: "1.30.1", Kernel: "4.14.275", Options: o1907},
		{Release: "21.02", Description: "OpenWrt 21.02.7 r16847-f8282da11e", BusyBox: "1.33.2", Kernel: "5.4.238", Options: o1907},
		{Release: "22.03", Description: DefaultRelease, BusyBox: "1.35.0", Kernel: "5.10.176", Options: o2203},
		{Release: "23.05", Description: "OpenWrt 23.05.6 r24232-539228933c", BusyBox: "1.36.1", Kernel: "5.15.189", Options: o2203},
		{Release: "24.10", Description: "OpenWrt 24.10.8 r29233-443ec4032a", BusyBox: "1.36.1", Kernel: "6.6.144", Options: o2410},
		{Release: "25.12", Description: "OpenWrt 25.12.5 r33051-f5dae5ece4", BusyBox: "1.37.0", Kernel: "6.12.94", Options: o2512},
	}
	for i := range p {
		r := &p[i]
		r.rank = i
		r.SHA256Sum = r.atLeast("17.01")
		r.HelpStatus = 1
		if r.atLeast("24.10") {
			r.HelpStatus = 0
		}
		r.Fwtool = r.atLeast("17.01")
		r.Compat = r.atLeast("21.02")
		r.ForceOnlyForceable = r.atLeast("25.12")
		switch {
		case r.atLeast("22.03"):
			r.Flash = FlashUbusError
		case r.atLeast("18.06"):
			r.Flash = FlashDropsSessions
		default:
			r.Flash = FlashKillsSessions
		}
		r.Provisioning = r.atLeast("25.12")
		r.MemAvailable = r.atLeast("15.05")
		r.SysInfo = r.atLeast("14.07")
		r.UbusBoard = r.atLeast("14.07")
		r.BoardName = r.atLeast("17.01")
	}
	return p
}()

// rankOf returns the index of series s in profiles, or -1.
func rankOf(s string) int {
	for i, p := range []string{"12.09", "14.07", "15.05", "17.01", "18.06", "19.07", "21.02", "22.03", "23.05", "24.10", "25.12"} {
		if p == s {
			return i
		}
	}
	return -1
}

// atLeast reports whether p is series s or a later one.
func (p Profile) atLeast(s string) bool { return p.rank >= rankOf(s) }

// defaultProfile is the profile of DefaultRelease.
const defaultProfile = 7 // 22.03

// Releases returns the release series the simulator has a profile for,
// oldest first: "12.09", "14.07", "15.05", "17.01", "18.06", "19.07",
// "21.02", "22.03", "23.05", "24.10", "25.12".
func Releases() []string {
	out := make([]string, len(profiles))
	for i, p := range profiles {
		out[i] = p.Release
	}
	return out
}

// ProfileFor returns the profile of a release: a series ("17.01"), a
// version ("17.01.7") or a DISTRIB_DESCRIPTION ("LEDE Reboot 17.01.7
// r4030-6028f00df0"). A version between series gets the older series', one
// after 25.12 (or SNAPSHOT) the 25.12 profile, one before 12.09 the 12.09
// profile. "" and descriptions without a version get the profile of
// DefaultRelease (22.03).
func ProfileFor(release string) Profile {
	p := profiles[defaultProfile]
	if i := profileIndex(release); i >= 0 {
		p = profiles[i]
	}
	p.Options = slices.Clone(p.Options)
	return p
}

func profileIndex(release string) int {
	r := parseRelease(release)
	if r.Version == "SNAPSHOT" {
		return len(profiles) - 1
	}
	major, minor, ok := seriesOf(r.Version)
	if !ok {
		return -1
	}
	best := 0
	for i, p := range profiles {
		pm, pn, _ := seriesOf(p.Release)
		if major > pm || (major == pm && minor >= pn) {
			best = i
		}
	}
	return best
}

// seriesOf parses the "YY.MM" start of a version.
func seriesOf(v string) (major, minor int, ok bool) {
	a, rest, found := strings.Cut(v, ".")
	if !found {
		return 0, 0, false
	}
	b, _, _ := strings.Cut(rest, ".")
	if len(a) != 2 || len(b) != 2 {
		return 0, 0, false // not a YY.MM release
	}
	var err1, err2 error
	major, err1 = strconv.Atoi(a)
	minor, err2 = strconv.Atoi(b)
	return major, minor, err1 == nil && err2 == nil
}

// ReleaseDescription returns the DISTRIB_DESCRIPTION of a series' last point
// release (ProfileFor(release).Description), for Config.Release:
// ReleaseDescription("17.01") is "LEDE Reboot 17.01.7 r4030-6028f00df0".
func ReleaseDescription(release string) string { return ProfileFor(release).Description }

// Accepts reports whether sysupgrade accepts option opt ("-T", "--test").
func (p Profile) Accepts(opt string) bool { return slices.Contains(p.Options, opt) }

// Test reports whether sysupgrade has -T/--test (14.07 and later).
func (p Profile) Test() bool { return p.Accepts("--test") }

// HasApplet reports whether busybox provides applet name among those the
// simulator knows: sha256sum (Profile.SHA256Sum), md5sum and free (always),
// timeout, nohup and stat (never).
func (p Profile) HasApplet(name string) bool {
	switch name {
	case "sha256sum":
		return p.SHA256Sum
	case "timeout", "nohup", "stat":
		return false
	}
	return true
}

// release is a DISTRIB_DESCRIPTION split into its parts.
type release struct {
	Dist     string // "OpenWrt", "LEDE"
	Codename string // "Attitude Adjustment", "Reboot", or ""
	Version  string // "12.09", "17.01.7", "SNAPSHOT", or ""
	Revision string // "r4030-6028f00df0", or "" (12.09 to 15.05 carry none)
}

// parseRelease splits a description: the first word is the distribution,
// the first word that starts with a digit (or SNAPSHOT) the version, the
// words between them the codename, the word after the version the revision.
// A bare version ("17.01") is accepted too.
func parseRelease(desc string) release {
	f := strings.Fields(desc)
	vi := slices.IndexFunc(f, func(w string) bool {
		return w == "SNAPSHOT" || (w != "" && w[0] >= '0' && w[0] <= '9')
	})
	var r release
	switch {
	case vi < 0:
		if len(f) > 0 {
			r.Dist = f[0]
		}
		return r
	case vi == 0:
		r.Version = f[0]
	default:
		r.Dist = f[0]
		r.Codename = strings.Join(f[1:vi], " ")
		r.Version = f[vi]
	}
	if vi+1 < len(f) {
		r.Revision = f[vi+1]
	}
	return r
}

// oldRevisions are the svn revisions of the releases whose description does
// not carry one.
var oldRevisions = map[string]string{
	"12.09":   "r36088",
	"14.07":   "r42625",
	"15.05":   "r46767",
	"15.05.1": "r48532",
}

// openwrtRelease renders /etc/openwrt_release for description desc as the
// release of profile p writes it: double-quoted with DISTRIB_CODENAME on
// 12.09 and 14.07, single-quoted from 15.05, DISTRIB_CODENAME up to 17.01,
// DISTRIB_ARCH from 17.01, DISTRIB_TAINTS from 14.07.
func openwrtRelease(p Profile, desc, target, arch string) string {
	r := parseRelease(desc)
	if r.Dist == "" {
		r.Dist = "OpenWrt"
	}
	if r.Revision == "" {
		r.Revision = oldRevisions[r.Version]
	}
	q := "'"
	if !p.atLeast("15.05") {
		q = `"`
	}
	var b strings.Builder
	line := func(k, v string) { b.WriteString("DISTRIB_" + k + "=" + q + v + q + "\n") }
	line("ID", r.Dist)
	line("RELEASE", r.Version)
	line("REVISION", r.Revision)
	if !p.atLeast("18.06") {
		line("CODENAME", strings.ReplaceAll(strings.ToLower(r.Codename), " ", "_"))
	}
	line("TARGET", target)
	if p.atLeast("17.01") {
		line("ARCH", arch)
	}
	line("DESCRIPTION", desc)
	if p.atLeast("14.07") {
		line("TAINTS", "")
	}
	return b.String()
}
