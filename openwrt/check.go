package openwrt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

var _ upgrader.Checker = (*Upgrader)(nil)

// errDryRunPhase is what the reporter of a dry run answers to a Phase call:
// a check never moves an operation (and never reaches the store).
var errDryRunPhase = errors.New("openwrt: a dry run reports no phase")

// initDir holds the init scripts of the services stopped when memory is
// short.
const initDir = "/etc/init.d"

// Check is the dry run of an upgrade (upgrader.Checker): it runs the
// read-only steps of an attempt on the device, as Upgrade would, and
// changes nothing: it uploads nothing, creates or writes no file (not even
// ChecksumFile), stops no service, drops no cache and never runs
// sysupgrade, not even with --test. It never calls the job's Report.Phase
// or Report.Progress; the lines it logs go to Report.Log, when there is a
// reporter.
//
// The checks run in the order of Upgrade's steps, each command made of
// quoted words (see command):
//
//   - upgrader.CheckReachable, upgrader.CheckHostKey: the credentials from
//     Config.CredentialsFunc, then the TCP connection and SSH login with the
//     host key verified as always;
//   - upgrader.CheckIdentity: "uci get openwisp.http.uuid" against the
//     device's ID (passed when Config.SkipIdentityCheck);
//   - upgrader.CheckOptions: the device's release (cat /etc/openwrt_release)
//     must have every sysupgrade option of the operation;
//   - upgrader.CheckBoard: the image's fwtool metadata must list the
//     device's board name (cat /tmp/sysinfo/board_name, else "ubus call
//     system board", else the host's record);
//   - upgrader.CheckCompat: on 21.02 and later, the image's compat_version
//     against the device's ("uci -q get system.@system[0].compat_version");
//   - upgrader.CheckInstalled: fails (status.ReasonAlreadyInstalled) when
//     "cat /etc/openwisp/firmware_checksum" gives the image's SHA-256, as
//     Upgrade decides; the Detail also says whether the device already runs
//     the build's release;
//   - upgrader.CheckMemory: "df -k" of the upload directory must hold the
//     image, and MemAvailable of "cat /proc/meminfo" (on old kernels
//     MemFree + Buffers + Cached - Shmem) must hold the image and
//     Config.MemoryMargin. When it does not, Upgrade would stop
//     Config.Services and bring the wireless down: Check stops nothing, it
//     lists the init scripts ("ls /etc/init.d") and passes the check with a
//     Detail naming what an upgrade would stop, or fails it
//     (status.ReasonInsufficientMemory) when there is nothing to stop. The
//     free memory is read before what an upgrade frees first (removing
//     /tmp/opkg-lists, dropping the caches), so the check errs on the short
//     side.
//
// A failed check does not stop the others, except when nothing after it can
// be trusted: no connection, another device (identity), a connection lost
// on the way. Check returns the checks it ran and a verdict classified like
// Upgrade's errors: the error of the first failed check (Upgrade would end
// with it), nil when an upgrade would go on to upload the image. An
// unreachable device is recoverable (status.ReasonConnectionFailed), a
// refused host key aborted (status.ReasonHostKeyMismatch), an image already
// installed not needed. When ctx ends Check returns ctx's error. The
// connection is closed before Check returns.
func (u *Upgrader) Check(ctx context.Context, job *upgrader.Job) ([]upgrader.Check, error) {
	if job == nil {
		return nil, upgrader.Aborted(status.ReasonUpgraderError, errors.New("openwrt: no job"))
	}
	j := *job
	j.Report = dryRunReporter{log: job.Report}
	a, err := u.newAttempt(&j)
	if err != nil {
		return nil, err
	}
	defer a.close()
	d := &dryRun{a: a}
	err = d.run(ctx)
	return d.checks, a.result(err)
}

// dryRunReporter passes the log lines of a dry run on, and keeps every
// other report away from the job's reporter.
type dryRunReporter struct{ log upgrader.Reporter }

func (r dryRunReporter) Phase(context.Context, status.Phase) error { return errDryRunPhase }
func (r dryRunReporter) Progress(context.Context, int) error       { return nil }
func (r dryRunReporter) Cancelled(ctx context.Context) error       { return ctx.Err() }

func (r dryRunReporter) Log(ctx context.Context, line string) error {
	if r.log == nil {
		return nil
	}
	return r.log.Log(ctx, line)
}

// dryRun collects the checks of one Check call.
type dryRun struct {
	a       *attempt
	checks  []upgrader.Check
	verdict error // the error of the first failed check
}

func (d *dryRun) pass(name, format string, args ...any) {
	d.checks = append(d.checks, upgrader.Check{Name: name, OK: true, Detail: fmt.Sprintf(format, args...)})
}

// fail records a failed check with the reason of err, the classified error
// Upgrade would return.
func (d *dryRun) fail(name string, err error) {
	_, reason := upgrader.Classify(err)
	detail := d.a.redact(strings.TrimPrefix(plain(err), prefix))
	d.checks = append(d.checks, upgrader.Check{Name: name, Detail: detail, Reason: reason})
	if d.verdict == nil {
		d.verdict = err
	}
}

// stop reports whether err ends the dry run: ctx ended, or the check
// failed. It records the failure.
func (d *dryRun) stop(ctx context.Context, name string, err error) bool {
	if err == nil {
		return false
	}
	if ctx.Err() == nil {
		d.fail(name, err)
	}
	return true
}

// end returns the verdict, or ctx's error when ctx ended.
func (d *dryRun) end(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.verdict
}

func (d *dryRun) run(ctx context.Context) error {
	a := d.a
	if err := a.prepare(); err != nil {
		if _, reason := upgrader.Classify(err); reason == status.ReasonInvalidOptions {
			d.fail(upgrader.CheckOptions, err)
		}
		return err
	}
	a.logf(ctx, "Dry run: checking the device without changing it")
	if !d.connect(ctx) {
		return d.end(ctx)
	}

	// Identity: a mismatch makes every later check about another device.
	if d.stop(ctx, upgrader.CheckIdentity, a.checkIdentity(ctx)) {
		return d.end(ctx)
	}
	if a.cfg.SkipIdentityCheck {
		d.pass(upgrader.CheckIdentity, "not checked (Config.SkipIdentityCheck)")
	} else {
		d.pass(upgrader.CheckIdentity, "%s matches the device's ID %s", uuidOption, a.job.Device.ID)
	}

	// What the device runs and supports (reads only).
	if err := a.learn(ctx); err != nil {
		return err
	}
	d.options(ctx)
	if !d.image(ctx) {
		return d.end(ctx)
	}
	if !d.installed(ctx) {
		return d.end(ctx)
	}
	d.memory(ctx)
	return d.end(ctx)
}

// connect runs the reachable and host-key checks; it reports whether the
// attempt is connected.
func (d *dryRun) connect(ctx context.Context) bool {
	a := d.a
	creds, err := a.credentials(ctx)
	if err != nil {
		d.stop(ctx, upgrader.CheckReachable, err)
		return false
	}
	addr := withPort(creds.Address)
	c, err := dialWith(ctx, creds, a.cfg.ConnectTimeout, a.cfg.ConnectTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		a.logf(ctx, "Connection failed: %v", plain(err))
		if _, reason := upgrader.Classify(err); reason == status.ReasonHostKeyMismatch {
			if creds.HostKeyCallback != nil { // the device answered, with another key
				d.pass(upgrader.CheckReachable, "%s answered", addr)
			}
			d.fail(upgrader.CheckHostKey, err)
			return false
		}
		d.fail(upgrader.CheckReachable, err)
		return false
	}
	a.c = c
	a.logf(ctx, "Connected to %s", c.addr)
	d.pass(upgrader.CheckReachable, "logged in to %s as %s", c.addr, creds.User)
	d.pass(upgrader.CheckHostKey, "the host key of %s is the expected one", c.addr)
	return true
}

// release names the device's release in details.
func (d *dryRun) release() string {
	if d.a.beforeDesc == "" {
		return "the device's release (unknown)"
	}
	return d.a.beforeDesc
}

// options checks that the device's release has the operation's options.
func (d *dryRun) options(ctx context.Context) {
	a := d.a
	if err := a.checkCapabilities(ctx); err != nil {
		d.fail(upgrader.CheckOptions, err)
		return
	}
	flags := a.opts.String()
	switch {
	case flags == "":
		d.pass(upgrader.CheckOptions, "no sysupgrade option")
	case !a.before.known():
		d.pass(upgrader.CheckOptions, "sysupgrade %s: %s is taken to have every option", flags, d.release())
	default:
		d.pass(upgrader.CheckOptions, "%s has sysupgrade %s", d.release(), flags)
	}
}

// image runs the board and compat-version checks on the image's metadata;
// it reports whether the dry run goes on.
func (d *dryRun) image(ctx context.Context) bool {
	a := d.a
	if err := a.checkImageBoard(ctx); err != nil {
		if ctx.Err() != nil {
			return false
		}
		d.fail(upgrader.CheckBoard, err)
		if a.meta == nil {
			return true // the metadata could not be read: nothing to compare
		}
	} else {
		switch {
		case a.meta == nil:
			d.pass(upgrader.CheckBoard, "the image has no fwtool metadata: only sysupgrade --test, after the upload, would check the board %q", a.board)
		case len(a.meta.Boards()) == 0:
			d.pass(upgrader.CheckBoard, "the image's metadata lists no board (the device's is %q)", a.board)
		default:
			d.pass(upgrader.CheckBoard, "the image's metadata lists the device's board %q", a.board)
		}
	}
	if a.meta == nil {
		d.pass(upgrader.CheckCompat, "the image has no fwtool metadata: only sysupgrade --test, after the upload, would compare compat_version")
		return true
	}
	device, image, err := a.checkImageCompat(ctx)
	switch {
	case ctx.Err() != nil:
		return false
	case err != nil:
		d.fail(upgrader.CheckCompat, err)
	case !a.caps.CompatCheck:
		d.pass(upgrader.CheckCompat, "%s does not check compat_version (21.02 and later do)", d.release())
	case device == image:
		d.pass(upgrader.CheckCompat, "compat_version %s of the image and the device", image)
	case a.opts.NoConfig:
		d.pass(upgrader.CheckCompat, "compat_version %s of the image, %s of the device: allowed by -n", image, device)
	default:
		d.pass(upgrader.CheckCompat, "compat_version %s of the image, %s of the device: allowed by %s", image, device, flagIgnoreMinorCompat)
	}
	return true
}

// installed checks ChecksumFile as Upgrade does; it reports whether the
// dry run goes on.
func (d *dryRun) installed(ctx context.Context) bool {
	a := d.a
	sum, found, err := a.readChecksumFile(ctx)
	if err != nil {
		return !d.stop(ctx, upgrader.CheckInstalled, transportError(ctx, "read "+ChecksumFile, err))
	}
	want := strings.ToLower(a.job.Image.SHA256)
	if found && sum == want {
		a.logf(ctx, "Already installed: the image's sha256 matches %s", ChecksumFile)
		d.fail(upgrader.CheckInstalled, alreadyInstalled(want))
		return true
	}
	record := "no " + ChecksumFile
	if found {
		record = ChecksumFile + " records another image"
	}
	wantRel, wantDesc, known := a.expectedRelease()
	switch {
	case known && runsExpected(a.beforeDesc, wantRel, wantDesc):
		d.pass(upgrader.CheckInstalled, "%s; the device already runs %q, the image's release, but an upgrade would flash it again", record, d.release())
	case known:
		d.pass(upgrader.CheckInstalled, "%s; the device runs %q, the image installs %q", record, d.release(), wantDesc)
	default:
		d.pass(upgrader.CheckInstalled, "%s; the device runs %q", record, d.release())
	}
	return true
}

// memory checks the room for the image as checkMemory does, without
// freeing anything.
func (d *dryRun) memory(ctx context.Context) {
	a := d.a
	room, roomKnown, err := a.checkUploadRoom(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		d.fail(upgrader.CheckMemory, err)
		return
	}
	free, field, ok, err := a.availableMemory(ctx)
	switch {
	case ctx.Err() != nil:
		return
	case err != nil:
		d.fail(upgrader.CheckMemory, err)
		return
	case !ok:
		d.pass(upgrader.CheckMemory, "the free memory cannot be read: an upgrade would skip this check")
		return
	}
	need := a.memoryNeeded()
	found := fmt.Sprintf("free memory %s (%s), the image needs %s with the margin", mib(free), field, mib(need))
	if roomKnown {
		found += fmt.Sprintf("; %s free in the upload directory", mib(room))
	}
	if free >= need {
		d.pass(upgrader.CheckMemory, "%s", found)
		return
	}
	stoppable, err := d.stoppable(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.fail(upgrader.CheckMemory, err)
		}
		return
	}
	if !a.cfg.KeepWireless {
		stoppable = append(stoppable, "the wireless")
	}
	if len(stoppable) == 0 {
		a.logf(ctx, "Not enough memory, and no service an upgrade would stop")
		d.fail(upgrader.CheckMemory, upgrader.Aborted(status.ReasonInsufficientMemory,
			fmt.Errorf("openwrt: %s, and an upgrade would have no service to stop (none of Config.Services is installed, the wireless is kept): it would abort unless removing %s and dropping the caches freed enough", found, opkgListsDir)))
		return
	}
	a.logf(ctx, "Not enough memory: an upgrade would stop %s (the dry run stops nothing)", strings.Join(stoppable, ", "))
	d.pass(upgrader.CheckMemory, "%s: an upgrade would stop %s to make room, then check again (services would be stopped; the dry run stopped nothing, so whether that frees enough is not known)",
		found, strings.Join(stoppable, ", "))
}

// stoppable returns the services of Config.Services whose init script the
// device has ("ls /etc/init.d"), in the order an upgrade stops them; all of
// them when the directory cannot be listed.
func (d *dryRun) stoppable(ctx context.Context) ([]string, error) {
	a := d.a
	if len(a.cfg.Services) == 0 {
		return nil, nil
	}
	out, err := a.exec(ctx, command("ls", initDir))
	var ce *CommandError
	switch {
	case errors.As(err, &ce):
		return slices.Clone(a.cfg.Services), nil
	case err != nil:
		return nil, transportError(ctx, "list "+initDir, err)
	}
	have := map[string]bool{}
	for _, name := range strings.Fields(out) {
		have[strings.TrimPrefix(name, initDir+"/")] = true
	}
	var svcs []string
	for _, svc := range a.cfg.Services {
		if have[svc] {
			svcs = append(svcs, svc)
		}
	}
	return svcs, nil
}
