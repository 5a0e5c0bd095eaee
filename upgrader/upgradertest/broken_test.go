package upgradertest_test

// The suite proven by broken upgraders: each upgrader below gets one line of
// the contract wrong, and upgradertest.Run must fail it with a message that
// names that line. Go's testing package cannot run a suite inside a test
// without failing that test, so each broken upgrader runs in a child process
// (this test binary again, selecting TestBrokenUpgraderChild), whose failure
// and output are checked.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// brokenEnv names the upgrader TestBrokenUpgraderChild runs the suite on.
const brokenEnv = "UPGRADERTEST_BROKEN_UPGRADER"

// bug is what a simUpgrader gets wrong.
type bug int

const (
	noBug bug = iota
	// verifyAlwaysNil: Verify returns nil whatever the device runs.
	verifyAlwaysNil
	// verifyFlashes: Verify flashes the device again "to be sure".
	verifyFlashes
	// verifyEntersFlashing: Verify calls Phase(PhaseFlashing) and flashes.
	verifyEntersFlashing
	// ignoresCancel: Upgrade ignores the errors of Report.Phase and
	// Report.Cancelled and never looks at ctx: it always flashes.
	ignoresCancel
	// retriesIgnoringContext: the upload is retried for seconds without
	// looking at ctx, so Upgrade does not return when ctx ends.
	retriesIgnoringContext
	// skipsFlashingPhase: Upgrade flashes without Phase(PhaseFlashing).
	skipsFlashingPhase
	// noPhases: Upgrade reports no phase at all (it still checks
	// Report.Cancelled).
	noPhases
	// noPhaseBeforeFlashing: Upgrade's first phase is PhaseFlashing.
	noPhaseBeforeFlashing
	// plainUnreachableError: an unreachable device gives a plain error.
	plainUnreachableError
	// plainCancelError: a cancel gives context.Canceled, not ErrCancelled.
	plainCancelError
	// restoreFlashes: Restore enters PhaseFlashing and flashes.
	restoreFlashes
	// restoreOnce: a second Restore of the same records fails.
	restoreOnce
	// restoreIgnoresContext: Restore returns nil whatever ctx says.
	restoreIgnoresContext
)

// hooks are the optional Harness fields a simHarness sets.
type hooks struct {
	flashed     bool // Flashed and FlashCountFunc
	unreachable bool // UnreachableFunc
	timeout     time.Duration
}

var allHooks = hooks{flashed: true, unreachable: true}

// brokenUpgraders are the broken upgraders the suite must fail, with
// messages its output must contain.
var brokenUpgraders = []struct {
	name  string
	bug   bug
	hooks hooks
	want  []string
}{
	{
		name:  "VerifyAlwaysNil",
		bug:   verifyAlwaysNil,
		hooks: hooks{}, // no hook needed to catch it
		want: []string{
			"contract: Verify must not return nil for a device that was never upgraded (a false success)",
			"contract: Verify must honour ctx: with ctx ended it returned nil for a device that was never upgraded (a false success)",
		},
	},
	{
		name:  "VerifyFlashes",
		bug:   verifyFlashes,
		hooks: allHooks,
		want: []string{
			"contract: Verify must never flash: the device was flashed during Verify",
			"contract: Verify must never flash: the device's flash count went from 1 to 2 during Verify",
		},
	},
	{
		name:  "VerifyEntersFlashing",
		bug:   verifyEntersFlashing,
		hooks: hooks{},
		want: []string{
			"contract: Verify must never flash: it called Job.Report.Phase(PhaseFlashing), the call that decides a flash",
		},
	},
	{
		name:  "IgnoresCancelAndContext",
		bug:   ignoresCancel,
		hooks: allHooks,
		want: []string{
			"contract: Upgrade must return an error matching upgrader.ErrCancelled once the Reporter reports a cancel (cancelled before Upgrade started): got nil",
			"contract: Upgrade must not flash once a cancel won (cancelled before Upgrade started): the device was flashed",
			"contract: Upgrade must not flash once a cancel won (cancelled as Upgrade entered flashing): the device was flashed",
			"contract: Upgrade must not flash once a cancel won (cancelled while Upgrade was in image-test): the device was flashed",
			"contract: Upgrade must honour ctx: it returned nil although ctx ended before Upgrade started, before flashing (a false success)",
			"contract: Upgrade must not flash once ctx has ended (ctx ended before Upgrade started): the device was flashed",
		},
	},
	{
		// Without Flashed, the suite still sees it from the phases.
		name:  "IgnoresCancelAndContextNoHooks",
		bug:   ignoresCancel,
		hooks: hooks{},
		want: []string{
			"contract: when Job.Report.Phase(PhaseFlashing) returns an error, Upgrade must not flash: it went on to Phase(rebooting) after Phase(flashing) was refused",
			"contract: Upgrade must return an error matching upgrader.ErrCancelled once the Reporter reports a cancel (cancelled before Upgrade started): got nil",
		},
	},
	{
		name:  "RetriesIgnoringContext",
		bug:   retriesIgnoringContext,
		hooks: hooks{flashed: true, timeout: 300 * time.Millisecond},
		want: []string{
			"--- FAIL: TestBrokenUpgraderChild/ContextEndsInEachPhaseBeforeFlashing/upload",
			"contract: Upgrade must honour ctx: it did not return within 300ms (Harness.Timeout) after ctx ended",
		},
	},
	{
		name:  "SkipsFlashingPhase",
		bug:   skipsFlashingPhase,
		hooks: hooks{}, // caught without Flashed
		want: []string{
			"contract: Upgrade must call Job.Report.Phase(PhaseFlashing) immediately before it modifies the flash: a successful upgrade of a fresh device never entered PhaseFlashing",
		},
	},
	{
		name:  "SkipsFlashingPhaseWithHooks",
		bug:   skipsFlashingPhase,
		hooks: allHooks,
		want: []string{
			"contract: Upgrade must call Job.Report.Phase(PhaseFlashing) immediately before it modifies the flash: a successful upgrade of a fresh device never entered PhaseFlashing",
			"contract: Upgrade must not flash once a cancel won (cancelled while Upgrade was in image-test): the device was flashed",
		},
	},
	{
		name:  "NoPhases",
		bug:   noPhases,
		hooks: allHooks,
		want: []string{
			"contract: Upgrade must call Job.Report.Phase before each step: a successful upgrade reported no phase",
		},
	},
	{
		name:  "NoPhaseBeforeFlashing",
		bug:   noPhaseBeforeFlashing,
		hooks: allHooks,
		want: []string{
			"contract: Upgrade must call Job.Report.Phase before each step: no phase was reported before PhaseFlashing",
		},
	},
	{
		name:  "PlainUnreachableError",
		bug:   plainUnreachableError,
		hooks: allHooks,
		want: []string{
			"contract: Upgrade must classify the failure to reach a device with upgrader.Recoverable (a transient failure before flashing, which the engine retries), not a plain error: got sim: device unreachable (classified failed, upgrader-error)",
		},
	},
	{
		name:  "PlainCancelError",
		bug:   plainCancelError,
		hooks: hooks{},
		want: []string{
			"contract: Upgrade must return an error matching upgrader.ErrCancelled once the Reporter reports a cancel (cancelled before Upgrade started): got context canceled (classified failed)",
			"contract: Upgrade must return an error matching upgrader.ErrCancelled once the Reporter reports a cancel (cancelled while Upgrade was in upload): got context canceled (classified failed)",
		},
	},
	{
		name:  "RestoreFlashes",
		bug:   restoreFlashes,
		hooks: allHooks,
		want: []string{
			"contract: Restore must never flash: the device's flash count went from 0 to 1 during Restore",
			"contract: Restore must never call Job.Report.Phase (a restore is no attempt, and never flashes): it called Phase(flashing)",
		},
	},
	{
		name:  "RestoreOnce",
		bug:   restoreOnce,
		hooks: hooks{},
		want: []string{
			"contract: Restore must undo what an attempt cancelled as it entered flashing recorded (1 undo records), on a reachable device, and return nil (call 2: restores are idempotent)",
		},
	},
	{
		name:  "RestoreIgnoresContext",
		bug:   restoreIgnoresContext,
		hooks: hooks{},
		want: []string{
			"contract: Restore must honour ctx: it returned nil (all undone) although ctx ended before it started, with 1 undo records to undo",
		},
	},
}

// TestSuiteFailsBrokenUpgraders runs the suite on each broken upgrader in a
// child process and checks that it fails with the contract's messages.
func TestSuiteFailsBrokenUpgraders(t *testing.T) {
	t.Parallel()
	for _, bc := range brokenUpgraders {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			out, err := runChild(t, bc.name)
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "the suite passed a broken upgrader")
			if !strings.Contains(out, "--- FAIL: TestBrokenUpgraderChild") {
				t.Error("the child process failed, but not in the suite")
			}
			for _, w := range bc.want {
				if !strings.Contains(out, w) {
					t.Errorf("the suite did not say %q", w)
				}
			}
			for _, line := range strings.Split(out, "\n") {
				line = strings.TrimSpace(line)
				if strings.HasPrefix(line, "suite.go:") {
					if _, msg, _ := strings.Cut(line, ": "); !strings.HasPrefix(msg, "contract: ") {
						t.Errorf("a failure that names no contract line: %s", line)
					}
				}
			}
		})
	}
	// The control: the same child run on the correct upgrader passes, so
	// the failures above come from the bugs, not from the harness.
	t.Run("Correct", func(t *testing.T) {
		t.Parallel()
		out, err := runChild(t, "Correct")
		require.NoError(t, err, "the suite failed the correct upgrader")
		assert.NotContains(t, out, "contract: ")
		assert.Contains(t, out, "PASS")
	})
}

// TestSimUpgraderPassesSuite runs the suite on the correct simulated
// upgraders, with every optional hook and with none.
func TestSimUpgraderPassesSuite(t *testing.T) {
	t.Run("AllHooks", func(t *testing.T) { upgradertest.Run(t, simHarness(noBug, allHooks)) })
	t.Run("NoHooks", func(t *testing.T) { upgradertest.Run(t, simHarness(noBug, hooks{})) })
}

// TestBrokenUpgraderChild runs the suite on the upgrader named by the
// brokenEnv environment variable; it is skipped without it.
func TestBrokenUpgraderChild(t *testing.T) {
	name := os.Getenv(brokenEnv)
	if name == "" {
		t.Skip(brokenEnv + " is not set: this test runs in a child process of TestSuiteFailsBrokenUpgraders")
	}
	if name == "Correct" {
		upgradertest.Run(t, simHarness(noBug, allHooks))
		return
	}
	for _, bc := range brokenUpgraders {
		if bc.name == name {
			upgradertest.Run(t, simHarness(bc.bug, bc.hooks))
			return
		}
	}
	t.Fatalf("unknown broken upgrader %q", name)
}

// runChild runs TestBrokenUpgraderChild on the named upgrader in a child
// process and returns its output.
func runChild(t *testing.T, name string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBrokenUpgraderChild$", "-test.count=1", "-test.timeout=90s")
	cmd.Env = append(os.Environ(), brokenEnv+"="+name)
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output of the suite on %s:\n%s", name, out)
		}
	})
	return string(out), err
}

// simDevice is a simulated device: it runs the new image once flashed.
type simDevice struct {
	mu          sync.Mutex
	flashes     int
	unreachable bool
	changed     bool // an attempt changed it before flashing (undone by cleanup or Restore)
	restores    int
}

func (d *simDevice) setChanged(v bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.changed = v
}

func (d *simDevice) flash() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flashes++
}

func (d *simDevice) flashCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.flashes
}

func (d *simDevice) reachable() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.unreachable
}

// upload sends the image to the device (instantly, unless ctx ended).
func (d *simDevice) upload(ctx context.Context) error {
	if !d.reachable() {
		return errors.New("sim: connection lost")
	}
	return ctx.Err()
}

// simLab holds the simulated devices, by device ID.
type simLab struct {
	mu   sync.Mutex
	devs map[string]*simDevice
}

func (l *simLab) add(id string) *simDevice {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := &simDevice{}
	l.devs[id] = d
	return d
}

func (l *simLab) device(id string) *simDevice {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.devs[id]
}

// simHarness returns a harness for a simUpgrader with bug b.
func simHarness(b bug, hk hooks) func(t *testing.T) upgradertest.Harness {
	return func(t *testing.T) upgradertest.Harness {
		lab := &simLab{devs: map[string]*simDevice{}}
		h := upgradertest.Harness{
			Upgrader: &simUpgrader{lab: lab, bug: b},
			NewJob: func(t *testing.T) *upgrader.Job {
				id := store.NewID()
				lab.add(id)
				return &upgrader.Job{
					Operation: store.Operation{ID: store.NewID(), DeviceID: id, State: status.InProgress, Attempt: 1},
					Device:    store.Device{ID: id, Connection: "sim", Active: true},
					Image:     upgrader.Image{Image: store.Image{ID: "img", Size: 5}},
				}
			},
			Timeout: hk.timeout,
		}
		if h.Timeout == 0 {
			h.Timeout = 10 * time.Second
		}
		if hk.flashed {
			h.Flashed = func(t *testing.T, job *upgrader.Job) bool { return lab.device(job.Device.ID).flashCount() > 0 }
			h.FlashCountFunc = func(t *testing.T, job *upgrader.Job) int { return lab.device(job.Device.ID).flashCount() }
		}
		if hk.unreachable {
			h.UnreachableFunc = func(t *testing.T, job *upgrader.Job) {
				d := lab.device(job.Device.ID)
				d.mu.Lock()
				defer d.mu.Unlock()
				d.unreachable = true
			}
		}
		return h
	}
}

// simUpgrader upgrades simulated devices, correctly unless it has a bug.
type simUpgrader struct {
	lab *simLab
	bug bug
}

var (
	_ upgrader.Upgrader = (*simUpgrader)(nil)
	_ upgrader.Verifier = (*simUpgrader)(nil)
	_ upgrader.Restorer = (*simUpgrader)(nil)
)

// simUndo is the sim's undo record: it makes room on the device before the
// upload.
const simUndo = "sim: room made for the image"

// Upgrade implements upgrader.Upgrader.
func (u *simUpgrader) Upgrade(ctx context.Context, job *upgrader.Job) error {
	dev := u.lab.device(job.Device.ID)
	if dev == nil {
		return upgrader.Aborted(status.ReasonUpgraderError, fmt.Errorf("sim: no device %s", job.Device.ID))
	}
	for _, p := range []status.Phase{status.PhaseConnecting, status.PhaseIdentity, status.PhaseChecksum,
		status.PhaseMemory, status.PhaseUpload, status.PhaseImageTest} {
		if err := u.enter(ctx, job, p); err != nil {
			return u.stopped(ctx, job, dev, err)
		}
		if err := u.step(ctx, job, dev, p); err != nil {
			return u.stopped(ctx, job, dev, err)
		}
	}
	if u.bug != skipsFlashingPhase && u.bug != noPhases {
		if err := u.enter(ctx, job, status.PhaseFlashing); err != nil {
			return u.stopped(ctx, job, dev, err)
		}
	}
	dev.flash()
	// After the flash nothing can stop the attempt: the phases are
	// reported for the record only.
	for _, p := range []status.Phase{status.PhaseRebooting, status.PhaseVerifying} {
		_ = u.enter(context.WithoutCancel(ctx), job, p)
	}
	_ = job.Report.Progress(ctx, status.ProgressDone)
	return nil
}

// enter is the checkpoint before a step: a cancel check, then the phase.
func (u *simUpgrader) enter(ctx context.Context, job *upgrader.Job, p status.Phase) error {
	switch {
	case u.bug == ignoresCancel:
		_ = job.Report.Cancelled(ctx)
		_ = job.Report.Phase(ctx, p)
		return nil
	case u.bug == noPhases, u.bug == noPhaseBeforeFlashing && !p.AfterPointOfNoReturn():
		return job.Report.Cancelled(ctx)
	}
	if err := job.Report.Cancelled(ctx); err != nil {
		return err
	}
	return job.Report.Phase(ctx, p)
}

// stopped undoes what the attempt changed (its cleanup) and returns the
// error Upgrade returns when a checkpoint or a step failed.
func (u *simUpgrader) stopped(ctx context.Context, job *upgrader.Job, dev *simDevice, err error) error {
	if dev.reachable() {
		dev.setChanged(false)
		if r, ok := job.Report.(upgrader.UndoRecorder); ok {
			_ = r.Undone(context.WithoutCancel(ctx))
		}
	}
	if u.bug == plainCancelError && errors.Is(err, upgrader.ErrCancelled) {
		return context.Canceled
	}
	return err
}

func (u *simUpgrader) step(ctx context.Context, job *upgrader.Job, dev *simDevice, p status.Phase) error {
	switch p {
	case status.PhaseConnecting:
		if !dev.reachable() {
			if u.bug == plainUnreachableError {
				return errors.New("sim: device unreachable")
			}
			return upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("sim: device unreachable"))
		}
		_ = job.Report.Progress(ctx, status.ProgressConnected)
	case status.PhaseMemory:
		// The one change made before flashing, recorded first.
		if r, ok := job.Report.(upgrader.UndoRecorder); ok {
			if err := r.RecordUndo(ctx, simUndo); err != nil && u.bug != ignoresCancel {
				return err
			}
		}
		dev.setChanged(true)
	case status.PhaseUpload:
		uctx := ctx
		if u.bug == ignoresCancel {
			uctx = context.Background()
		}
		err := dev.upload(uctx)
		if u.bug == retriesIgnoringContext {
			for i := 0; err != nil && i < 30; i++ {
				time.Sleep(100 * time.Millisecond)
				err = dev.upload(ctx)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return upgrader.Recoverable(status.ReasonUploadFailed, err)
		}
		_ = job.Report.Progress(ctx, status.ProgressUploaded)
	}
	if u.bug == ignoresCancel {
		return nil
	}
	return ctx.Err()
}

// Verify implements upgrader.Verifier.
func (u *simUpgrader) Verify(ctx context.Context, job *upgrader.Job) error {
	dev := u.lab.device(job.Device.ID)
	if dev == nil {
		return upgrader.Aborted(status.ReasonUpgraderError, fmt.Errorf("sim: no device %s", job.Device.ID))
	}
	switch u.bug {
	case verifyAlwaysNil:
		return nil
	case verifyFlashes:
		dev.flash()
		return nil
	case verifyEntersFlashing:
		if err := job.Report.Phase(ctx, status.PhaseFlashing); err != nil {
			return err
		}
		dev.flash()
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_ = job.Report.Phase(ctx, status.PhaseVerifying)
	if !dev.reachable() {
		return upgrader.Failed(status.ReasonUnreachableAfterFlash, errors.New("sim: device unreachable"))
	}
	if dev.flashCount() == 0 {
		return upgrader.Failed(status.ReasonOldFirmwareAfterReboot, errors.New("sim: the device runs its old firmware"))
	}
	return nil
}

// Restore implements upgrader.Restorer: it undoes what the sim records.
func (u *simUpgrader) Restore(ctx context.Context, job *upgrader.Job) error {
	dev := u.lab.device(job.Device.ID)
	if dev == nil {
		return upgrader.Aborted(status.ReasonUpgraderError, fmt.Errorf("sim: no device %s", job.Device.ID))
	}
	dev.mu.Lock()
	dev.restores++
	n := dev.restores
	dev.mu.Unlock()
	switch u.bug {
	case restoreFlashes:
		if err := job.Report.Phase(ctx, status.PhaseFlashing); err != nil {
			return err
		}
		dev.flash()
		return nil
	case restoreOnce:
		if n > 1 {
			return upgrader.Failed(status.ReasonUpgraderError, errors.New("sim: nothing left to restore"))
		}
	case restoreIgnoresContext:
		dev.setChanged(false)
		return nil
	}
	for _, rec := range job.Undo {
		if rec != simUndo {
			return upgrader.Failed(status.ReasonUpgraderError, fmt.Errorf("sim: unknown undo record %q", rec))
		}
	}
	if len(job.Undo) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !dev.reachable() {
		return upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("sim: device unreachable"))
	}
	dev.setChanged(false)
	return nil
}
