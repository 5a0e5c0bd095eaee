package openwrt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Fuzz targets for what this package parses and builds: the files and
// command outputs it reads from a device (FuzzDeviceOutput,
// FuzzOutputStreams), the sysupgrade options a host gives it
// (FuzzParseOptions), and the command lines it builds from a host's values
// (FuzzHostValues: every value must reach the device's shell as one literal
// word). The seeds are real: what the simulated devices of every release
// print (openwrttest), and the forms the package's documentation names.

// fzMaxInput bounds a fuzzed input: the parsers read command outputs that
// runLines caps at maxCapture bytes.
const fzMaxInput = maxCapture

// fzMaxValue bounds a fuzzed host value (a path, a service name...).
const fzMaxValue = 4096

// fzSHA256 is a valid image checksum for the jobs the targets build.
var fzSHA256 = strings.Repeat("ab", 32)

// The sysupgrade verdicts of OpenWrt 22.03 and later, as the ubus client
// prints them: the hand-over (exit 246, the flash goes on) and procd's
// refusal (nothing flashed).
const (
	fzHandover = `Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "\/tmp\/fw.bin", "backup": "\/tmp\/sysupgrade.tgz", "command": "\/lib\/upgrade\/do_stage2", "options": { "save_partitions": 1 } } (Connection failed)`
	fzRefusal  = `Command failed: ubus call system sysupgrade { "prefix": "\/tmp\/root", "path": "\/tmp\/fw.bin", "backup": "\/tmp\/sysupgrade.tgz", "command": "\/lib\/upgrade\/do_stage2", "options": { "save_partitions": 1 } } (Not supported)`
)

var (
	fzOutputsOnce sync.Once
	fzOutputs     []string
	fzOutputsErr  error
)

// fzSimOutputs returns what simulated devices of every release hold in the
// files the upgrader reads and print for the commands it runs, sysupgrade's
// verdicts included. They are collected once per test binary.
func fzSimOutputs(tb testing.TB) []string {
	tb.Helper()
	fzOutputsOnce.Do(func() { fzOutputs, fzOutputsErr = fzCollectOutputs() })
	if fzOutputsErr != nil {
		tb.Fatalf("collecting the simulator's outputs: %v", fzOutputsErr)
	}
	return fzOutputs
}

func fzCollectOutputs() ([]string, error) {
	var outs []string
	files := []string{releaseFile, meminfoFile, "/proc/cpuinfo", "/etc/board.json", boardNameFile, "/tmp/sysinfo/model"}
	cmds := []string{
		command("df", "-k", DefaultRemoteDir+"/"),
		command("ubus", "call", "system", "board"),
		command("sha256sum", releaseFile),
		command("md5sum", releaseFile),
		command("cat", bootIDFile),
		command("uci", "get", uuidOption),
		command("uci", "-q", "get", "system.@system[0].compat_version"),
		command("ls", initDir),
		command(DefaultUpgradeCommand, "--test", DefaultRemoteDir+"/none.bin"),
	}
	for _, r := range openwrttest.Releases() {
		d, err := openwrttest.New(openwrttest.Config{Release: openwrttest.ReleaseDescription(r)})
		if err != nil {
			return nil, err
		}
		for _, p := range files {
			if fi, ok := d.File(p); ok {
				outs = append(outs, string(fi.Content))
			}
		}
		got, err := fzRunOn(d, cmds, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		outs = append(outs, got...)
	}
	// sysupgrade's own output: the session dropped (before 22.03), the
	// exit 246 hand-over through ubus, procd's refusal.
	for _, r := range []string{"12.09", "19.07", "22.03", "25.12"} {
		for _, refuse := range []bool{false, true} {
			d, err := openwrttest.New(openwrttest.Config{Release: openwrttest.ReleaseDescription(r),
				Faults: openwrttest.Faults{ProcdRefusal: refuse}})
			if err != nil {
				return nil, err
			}
			got, err := fzRunOn(d, []string{command(DefaultUpgradeCommand, "-v", DefaultRemoteDir+"/fw.bin")}, true)
			if err != nil {
				return nil, fmt.Errorf("%s flash: %w", r, err)
			}
			outs = append(outs, got...)
		}
	}
	return outs, nil
}

// fzRunOn starts d, runs cmds on it (after uploading an image for d's
// release to /tmp/fw.bin when upload is set) and returns their combined
// outputs, whatever their exit status. d is closed on return.
func fzRunOn(d *openwrttest.Device, cmds []string, upload bool) ([]string, error) {
	if err := d.Start(); err != nil {
		return nil, err
	}
	defer d.Close()
	c, err := ssh.Dial("tcp", d.Addr(), d.ClientConfig())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if upload {
		s, err := c.NewSession()
		if err != nil {
			return nil, err
		}
		s.Stdin = bytes.NewReader(openwrttest.NewImage(d.Profile().Release, d.Config().BoardName, 4096).Bytes())
		out, err := s.CombinedOutput(redirect(command("cat"), DefaultRemoteDir+"/fw.bin"))
		if err != nil {
			return nil, fmt.Errorf("upload: %w: %s", err, out)
		}
	}
	var outs []string
	for _, cmd := range cmds {
		s, err := c.NewSession()
		if err != nil {
			return nil, err
		}
		out, _ := s.CombinedOutput(cmd) // a failed command's output is parsed too
		outs = append(outs, string(out))
	}
	return outs, nil
}

// FuzzDeviceOutput runs every parser of what a device prints on the same
// bytes: /proc/meminfo, "df -k", /etc/openwrt_release and its
// DISTRIB_DESCRIPTION, /proc/cpuinfo, an SCP answer, sysupgrade's verdicts,
// and the cuts made to put output in errors and logs. None may panic, and
// what they return must be what the device said.
func FuzzDeviceOutput(f *testing.F) {
	for _, s := range fzSimOutputs(f) {
		f.Add(s)
	}
	for _, s := range []string{
		"MemTotal: 29000 kB\nMemFree: 1000 kB\nBuffers: 500 kB\nCached: 8000 kB\nShmem: 3000 kB\n",
		"MemTotal: 29000 kB\nMemFree: 1000 kB\n",
		"Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/mapper/a-very-long-name\n 1000 10 990 1% /tmp\n",
		"df: /tmp: No such file or directory\n",
		// Values at the edge of what a kB count converted to bytes can hold.
		"MemFree: 1 kB\nMemAvailable: 9007199254740991 kB\n",
		"MemFree: 9007199254740991 kB\nBuffers: 9007199254740991 kB\nCached: 0 kB\nShmem: 0 kB\n",
		"Filesystem 1K-blocks Used Available Use% Mounted on\ntmpfs 1 0 9007199254740991 0% /tmp\n",
		"DISTRIB_DESCRIPTION=\"LEDE Reboot 17.01.7 r4030-6028f00df0\"\n",
		"DISTRIB_DESCRIPTION='OpenWrt SNAPSHOT r23809+15-aaaa'\n",
		"OpenWrt 24.10.0-rc1 r28304-6dacba30a7",
		"system type\t\t: Qualcomm Atheros QCA9558 ver 1 rev 0\nmachine\t\t\t: TP-Link Archer C7 v2\n",
		"Hardware\t: Qualcomm (Flattened Device Tree)\n",
		"\x00",
		"\x01scp: /tmp/fw.bin: No space left on device\n",
		"openwrt: flash: openwrt: command 'x' exited (openwrt: openwrt: y\nopenwrt: z",
		fzHandover + "\n",
		"etc/config/network\n" + fzRefusal + "\n",
		strings.Repeat("é", 3000) + "\n" + strings.Repeat("x", 2000),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		if len(out) > fzMaxInput {
			return
		}
		fzCheckMeminfo(t, out)
		fzCheckDf(t, out)
		fzCheckReleaseFile(t, out)
		fzCheckDescription(t, out)
		fzCheckCpuinfo(t, out)
		fzCheckCuts(t, out)
		fzCheckFlashVerdicts(t, out)
		fzCheckPrefixOnce(t, out)
		fzCheckSCPAck(t, out)
	})
}

// fzValues returns, in bytes, every value the device printed on a line
// whose first field is key (with or without its colon): "N kB" in bytes,
// a bare number as it is. The values are exact (no overflow).
func fzValues(out, key string) []*big.Int {
	var vals []*big.Int
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.TrimSuffix(f[0], ":") != key {
			continue
		}
		v, ok := new(big.Int).SetString(f[1], 10)
		if !ok {
			continue
		}
		if len(f) >= 3 && strings.EqualFold(f[2], "kB") {
			v.Mul(v, big.NewInt(1024))
		}
		vals = append(vals, v)
	}
	return vals
}

func fzCheckMeminfo(t *testing.T, out string) {
	t.Helper()
	n, field, ok := parseMeminfo(out)
	if !ok {
		if n != 0 || field != "" {
			t.Fatalf("parseMeminfo(%q) = %d, %q without a value", fzShort(out), n, field)
		}
		return
	}
	if n < 0 {
		t.Fatalf("parseMeminfo(%q) = %d bytes (%s): negative free memory", fzShort(out), n, field)
	}
	got := big.NewInt(n)
	switch field {
	case "MemAvailable", "MemFree":
		// The value must be one the device printed, in bytes: not one that
		// wrapped around when converted from kB.
		for _, v := range fzValues(out, field) {
			if v.Cmp(got) == 0 {
				return
			}
		}
		t.Fatalf("parseMeminfo(%q) = %d bytes (%s): not a value of a %s line", fzShort(out), n, field, field)
	case "MemFree+Buffers+Cached-Shmem":
		// The estimate is at least MemFree.
		for _, v := range fzValues(out, "MemFree") {
			if v.Cmp(got) <= 0 {
				return
			}
		}
		t.Fatalf("parseMeminfo(%q) = %d bytes (%s): less than MemFree", fzShort(out), n, field)
	default:
		t.Fatalf("parseMeminfo(%q): unknown field %q", fzShort(out), field)
	}
}

func fzCheckDf(t *testing.T, out string) {
	t.Helper()
	n, ok := parseDfAvailable(out)
	if !ok {
		return
	}
	if n < 0 {
		t.Fatalf("parseDfAvailable(%q) = %d bytes: negative free space", fzShort(out), n)
	}
	// The value is one of the numbers printed, in KiB.
	got := big.NewInt(n)
	for _, w := range strings.Fields(out) {
		if v, ok := new(big.Int).SetString(w, 10); ok && v.Mul(v, big.NewInt(1024)).Cmp(got) == 0 {
			return
		}
	}
	t.Fatalf("parseDfAvailable(%q) = %d bytes: not a number of the output in KiB", fzShort(out), n)
}

func fzCheckReleaseFile(t *testing.T, out string) {
	t.Helper()
	desc, ok := parseRelease(out)
	if ok && !strings.Contains(out, "DISTRIB_DESCRIPTION=") {
		t.Fatalf("parseRelease(%q) = %q without a DISTRIB_DESCRIPTION line", fzShort(out), fzShort(desc))
	}
	if desc != strings.TrimSpace(desc) || strings.Contains(desc, "\n") {
		t.Fatalf("parseRelease(%q) = %q: not one trimmed line", fzShort(out), fzShort(desc))
	}
	// The file as /etc/openwrt_release writes it, single or double quoted,
	// gives back the description.
	line, _, _ := strings.Cut(out, "\n")
	line = strings.TrimSpace(line)
	for _, q := range []string{"'", `"`} {
		file := "DISTRIB_ID='OpenWrt'\nDISTRIB_DESCRIPTION=" + q + line + q + "\nDISTRIB_TAINTS=''\n"
		if got, ok := parseRelease(file); !ok || got != line {
			t.Fatalf("parseRelease(%q) = %q, %v; want %q", fzShort(file), got, ok, fzShort(line))
		}
	}
}

func fzCheckDescription(t *testing.T, desc string) {
	t.Helper()
	r, ok := ParseRelease(desc)
	if !ok {
		return
	}
	if r.Version == "" || r.Major < 0 || r.Minor < 0 {
		t.Fatalf("ParseRelease(%q) = %+v", fzShort(desc), r)
	}
	back, ok := ParseRelease(r.String())
	if !ok || back != r {
		t.Fatalf("ParseRelease(%q) = %+v, but ParseRelease(%q) = %+v, %v", fzShort(desc), r, r.String(), back, ok)
	}
	if !r.Same(r) || !runsExpected(desc, r, desc) {
		t.Fatalf("release %+v of %q is not the same as itself", r, fzShort(desc))
	}
	caps := CapabilitiesOf(r)
	for _, c := range caps.Options {
		if !strings.ContainsRune(optionLetters, c) {
			t.Fatalf("CapabilitiesOf(%+v).Options = %q: unknown option %q", r, caps.Options, c)
		}
	}
	if !r.known() && (!caps.Test || !caps.SHA256 || !caps.UbusHandover) {
		t.Fatalf("unknown release %+v does not get the newest capabilities: %+v", r, caps)
	}
}

func fzCheckCpuinfo(t *testing.T, out string) {
	t.Helper()
	m := cpuinfoModel(out)
	if m != strings.TrimSpace(m) || strings.Contains(m, "\n") || !strings.Contains(out, m) {
		t.Fatalf("cpuinfoModel(%q) = %q", fzShort(out), m)
	}
}

func fzCheckCuts(t *testing.T, out string) {
	t.Helper()
	for _, limit := range []int{0, 1, 7, MaxErrorOutput} {
		got := truncateOutput(out, limit)
		trimmed := strings.TrimSpace(out)
		if len(trimmed) <= limit {
			if got != trimmed {
				t.Fatalf("truncateOutput(%q, %d) = %q, want it whole", fzShort(out), limit, got)
			}
			continue
		}
		kept, ok := strings.CutPrefix(got, "…")
		if !ok || !strings.HasSuffix(trimmed, kept) || len(kept) > limit || len(kept) < limit-utf8.UTFMax+1 {
			t.Fatalf("truncateOutput(%q, %d) = %q: not the last %d bytes after a marker", fzShort(out), limit, got, limit)
		}
		if utf8.ValidString(trimmed) && !utf8.ValidString(kept) {
			t.Fatalf("truncateOutput(%q, %d) = %q: cut inside a UTF-8 sequence", fzShort(out), limit, got)
		}
	}
	l := lastLine(out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	switch last := strings.TrimSpace(lines[len(lines)-1]); {
	case len(last) <= maxLineLen && l != last:
		t.Fatalf("lastLine(%q) = %q, want %q", fzShort(out), l, last)
	case len(last) > maxLineLen && (!strings.HasSuffix(l, " …") || strings.Contains(l, "\n") || len(l) > maxLineLen+len(" …")):
		t.Fatalf("lastLine(%q) = %q: not one line cut to %d bytes", fzShort(out), l, maxLineLen)
	}
	if utf8.ValidString(out) && !utf8.ValidString(l) {
		t.Fatalf("lastLine(%q) = %q: invalid UTF-8 from valid output", fzShort(out), l)
	}
}

// fzCheckFlashVerdicts: sysupgrade -v lists the files it saves before its
// verdict. Whatever that listing holds, the verdict line that follows it is
// recognised, and a listing alone never turns the hand-over (the device is
// flashing) into procd's refusal (cleanup would then run under the flash).
func fzCheckFlashVerdicts(t *testing.T, out string) {
	t.Helper()
	listing := out + "\n"
	if !isFalseFlashError(listing + fzHandover + "\n") {
		t.Fatalf("the hand-over after the listing %q is not recognised", fzShort(out))
	}
	if !isProcdRefusal(listing + fzRefusal + "\n") {
		t.Fatalf("procd's refusal after the listing %q is not recognised", fzShort(out))
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "Command failed: ubus call system sysupgrade") && strings.Contains(line, "(Not supported)") {
			return // the listing holds a refusal line of its own
		}
	}
	if isProcdRefusal(listing + fzHandover + "\n") {
		t.Fatalf("the hand-over (the device is flashing) after the listing %q is taken for procd's refusal", fzShort(out))
	}
}

// fzCheckPrefixOnce: the package's prefix stays where the message starts
// and no wrapped message keeps it.
func fzCheckPrefixOnce(t *testing.T, s string) {
	t.Helper()
	got := prefixOnce(s)
	first := strings.Index(s, prefix)
	if strings.Index(got, prefix) != first || (len(s)-len(got))%len(prefix) != 0 {
		t.Fatalf("prefixOnce(%q) = %q", fzShort(s), got)
	}
	if first < 0 {
		if got != s {
			t.Fatalf("prefixOnce(%q) = %q: changed a message without the prefix", fzShort(s), got)
		}
		return
	}
	for i := first + 1; i < len(got); i++ {
		j := strings.Index(got[i:], prefix)
		if j < 0 {
			break
		}
		i += j
		if strings.ContainsRune(" (\n", rune(got[i-1])) {
			t.Fatalf("prefixOnce(%q) = %q: a wrapped message keeps the prefix at %d", fzShort(s), got, i)
		}
	}
	if e := tidy(errors.New(s), func(x string) string { return x }); e.Error() != got {
		t.Fatalf("tidy(%q) = %q, want %q", fzShort(s), e.Error(), got)
	}
}

func fzCheckSCPAck(t *testing.T, out string) {
	t.Helper()
	err := scpAck(bufio.NewReader(strings.NewReader(out)))
	if ok := out != "" && out[0] == 0; (err == nil) != ok {
		t.Fatalf("scpAck(%q) = %v", fzShort(out), err)
	}
}

// FuzzOutputStreams writes a command's output to the line splitter of the
// operation log and to the capped capture, in pieces cut where the fuzzer
// says: what comes out must not depend on how the SSH channel cut the
// stream, and must match what their documentation promises.
func FuzzOutputStreams(f *testing.F) {
	for _, s := range fzSimOutputs(f) {
		f.Add([]byte(s), []byte{3, 200, 1}, uint16(64))
	}
	f.Add([]byte("a\r\nb\rc\n\r\nd"), []byte{1}, uint16(8))
	f.Add([]byte("progress 10%\rprogress 20%\r\n"), []byte{5, 0, 9}, uint16(3))
	f.Add(bytes.Repeat([]byte("é"), 700), []byte{1, 2, 3}, uint16(1000))
	f.Fuzz(func(t *testing.T, data, cuts []byte, capMax uint16) {
		if len(data) > fzMaxInput || len(cuts) > 1024 {
			return
		}
		chunks := fzChunks(data, cuts)
		fzCheckLineWriter(t, data, chunks)
		fzCheckCapBuffer(t, data, chunks, int(capMax%2048)+1)
	})
}

// fzChunks cuts data into pieces whose sizes are the bytes of cuts
// (cycled; 0 means 1).
func fzChunks(data, cuts []byte) [][]byte {
	var out [][]byte
	for i := 0; len(data) > 0; i++ {
		n := 1
		if len(cuts) > 0 {
			n = max(int(cuts[i%len(cuts)]), 1)
		}
		n = min(n, len(data))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

func fzLines(t *testing.T, pieces [][]byte) []string {
	t.Helper()
	var lines []string
	w := &lineWriter{emit: func(l string) { lines = append(lines, l) }}
	for _, p := range pieces {
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("lineWriter.Write = %d, %v", n, err)
		}
	}
	w.flush()
	return lines
}

func fzCheckLineWriter(t *testing.T, data []byte, chunks [][]byte) {
	t.Helper()
	whole := fzLines(t, [][]byte{data})
	if pieces := fzLines(t, chunks); !slices.Equal(whole, pieces) {
		t.Fatalf("lines of %q:\n written at once: %q\n written in %d pieces: %q", fzShort(data), whole, len(chunks), pieces)
	}
	const marker = " …[line cut]"
	for _, l := range whole {
		if strings.ContainsAny(l, "\r\n") || len(l) > maxLineLen+len(marker) {
			t.Fatalf("lines of %q: %q is not one bounded line", fzShort(data), l)
		}
	}
	// Nothing is lost but the line ends when no line is over the cap.
	long := false
	for _, seg := range bytes.FieldsFunc(data, func(r rune) bool { return r == '\r' || r == '\n' }) {
		long = long || len(seg) > maxLineLen
	}
	if !long {
		want := strings.NewReplacer("\r", "", "\n", "").Replace(string(data))
		if got := strings.Join(whole, ""); got != want {
			t.Fatalf("lines of %q: %q, want the bytes %q", fzShort(data), whole, want)
		}
	}
}

func fzCheckCapBuffer(t *testing.T, data []byte, chunks [][]byte, capMax int) {
	t.Helper()
	once := &capBuffer{max: capMax}
	_, _ = once.Write(data)
	pieces := &capBuffer{max: capMax}
	for _, c := range chunks {
		if n, err := pieces.Write(c); n != len(c) || err != nil {
			t.Fatalf("capBuffer.Write = %d, %v", n, err)
		}
	}
	got := once.String()
	if p := pieces.String(); p != got {
		t.Fatalf("capBuffer{max: %d} of %q:\n written at once: %q\n in %d pieces: %q", capMax, fzShort(data), got, len(chunks), p)
	}
	if len(data) <= capMax {
		if got != string(data) {
			t.Fatalf("capBuffer{max: %d} of %q = %q, want it whole", capMax, fzShort(data), got)
		}
		return
	}
	// The start (a quarter of the cap) and the end (the rest of the cap)
	// are kept, and the middle says how many bytes were dropped.
	head := string(data[:capMax/4])
	tail := string(data[len(data)-(capMax-capMax/4):])
	mid, ok := strings.CutPrefix(got, head)
	if ok {
		mid, ok = strings.CutSuffix(mid, tail)
	}
	if !ok || !strings.Contains(mid, strconv.Itoa(len(data)-capMax)) {
		t.Fatalf("capBuffer{max: %d} of %q = %q: want %q, the count of dropped bytes, %q", capMax, fzShort(data), got, head, tail)
	}
}

// FuzzParseOptions: sysupgrade options from a host (the operation's JSON)
// are refused with ErrInvalidOptions or read into Options that round-trip
// through both documented forms and name only flags some release has.
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		``, `null`, `{}`, `{"rollout":{"max_failures":3}}`, `{"sysupgrade":""}`, `{"sysupgrade":"c,F"}`,
		`{"sysupgrade":"-c -F"}`, `{"sysupgrade":"cF"}`, `{"sysupgrade":"n"}`, `{"sysupgrade":"c,o,u,p,k,F"}`,
		`{"F":true}`, `{"c":false,"n":true}`, `{"c":true,"o":true,"u":true,"p":true,"k":true,"F":true,"n":false}`,
		`{"sysupgrade":"c","ignore_minor_compat_version":true}`, `{"n":true,"c":false,"ignore_minor_compat_version":false}`,
		`{"sysupgrade":"n,c"}`, `{"n":true}`, `{"sysupgrade":"c,x"}`, `{"x":true}`, `{"sysupgrade":"c","F":true}`,
		`{"sysupgrade":3}`, `{"F":"yes"}`, `[1]`, `{`, `{"sysupgrade":null}`, `{"c":null}`, ` {"c":true} `,
	} {
		f.Add([]byte(s), "c")
	}
	f.Add([]byte(`{}`), "-n\t-u")
	f.Add([]byte(`{}`), "c,o,n")
	u := fzUpgrader(f)
	f.Fuzz(func(t *testing.T, raw []byte, letters string) {
		if len(raw) > fzMaxInput || len(letters) > fzMaxValue {
			return
		}
		fzCheckOptions(t, u, raw)
		asString, err := json.Marshal(map[string]string{"sysupgrade": letters})
		if err != nil {
			t.Fatal(err)
		}
		fzCheckOptions(t, u, asString)
	})
}

func fzUpgrader(tb testing.TB) *Upgrader {
	tb.Helper()
	u, err := New(&Config{CredentialsFunc: fzNoCredentials, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

func fzNoCredentials(context.Context, store.Device) (Credentials, error) {
	return Credentials{}, errors.New("no device in a fuzz target")
}

func fzCheckOptions(t *testing.T, u *Upgrader, raw []byte) {
	t.Helper()
	o, err := ParseOptions(raw)
	if verr := u.ValidateOptions(raw); (err == nil) != (verr == nil) {
		t.Fatalf("ParseOptions(%s): %v, but ValidateOptions: %v", fzShort(raw), err, verr)
	}
	if err != nil {
		if !errors.Is(err, ErrInvalidOptions) || o != (Options{}) {
			t.Fatalf("ParseOptions(%s) = %+v, %v: want the zero Options and ErrInvalidOptions", fzShort(raw), o, err)
		}
		return
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("ParseOptions(%s) = %+v, which does not validate: %v", fzShort(raw), o, err)
	}
	if back, err := ParseOptions(o.JSON()); err != nil || back != o {
		t.Fatalf("ParseOptions(%s) = %+v, but its JSON %s reads %+v, %v", fzShort(raw), o, o.JSON(), back, err)
	}
	// openwisp's form: one boolean per letter.
	form := map[string]bool{}
	for i := range len(optionLetters) {
		form[optionLetters[i:i+1]] = *o.flag(optionLetters[i])
	}
	form[ignoreMinorKey] = o.IgnoreMinorCompat
	ow, _ := json.Marshal(form)
	if back, err := ParseOptions(ow); err != nil || back != o {
		t.Fatalf("ParseOptions(%s) = %+v, but openwisp's form %s reads %+v, %v", fzShort(raw), o, ow, back, err)
	}
	// The flags: known ones, in the fixed order, each a release has.
	newest := CapabilitiesOf(Release{Version: "25.12.0", Major: 25, Minor: 12})
	last := -1
	for _, fl := range o.Flags() {
		if fl == flagIgnoreMinorCompat {
			if !o.IgnoreMinorCompat {
				t.Fatalf("%+v: %s without IgnoreMinorCompat", o, fl)
			}
			continue
		}
		i := strings.Index(optionLetters, strings.TrimPrefix(fl, "-"))
		if len(fl) != 2 || fl[0] != '-' || i <= last || !strings.Contains(newest.Options, fl[1:]) {
			t.Fatalf("%+v: flags %q out of order or unknown", o, o.Flags())
		}
		last = i
	}
	if o.String() != strings.Join(o.Flags(), " ") {
		t.Fatalf("%+v: String %q, flags %q", o, o.String(), o.Flags())
	}
}

// FuzzHostValues builds the command lines of an attempt from a host's
// values (the flash command, the image's name, the remote path, a service
// name, the options) and checks that each value reaches the device's shell
// as one literal word: the lines are parsed by a real POSIX shell (busybox
// sh when installed, else /bin/sh) and by the simulator's ash-like
// interpreter, and both must give back exactly the words the attempt meant.
// It also checks the remote path derived from an image's name and the SSH
// address derived from the host's.
func FuzzHostValues(f *testing.F) {
	f.Add(DefaultUpgradeCommand, "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin", "", "uhttpd", "c", "192.0.2.10")
	f.Add("/sbin/sysupgrade", "fw.bin", "/tmp/fw 1.bin", "odhcpd", "c,F", "[2001:db8::1]:2222")
	f.Add("", "it's $(reboot); `reboot` \"x\" \\ $HOME", "/tmp/a'b'\\''c", "x;reboot", "n", "2001:db8::1")
	f.Add("sysupgrade -F", "..", "/tmp/\n/x\r", "-f", "", "router.example:22")
	f.Add("sysupgrade", `a\b/c`, "", "a b", "-c -F", "[::1")
	f.Add("sysupgrade", "\xff\xfe.bin", "relative/path", "\t", "k,p,u", "")
	f.Add("sysupgrade", "", "/tmp/x", "svc\x00", "o", "a]:b")
	sh := fzStartShell(f)
	sim := fzStartSim(f)
	f.Fuzz(func(t *testing.T, flashCmd, name, path, service, letters, addr string) {
		for _, v := range []string{flashCmd, name, path, service, letters, addr} {
			if len(v) > fzMaxValue {
				return
			}
		}
		fzCheckWithPort(t, addr)

		// Any words reach the shell as they are.
		fzCheckWords(t, sh, sim, command(flashCmd, name, path, service, letters, addr),
			[]string{flashCmd, name, path, service, letters, addr})

		cfg := &Config{CredentialsFunc: fzNoCredentials, UpgradeCommand: flashCmd, Services: []string{service},
			Logger: slog.New(slog.DiscardHandler)}
		if path != "" {
			cfg.RemotePathFunc = func(upgrader.Image) string { return path }
		}
		badService := service == "" || strings.ContainsAny(service, "/\x00\n") || service == "." || service == ".."
		u, err := New(cfg)
		if (err != nil) != badService {
			t.Fatalf("New with service %q: %v", service, err)
		}
		if badService {
			cfg.Services = []string{}
			if u, err = New(cfg); err != nil {
				t.Fatal(err)
			}
		}
		opts, _ := json.Marshal(map[string]string{"sysupgrade": letters})
		if _, err := ParseOptions(opts); err != nil {
			opts = nil // the options have their own target
		}
		job := &upgrader.Job{
			Operation: store.Operation{Options: opts},
			Image:     upgrader.Image{Image: store.Image{Name: name, SHA256: fzSHA256}},
			Report:    fzReporter{},
		}
		a, err := u.newAttempt(job)
		if err != nil {
			t.Fatal(err)
		}
		err = a.prepare()
		if path != "" && !strings.HasPrefix(path, "/") {
			// Refused before anything reaches the device; go on with the
			// default path.
			if _, reason := upgrader.Classify(err); reason != status.ReasonUpgraderError {
				t.Fatalf("remote path %q: prepare = %v, want a refusal", fzShort(path), err)
			}
			cfg.RemotePathFunc, path = nil, ""
			if u, err = New(cfg); err != nil {
				t.Fatal(err)
			}
			if a, err = u.newAttempt(job); err != nil {
				t.Fatal(err)
			}
			err = a.prepare()
		}
		switch {
		case err != nil:
			t.Fatalf("prepare: %v", err)
		case path != "" && a.remotePath != path:
			t.Fatalf("remote path %q, RemotePathFunc said %q", a.remotePath, fzShort(path))
		case path == "":
			fzCheckDefaultPath(t, name, a.remotePath)
		}

		flash := []string{u.cfg.UpgradeCommand, "-v"}
		flash = append(flash, a.opts.Flags()...)
		fzCheckWords(t, sh, sim, a.flashCommand(), append(flash, a.remotePath))

		a.uploaded, a.stopped, a.wifiDown = true, u.cfg.Services, true
		want := [][]string{{"rm", "-f", a.remotePath}}
		for _, s := range u.cfg.Services {
			want = append(want, []string{initDir + "/" + s, "start"})
		}
		want = append(want, []string{"wifi", "up"})
		cmds := a.cleanupCommands()
		if len(cmds) != len(want) {
			t.Fatalf("cleanup commands %q, want %d", cmds, len(want))
		}
		for i, c := range cmds {
			fzCheckWords(t, sh, sim, c, want[i])
		}

		// A redirection's target is one quoted word after the operator.
		echo := command("echo", fzSHA256)
		target, ok := strings.CutPrefix(redirect(echo, a.remotePath), echo+" > ")
		if !ok {
			t.Fatalf("redirect(%q, %q) = %q", echo, a.remotePath, redirect(echo, a.remotePath))
		}
		fzCheckWords(t, sh, nil, target, []string{a.remotePath})
	})
}

func fzCheckDefaultPath(t *testing.T, name, got string) {
	t.Helper()
	base, ok := strings.CutPrefix(got, DefaultRemoteDir+"/")
	if !ok || base == "" || base == "." || base == ".." || strings.ContainsAny(base, `/\`) {
		t.Fatalf("image name %q: remote path %q is not a file of %s", fzShort(name), got, DefaultRemoteDir)
	}
	want := name[strings.LastIndexAny(name, `/\`)+1:]
	if want == "" || want == "." || want == ".." {
		want = fzSHA256 + ".bin"
	}
	if base != want {
		t.Fatalf("image name %q: remote path %q, want %s/%s", fzShort(name), got, DefaultRemoteDir, want)
	}
}

func fzCheckWithPort(t *testing.T, addr string) {
	t.Helper()
	got := withPort(addr)
	if _, _, err := net.SplitHostPort(addr); err == nil {
		if got != addr {
			t.Fatalf("withPort(%q) = %q: changed an address with a port", fzShort(addr), got)
		}
		return
	}
	host := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if strings.ContainsAny(host, "[]") {
		return // not an address: the dial fails with its own error
	}
	h, p, err := net.SplitHostPort(got)
	if err != nil || h != host || p != DefaultPort {
		t.Fatalf("withPort(%q) = %q (%q, %q, %v): want host %q, port %s", fzShort(addr), got, h, p, err, host, DefaultPort)
	}
}

// fzShort is s for a failure message: its start when it is long (the
// fuzzer writes the whole input to testdata).
func fzShort[T ~string | ~[]byte](s T) string {
	const keep = 256
	if len(s) <= keep {
		return string(s)
	}
	return string(s[:keep]) + fmt.Sprintf("…(%d bytes)", len(s))
}

type fzReporter struct{}

func (fzReporter) Phase(context.Context, status.Phase) error { return nil }
func (fzReporter) Progress(context.Context, int) error       { return nil }
func (fzReporter) Log(context.Context, string) error         { return nil }
func (fzReporter) Cancelled(context.Context) error           { return nil }

// fzCheckWords checks that the command line line, made by this package,
// parses into exactly the words want: first that it is made of
// single-quoted words only (so that no shell can run anything of it), then
// through the real shell and the simulator (when not nil). Words holding a
// NUL byte cannot travel in a shell command line: the structure alone is
// checked for them.
func fzCheckWords(t *testing.T, sh *fzShell, sim *fzSim, line string, want []string) {
	t.Helper()
	words, ok := fzQuotedWords(line)
	if !ok || !slices.Equal(words, want) {
		t.Fatalf("command line %q is not the quoted words %q", fzShort(line), want)
	}
	if strings.Contains(line, "\x00") {
		return
	}
	got, err := sh.words(line)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("%s parses %q into %q (%v), want %q", sh.name, fzShort(line), got, err, want)
	}
	if sim == nil {
		return
	}
	got, err = sim.words(line)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("the simulator parses %q into %q (%v), want %q", fzShort(line), got, err, want)
	}
}

// fzQuotedWords splits a line made only of single-quoted words separated by
// one space, where a single quote inside a word is closed, escaped with a
// backslash and reopened (the only form shellQuote makes); ok is false for
// anything else.
func fzQuotedWords(line string) (words []string, ok bool) {
	for {
		if !strings.HasPrefix(line, "'") {
			return nil, false
		}
		line = line[1:]
		var w strings.Builder
		for {
			i := strings.IndexByte(line, '\'')
			if i < 0 {
				return nil, false
			}
			w.WriteString(line[:i])
			line = line[i+1:]
			rest, esc := strings.CutPrefix(line, `\''`)
			if !esc {
				break
			}
			w.WriteByte('\'')
			line = rest
		}
		words = append(words, w.String())
		if line == "" {
			return words, true
		}
		if line, ok = strings.CutPrefix(line, " "); !ok {
			return nil, false
		}
	}
}

// fzShell is a POSIX shell kept running for the whole target, which reads
// "set -- WORDS" lines and prints back its arguments, NUL-terminated. Only
// lines that fzQuotedWords accepts are sent to it, and it runs with an
// empty PATH: it can only run its own builtins set and printf.
type fzShell struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *os.File
	r    *bufio.Reader
	dead error
}

func fzStartShell(tb testing.TB) *fzShell {
	tb.Helper()
	var args []string
	if bb, err := exec.LookPath("busybox"); err == nil {
		args = []string{bb, "sh"}
	} else if sh, err := exec.LookPath("sh"); err == nil {
		args = []string{sh}
	} else {
		tb.Fatalf("no POSIX shell to check the quoting with: %v", err)
	}
	s := &fzShell{name: strings.Join(args, " "), cmd: exec.Command(args[0], args[1:]...)}
	s.cmd.Env = []string{"PATH=/nonexistent", "LC_ALL=C"}
	s.cmd.Dir = tb.TempDir()
	var err error
	if s.in, err = s.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	s.out = out.(*os.File)
	s.r = bufio.NewReader(s.out)
	if err := s.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = s.in.Close()
		_ = s.cmd.Wait()
	})
	return s
}

// words returns the arguments the shell makes of line.
func (s *fzShell) words(line string) ([]string, error) {
	if s.dead != nil {
		return nil, s.dead
	}
	fail := func(err error) ([]string, error) {
		s.dead = fmt.Errorf("the shell is gone: %w", err)
		_ = s.cmd.Process.Kill()
		return nil, err
	}
	if err := s.out.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return fail(err)
	}
	if _, err := io.WriteString(s.in, "set -- "+line+"\nprintf '%s\\0' \"$#\" \"$@\"\n"); err != nil {
		return fail(err)
	}
	read := func() (string, error) {
		b, err := s.r.ReadString(0)
		return strings.TrimSuffix(b, "\x00"), err
	}
	count, err := read()
	if err != nil {
		return fail(fmt.Errorf("reading the word count: %w", err))
	}
	n, err := strconv.Atoi(count)
	if err != nil {
		return fail(fmt.Errorf("word count %q: %w", count, err))
	}
	words := make([]string, 0, n)
	for range n {
		w, err := read()
		if err != nil {
			return fail(err)
		}
		words = append(words, w)
	}
	return words, nil
}

// fzSim is a simulated device the targets send command lines to, prefixed
// with "true" so that nothing but the parse happens; its argument vector is
// what the simulator's interpreter made of the line. The device is replaced
// every fzSimRuns lines to bound its history.
type fzSim struct {
	tb testing.TB
	d  *openwrttest.Device
	c  *ssh.Client
	n  int
}

const fzSimRuns = 256

func fzStartSim(tb testing.TB) *fzSim {
	tb.Helper()
	s := &fzSim{tb: tb}
	if err := s.restart(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.close)
	return s
}

func (s *fzSim) close() {
	if s.c != nil {
		_ = s.c.Close()
	}
	if s.d != nil {
		_ = s.d.Close()
	}
	s.c, s.d = nil, nil
}

func (s *fzSim) restart() error {
	s.close()
	d, err := openwrttest.New(openwrttest.Config{})
	if err != nil {
		return err
	}
	if err := d.Start(); err != nil {
		return err
	}
	s.d = d
	if s.c, err = ssh.Dial("tcp", d.Addr(), d.ClientConfig()); err != nil {
		return err
	}
	s.n = 0
	return nil
}

func (s *fzSim) words(line string) ([]string, error) {
	if s.n++; s.n > fzSimRuns {
		if err := s.restart(); err != nil {
			return nil, err
		}
		s.n = 1
	}
	sess, err := s.c.NewSession()
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	if out, err := sess.CombinedOutput(command("true") + " " + line); err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	ex := s.d.Executed()
	if len(ex) == 0 || len(ex[len(ex)-1]) == 0 || ex[len(ex)-1][0] != "true" {
		return nil, fmt.Errorf("the simulator ran %q", ex)
	}
	return ex[len(ex)-1][1:], nil
}
