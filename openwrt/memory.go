package openwrt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

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
		if err != nil {
			continue
		}
		if len(f) >= 3 && strings.EqualFold(f[2], "kB") {
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
	if err != nil || n < 0 {
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

// checkMemory frees what can be freed cheaply, then stops services if the
// image still does not fit.
func (a *attempt) checkMemory(ctx context.Context) error {
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
// wireless unless Config.KeepWireless. Each one stopped is recorded, to be started again by cleanup.
func (a *attempt) stopServices(ctx context.Context) error {
	for _, svc := range a.cfg.Services {
		_, err := a.exec(ctx, command(initScript(svc), "stop"))
		var ce *CommandError
		switch {
		case err == nil:
			a.stopped = append(a.stopped, svc)
			a.logf(ctx, "Stopped service %s", svc)
		case errors.As(err, &ce) && ce.ExitStatus == 127:
			// Not installed.
		case errors.As(err, &ce):
			a.logf(ctx, "Could not stop service %s: %v", svc, plain(err))
			a.stopped = append(a.stopped, svc) // it may be half stopped: start it again later
		default:
			return transportError(ctx, "stop service "+svc, err)
		}
	}
	if a.cfg.KeepWireless {
		return nil // a device managed over its wireless uplink must not lose it
	}
	_, err := a.exec(ctx, command("wifi", "down"))
	var ce *CommandError
	switch {
	case err == nil:
		a.wifiDown = true
		a.logf(ctx, "Wireless brought down")
	case errors.As(err, &ce):
		a.logf(ctx, "Could not bring the wireless down: %v", plain(err))
	default:
		return transportError(ctx, "wifi down", err)
	}
	return nil
}

// cleanupCommands are what undoes an attempt that stopped before flashing:
// remove the uploaded image, start the stopped services, bring the wireless
// up.
func (a *attempt) cleanupCommands() []string {
	var cmds []string
	if a.uploaded {
		cmds = append(cmds, command("rm", "-f", a.remotePath))
	}
	for _, svc := range a.stopped {
		cmds = append(cmds, command(initScript(svc), "start"))
	}
	if a.wifiDown {
		cmds = append(cmds, command("wifi", "up"))
	}
	return cmds
}

// cleanup runs when Upgrade returns. Unless the flash was decided, it
// undoes what the attempt changed on the device, on the attempt's
// connection or, when that one is gone (ctx ended, connection dropped), on
// a new one made with a fresh short context.
//
// After the engine lost its claim on the operation (upgrader.ErrLeaseLost
// is the context's cause) it undoes nothing: another engine may be working
// on the device now, and removing its upload or starting services under it
// would break that attempt. The next attempt or the flash's reboot puts the
// device right.
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

// undo runs cleanupCommands and forgets what it undid.
func (a *attempt) undo(ctx context.Context) {
	cmds := a.cleanupCommands()
	if len(cmds) == 0 {
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
	for try := 0; try < 2; try++ {
		if c == nil {
			var err error
			if c, err = a.connect(cctx); err != nil {
				a.logf(ctx, "Cannot reconnect to start the stopped services again: %v", plain(err))
				a.log.Error("openwrt: services left stopped on the device", "services", a.stopped, "error", err)
				return
			}
			defer c.Close()
		}
		done := 0
		for _, cmd := range cmds {
			_, err := c.run(cctx, a.cfg.CommandTimeout, cmd)
			var ce *CommandError
			if err != nil && !errors.As(err, &ce) {
				break // the connection is broken: try again on a new one
			}
			if err != nil {
				a.logf(ctx, "Cleanup command failed: %v", plain(err))
			}
			done++
		}
		if done == len(cmds) {
			if len(a.stopped) > 0 || a.wifiDown {
				a.logf(ctx, "Stopped services started again")
			}
			a.stopped, a.wifiDown, a.uploaded = nil, false, false
			return
		}
		cmds = cmds[done:]
		c = nil
		_ = sleep(cctx, 100*time.Millisecond)
	}
	a.logf(ctx, "Could not start the stopped services again")
}
