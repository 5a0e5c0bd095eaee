package openwrt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// isFalseFlashError recognises the non-zero exit (status 246) of OpenWrt
// 22.03 and later although the flash goes on: sysupgrade hands over to
// procd with "ubus call system sysupgrade", procd stops ubusd before stage 2,
// and the ubus client prints
//
//	Command failed: ubus call system sysupgrade { "prefix": ..., "command": "/lib/upgrade/do_stage2", ... } (Connection failed)
//
// The JSON varies (-F adds "force": true, -p "save_partitions": 0, 25.12
// "add_provisioning"); the output must name the ubus call, do_stage2 and
// the lost connection.
func isFalseFlashError(output string) bool {
	return ubusSysupgradeLine(output, "do_stage2", "(Connection failed)")
}

// isProcdRefusal recognises procd refusing the hand-over: the same ubus
// call answered "(Not supported)". Nothing was flashed.
func isProcdRefusal(output string) bool {
	return ubusSysupgradeLine(output, "(Not supported)")
}

// ubusSysupgradeLine reports whether one line of output is the ubus
// client's failure of "ubus call system sysupgrade" (it prints its verdict
// on the line of the call) and holds every one of words: a file of the -v
// listing that happens to be named "(Not supported)" is not procd's answer.
func ubusSysupgradeLine(output string, words ...string) bool {
	for l := range strings.Lines(output) {
		if !strings.Contains(l, "Command failed: ubus call system sysupgrade") {
			continue
		}
		all := true
		for _, w := range words {
			all = all && strings.Contains(l, w)
		}
		if all {
			return true
		}
	}
	return false
}

// flashCommand is the sysupgrade command line: -v, the option flags in
// their fixed order, the image path.
func (a *attempt) flashCommand() string {
	args := append([]string{a.cfg.UpgradeCommand, "-v"}, a.opts.Flags()...)
	return command(append(args, a.remotePath)...)
}

// flashSendTries is how many times the flash command is sent when it
// could not start (the session could not be opened).
const flashSendTries = 3

// flash runs sysupgrade. The flash was decided (the move into flashing is
// recorded), so the command is sent even when ctx ends meanwhile. Its
// output goes to the operation's log line by line as the device prints it
// (runLogged). The session dropping or timing out is expected, and so is
// the 22.03+ exit 246 through ubus. A real non-zero exit, procd's refusal,
// or a command that could never be started leaves the device unflashed:
// the stopped services are started again, the image removed, and no reboot
// waited for.
func (a *attempt) flash(ctx context.Context) error {
	sctx := context.WithoutCancel(ctx) // the decision is made
	a.progress(ctx, status.ProgressFlashing)
	cmd := a.flashCommand()
	a.logf(ctx, "Upgrade operation in progress: %s", cmd)
	var out, errOut string
	var err error
	for try := 1; try <= flashSendTries; try++ {
		if try > 1 && errors.Is(context.Cause(ctx), upgrader.ErrLeaseLost) {
			// The claim is gone: another engine may be verifying this
			// operation by now, and must not find the device flashed
			// behind its back. Leave the device alone (no undo either).
			a.logf(ctx, "The claim on the operation was lost before the flash command could be sent again: the device was not flashed")
			return fmt.Errorf("openwrt: the flash command was not sent again: %w", upgrader.ErrLeaseLost)
		}
		if a.c == nil {
			if a.c, err = a.connect(sctx); err != nil {
				a.logf(ctx, "Cannot reconnect to send the flash command: %v", plain(err))
				_ = sleep(sctx, time.Second)
				continue
			}
		}
		a.c.detach() // the attempt ending must not reset the connection under sysupgrade
		out, errOut, err = a.runLogged(sctx, a.cfg.UpgradeTimeout, cmd)
		if !errors.Is(err, errNotStarted) {
			break
		}
		a.logf(ctx, "The flash command could not be started (try %d of %d): %v", try, flashSendTries, plain(err))
		a.close()
	}
	// The verdict is judged on the combined output and on standard error
	// alone, where sysupgrade and the ubus client print it from 19.07: a
	// long -v listing on standard output can push it out of the combined
	// capture.
	verdict := out + "\n" + errOut
	var ce *CommandError
	switch {
	case err == nil:
		a.logf(ctx, "sysupgrade exited normally, the device is rebooting")
	case a.c == nil || errors.Is(err, errNotStarted):
		a.undo(sctx)
		return upgrader.Failed(status.ReasonFlashFailed, fmt.Errorf("openwrt: the flash command could not be sent, the device was not flashed: %w", inner(err)))
	case errors.Is(err, errCommandTimeout):
		a.logf(ctx, "No answer from sysupgrade after %s: expected while the device flashes", a.cfg.UpgradeTimeout)
	case errors.Is(err, errSessionLost):
		a.logf(ctx, "SSH connection closed by the device: expected while it flashes")
	case errors.As(err, &ce) && isProcdRefusal(verdict):
		a.undo(sctx)
		return upgrader.Failed(status.ReasonFlashFailed, describe(err,
			"openwrt: procd refused the flash (Not supported), the device was not flashed: sysupgrade exited with status %d", ce.ExitStatus))
	case errors.As(err, &ce) && isFalseFlashError(verdict):
		a.logf(ctx, "sysupgrade exited %d through ubus (OpenWrt 22.03 and later): expected, the flash goes on", ce.ExitStatus)
	case errors.As(err, &ce):
		a.undo(sctx)
		return upgrader.Failed(status.ReasonFlashFailed, describe(err,
			"openwrt: sysupgrade exited with status %d, the device was not flashed: %s", ce.ExitStatus, lastLine(cmp.Or(strings.TrimSpace(errOut), out))))
	default:
		a.logf(ctx, "sysupgrade ended with %v: expected while the device flashes", plain(err))
	}
	a.close()
	return nil
}

// afterFlash waits for the device to come back, proves it rebooted on the
// new firmware and records the image's checksum.
func (a *attempt) afterFlash(ctx context.Context, oldBootID string) error {
	if err := a.job.Report.Phase(ctx, status.PhaseRebooting); err != nil {
		a.log.Warn("openwrt: cannot record the rebooting phase", "error", err)
	}
	a.logf(ctx, "Waiting %s for the device to reboot before reconnecting", a.cfg.ReconnectDelay)
	if err := sleep(ctx, a.cfg.ReconnectDelay); err != nil {
		return err
	}
	err := a.reconnect(ctx, func(ctx context.Context) (bool, error) {
		bootID, err := a.readBootID(ctx)
		if err != nil {
			return false, err
		}
		if bootID == oldBootID {
			a.logf(ctx, "The device has not rebooted yet (same boot id)")
			return false, upgrader.Failed(status.ReasonOldFirmwareAfterReboot,
				errors.New("openwrt: the device did not reboot after the flash (same boot id)"))
		}
		// It rebooted: a release other than the build's is final.
		return a.proveRelease(ctx, true)
	})
	if err != nil {
		return err
	}
	a.succeeded(ctx, a.proof+" (boot id changed)")
	return nil
}

// reconnectLogEvery is how often a reconnection that keeps failing logs
// where it is (the first failure is always logged).
const reconnectLogEvery = 30 * time.Second

// reconnect connects again and again, for ReconnectWindow (and at most
// ReconnectMaxRetries times when that is set), asking for the credentials
// each time, and calls check on every connection it gets. check returns
// done=true to stop (with its error as the result); done=false with an
// error or not means "try again later". When the window passes, the result
// is the last check's old-firmware verdict if the device answered last, and
// failed, unreachable after flash, otherwise.
func (a *attempt) reconnect(ctx context.Context, check func(context.Context) (bool, error)) error {
	var lastErr error
	start := time.Now()
	deadline := start.Add(a.cfg.ReconnectWindow)
	var lastFail, lastConn time.Time
	every := func(last *time.Time) bool { // the first time, then once every reconnectLogEvery
		if last.IsZero() || time.Since(*last) >= reconnectLogEvery {
			*last = time.Now()
			return true
		}
		return false
	}
	attempts := 0
	wait := time.Duration(0)
	for {
		if a.cfg.ReconnectMaxRetries > 0 && attempts >= a.cfg.ReconnectMaxRetries {
			break
		}
		if attempts > 0 {
			if time.Now().Add(wait).After(deadline) {
				break
			}
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		}
		attempts++
		wait = a.cfg.ReconnectRetryDelay
		c, err := a.connectWith(ctx, a.cfg.ReconnectDialTimeout)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lastErr = inner(err)
			if every(&lastFail) {
				a.logf(ctx, "Device not reachable yet (%d attempts in %s): %v", attempts, time.Since(start).Round(time.Second), prefixOnce(lastErr.Error()))
			}
			continue
		}
		a.c = c
		if !a.verifying {
			a.verifying = true
			if err := a.job.Report.Phase(ctx, status.PhaseVerifying); err != nil {
				a.log.Warn("openwrt: cannot record the verifying phase", "error", err)
			}
			a.progress(ctx, status.ProgressReconnected)
		}
		// A device that answers without proving anything is logged the
		// first time and then every reconnectLogEvery; the lines of a
		// connection that decides are always kept.
		quiet := !every(&lastConn)
		a.quiet, a.held = quiet, nil
		a.logf(ctx, "Connected to %s (attempt %d, %s after the start of the wait)", c.addr, attempts, time.Since(start).Round(time.Millisecond))
		err = a.checkSameDevice(ctx)
		done := false
		if err == nil {
			done, err = check(ctx)
		}
		held := a.held
		a.quiet, a.held = false, nil
		if done {
			for _, l := range held {
				a.logf(ctx, "%s", l)
			}
			a.close()
			return err
		}
		a.close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			lastErr = err
			if !isStale(err) && !quiet {
				a.logf(ctx, "Verification interrupted: %v", plain(err))
			}
		}
		// The device answered but proved nothing yet (still on its old
		// firmware, or another device at the address): the longer that
		// lasts, the less often it is logged in to (a tenth of the time
		// waited so far, at most answeredRetryDelay).
		wait = max(a.cfg.ReconnectRetryDelay, min(time.Since(start)/10, answeredRetryDelay))
	}
	if isStale(lastErr) {
		// The device answered last, but never proved the new firmware.
		return lastErr
	}
	if lastErr == nil {
		lastErr = errors.New("no attempt made")
	}
	return upgrader.Failed(status.ReasonUnreachableAfterFlash,
		fmt.Errorf("openwrt: device %s not reachable after the flash (%d attempts in %s): %w",
			deviceLabel(a.job.Device), attempts, time.Since(start).Round(time.Second), lastErr))
}

// answeredRetryDelay is the longest wait before connecting again to a
// device that answered without proving the new firmware.
const answeredRetryDelay = 5 * time.Second

// proveRelease is the last check of a reconnection: the device must run the
// expected release (the build's OS identifier, else the version in the
// image's metadata); when neither names one, it must at least run another
// release than before the flash. Only then is the image's checksum recorded
// on the device: a device on its old firmware never gets it (it would make
// the next upgrade look "already installed"). What it proved goes to
// a.proof. A failed proof is an old-firmware verdict, final (done) or not
// as the caller says.
func (a *attempt) proveRelease(ctx context.Context, final bool) (bool, error) {
	rel, err := a.readRelease(ctx)
	if err != nil {
		return false, err
	}
	want, wantDesc, known := a.expectedRelease()
	switch {
	case known && !runsExpected(rel, want, wantDesc):
		a.logf(ctx, "The device runs %q, not %q", rel, wantDesc)
		return final, upgrader.Failed(status.ReasonOldFirmwareAfterReboot,
			fmt.Errorf("openwrt: the device runs %q instead of %q", rel, wantDesc))
	case known:
		a.proof = fmt.Sprintf("the device runs %q", rel)
	case a.beforeDesc == "":
		a.logf(ctx, "Neither the build nor the image's metadata names the new release, and the release before the flash is unknown: cannot prove the upgrade")
		return final, upgrader.Failed(status.ReasonOldFirmwareAfterReboot,
			fmt.Errorf("openwrt: cannot prove the device runs the new firmware (it runs %q; nothing names the expected release)", rel))
	case strings.TrimSpace(rel) == strings.TrimSpace(a.beforeDesc):
		a.logf(ctx, "The device still runs %q, its release before the flash", rel)
		return final, upgrader.Failed(status.ReasonOldFirmwareAfterReboot,
			fmt.Errorf("openwrt: the device still runs %q, the release it ran before the flash", rel))
	default:
		a.proof = fmt.Sprintf("the device runs %q, not %q as before the flash", rel, a.beforeDesc)
	}
	if err := a.writeChecksum(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// isStale reports a verdict of reconnect's check: the device answered but
// is not (yet) on the new firmware.
func isStale(err error) bool {
	var ue *upgrader.Error
	return errors.As(err, &ue) && ue.Reason == status.ReasonOldFirmwareAfterReboot
}

// checkSameDevice guards the reconnection against reaching another device
// at the address: when the identity check is on, the device must report
// the operation's UUID. Only after a flash with -n (the configuration not
// kept) may it report none.
func (a *attempt) checkSameDevice(ctx context.Context) error {
	if a.cfg.SkipIdentityCheck {
		return nil
	}
	got, err := a.readUUID(ctx)
	var ce *CommandError
	switch {
	case (errors.As(err, &ce) || (err == nil && got == "")) && a.opts.NoConfig:
		a.logf(ctx, "The device reports no %s (flashed with -n: the configuration was not kept): identity not checked", uuidOption)
		return nil
	case errors.As(err, &ce) || (err == nil && got == ""):
		a.logf(ctx, "A device without %s answers at this address, although the configuration was kept: not the operation's device", uuidOption)
		return fmt.Errorf("openwrt: a device without %s answers at the address", uuidOption)
	case err != nil:
		return err
	case normalizeUUID(got) != normalizeUUID(a.job.Device.ID):
		a.logf(ctx, "Another device answers at this address (UUID %q)", got)
		return fmt.Errorf("openwrt: another device (UUID %q) answers at the address", got)
	}
	return nil
}

// Verify proves, without flashing, whether an earlier flash of the job's
// image succeeded: it connects (with the reconnection attempts), then
// accepts the device when ChecksumFile holds the image's SHA-256, or when
// the device runs the expected release (the build's OS identifier, else the
// version in the image's metadata; the checksum is then written). Otherwise it returns failed with
// status.ReasonOldFirmwareAfterReboot, or status.ReasonUnreachableAfterFlash
// when the device cannot be reached.
func (u *Upgrader) Verify(ctx context.Context, job *upgrader.Job) error {
	a, err := u.newAttempt(job)
	if err != nil {
		return err
	}
	defer a.close()
	a.flashing = true // never clean up: nothing was prepared
	a.verifying = true
	if err := a.job.Report.Phase(ctx, status.PhaseVerifying); err != nil {
		a.log.Warn("openwrt: cannot record the verifying phase", "error", err)
	}
	a.logf(ctx, "Verifying the outcome of an earlier flash")
	if opts, err := ParseOptions(job.Operation.Options); err == nil {
		a.opts = opts // -n decides whether the device may come back without its UUID
	}
	if md, err := a.imageMetadata(ctx); err == nil {
		a.meta = md // the expected release, when the build has none
	}
	// A device on the old firmware may still be about to flash or reboot:
	// that verdict is only final when the reconnection window has passed.
	err = a.reconnect(ctx, func(ctx context.Context) (bool, error) {
		sum, found, err := a.readChecksumFile(ctx)
		if err != nil {
			return false, err
		}
		want := strings.ToLower(job.Image.SHA256)
		if found && sum == want {
			a.proof = fmt.Sprintf("the device runs the image (its sha256 is in %s)", ChecksumFile)
			return true, nil
		}
		if _, _, known := a.expectedRelease(); !known {
			return true, upgrader.Failed(status.ReasonOldFirmwareAfterReboot,
				errors.New("openwrt: the device has no record of the image, and neither the build nor the image's metadata names the release to check"))
		}
		// The device may not have flashed or rebooted yet: not final.
		return a.proveRelease(ctx, false)
	})
	if err != nil {
		return a.result(err)
	}
	a.succeeded(ctx, a.proof)
	return nil
}
