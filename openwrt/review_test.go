package openwrt

// Regression tests for defects a review of the release-aware upgrader
// found (each failed before its fix; the comments describe the defect).

// Review of the release-aware upgrader (issue 9): each test proves one
// defect and fails on the code as reviewed.

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Builds with local commits on top of an OpenWrt branch (every custom or
// vendor build: scripts/getver.sh writes "r<upstream>+<local>-<hash>")
// carry revisions like "r23809+15-aaaaaaaaaa". ParseRelease does not see
// them as revisions, so Same compares versions only: two different builds
// of 23.05.3 are "the same release".
func TestRevisionWithLocalCommitsIsCompared(t *testing.T) {
	t.Parallel()
	old, ok := ParseRelease("OpenWrt 23.05.3 r23809+15-aaaaaaaaaa")
	require.True(t, ok)
	nw, ok := ParseRelease("OpenWrt 23.05.3 r23809+20-bbbbbbbbbb")
	require.True(t, ok)
	require.Equal(t, "r23809+15-aaaaaaaaaa", old.Revision, "the revision of a build with local commits")
	require.False(t, old.Same(nw), "two builds with different revisions are different releases")
}

// End to end: a device running a custom 23.05.3 build is flashed with the
// next custom build, reboots, and comes back on its OLD build (dual-boot
// fallback, failed flash). The upgrader reports success and writes the
// image's checksum on the device, so the next attempt says "already
// installed".
func TestOldCustomBuildAfterRebootIsNotSuccess(t *testing.T) {
	t.Parallel()
	const before = "OpenWrt 23.05.3 r23809+15-aaaaaaaaaa"
	const after = "OpenWrt 23.05.3 r23809+20-bbbbbbbbbb"
	img := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: after, Size: testImgSize}
	b := setup(t, setupOpts{
		sim: openwrttest.Config{Release: before, Faults: openwrttest.Faults{OldFirmwareAfterReboot: true}},
		img: &img,
	})
	err := b.upgrade(t)
	require.Equal(t, before, b.dev.Release(), "precondition: the device came back on its old build")
	require.Equal(t, 1, b.dev.Flashed())
	requireKind(t, err, upgrader.KindFailed, status.ReasonOldFirmwareAfterReboot)
}

// Probe on a device without /tmp/sysinfo (most 12.09 targets, x86, ...):
// run returns the combined output of a failed command, so "cat
// /tmp/sysinfo/model" yields busybox's error message, which Probe takes as
// the model and board name; the ubus and /proc/cpuinfo fallbacks never run.
// Hosts use Probe to choose the image by board name.
func TestProbeWithoutSysinfoIgnoresErrorText(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{sim: openwrttest.Config{Release: openwrttest.ReleaseDescription("12.09")}})
	require.False(t, b.dev.SysInfo(), "precondition: no /tmp/sysinfo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := b.u.Probe(ctx, store.Device{ID: testUUID})
	require.NoError(t, err)
	require.NotContains(t, info.BoardName, "can't open", "board name %q", info.BoardName)
	require.Equal(t, openwrttest.DefaultModel, info.Model, "the model of /proc/cpuinfo")
}

// Verify (and afterFlash while the device still has its old boot id) logs
// every successful reconnection: "Connected to ..." plus the verdict, at
// every ReconnectRetryDelay (250 ms by default) for the whole
// ReconnectWindow (15 minutes by default). A device that is up on its old
// firmware writes thousands of lines into the operation log, while a
// device that is down is logged once every 30 s.
func TestReconnectDoesNotSpamTheLog(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{config: func(c *Config) {
		c.ReconnectRetryDelay = 0 // the default, 250 ms
		c.ReconnectMaxRetries = 0 // the default: the window alone
		c.ReconnectWindow = 3 * time.Second
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.u.Verify(ctx, b.job)
	requireKind(t, err, upgrader.KindFailed, status.ReasonOldFirmwareAfterReboot)
	logs := b.rep.Logs()
	n := strings.Count(logs, "Connected to ")
	t.Logf("%d log lines, %d \"Connected to\" in a 3 s window", len(strings.Split(logs, "\n")), n)
	// Failures are logged at most every reconnectLogEvery (30 s); a 3 s
	// window deserves a couple of lines, not one per attempt.
	require.LessOrEqual(t, n, 2, "one \"Connected to\" line per attempt: %d in 3 s, ~3600 in the default window", n)
}

// The final "not reachable" error counts attempts as i-1 even when the
// loop ended after attempt i failed (the deadline check after a failed
// connect): one attempt made, "0 attempts" reported.
func TestUnreachableAttemptCount(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{config: func(c *Config) {
		c.ReconnectMaxRetries = 0
		c.ReconnectWindow = time.Nanosecond
	}})
	a, err := b.u.newAttempt(b.job)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing answers: connections refused
	attempts := 0
	a.cfg.CredentialsFunc = func(ctx context.Context, d store.Device) (Credentials, error) {
		attempts++
		return Credentials{Address: dead, User: "root", Password: "x", HostKeyCallback: PinnedKey(b.dev.HostKey())}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = a.reconnect(ctx, func(context.Context) (bool, error) { return true, nil })
	requireKind(t, err, upgrader.KindFailed, status.ReasonUnreachableAfterFlash)
	require.Equal(t, 1, attempts)
	require.Contains(t, err.Error(), "(1 attempts", "the error counts the attempts made")
}

// After a flash that keeps the configuration (-c, the default), the
// device's openwisp UUID survives. checkSameDevice nevertheless accepts
// any device that reports no UUID ("configuration not kept?"), so another
// device that took the address over a reboot (DHCP) and already runs the
// expected release is taken as proof of success.
func TestDeviceWithoutUUIDRefusedAfterKeepConfigFlash(t *testing.T) {
	t.Parallel()
	other, err := openwrttest.New(openwrttest.Config{Release: newRelease, RebootDelay: time.Hour})
	require.NoError(t, err)
	require.NoError(t, other.Start())
	t.Cleanup(func() { other.Close() })
	var swapped bool
	b := setup(t, setupOpts{
		sim: openwrttest.Config{RebootDelay: time.Hour, Faults: openwrttest.Faults{NeverComeBack: true}},
		creds: func(b *bundle, c *Credentials) {
			if swapped {
				c.Address = other.Addr()
				c.HostKeyCallback = PinnedKey(other.HostKey())
			}
		},
	})
	b.rep.onPhase = func(p status.Phase) {
		if p == status.PhaseRebooting {
			swapped = true // our device never comes back; another answers at its address
		}
	}
	err = b.upgrade(t)
	require.Empty(t, other.Flashes(), "precondition: the other device was not flashed")
	require.Error(t, err, "success proven on another device (no UUID) although the configuration, UUID included, was kept")
}
