package upgrader

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Verdict is the dry run's conclusion for one device.
type Verdict string

// Verdicts of a dry run.
const (
	// VerdictReady: every check passed; an upgrade would proceed.
	VerdictReady Verdict = "ready"
	// VerdictNotNeeded: the device already runs the image.
	VerdictNotNeeded Verdict = "not-needed"
	// VerdictWouldAbort: a check failed; the upgrade would end aborted
	// (DeviceCheck.Reason says why) and the device would be left untouched.
	VerdictWouldAbort Verdict = "would-abort"
	// VerdictUnreachable: the device cannot be reached now; in a batch it
	// would wait for the device to come back.
	VerdictUnreachable Verdict = "unreachable"
	// VerdictUnchecked: its upgrader cannot check a device without
	// changing it (it does not implement Checker).
	VerdictUnchecked Verdict = "unchecked"
	// VerdictError: the check itself failed in a way it did not classify.
	VerdictError Verdict = "error"
)

// DeviceCheck is the result of a dry run's checks on one device.
type DeviceCheck struct {
	Verdict Verdict       `json:"verdict"`
	Reason  status.Reason `json:"reason,omitempty"`
	Error   string        `json:"error,omitempty"`
	Checks  []Check       `json:"checks,omitempty"`
	// Log holds the lines the upgrader logged while checking.
	Log []string `json:"log,omitempty"`
}

// DryRunOptions tunes DryRunBatch.
type DryRunOptions struct {
	// Check runs the read-only checks on every selected device; without
	// it the dry run is the plan alone.
	Check bool
	// Parallel bounds how many devices are checked at once. Defaults to
	// DefaultDryRunParallel.
	Parallel int
	// Timeout bounds the checks of one device. Defaults to
	// DefaultDryRunTimeout.
	Timeout time.Duration
}

// Defaults of DryRunOptions.
const (
	DefaultDryRunParallel = 16
	DefaultDryRunTimeout  = 2 * time.Minute
)

// DryRunBatch returns the plan of req (see PlanBatch) and, with opts.Check,
// the verdict of the read-only checks on every selected device, run in
// parallel (opts.Parallel at once): reachable, host key, identity, board,
// free memory for the image, options supported by the device's release,
// compat_version, already installed. It creates nothing in the store and
// changes nothing on any device: upgraders that cannot check without
// changing the device (no Checker) get VerdictUnchecked.
func (e *Engine) DryRunBatch(ctx context.Context, req BatchRequest, opts DryRunOptions) (Plan, error) {
	plan, err := e.PlanBatch(ctx, req)
	if err != nil || !opts.Check {
		return plan, err
	}
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultDryRunParallel
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultDryRunTimeout
	}
	sem := make(chan struct{}, opts.Parallel)
	var wg sync.WaitGroup
	for i := range plan.Selected {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return plan, ctx.Err()
		}
		wg.Add(1)
		go func(p *PlanEntry) {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
			defer cancel()
			p.Check = e.checkDevice(cctx, p.Device, p.Image, req)
		}(&plan.Selected[i])
	}
	wg.Wait()
	return plan, ctx.Err()
}

// checkDevice runs the upgrader's read-only checks on one device.
func (e *Engine) checkDevice(ctx context.Context, d store.Device, im store.Image, req BatchRequest) *DeviceCheck {
	u, _ := e.reg.Lookup(d.Connection)
	ch, ok := u.(Checker)
	if !ok {
		return &DeviceCheck{Verdict: VerdictUnchecked}
	}
	img, err := e.image(ctx, im.ID)
	if err != nil {
		return &DeviceCheck{Verdict: VerdictError, Error: err.Error()}
	}
	rep := &collector{}
	job := &Job{
		Operation: store.Operation{DeviceID: d.ID, ImageID: im.ID, Organization: d.Organization, State: status.Pending,
			Options: req.Options, Attempt: 1},
		Device: d, Image: img, Report: rep, WrongBoard: e.wrongBoard(img.Image, d),
	}
	checks, cerr := callCheck(ctx, ch, job)
	out := &DeviceCheck{Checks: checks, Log: rep.lines()}
	if cerr == nil {
		out.Verdict = VerdictReady
		return out
	}
	kind, reason := Classify(cerr)
	out.Reason, out.Error = reason, cerr.Error()
	switch {
	case kind == KindNotNeeded:
		out.Verdict = VerdictNotNeeded
	case kind == KindRecoverable && reason == status.ReasonConnectionFailed:
		out.Verdict = VerdictUnreachable
	case kind == KindAborted:
		out.Verdict = VerdictWouldAbort
	case reason.Outcome() == status.Aborted:
		out.Verdict = VerdictWouldAbort
	default:
		out.Verdict = VerdictError
	}
	return out
}

func callCheck(ctx context.Context, c Checker, job *Job) (checks []Check, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Failed(status.ReasonUpgraderError, fmt.Errorf("checker panicked: %v", r))
		}
	}()
	return c.Check(ctx, job)
}

// collector is the Reporter of a dry run: it keeps log lines in memory and
// refuses phases, so a Checker that tried to enter one (a bug) cannot
// reach the store, let alone flash.
type collector struct {
	mu  sync.Mutex
	log []string
}

var errDryRunPhase = errors.New("upgrader: a dry run has no phases (the Checker must not call Phase)")

func (c *collector) Phase(context.Context, status.Phase) error { return errDryRunPhase }
func (c *collector) Progress(context.Context, int) error       { return nil }
func (c *collector) Log(_ context.Context, line string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.log) < 200 {
		c.log = append(c.log, store.TruncateLogLine(line))
	}
	return nil
}
func (c *collector) Cancelled(ctx context.Context) error { return ctx.Err() }

func (c *collector) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}
