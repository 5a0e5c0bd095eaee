package openwrt_test

// What an operator reads: the operation's log through the engine, on
// simulated devices over real SSH. sysupgrade's output arrives line by line
// while it runs, bounded and without secrets; a success says once what was
// proven; and no message repeats a prefix ("x: … x:").

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// outcomeLabels are the prefixes a message may carry once, compared
// without case, hyphens or a parenthesised reason: the outcome labels of
// the engine and of Kind.String, and the package names.
var outcomeLabels = map[string]string{
	"not needed": "not needed", "already installed": "not needed", "success": "success",
	"aborted": "aborted", "failed": "failed", "failed after flashing started": "failed",
	"recoverable": "recoverable", "recoverable failure": "recoverable", "cancelled": "cancelled",
	"upgrade refused": "upgrade refused", "max retries exceeded": "failed",
}

// repeatedPrefix returns the word-prefix that msg repeats, "" when none. msg
// is cut at each ": "; a piece that is one word ("openwrt", "upgrader",
// "ssh"), optionally followed by a reason in parentheses, or one of
// outcomeLabels, is a prefix; the same prefix twice is a repeat:
// "not needed: upgrader: not-needed (already-installed): ..." repeats "not
// needed", "failed (flash-failed): openwrt: flash: openwrt: command ..."
// repeats "openwrt".
func repeatedPrefix(msg string) string {
	seen := map[string]bool{}
	for _, piece := range strings.Split(msg, ": ") {
		p := strings.ToLower(strings.TrimSpace(piece))
		if i := strings.Index(p, " ("); i > 0 && strings.HasSuffix(p, ")") {
			p = p[:i]
		}
		p = strings.ReplaceAll(p, "-", " ")
		label, known := outcomeLabels[p]
		if !known {
			if p == "" || strings.ContainsAny(p, " \t\"'{}[]()") {
				continue
			}
			label = p
		}
		if seen[label] {
			return label
		}
		seen[label] = true
	}
	return ""
}

func TestRepeatedPrefix(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string]string{
		// What the log said before.
		"not needed: upgrader: not-needed (already-installed): openwrt: the device already runs image x (checksum in /etc/openwisp/firmware_checksum)": "not needed",
		"aborted: upgrader: aborted (identity-mismatch): openwrt: the device at h reports UUID \"a\", expected \"b\"":                                  "aborted",
		"failed after flashing started: upgrader: failed (unreachable-after-flash): openwrt: device d not reachable: openwrt: connect to h: refused":   "failed",
		"failed after flashing started: upgrader: failed (flash-failed): openwrt: flash: openwrt: command 'sysupgrade' exited with status 1: x":        "failed",
		"recoverable failure (connection-failed): upgrader: recoverable (connection-failed): openwrt: ssh login to h: EOF; retrying in 1s":             "recoverable",
		"openwrt: flash: openwrt: command": "openwrt",
		"upgrader: x: upgrader: y":         "upgrader",
		// What it says now.
		"already installed: openwrt: image sha256 x matches /etc/openwisp/firmware_checksum":                                                             "",
		"failed (flash-failed): openwrt: sysupgrade exited with status 1, the device was not flashed: sysupgrade: failed to write image":                 "",
		"failed (unreachable-after-flash): openwrt: device d not reachable after the flash: connect to h:22: dial tcp h:22: connect: connection refused": "",
		"success: the device runs \"OpenWrt 23.05.3 r23809-234f1a2efa\" (boot id changed)":                                                               "",
	} {
		assert.Equal(t, want, repeatedPrefix(msg), msg)
	}
}

// isSuccessLine reports a log line that claims the upgrade succeeded.
func isSuccessLine(l string) bool {
	l = strings.ToLower(l)
	return strings.HasPrefix(l, "success") || strings.Contains(l, "successful") ||
		strings.Contains(l, "completed") || strings.Contains(l, "upgrade verified")
}

// checkMessages checks every operation of the fleet's store when the test
// ends: its last line (the message it ended with) and every retry line
// repeat no prefix, and an operation that succeeded has exactly one success
// line, its last. newFleet registers it, so that it runs over every
// end-to-end test's operations.
func checkMessages(t *testing.T, f *fleet) {
	t.Helper()
	ctx := context.Background()
	ops, err := f.st.ListOperations(ctx, store.OperationFilter{})
	if err != nil {
		t.Errorf("listing the operations: %v", err)
		return
	}
	for _, op := range ops {
		if !op.State.Terminal() {
			continue
		}
		entries, err := f.st.Logs(ctx, op.ID, 0, 0)
		if err != nil || len(entries) == 0 {
			t.Errorf("operation %s (%s): no log (%v)", op.ID, op.State, err)
			continue
		}
		last := entries[len(entries)-1].Line
		if p := repeatedPrefix(last); p != "" {
			t.Errorf("operation %s (%s %s) ended with a message that repeats %q: %s", op.ID, op.State, op.Reason, p, last)
		}
		success := 0
		for _, e := range entries {
			if strings.HasPrefix(e.Line, "recoverable failure") || strings.HasPrefix(e.Line, "device unreachable (") {
				if p := repeatedPrefix(e.Line); p != "" {
					t.Errorf("operation %s: a retry line repeats %q: %s", op.ID, p, e.Line)
				}
			}
			if isSuccessLine(e.Line) {
				success++
			}
		}
		if op.State == status.Success && op.Reason == status.ReasonNone && (success != 1 || !isSuccessLine(last)) {
			t.Errorf("operation %s succeeded with %d success lines (want one, its last line %q)", op.ID, success, last)
		}
	}
}

// opLog returns the lines of an operation's log.
func opLog(t *testing.T, f *fleet, id string) []string {
	t.Helper()
	entries, err := f.st.Logs(context.Background(), id, 0, 0)
	require.NoError(t, err)
	lines := make([]string, len(entries))
	for i, e := range entries {
		lines[i] = e.Line
	}
	return lines
}

// indexOf returns the index of the first line at or after from that match
// reports, -1 when none.
func indexOf(lines []string, from int, match func(string) bool) int {
	for i := max(from, 0); i < len(lines); i++ {
		if match(lines[i]) {
			return i
		}
	}
	return -1
}

// TestSysupgradeOutputLoggedLineByLine: every line sysupgrade prints is an
// entry of its own in the operation's log, in the order the device printed
// it, between the command and the upgrader's verdict on it.
func TestSysupgradeOutputLoggedLineByLine(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	d, _ := f.device(t, openwrttest.Config{}) // 22.03: dated messages on stderr, the file list on stdout, exit 246
	op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	require.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	lines := opLog(t, f, op.ID)
	all := strings.Join(lines, "\n")

	for _, l := range lines {
		assert.NotContains(t, l, "\n", "one line of output per log entry")
	}
	start := indexOf(lines, 0, func(l string) bool { return strings.HasPrefix(l, "Upgrade operation in progress: 'sysupgrade' '-v'") })
	saving := indexOf(lines, start, func(l string) bool { return strings.HasSuffix(l, " upgrade: Saving config files...") })
	commencing := indexOf(lines, saving, func(l string) bool {
		return strings.HasSuffix(l, " upgrade: Commencing upgrade. Closing all shell sessions.")
	})
	ubus := indexOf(lines, commencing, func(l string) bool {
		return strings.HasPrefix(l, "Command failed: ubus call system sysupgrade {") && strings.HasSuffix(l, "} (Connection failed)")
	})
	verdict := indexOf(lines, ubus, func(l string) bool { return strings.HasPrefix(l, "sysupgrade exited 246 through ubus") })
	// Standard error (these messages) keeps its order; standard output
	// (the list of files) may interleave with it anywhere.
	require.True(t, start >= 0 && saving > start && commencing > saving && ubus > commencing && verdict > ubus,
		"the command, then its lines in order, then the verdict: %d %d %d %d %d\n%s", start, saving, commencing, ubus, verdict, all)
	for _, l := range lines[verdict+1:] {
		assert.False(t, strings.HasPrefix(l, "etc/") || strings.Contains(l, " upgrade: "), "device output after the verdict: %q", l)
	}
	for _, file := range openwrttest.DefaultBackupFiles {
		i := slices.Index(lines, strings.TrimPrefix(file, "/"))
		assert.True(t, i > start && i < verdict, "the file %s that sysupgrade -v lists is an entry of its own during the flash\n%s", file, all)
	}
}

// TestSysupgradeOutputArrivesWhileFlashing: the lines reach the log (and
// the subscribers) while sysupgrade still runs, not when it ends. The
// device prints "Saving config files..." and then hangs before its point
// of no return until the test closes it: a log written only when the
// command ends would never show the line.
func TestSysupgradeOutputArrivesWhileFlashing(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{upgrader: func(c *openwrt.Config) {
		c.UpgradeTimeout = 5 * time.Minute // the command does not end on its own
		c.ReconnectWindow = 500 * time.Millisecond
	}})
	d, dev := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{FlashHang: time.Hour}})
	events, unsubscribe := f.eng.Subscribe(4096)
	defer unsubscribe()
	ctx := ctxT(t)
	op, err := f.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	done := make(chan store.Operation, 1)
	go func() {
		end, _ := f.eng.Run(ctx, op.ID)
		done <- end
	}()

	wait := time.NewTimer(45 * time.Second)
	defer wait.Stop()
	var seen upgrader.Event
wait:
	for {
		select {
		case ev := <-events:
			if ev.OperationID == op.ID && ev.Kind == upgrader.EventOperationLog && strings.HasSuffix(ev.Line, " upgrade: Saving config files...") {
				seen = ev
				break wait
			}
		case end := <-done:
			t.Fatalf("the operation ended (%s %s) before sysupgrade's first line reached the log", end.State, end.Reason)
		case <-wait.C:
			t.Fatal("sysupgrade's output is not logged while it runs")
		}
	}
	cur, err := f.st.Operation(ctx, op.ID)
	require.NoError(t, err)
	assert.Equal(t, status.PhaseFlashing, cur.Phase)
	assert.Zero(t, dev.Flashed(), "sysupgrade had not reached its point of no return yet")
	lines := opLog(t, f, op.ID)
	assert.Contains(t, lines, seen.Line, "in the store too, not only in the event")
	assert.NotContains(t, strings.Join(lines, "\n"), "SSH connection closed by the device", "the command was still running")

	require.NoError(t, dev.Close()) // the session drops; the device never comes back
	end := <-done
	assert.Equal(t, status.Failed, end.State)
	assert.Equal(t, status.ReasonUnreachableAfterFlash, end.Reason)
}

// TestSysupgradeOutputBoundedAndSecretFree: a device that saves 3,000 files
// prints more than 64 KiB with -v; the log keeps the first and last lines
// of each stream and counts the rest, keeps every message of sysupgrade
// itself (standard error, apart from the list), and never shows the
// password, even when the device prints it.
func TestSysupgradeOutputBoundedAndSecretFree(t *testing.T) {
	t.Parallel()
	const secret = "Pa55-w0rd-9f3c"
	f := newFleet(t, fleetOpts{upgrader: func(c *openwrt.Config) {
		creds := c.CredentialsFunc
		c.CredentialsFunc = func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
			cr, err := creds(ctx, d)
			cr.Password = secret
			return cr, err
		}
	}})
	// A configuration file named after the password (it sorts first):
	// sysupgrade -v prints its name.
	d, _ := f.device(t, openwrttest.Config{Password: secret, BackupFiles: 3000,
		Files: map[string][]byte{"/etc/config/a-" + secret: []byte("x\n")}})
	op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
	require.NoError(t, err)
	require.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	lines := opLog(t, f, op.ID)
	all := strings.Join(lines, "\n")
	assert.NotContains(t, all, secret)
	assert.Contains(t, lines, "etc/config/a-[redacted]", "the line is logged, the password hidden")

	start := indexOf(lines, 0, func(l string) bool { return strings.HasPrefix(l, "Upgrade operation in progress: ") })
	verdict := indexOf(lines, start, func(l string) bool { return strings.HasPrefix(l, "sysupgrade exited 246 through ubus") })
	require.True(t, start >= 0 && verdict > start, all)
	output := lines[start+1 : verdict]
	assert.LessOrEqual(t, len(output), 2*(openwrt.MaxOutputLines+openwrt.OutputTailLines+1), "bounded")
	marker := indexOf(output, 0, func(l string) bool {
		return strings.HasPrefix(l, "…[") && strings.HasSuffix(l, " more lines of standard output not logged]…")
	})
	require.GreaterOrEqual(t, marker, 0, "says that lines were left out\n%s", strings.Join(output, "\n"))
	var left int
	_, err = fmt.Sscanf(output[marker], "…[%d more lines", &left)
	require.NoError(t, err)
	assert.Greater(t, left, 2500, "most of the 3,000 files are counted, not logged")
	for _, msg := range []string{" upgrade: Saving config files...", " upgrade: Commencing upgrade. Closing all shell sessions.", "(Connection failed)"} {
		assert.GreaterOrEqual(t, indexOf(output, 0, func(l string) bool { return strings.HasSuffix(l, msg) }), 0,
			"sysupgrade's own message %q is logged whatever the list's length", msg)
	}
	// After the count, the end of the list (sorted): its last lines.
	tail := output[marker+1 : marker+1+openwrt.OutputTailLines]
	assert.True(t, slices.IsSorted(tail), "the tail keeps its order: %q", tail)
	for _, l := range output[:marker] {
		if strings.HasPrefix(l, "etc/") {
			assert.Less(t, l, tail[0], "the tail is the end of the list")
		}
	}
	for _, l := range tail {
		assert.True(t, strings.HasPrefix(l, "etc/"), "a file of the list: %q", l)
	}
}

// TestSuccessSaysOnceWhatWasProven: a successful upgrade's log holds one
// success line, its last, saying what was proven; so does one proven by
// the upgrader's Verify after the deadline passed while the device
// rebooted.
func TestSuccessSaysOnceWhatWasProven(t *testing.T) {
	t.Parallel()
	t.Run("upgrade", func(t *testing.T) {
		t.Parallel()
		f := newFleet(t, fleetOpts{})
		d, _ := f.device(t, openwrttest.Config{})
		op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
		require.NoError(t, err)
		require.Equal(t, status.Success, op.State, "reason %s", op.Reason)
		lines := opLog(t, f, op.ID)
		var success []string
		for _, l := range lines {
			if isSuccessLine(l) {
				success = append(success, l)
			}
		}
		assert.Equal(t, []string{`success: the device runs "` + e2eRelease + `" (boot id changed)`}, success, strings.Join(lines, "\n"))
		assert.Equal(t, success[0], lines[len(lines)-1])
	})
	t.Run("verified after the deadline", func(t *testing.T) {
		t.Parallel()
		f := newFleet(t, fleetOpts{
			engine: func(c *upgrader.Config) {
				c.OperationTimeout = 2 * time.Second
				c.VerifyTimeout = 20 * time.Second
			},
			upgrader: func(c *openwrt.Config) {
				c.UpgradeTimeout = 10 * time.Second
				c.ReconnectWindow = 10 * time.Second
			},
		})
		d, _ := f.device(t, openwrttest.Config{RebootDelay: 4 * time.Second})
		op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
		require.NoError(t, err)
		require.Equal(t, status.Success, op.State, "reason %s", op.Reason)
		lines := opLog(t, f, op.ID)
		var success []string
		for _, l := range lines {
			if isSuccessLine(l) {
				success = append(success, l)
			}
		}
		assert.Contains(t, lines, "deadline passed after flashing: verifying the outcome")
		require.Len(t, success, 1, strings.Join(lines, "\n"))
		assert.Equal(t, lines[len(lines)-1], success[0])
		assert.True(t, strings.HasPrefix(success[0], "success: the device runs "), success[0])
	})
}

// register stores a device with the given ID and board name for a
// simulated device, which may report another UUID or board.
func (f *fleet) register(t *testing.T, dev *openwrttest.Device, id, board string) store.Device {
	t.Helper()
	f.mu.Lock()
	f.devs[id] = dev
	f.mu.Unlock()
	d, err := f.eng.RegisterDevice(context.Background(), store.Device{ID: id, Model: dev.Config().Model,
		BoardName: board, OSIdentifier: dev.Release(), Connection: openwrt.Connection, Active: true})
	require.NoError(t, err)
	return d
}

// startDevice starts a simulated device.
func startDevice(t *testing.T, cfg openwrttest.Config) *openwrttest.Device {
	t.Helper()
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = 150 * time.Millisecond
	}
	dev, err := openwrttest.New(cfg)
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { dev.Close() })
	return dev
}

// TestEndMessagesReadOnce: the message an operation ends with names its
// outcome once, then says why in the upgrader's words, with the package
// prefix once and no classification text ("upgrader: aborted (...)").
func TestEndMessagesReadOnce(t *testing.T) {
	t.Parallel()
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	otherSigner, err := ssh.NewSignerFromKey(otherKey)
	require.NoError(t, err)

	for _, tc := range []struct {
		name   string
		opts   fleetOpts
		run    func(t *testing.T, f *fleet) store.Operation
		state  status.State
		reason status.Reason
		prefix string // of the last line
	}{
		{"already installed", fleetOpts{}, func(t *testing.T, f *fleet) store.Operation {
			d, _ := f.device(t, openwrttest.Config{})
			_, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			return op
		}, status.Success, status.ReasonAlreadyInstalled, "already installed: openwrt: image sha256 "},
		{"wrong UUID", fleetOpts{}, func(t *testing.T, f *fleet) store.Operation {
			dev := startDevice(t, openwrttest.Config{UUID: uuid.NewString()})
			d := f.register(t, dev, uuid.NewString(), openwrttest.DefaultBoardName)
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			return op
		}, status.Aborted, status.ReasonIdentityMismatch, "aborted (identity-mismatch): openwrt: the device at "},
		{"wrong board in the image's metadata", fleetOpts{}, func(t *testing.T, f *fleet) store.Operation {
			img := f.addImage(t, "23.05.3-fwtool", "", "openwrt-23.05.3-fwtool-"+e2eType,
				openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: e2eRelease, Fwtool: true})
			id := uuid.NewString()
			dev := startDevice(t, openwrttest.Config{UUID: id, BoardName: "glinet,gl-ar150"})
			d := f.register(t, dev, id, openwrttest.DefaultBoardName) // the host's record is wrong
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: img.ID})
			require.NoError(t, err)
			return op
		}, status.Aborted, status.ReasonNoImageForBoard, "aborted (no-image-for-board): openwrt: the image's metadata lists "},
		{"wrong board in the device's record", fleetOpts{}, func(t *testing.T, f *fleet) store.Operation {
			id := uuid.NewString()
			dev := startDevice(t, openwrttest.Config{UUID: id, BoardName: "glinet,gl-ar150"})
			d := f.register(t, dev, id, openwrttest.DefaultBoardName)
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			return op
		}, status.Aborted, status.ReasonNoImageForBoard, "aborted (no-image-for-board): openwrt: the device's board is \"glinet,gl-ar150\", not "},
		{"host key mismatch", fleetOpts{upgrader: func(c *openwrt.Config) {
			creds := c.CredentialsFunc
			c.CredentialsFunc = func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
				cr, err := creds(ctx, d)
				cr.HostKeyCallback = openwrt.PinnedKey(otherSigner.PublicKey())
				return cr, err
			}
		}}, func(t *testing.T, f *fleet) store.Operation {
			d, _ := f.device(t, openwrttest.Config{})
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			return op
		}, status.Aborted, status.ReasonHostKeyMismatch, "aborted (host-key-mismatch): openwrt: the host key of "},
		{"never back", fleetOpts{upgrader: func(c *openwrt.Config) { c.ReconnectWindow = time.Second }}, func(t *testing.T, f *fleet) store.Operation {
			d, _ := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{NeverComeBack: true}})
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			return op
		}, status.Failed, status.ReasonUnreachableAfterFlash, "failed (unreachable-after-flash): openwrt: device "},
		{"sysupgrade fails", fleetOpts{}, func(t *testing.T, f *fleet) store.Operation {
			d, _ := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{FlashError: true}})
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			return op
		}, status.Failed, status.ReasonFlashFailed,
			"failed (flash-failed): openwrt: sysupgrade exited with status 1, the device was not flashed: sysupgrade: failed to write image: Input/output error"},
		{"procd refuses", fleetOpts{}, func(t *testing.T, f *fleet) store.Operation {
			d, _ := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{ProcdRefusal: true}})
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			return op
		}, status.Failed, status.ReasonFlashFailed, "failed (flash-failed): openwrt: procd refused the flash (Not supported), the device was not flashed"},
		{"retries exhausted", fleetOpts{engine: func(c *upgrader.Config) { c.Retry.MaxRetries = 1 }}, func(t *testing.T, f *fleet) store.Operation {
			d, _ := f.device(t, openwrttest.Config{Faults: openwrttest.Faults{RefuseConnections: 100}})
			op, err := f.eng.Upgrade(ctxT(t), upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			return op
		}, status.Failed, status.ReasonMaxRetriesExceeded, "failed (max-retries-exceeded): 2 attempts, the last one connection-failed: openwrt: "},
		{"cancelled", fleetOpts{}, func(t *testing.T, f *fleet) store.Operation {
			d, _ := f.device(t, openwrttest.Config{})
			ctx := ctxT(t)
			op, err := f.eng.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: f.image.ID})
			require.NoError(t, err)
			_, err = f.eng.Cancel(ctx, op.ID)
			require.NoError(t, err)
			end, err := f.eng.Run(ctx, op.ID)
			require.NoError(t, err)
			return end
		}, status.Cancelled, status.ReasonCancelledByUser, "cancelled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, tc.opts)
			op := tc.run(t, f)
			lines := opLog(t, f, op.ID)
			all := strings.Join(lines, "\n")
			require.Equal(t, tc.state, op.State, "reason %s\n%s", op.Reason, all)
			require.Equal(t, tc.reason, op.Reason, all)
			last := lines[len(lines)-1]
			assert.True(t, strings.HasPrefix(last, tc.prefix), "the message is %q, want it to start with %q", last, tc.prefix)
			assert.Empty(t, repeatedPrefix(last), "the message repeats a prefix: %s", last)
			assert.NotContains(t, last, "upgrader: ", "no classification text in the message")
			assert.NotContains(t, last, "\n", "one line")
			for _, l := range lines {
				if strings.HasPrefix(l, "recoverable failure") {
					assert.Empty(t, repeatedPrefix(l), "the retry line repeats a prefix: %s", l)
					assert.NotContains(t, l, "upgrader: ")
				}
			}
		})
	}
}
