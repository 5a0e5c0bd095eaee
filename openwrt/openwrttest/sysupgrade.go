package openwrttest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// flashGrace is how long the device waits after its last message before it
// closes the connections, so the message reaches the client.
const flashGrace = 30 * time.Millisecond

// falseErrorDelay is how long after the "Command failed ... (Connection
// failed)" exit the device goes down.
const falseErrorDelay = 50 * time.Millisecond

// upgrade is one run of the simulated /sbin/sysupgrade: the script of the
// device's release (see Profile), step by step.
type upgrade struct {
	e      *env
	s      *stdio
	p      Profile
	faults Faults
	args   []string

	verbose                int
	keep                   bool // SAVE_CONFIG
	savePart               int  // SAVE_PARTITIONS
	saveOverlay            bool // -c or -o
	overlayRoot            bool // -o
	skipUnchanged          bool // -u
	installedPkgs          bool // -k
	force, test, help      bool
	listBackup, needImage  bool
	ignoreMinor            bool
	useCurrPart            bool
	provisioning           int
	backup, restore, fconf string
	haveConf               bool // -f given
}

func (e *env) sysupgrade(s *stdio, args []string) int {
	e.d.mu.Lock()
	u := &upgrade{e: e, s: s, p: e.d.prof, faults: e.d.faults, args: args, verbose: 1, keep: true, savePart: 1}
	e.d.mu.Unlock()
	return u.run()
}

// errw is where the script's own error messages go: stdout before 19.07,
// stderr from 19.07.
func (u *upgrade) errw() io.Writer {
	if u.p.atLeast("19.07") {
		return u.s.err
	}
	return u.s.out
}

// v is the script's v(): plain on stdout up to 19.07, dated on stderr from
// 21.02 ("Thu Jun  1 12:00:00 UTC 2023 upgrade: ..."); silent with -q.
func (u *upgrade) v(msg string) {
	if u.verbose < 1 {
		return
	}
	if u.p.atLeast("21.02") {
		u.e.fprintf(u.s.err, "%s upgrade: %s\n", time.Now().UTC().Format(time.UnixDate), msg)
		return
	}
	u.e.fprintf(u.s.out, "%s\n", msg)
}

// checkMsg prints a message of fwtool_check_image: echo up to 19.07 (on
// stderr from 19.07, where validate_firmware_image runs the checks with
// >&2), v from 21.02.
func (u *upgrade) checkMsg(msg string) {
	if u.p.atLeast("21.02") {
		u.v(msg)
		return
	}
	u.e.fprintf(u.errw(), "%s\n", msg)
}

func (u *upgrade) run() int {
	rest, status, done := u.parseOptions()
	if done {
		return status
	}
	image := ""
	switch {
	case !u.p.atLeast("18.06"):
		image = strings.Join(rest, " ") // ARGV="$*"
	case len(rest) > 0:
		image = rest[0] // IMAGE="$1"
	}
	if u.help || (image == "" && !u.needImage && !(u.listBackup && u.p.atLeast("19.07"))) {
		u.usage()
		if u.help {
			return u.p.HelpStatus
		}
		return 1
	}
	if image != "" && u.needImage {
		u.e.fprintf(u.s.out, "-b|--create-backup and -r|--restore-backup do not perform a firmware upgrade.\nDo not specify both -b|-r and a firmware image.\n")
		return 1
	}
	if u.saveOverlay && u.p.atLeast("18.06") && !u.hasDir("/overlay/upper/etc") {
		msg := "Cannot find '/overlay/upper/etc', required for '-c'"
		if u.p.atLeast("24.10") {
			msg += " or '-o'"
		}
		u.e.fprintf(u.errw(), "%s\n", msg)
		return 1
	}
	if u.skipUnchanged && !u.hasDir("/rom") {
		u.e.fprintf(u.s.out, "'/rom/' is required by '-u'\n")
		return 1
	}
	switch {
	case u.listBackup:
		for _, f := range u.backupFiles() {
			u.e.fprintf(u.s.out, "%s\n", f)
		}
		return 0
	case u.backup != "" || u.restore != "":
		u.e.fprintf(u.s.err, "openwrttest: sysupgrade -b and -r are not simulated\n")
		return 1
	}
	return u.upgradeImage(image)
}

// parseOptions is the script's option loop: it stops at the first word
// that does not start with "-" (or is empty), at -h (and, before 19.07,
// at -l), and refuses options the release does not have.
func (u *upgrade) parseOptions() (rest []string, status int, done bool) {
	args := u.args
	next := func(i int) string {
		if i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	i := 0
loop:
	for ; i < len(args); i++ {
		a := args[i]
		if a == "" || a[0] != '-' {
			break
		}
		if !u.p.Accepts(a) {
			u.e.fprintf(u.errw(), "Invalid option: %s\n", a)
			return nil, 1, true
		}
		switch a {
		case "-d":
			i++
		case "-v":
			u.verbose++
		case "-q":
			u.verbose--
		case "-n":
			u.keep = false
		case "-c":
			u.saveOverlay = true
		case "-o":
			u.saveOverlay, u.overlayRoot = true, true
		case "-p":
			u.savePart = 0
		case "-P":
			u.provisioning = 1
		case "-k":
			u.installedPkgs = true
		case "-u":
			u.skipUnchanged = true
		case "-s":
			u.useCurrPart = true
		case "-b", "--create-backup":
			u.backup, u.needImage = next(i), true
			i++
		case "-r", "--restore-backup":
			u.restore, u.needImage = next(i), true
			i++
		case "-l", "--list-backup":
			u.listBackup = true
			if !u.p.atLeast("19.07") {
				break loop // $1 stays "-l"
			}
		case "-f":
			u.fconf, u.haveConf = next(i), true
			i++
		case "-F", "--force":
			u.force = true
		case "-T", "--test":
			u.test = true
		case "-h", "--help":
			u.help = true
			break loop
		case "--ignore-minor-compat-version":
			u.ignoreMinor = true
		}
	}
	if i > len(args) {
		i = len(args)
	}
	return args[i:], 0, false
}

func (u *upgrade) hasDir(p string) bool {
	u.e.d.mu.Lock()
	defer u.e.d.mu.Unlock()
	return u.e.d.isDirLocked(p)
}

// upgradeImage checks image and flashes it.
func (u *upgrade) upgradeImage(image string) int {
	d := u.e.d
	p := cleanPath(image)
	if u.p.atLeast("18.06") {
		d.mu.Lock()
		_, exists := d.files[p]
		dirOK := d.isDirLocked(pathDir(p))
		d.mu.Unlock()
		// busybox readlink -f (1.30 and later) resolves a missing file in
		// an existing directory; 1.28 (18.06) resolves nothing missing.
		if !dirOK || (!exists && !u.p.atLeast("19.07")) || image == "" {
			u.e.fprintf(u.errw(), "Image file not found.\n")
			return 1
		}
		if !strings.HasPrefix(p, "/tmp/") {
			u.v("Image not in /tmp, copying...")
			d.mu.Lock()
			if f, ok := d.files[p]; ok {
				c := *f
				d.files["/tmp/sysupgrade.img"] = &c
			}
			d.mu.Unlock()
			p = "/tmp/sysupgrade.img"
		}
	}
	d.mu.Lock()
	f := d.files[p]
	board, devCompat := d.cfg.BoardName, d.deviceCompatLocked()
	requireMeta := d.cfg.RequireImageMetadata
	d.mu.Unlock()
	if f == nil {
		f = newFileFromBytes(nil) // the checks read nothing
	}

	if status, ok := u.checkImage(f, board, devCompat, requireMeta); !ok {
		return status
	}
	if u.haveConf {
		d.mu.Lock()
		cf, ok := d.files[cleanPath(u.fconf)]
		d.mu.Unlock()
		if !ok || !bytes.HasPrefix(cf.head, []byte{0x1f, 0x8b}) {
			u.e.fprintf(u.errw(), "Invalid config file. Please use only .tar.gz files\n")
			return 1
		}
		u.keep = true
	} else if u.keep && !u.test {
		u.saveConfig()
	}
	if u.test {
		return 0
	}
	return u.flash(f, cleanPath(image), p)
}

// checkImage runs the release's image checks and reports whether the flash
// may go on; when not, status is sysupgrade's exit status.
func (u *upgrade) checkImage(f *file, board, devCompat string, requireMeta bool) (status int, ok bool) {
	type check struct {
		name string
		fn   func() (ok, broken bool)
	}
	checks := []check{{"platform_check_image", func() (bool, bool) { return u.platformCheck(f, board) }}}
	if u.p.Fwtool {
		fw := check{"fwtool_check_image", func() (bool, bool) { return u.fwtoolCheck(f, board, devCompat, requireMeta), false }}
		checks = append([]check{fw}, checks...)
	}
	if !u.p.atLeast("19.07") {
		// The loop over $sysupgrade_image_check, messages on stdout.
		for _, c := range checks {
			if ok, _ := c.fn(); ok {
				continue
			}
			if u.force {
				u.e.fprintf(u.s.out, "Image check '%s' failed but --force given - will update anyway!\n", c.name)
				break
			}
			u.e.fprintf(u.s.out, "Image check '%s' failed.\n", c.name)
			return 1, false
		}
		return 0, true
	}
	// validate_firmware_image runs every check (output on stderr) and
	// answers valid and forceable.
	valid, forceable := true, true
	for _, c := range checks {
		ok, broken := c.fn()
		valid = valid && ok
		forceable = forceable && !broken
	}
	if valid {
		return 0, true
	}
	if u.force && (forceable || !u.p.ForceOnlyForceable) {
		u.e.fprintf(u.s.err, "Image check failed but --force given - will update anyway!\n")
		return 0, true
	}
	u.e.fprintf(u.s.err, "Image check failed.\n")
	return 1, false
}

// fwtoolCheck is fwtool_check_image of /lib/upgrade/fwtool.sh.
func (u *upgrade) fwtoolCheck(f *file, board, devCompat string, requireMeta bool) bool {
	doc, found := f.fwtoolMetadata()
	if !found {
		if u.p.atLeast("21.02") {
			u.checkMsg("Image metadata not present")
		} else {
			u.checkMsg("Image metadata not found")
		}
		if requireMeta && !u.force {
			u.checkMsg("Use sysupgrade -F to override this check when downgrading or flashing to vendor firmware")
		}
		return !requireMeta
	}
	md, ok := parseMetadata(doc)
	if !ok {
		u.e.fprintf(u.s.err, "Failed to parse message data\n") // jshn
		u.checkMsg("Invalid image metadata")
		return false
	}
	key := "supported_devices"
	imgCompat := md.compat
	if imgCompat == "" {
		imgCompat = "1.0"
	}
	if u.p.Compat && imgCompat != "1.0" {
		key = "new_supported_devices"
	}
	list, ok := md.lists[key]
	if !ok {
		return false // json_select fails silently
	}
	if slices.Contains(list, board) {
		if !u.p.Compat {
			return true
		}
		major := func(v string) string {
			if i := strings.LastIndexByte(v, '.'); i >= 0 {
				return v[:i]
			}
			return v
		}
		if major(devCompat) != major(imgCompat) {
			u.checkMsg(fmt.Sprintf("The device is supported, but this image is incompatible for sysupgrade based on the image version (%s->%s).", devCompat, imgCompat))
			if md.message != "" {
				u.checkMsg(md.message)
			}
			return false
		}
		if devCompat != imgCompat && u.keep {
			if u.ignoreMinor {
				return true
			}
			u.checkMsg(fmt.Sprintf("The device is supported, but the config is incompatible to the new image (%s->%s). Please upgrade without keeping config (sysupgrade -n).", devCompat, imgCompat))
			if md.message != "" {
				u.checkMsg(md.message)
			}
			return false
		}
		return true
	}
	u.checkMsg("Device " + board + " not supported by this image")
	u.checkMsg(strings.TrimRight("Supported devices: "+strings.Join(list, " "), " "))
	return false
}

// platformCheck is the simulated platform_check_image: the FWSIM header
// stands for a vendor header and must name the device's board_name. A file
// without one passes when it carries readable fwtool metadata (as on ath79,
// whose check leaves the board to fwtool); otherwise it is "Invalid image
// type.", which 25.12 marks broken (return 74, as fit_check_image does), so
// that -F cannot force it.
func (u *upgrade) platformCheck(f *file, board string) (ok, broken bool) {
	hdr, err := parseImageHeader(f.head)
	if err != nil {
		if _, found := f.fwtoolMetadata(); found && u.p.Fwtool {
			return true, false
		}
		u.e.fprintf(u.errw(), "Invalid image type.\n")
		return false, u.p.ForceOnlyForceable
	}
	if !slices.Contains(hdr.Boards, board) {
		u.e.fprintf(u.errw(), "Device %s not supported by this image\nSupported devices: %s\n", board, strings.Join(hdr.Boards, " "))
		return false, false
	}
	return true, false
}

// saveConfig is do_save_conffiles: "Saving config files..." and, with -v,
// tar's list of every file saved (on stdout, on stderr from 24.10 where the
// archive goes through a pipe).
func (u *upgrade) saveConfig() {
	u.e.d.mu.Lock()
	initramfs := u.e.d.cfg.RootFS == RootFSInitramfs
	u.e.d.mu.Unlock()
	if initramfs {
		w := u.s.out
		if u.p.atLeast("19.07") {
			w = u.s.err
		}
		u.e.fprintf(w, "Cannot save config while running from ramdisk.\n")
		return
	}
	u.v("Saving config files...")
	if u.verbose < 2 {
		return
	}
	w := u.s.out
	if u.p.atLeast("24.10") {
		w = u.s.err
	}
	var b bytes.Buffer
	for _, f := range u.backupFiles() {
		b.WriteString(strings.TrimPrefix(f, "/"))
		b.WriteByte('\n')
		if b.Len() >= 32<<10 {
			_, _ = w.Write(b.Bytes())
			b.Reset()
		}
	}
	_, _ = w.Write(b.Bytes())
}

// backupFiles is the list of files saved across the flash.
func (u *upgrade) backupFiles() []string {
	d := u.e.d
	d.mu.Lock()
	files := slices.Clone(DefaultBackupFiles)
	for p := range d.files {
		if strings.HasPrefix(p, "/etc/") && !slices.Contains(files, p) {
			files = append(files, p)
		}
	}
	want := d.cfg.BackupFiles
	d.mu.Unlock()
	if u.installedPkgs && u.p.atLeast("19.07") {
		files = append(files, "/etc/backup/installed_packages.txt")
	}
	for i := 0; len(files) < want; i++ {
		files = append(files, fmt.Sprintf("/etc/config/extra/file%06d.conf", i))
	}
	slices.Sort(files)
	return files
}

// flash hands the image over: the point of no return, then what the
// release's session sees (Profile.Flash), or an injected fault.
func (u *upgrade) flash(f *file, given, path string) int {
	e, d, faults := u.e, u.e.d, u.faults
	if faults.FlashHang > 0 {
		t := time.NewTimer(faults.FlashHang)
		select {
		case <-t.C:
		case <-d.done:
			t.Stop()
			e.noExit = true
			return 1
		}
	}
	if faults.FlashError {
		e.fprintf(u.s.err, "sysupgrade: failed to write image: Input/output error\n")
		return 1
	}
	outcome := u.p.Flash
	if faults.FlashFalseError {
		outcome = FlashUbusError
	}
	if outcome != FlashKillsSessions {
		u.v("Commencing upgrade. Closing all shell sessions.")
	}
	if faults.ProcdRefusal && u.p.atLeast("18.06") {
		if outcome == FlashUbusError {
			e.fprintf(u.s.out, "{\n\t\"error\": {\n\t\t\"message\": \"Firmware image is invalid\"\n\t}\n}\n")
			e.fprintf(u.s.err, "Command failed: ubus call system sysupgrade %s (Not supported)\n", u.ubusMessage(path))
			return ExitUbusNotSupported
		}
		e.fprintf(u.s.err, "Command failed: Not supported\n")
		return 8
	}

	// The point of no return.
	hdr, herr := parseImageHeader(f.head)
	rel, compat := "", ""
	if herr == nil {
		rel = hdr.Release
	}
	if doc, found := f.fwtoolMetadata(); found {
		if md, ok := parseMetadata(doc); ok {
			if rel == "" {
				rel = md.release
			}
			compat = md.compat
			if compat == "" {
				compat = "1.0"
			}
		}
	}
	d.mu.Lock()
	d.flashes = append(d.flashes, Flash{
		Args: slices.Clone(u.args), Path: given, KeepConfig: u.keep, Force: u.force,
		Release: rel, SHA256: hex.EncodeToString(f.sum[:]),
	})
	d.mu.Unlock()
	pb := &pendingBoot{release: rel, compat: compat, keepConfig: u.keep}
	if faults.OldFirmwareAfterReboot {
		pb.release, pb.compat = "", ""
	}

	switch {
	case faults.NoReboot:
		e.pause(flashGrace)
		e.noExit = true
		d.dropConns()
		return 1
	case outcome == FlashUbusError:
		// procd stopped every service, dropbear's listener included, before
		// the ubus client noticed: the device takes no new connection, and
		// this session lives just long enough to report the failure.
		d.goDown(pb, !faults.NeverComeBack, e.c)
		e.fprintf(u.s.err, "Command failed: ubus call system sysupgrade %s (Connection failed)\n", u.ubusMessage(path))
		e.after = func() {
			t := time.NewTimer(falseErrorDelay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-d.done:
			}
			e.c.kill()
		}
		return ExitUbusConnectionFailed
	case outcome == FlashKillsSessions:
		// kill_remaining TERM lists what it kills; dropbear is among them.
		d.mu.Lock()
		var names []string
		for _, s := range d.cfg.Services {
			if !d.stopped[s] {
				names = append(names, s)
			}
		}
		d.mu.Unlock()
		e.fprintf(u.s.out, "Sending TERM to remaining processes ... %s ", strings.Join(names, " "))
	}
	e.pause(flashGrace)
	e.noExit = true
	d.goDown(pb, !faults.NeverComeBack, nil)
	return 1
}

// ubusMessage renders the argument of "ubus call system sysupgrade" as
// jshn's json_dump writes it (json-c's spaced format, slashes escaped), in
// the order the script adds the keys.
func (u *upgrade) ubusMessage(path string) string {
	q := func(s string) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s)
		return strings.ReplaceAll(strings.TrimSuffix(b.String(), "\n"), "/", `\/`)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{ "prefix": %s, "path": %s, `, q("/tmp/root"), q(path))
	if u.force {
		b.WriteString(`"force": true, `)
	}
	if u.keep {
		fmt.Fprintf(&b, `"backup": %s, `, q("/tmp/sysupgrade.tgz"))
	}
	fmt.Fprintf(&b, `"command": %s, "options": { "save_partitions": %d`, q("/lib/upgrade/do_stage2"), u.savePart)
	if u.p.Provisioning || u.faults.FalseErrorProvisioning {
		fmt.Fprintf(&b, `, "add_provisioning": %d`, u.provisioning)
	}
	if u.useCurrPart {
		b.WriteString(`, "use_curr_part": true`)
	}
	b.WriteString(" } }")
	return b.String()
}

func (e *env) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.d.done:
	}
}

// usage prints the release's usage text on stdout, as "cat <<EOF" does.
func (u *upgrade) usage() {
	p := u.p
	var b strings.Builder
	b.WriteString("Usage: /sbin/sysupgrade [<upgrade-option>...] <image file or URL>\n")
	switch {
	case p.atLeast("25.12"):
		b.WriteString("       /sbin/sysupgrade [-q] [-i] [-c] [-u] [-o] [-k] [-P] <backup-command> <file>\n")
	case p.atLeast("19.07"):
		b.WriteString("       /sbin/sysupgrade [-q] [-i] [-c] [-u] [-o] [-k] <backup-command> <file>\n")
	default:
		b.WriteString("       /sbin/sysupgrade [-q] [-i] <backup-command> <file>\n")
	}
	b.WriteString("\nupgrade-option:\n")
	line := func(opt, text string) {
		if p.Accepts(opt) {
			b.WriteString(text)
		}
	}
	line("-d", "\t-d <delay>   add a delay before rebooting\n")
	b.WriteString("\t-f <config>  restore configuration from .tar.gz (file or url)\n")
	b.WriteString("\t-i           interactive mode\n")
	b.WriteString("\t-c           attempt to preserve all changed files in /etc/\n")
	line("-o", "\t-o           attempt to preserve all changed files in /, except those\n\t             from packages but including changed confs.\n")
	line("-u", "\t-u           skip from backup files that are equal to those in /rom\n")
	b.WriteString("\t-n           do not save configuration over reflash\n")
	line("-p", "\t-p           do not attempt to restore the partition table after flash.\n")
	line("-k", "\t-k           include in backup a list of current installed packages at\n\t             /etc/backup/installed_packages.txt\n")
	line("-s", "\t-s           stay on current partition (for dual firmware devices)\n")
	line("-P", "\t-P           create provisioning partition to keep sensitive data across\n\t             factory resets.\n")
	line("-T", "\t-T | --test\n\t             Verify image and config .tar.gz but do not actually flash.\n")
	b.WriteString("\t-F | --force\n\t             Flash image even if image checks fail, this is dangerous!\n")
	line("--ignore-minor-compat-version", "\t--ignore-minor-compat-version\n\t\t     Flash image even if the minor compat version is incompatible.\n")
	b.WriteString("\t-q           less verbose\n\t-v           more verbose\n\t-h | --help  display this help\n\n")
	b.WriteString("backup-command:\n")
	b.WriteString("\t-b | --create-backup <file>\n\t             create .tar.gz of files specified in sysupgrade.conf\n\t             then exit. Does not flash an image. If file is '-',\n\t             i.e. stdout, verbosity is set to 0 (i.e. quiet).\n")
	b.WriteString("\t-r | --restore-backup <file>\n\t             restore a .tar.gz created with sysupgrade -b\n\t             then exit. Does not flash an image. If file is '-',\n\t             the archive is read from stdin.\n")
	line("-l", "\t-l | --list-backup\n\t             list the files that would be backed up when calling\n\t             sysupgrade -b. Does not create a backup file.\n")
	b.WriteString("\n")
	u.e.fprintf(u.s.out, "%s", b.String())
}

// imageHeader is the JSON of a simulated image's first line.
type imageHeader struct {
	Boards  []string `json:"boards"`
	Release string   `json:"release"`
}

// imageMagic starts the first line of every simulated image (the header
// line Image.Header returns).
const imageMagic = "FWSIM1 "

func parseImageHeader(head []byte) (imageHeader, error) {
	var h imageHeader
	line, _, ok := bytes.Cut(head, []byte("\n"))
	if !ok {
		return h, fmt.Errorf("no header line")
	}
	js, ok := bytes.CutPrefix(line, []byte(imageMagic))
	if !ok {
		return h, fmt.Errorf("bad magic")
	}
	if err := json.Unmarshal(js, &h); err != nil {
		return h, err
	}
	if len(h.Boards) == 0 {
		return h, fmt.Errorf("no boards")
	}
	return h, nil
}
