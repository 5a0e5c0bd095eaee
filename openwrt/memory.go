package openwrt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// maxMeminfoBytes bounds the values parseMeminfo and parseDfAvailable
// believe (an exbibyte): larger ones, or negative ones, are not a device's
// memory, and would overflow once added up.
const maxMeminfoBytes = 1 << 60

// parseMeminfo returns MemAvailable from /proc/meminfo in bytes. Kernels
// before 3.14 (OpenWrt 12.09 and 14.07) have no MemAvailable: the estimate
// is then MemFree + Buffers + Cached - Shmem (tmpfs pages, /tmp among them,
// count as cached but cannot be freed), or MemFree alone when those lines
// are missing.
func parseMeminfo(s string) (int64, string, bool) {
	vals := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || n < 0 || n > maxMeminfoBytes {
			continue
		}
		if len(f) >= 3 && strings.EqualFold(f[2], "kB") {
			if n > maxMeminfoBytes/1024 {
				continue
			}
			n *= 1024
		}
		vals[strings.TrimSuffix(f[0], ":")] = n
	}
	if n, ok := vals["MemAvailable"]; ok {
		return n, "MemAvailable", true
	}
	free, ok := vals["MemFree"]
	if !ok {
		return 0, "", false
	}
	buffers, okB := vals["Buffers"]
	cached, okC := vals["Cached"]
	if !okB || !okC {
		return free, "MemFree", true
	}
	est := free + buffers + cached - vals["Shmem"]
	return max(est, free), "MemFree+Buffers+Cached-Shmem", true
}

// parseDfAvailable returns the available bytes of the file system of a
// "df -k PATH" output (busybox or coreutils; a long file system name may
// wrap the data line).
func parseDfAvailable(s string) (int64, bool) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) < 2 {
		return 0, false
	}
	f := strings.Fields(strings.Join(lines[1:], " "))
	// Filesystem 1K-blocks Used Available Use% Mounted-on
	if len(f) < 6 {
		return 0, false
	}
	n, err := strconv.ParseInt(f[len(f)-3], 10, 64)
	if err != nil || n < 0 || n > maxMeminfoBytes/1024 {
		return 0, false
	}
	return n * 1024, true
}

// tmpAvailable returns the free space of the upload directory's file
// system (/tmp is a tmpfs capped at half the RAM), or ok=false when the
// device cannot tell.
func (a *attempt) tmpAvailable(ctx context.Context) (int64, bool) {
	dir := a.remotePath[:strings.LastIndex(a.remotePath, "/")+1]
	out, err := a.exec(ctx, command("df", "-k", dir))
	if err != nil {
		return 0, false
	}
	return parseDfAvailable(out)
}

func (a *attempt) freeMemory(ctx context.Context) (int64, string, error) {
	out, err := a.exec(ctx, command("cat", meminfoFile))
	if err != nil {
		return 0, "", err
	}
	n, field, ok := parseMeminfo(out)
	if !ok {
		return 0, "", fmt.Errorf("openwrt: neither MemAvailable nor MemFree in %s", meminfoFile)
	}
	return n, field, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// memoryNeeded is the free memory the image needs: its size and
// Config.MemoryMargin.
func (a *attempt) memoryNeeded() int64 { return a.job.Image.Size + a.cfg.MemoryMargin }

// checkUploadRoom refuses an image larger than the free space of the upload
// directory's file system. room and known are that free space and whether
// the device told it (when it does not, nothing is refused).
func (a *attempt) checkUploadRoom(ctx context.Context) (room int64, known bool, err error) {
	room, known = a.tmpAvailable(ctx)
	if known && room < a.job.Image.Size {
		a.logf(ctx, "%s has %s free, the image needs %s: it cannot be uploaded", a.remotePath, mib(room), mib(a.job.Image.Size))
		return room, known, upgrader.Aborted(status.ReasonInsufficientMemory,
			fmt.Errorf("openwrt: the upload directory has %s free, the image is %s", mib(room), mib(a.job.Image.Size)))
	}
	return room, known, nil
}

// availableMemory reads the free memory (see parseMeminfo) and logs it. ok
// is false, with a nil error, when /proc/meminfo is unreadable or
// unexpected: the memory check is then skipped, sysupgrade's own checks
// still protect the device. A broken connection is a transport error.
func (a *attempt) availableMemory(ctx context.Context) (free int64, field string, ok bool, err error) {
	free, field, err = a.freeMemory(ctx)
	switch {
	case err == nil:
	case ctx.Err() != nil || errors.Is(err, errSessionLost) || errors.Is(err, errCommandTimeout):
		return 0, "", false, transportError(ctx, "read the free memory", err)
	default:
		a.logf(ctx, "Cannot read the free memory (%v); skipping the memory check", plain(err))
		return 0, "", false, nil
	}
	a.logf(ctx, "Free memory (%s): %s; needed: %s (image) + %s (margin)", field, mib(free), mib(a.job.Image.Size), mib(a.cfg.MemoryMargin))
	return free, field, true, nil
}

// checkMemory makes room for the image (makeRoom), then, before the upload
// that follows, records the image's file, to be removed if the attempt ends
// before flashing (see undoRecord).
func (a *attempt) checkMemory(ctx context.Context) error {
	if err := a.makeRoom(ctx); err != nil {
		return err
	}
	if err := a.recordUndo(ctx, undoRecord{Image: a.remotePath}); err != nil {
		return err
	}
	a.uploaded = true // from now on the image may be there: cleanup removes it
	return nil
}

// makeRoom frees what can be freed cheaply, then stops services if the
// image still does not fit.
func (a *attempt) makeRoom(ctx context.Context) error {
	if _, err := a.exec(ctx, command("rm", "-rf", opkgListsDir)); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.logf(ctx, "Could not remove %s: %v", opkgListsDir, plain(err))
	}
	if _, err := a.exec(ctx, command("sync")+" && "+redirect(command("echo", "3"), dropCachesFile)); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.logf(ctx, "Could not drop the caches: %v", plain(err))
	}
	need := a.memoryNeeded()
	if _, _, err := a.checkUploadRoom(ctx); err != nil {
		return err
	}
	free, field, ok, err := a.availableMemory(ctx)
	if err != nil || !ok {
		return err
	}
	if free >= need {
		return nil
	}
	a.logf(ctx, "Not enough memory, stopping non critical services")
	if err := a.stopServices(ctx); err != nil {
		return err
	}
	// What the stopped services leave behind in the page cache goes too.
	if _, err := a.exec(ctx, command("sync")+" && "+redirect(command("echo", "3"), dropCachesFile)); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if free, field, err = a.freeMemory(ctx); err != nil {
		return transportError(ctx, "read the free memory", err)
	}
	a.logf(ctx, "Free memory after stopping services (%s): %s", field, mib(free))
	if free < need {
		a.logf(ctx, "There is still not enough memory to upload the image, aborting")
		return upgrader.Aborted(status.ReasonInsufficientMemory,
			fmt.Errorf("openwrt: the image needs %s (with margin) but the device has %s free after stopping services", mib(need), mib(free)))
	}
	return nil
}

func initScript(svc string) string { return "/etc/init.d/" + svc }

// stopServices stops the configured services the device has, then the
// wireless unless Config.KeepWireless. Each change is recorded with the
// operation before it is made (undoRecord), and each service counts as
// stopped, to be started again by cleanup, from the moment its stop command
// is sent: a command cut off (a cancel, a deadline, a command timeout, a
// dropped session) may have run on the device. Only a device that says the
// service does not exist (exit 127) takes it off the list.
func (a *attempt) stopServices(ctx context.Context) error {
	if err := a.recordUndo(ctx, undoRecord{Services: a.cfg.Services}); err != nil {
		return err
	}
	for _, svc := range a.cfg.Services {
		a.stopped = append(a.stopped, svc)
		_, err := a.exec(ctx, command(initScript(svc), "stop"))
		var ce *CommandError
		switch {
		case err == nil:
			a.logf(ctx, "Stopped service %s", svc)
		case errors.As(err, &ce) && ce.ExitStatus == 127:
			a.stopped = a.stopped[:len(a.stopped)-1] // not installed
		case errors.As(err, &ce):
			a.logf(ctx, "Could not stop service %s: %v", svc, plain(err)) // it may be half stopped: started again later
		default:
			return transportError(ctx, "stop service "+svc, err)
		}
	}
	if a.cfg.KeepWireless {
		return nil // a device managed over its wireless uplink must not lose it
	}
	if err := a.recordUndo(ctx, undoRecord{Wifi: true}); err != nil {
		return err
	}
	a.wifiDown = true
	_, err := a.exec(ctx, command("wifi", "down"))
	var ce *CommandError
	switch {
	case err == nil:
		a.logf(ctx, "Wireless brought down")
	case errors.As(err, &ce) && ce.ExitStatus == 127:
		a.wifiDown = false // no wifi command: no wireless to bring down
	case errors.As(err, &ce):
		a.logf(ctx, "Could not bring the wireless down: %v", plain(err))
	default:
		return transportError(ctx, "wifi down", err)
	}
	return nil
}

// ownUndo is what this attempt changed and has not undone.
func (a *attempt) ownUndo() undoRecord {
	r := undoRecord{Services: slices.Clone(a.stopped), Wifi: a.wifiDown}
	if a.uploaded {
		r.Image = a.remotePath
	}
	return r
}

// cleanupCommands are what undoes an attempt that stopped before flashing:
// remove the uploaded image, start the stopped services, bring the wireless
// up. What earlier attempts of the operation left (upgrader.Job.Undo: an
// engine that died, a cleanup that could not reach the device) is undone
// with it, once this attempt reached the device.
func (a *attempt) cleanupCommands() []string {
	r := a.ownUndo()
	if a.c != nil {
		adopted, _ := parseUndo(a.job.Undo, a.remotePath, a.cfg.Services, a.cfg.KeepWireless)
		r = r.merge(adopted)
	}
	return r.commands()
}

// cleanup runs when Upgrade returns. Unless the flash was decided, it
// undoes what the attempt changed on the device, and what earlier attempts
// left (see cleanupCommands), on the attempt's connection or, when that one
// is gone (ctx ended, connection dropped), on a new one made with a fresh
// short context.
//
// After the engine lost its claim on the operation (upgrader.ErrLeaseLost
// is the context's cause) it undoes nothing: another engine may be working
// on the device now, and removing its upload or starting services under it
// would break that attempt. The engine that took over undoes it (the
// attempt's undo records come to it in upgrader.Job.Undo), or the flash's
// reboot puts the device right.
func (a *attempt) cleanup(ctx context.Context) {
	if a.flashing {
		return
	}
	if errors.Is(context.Cause(ctx), upgrader.ErrLeaseLost) {
		a.log.Warn("openwrt: the claim was lost; cleanup left to the engine that took over", "services", a.stopped)
		return
	}
	a.undo(ctx)
}

// undo runs cleanupCommands and forgets what it undid; it then tells the
// engine that nothing recorded is left to undo. It tries new connections
// until its budget (ConnectTimeout plus twice CommandTimeout) is spent,
// while the attempt's context lives, or ended by a cancel or its deadline.
// Once it ends for another reason (the engine stops, the caller gave up)
// no new connection is tried: the operation is then resumed, or ended, by
// an engine that undoes what is left (the undo records).
func (a *attempt) undo(ctx context.Context) {
	cmds := a.cleanupCommands()
	if a.c != nil && len(a.job.Undo) > 0 {
		_ = a.adopted(ctx) // logs the records set aside
	}
	if len(cmds) == 0 {
		if a.c != nil && len(a.job.Undo) > 0 {
			a.undone(ctx) // earlier records asked for nothing this package would do
		}
		return
	}
	// A context of its own: a cancel or a deadline arriving while the
	// cleanup runs must not leave the services half started.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ConnectTimeout+2*a.cfg.CommandTimeout)
	defer cancel()
	c := a.c
	if ctx.Err() != nil {
		c = nil
	}
	keepTrying := func() bool {
		cause := context.Cause(ctx)
		return ctx.Err() == nil || errors.Is(cause, upgrader.ErrCancelled) || errors.Is(cause, context.DeadlineExceeded)
	}
	if err := a.runUndo(cctx, ctx, c, cmds, keepTrying); err != nil {
		a.logf(ctx, "Could not start the stopped services again: %v", plain(err))
		a.log.Error("openwrt: services left stopped on the device", "services", a.stopped, "error", err)
		return
	}
	if len(a.stopped) > 0 || a.wifiDown {
		a.logf(ctx, "Stopped services started again")
	}
	a.stopped, a.wifiDown, a.uploaded = nil, false, false
	a.undone(ctx)
}
