package devicesim

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// flashGrace is how long the device waits after its last message before it
// closes the connections, so the message reaches the client.
const flashGrace = 30 * time.Millisecond

// falseErrorDelay is how long after the false "Command failed" exit the
// device goes down.
const falseErrorDelay = 50 * time.Millisecond

func (e *env) sysupgrade(s *stdio, args []string) int {
	var (
		test, force, quiet bool
		keep, savePart     = true, true
		img                string
	)
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "-T", "--test":
			test = true
		case "-F", "--force":
			force = true
		case "-n":
			keep = false
		case "-p":
			savePart = false
		case "-q":
			quiet = true
		case "-v", "-c", "-o", "-u", "-k", "-i":
		case "-f":
			if i+1 >= len(args) {
				e.fprintf(s.err, "Invalid option: -f needs an argument\n")
				return 1
			}
			i++
		case "-h", "--help":
			e.sysupgradeUsage(s)
			return 1
		default:
			if strings.HasPrefix(a, "-") {
				e.fprintf(s.err, "Invalid option: %s\n", a)
				return 1
			}
			if img != "" {
				e.sysupgradeUsage(s)
				return 1
			}
			img = a
		}
	}
	if img == "" {
		e.sysupgradeUsage(s)
		return 1
	}
	p := cleanPath(img)
	e.d.mu.Lock()
	f, ok := e.d.files[p]
	var head []byte
	var sum string
	if ok {
		head = f.head
		sum = hex.EncodeToString(f.sum[:])
	}
	model, board := e.d.cfg.Model, e.d.cfg.BoardName
	e.d.mu.Unlock()
	if !ok {
		e.fprintf(s.err, "Image not found: %s\n", img)
		return 1
	}
	hdr, herr := parseImageHeader(head)
	checkOK := true
	switch {
	case herr != nil:
		e.fprintf(s.err, "Invalid image type.\n")
		checkOK = false
	case !slices.Contains(hdr.Boards, board) && !slices.Contains(hdr.Boards, model):
		e.fprintf(s.err, "Device %s not supported by this image\nSupported devices: %s\n", board, strings.Join(hdr.Boards, " "))
		checkOK = false
	}
	if !checkOK {
		if !force {
			e.fprintf(s.err, "Image check failed.\n")
			return 1
		}
		e.fprintf(s.err, "Image check failed but --force given - will update anyway!\n")
	}
	if test {
		return 0
	}

	e.d.mu.Lock()
	faults := e.d.faults
	e.d.mu.Unlock()
	if faults.FlashHang > 0 {
		t := time.NewTimer(faults.FlashHang)
		select {
		case <-t.C:
		case <-e.d.done:
			t.Stop()
			e.noExit = true
			return 1
		}
	}
	if faults.FlashError {
		if keep && !quiet {
			e.upgradeMsg(s, "Saving config files...")
		}
		e.fprintf(s.err, "sysupgrade: failed to write image: Input/output error\n")
		return 1
	}
	release := ""
	if herr == nil && !faults.OldFirmwareAfterReboot {
		release = hdr.Release
	}
	e.d.mu.Lock()
	e.d.flashes = append(e.d.flashes, Flash{
		Args: slices.Clone(args), Path: p, KeepConfig: keep, Force: force,
		Release: hdr.Release, SHA256: sum,
	})
	e.d.mu.Unlock()
	if keep && !quiet {
		e.upgradeMsg(s, "Saving config files...")
	}
	if !quiet {
		e.upgradeMsg(s, "Commencing upgrade. Closing all shell sessions.")
	}
	pb := &pendingBoot{release: release, keepConfig: keep}
	switch {
	case faults.FlashFalseError:
		e.fprintf(s.err, "Command failed: ubus call system sysupgrade %s (Connection failed)\n",
			sysupgradeJSON(p, force, keep, savePart, faults.FalseErrorProvisioning))
		e.after = func() {
			t := time.NewTimer(falseErrorDelay)
			defer t.Stop()
			select {
			case <-t.C:
				e.d.goDown(pb, !faults.NeverComeBack)
			case <-e.d.done:
			}
		}
		return 1
	case faults.NoReboot:
		e.pause(flashGrace)
		e.noExit = true
		e.d.dropConns()
		return 1
	default:
		e.pause(flashGrace)
		e.noExit = true
		e.d.goDown(pb, !faults.NeverComeBack)
		return 1
	}
}

func (e *env) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.d.done:
	}
}

func (e *env) upgradeMsg(s *stdio, msg string) {
	e.fprintf(s.out, "%s upgrade: %s\n", time.Now().UTC().Format(time.UnixDate), msg)
}

func (e *env) sysupgradeUsage(s *stdio) {
	e.fprintf(s.err, `Usage: /sbin/sysupgrade [<upgrade-option>...] <image file or URL>
       /sbin/sysupgrade [-q] [-i] [-c] [-u] [-o] [-k] <backup-command> <file>

upgrade-option:
	-f <config>  restore configuration from .tar.gz (file path or URL)
	-i           interactive mode
	-c           attempt to preserve all changed files in /etc/
	-o           attempt to preserve all changed files in /, except those
	             from packages but including changed confs.
	-u           skip from backup files that are equal to those in /rom
	-n           do not save configuration over reflash
	-p           do not attempt to restore the partition table after flash.
	-k           include in backup a list of current installed packages at
	             /etc/backup/installed_packages.txt
	-T | --test
	             Verify image and config .tar.gz but do not actually flash.
	-F | --force
	             Flash image even if image checks fail, this is dangerous!
	-q           less verbose
	-v           more verbose
	-h | --help  display this help
`)
}

// sysupgradeJSON renders the ubus message the way OpenWrt's jshn does, with
// escaped slashes.
func sysupgradeJSON(path string, force, keep, savePart, provisioning bool) string {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return strings.ReplaceAll(string(b), "/", `\/`)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{ "prefix": %s, "path": %s, `, q("/tmp/root"), q(path))
	if force {
		b.WriteString(`"force": true, `)
	}
	if keep {
		fmt.Fprintf(&b, `"backup": %s, `, q("/tmp/sysupgrade.tgz"))
	}
	sp := 0
	if savePart {
		sp = 1
	}
	fmt.Fprintf(&b, `"command": %s, "options": { "save_partitions": %d`, q("/lib/upgrade/do_stage2"), sp)
	if provisioning {
		b.WriteString(`, "add_provisioning": 0`)
	}
	b.WriteString(" } }")
	return b.String()
}

// imageHeader is the JSON of a simulated image's first line.
type imageHeader struct {
	Boards  []string `json:"boards"`
	Release string   `json:"release"`
}

// ImageMagic starts the first line of every simulated image.
const ImageMagic = "FWSIM1 "

func parseImageHeader(head []byte) (imageHeader, error) {
	var h imageHeader
	line, _, ok := bytes.Cut(head, []byte("\n"))
	if !ok {
		return h, fmt.Errorf("no header line")
	}
	js, ok := bytes.CutPrefix(line, []byte(ImageMagic))
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
