package upgrader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// busyRecheck is how soon a step finding the operation's previous step
// still running in this engine looks again.
const busyRecheck = 200 * time.Millisecond

// writeTimeout bounds the store writes that end an operation when the
// attempt's own context is already gone.
const writeTimeout = 30 * time.Second

// step advances operation id by one attempt (or ends it). It returns the
// operation afterwards and, when it is waiting for a retry, when that retry
// is due. err is only a store failure.
func (e *Engine) step(ctx context.Context, id string) (store.Operation, time.Time, error) {
	// One step of an operation at a time in this engine: a Run racing the
	// workers (or a second Run) waits instead of starting a second attempt
	// against the same device.
	e.mu.Lock()
	if _, busy := e.running[id]; busy {
		e.mu.Unlock()
		op, err := e.store.Operation(ctx, id)
		return op, e.cfg.Now().Add(busyRecheck), err
	}
	e.running[id] = nil // no attempt context yet
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.running, id)
		e.mu.Unlock()
	}()

	rctx := ctx
	if ctx.Err() != nil {
		// The caller gave up (or the engine stops): still read the
		// operation, to end it or leave it resumable.
		var cancel context.CancelFunc
		rctx, cancel = writeContext(ctx)
		defer cancel()
	}
	op, err := e.store.Operation(rctx, id)
	if err != nil || op.State.Terminal() {
		return op, time.Time{}, err
	}
	now := e.cfg.Now()
	if ctx.Err() != nil {
		return e.interrupted(ctx, op)
	}
	if !op.Deadline.IsZero() && !now.Before(op.Deadline) {
		op, err := e.timeout(ctx, op, nil)
		return op, time.Time{}, err
	}
	if now.Before(op.NextAttemptAt) {
		return op, op.NextAttemptAt, nil
	}

	d, err := e.store.Device(ctx, op.DeviceID)
	if err != nil {
		return e.endWith(ctx, op, status.Aborted, status.ReasonUpgraderError, fmt.Sprintf("device %s: %v", op.DeviceID, err))
	}
	img, err := e.image(ctx, op.ImageID)
	if err != nil {
		return e.endWith(ctx, op, status.Aborted, status.ReasonUpgraderError, fmt.Sprintf("image %s: %v", op.ImageID, err))
	}
	pastFlash := op.Phase.AfterPointOfNoReturn()
	if !pastFlash {
		if !d.Active {
			return e.endWith(ctx, op, status.Aborted, status.ReasonDeviceDeactivated, "device is deactivated")
		}
	}
	u, ok := e.reg.Lookup(d.Connection)
	if !ok {
		if pastFlash {
			return e.endWith(ctx, op, status.Failed, status.ReasonUnknownConnection,
				fmt.Sprintf("no upgrader for connection kind %q to verify the flash", d.Connection))
		}
		return e.endWith(ctx, op, status.Aborted, status.ReasonUnknownConnection,
			fmt.Sprintf("no upgrader registered for connection kind %q", d.Connection))
	}
	if pastFlash {
		return e.verifyInterrupted(ctx, op, u, d, img)
	}

	// Start the attempt.
	attempt := op.Attempt + 1
	upd := store.OperationUpdate{
		From: op.State, State: status.InProgress, Phase: store.Ptr(status.PhaseNone),
		Progress: store.Ptr(0), Attempt: &attempt,
		Log: []string{fmt.Sprintf("attempt %d of %d", attempt, e.cfg.Retry.MaxRetries+1)},
	}
	if op.Deadline.IsZero() {
		upd.Deadline = store.Ptr(now.Add(e.cfg.OperationTimeout))
	}
	started, err := e.store.UpdateOperation(ctx, id, upd)
	if errors.Is(err, store.ErrInvalidTransition) {
		op, err := e.store.Operation(ctx, id) // cancelled meanwhile
		return op, time.Time{}, err
	}
	if err != nil {
		return op, time.Time{}, err
	}
	if op.State != status.InProgress {
		e.published(started, EventOperationState)
	}
	e.logEvent(started, upd.Log[0])

	actx, cancel := context.WithDeadline(ctx, started.Deadline)
	actx, cancelCause := context.WithCancelCause(actx)
	defer cancel()
	defer cancelCause(nil)
	e.mu.Lock()
	e.running[id] = cancelCause
	e.mu.Unlock()

	job := &Job{Operation: started, Device: d, Image: img, Report: &reporter{e: e, op: started}}
	uerr := e.callUpgrade(actx, u, job)
	return e.finish(ctx, actx, started, u, job, uerr)
}

// callUpgrade runs the upgrader, turning a panic into an error: a bad
// plugin must not leave an operation in progress.
func (e *Engine) callUpgrade(ctx context.Context, u Upgrader, job *Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Failed(status.ReasonUpgraderError, fmt.Errorf("upgrader panicked: %v", r))
		}
	}()
	return u.Upgrade(ctx, job)
}

func (e *Engine) callVerify(ctx context.Context, v Verifier, job *Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Failed(status.ReasonUpgraderError, fmt.Errorf("verifier panicked: %v", r))
		}
	}()
	return v.Verify(ctx, job)
}

// finish ends or reschedules the operation after an attempt returned uerr.
func (e *Engine) finish(ctx, actx context.Context, started store.Operation, u Upgrader, job *Job, uerr error) (store.Operation, time.Time, error) {
	wctx, cancel := writeContext(ctx)
	defer cancel()
	op, err := e.store.Operation(wctx, started.ID)
	if err != nil {
		return op, time.Time{}, err
	}
	if op.State.Terminal() {
		return op, time.Time{}, nil // cancelled while the attempt ran
	}
	pastFlash := op.Phase.AfterPointOfNoReturn()

	if uerr == nil {
		return e.succeed(wctx, op, status.ReasonNone, "upgrade successful")
	}
	kind, reason := Classify(uerr)
	cause := context.Cause(actx)
	switch {
	case kind == KindNotNeeded:
		return e.succeed(wctx, op, reason, fmt.Sprintf("not needed: %v", uerr))
	case actx.Err() != nil && ctx.Err() == nil && errors.Is(cause, context.DeadlineExceeded):
		op, err := e.timeout(ctx, op, job) // ctx: a Stop interrupts the verification
		return op, time.Time{}, err
	case errors.Is(cause, errStopping) || ctx.Err() != nil:
		return e.interrupted(actx, op)
	case kind == KindCancelled || errors.Is(cause, ErrCancelled):
		if pastFlash {
			return e.endWith(wctx, op, status.Failed, status.ReasonUpgraderError,
				fmt.Sprintf("upgrader reported a cancel after flashing started: %v", uerr))
		}
		return e.endWith(wctx, op, status.Cancelled, status.ReasonCancelledByUser, "cancelled")
	case pastFlash:
		if reason.Retryable() || kind == KindAborted {
			reason = status.ReasonFlashFailed
		}
		return e.endWith(wctx, op, status.Failed, reason, fmt.Sprintf("failed after flashing started: %v", uerr))
	case kind == KindRecoverable:
		if op.Attempt <= e.cfg.Retry.MaxRetries {
			d := e.cfg.Retry.Delay(op.Attempt)
			at := e.cfg.Now().Add(d)
			line := fmt.Sprintf("recoverable failure (%s): %v; retrying in %s (retry %d of %d)",
				reason, uerr, d.Round(time.Millisecond), op.Attempt, e.cfg.Retry.MaxRetries)
			upd, err := e.store.UpdateOperation(wctx, op.ID, store.OperationUpdate{
				From: status.InProgress, Phase: store.Ptr(status.PhaseNone), Progress: store.Ptr(0),
				NextAttemptAt: &at, Log: []string{line},
			})
			if errors.Is(err, store.ErrInvalidTransition) {
				op, err := e.store.Operation(wctx, op.ID)
				return op, time.Time{}, err
			}
			if err != nil {
				return op, time.Time{}, err
			}
			e.published(upd, EventOperationPhase)
			e.logEvent(upd, line)
			return upd, at, nil
		}
		if reason.Outcome() == status.Aborted {
			return e.endWith(wctx, op, status.Aborted, reason, fmt.Sprintf("giving up after %d attempts: %v", op.Attempt, uerr))
		}
		return e.endWith(wctx, op, status.Failed, status.ReasonMaxRetriesExceeded,
			fmt.Sprintf("max retries exceeded after %d attempts, last failure (%s): %v", op.Attempt, reason, uerr))
	case kind == KindAborted:
		return e.endWith(wctx, op, status.Aborted, reason, fmt.Sprintf("aborted: %v", uerr))
	default:
		return e.endWith(wctx, op, status.Failed, reason, fmt.Sprintf("failed: %v", uerr))
	}
}

// interrupted handles an attempt cut short by the caller's context (Stop
// running out of time, or a synchronous caller giving up).
func (e *Engine) interrupted(ctx context.Context, op store.Operation) (store.Operation, time.Time, error) {
	wctx, cancel := writeContext(ctx)
	defer cancel()
	if stopping(ctx) {
		// Leave it resumable by the next Start: a retry before flashing, a
		// verification after.
		if !op.Phase.AfterPointOfNoReturn() && op.State == status.InProgress {
			line := "engine stopped during the attempt; the operation resumes when an engine starts"
			upd, err := e.store.UpdateOperation(wctx, op.ID, store.OperationUpdate{
				From: status.InProgress, Phase: store.Ptr(status.PhaseNone), Log: []string{line},
			})
			if err == nil {
				e.published(upd, EventOperationPhase)
				return upd, time.Time{}, nil
			}
		}
		return op, time.Time{}, nil
	}
	if op.Phase.AfterPointOfNoReturn() {
		op, err := e.timeout(wctx, op, nil)
		return op, time.Time{}, err
	}
	return e.endWith(wctx, op, status.Cancelled, status.ReasonCancelledByUser, "cancelled: the caller's context ended")
}

// timeout ends an operation whose deadline passed: at or after flashing it
// is verified first.
func (e *Engine) timeout(ctx context.Context, op store.Operation, job *Job) (store.Operation, error) {
	if op.Phase.AfterPointOfNoReturn() && op.State == status.InProgress {
		ok, line := e.verify(ctx, op, job)
		if !ok && stopping(ctx) {
			return op, nil // left for the next Start to verify
		}
		line = "deadline passed after flashing; " + line
		if ok {
			op, _, err := e.succeed(ctx, op, status.ReasonNone, line)
			return op, err
		}
		op, _, err := e.endWith(ctx, op, status.Failed, status.ReasonTimeout, line)
		return op, err
	}
	op, _, err := e.endWith(ctx, op, status.Failed, status.ReasonTimeout,
		fmt.Sprintf("operation timed out (deadline %s)", op.Deadline.Format(time.RFC3339)))
	return op, err
}

// verify asks the device's Verifier whether the flash succeeded. It returns
// the verdict and a log line.
//
// The verification ends with ctx (a Stop interrupts it, see stopping),
// except when ctx is already done on entry: a caller that gave up still gets
// its operation verified, within Config.VerifyTimeout.
func (e *Engine) verify(ctx context.Context, op store.Operation, job *Job) (bool, string) {
	base := ctx
	if ctx.Err() != nil {
		base = context.WithoutCancel(ctx)
	}
	vctx, cancel := context.WithTimeout(base, e.cfg.VerifyTimeout)
	defer cancel()
	if job == nil {
		d, err := e.store.Device(vctx, op.DeviceID)
		if err != nil {
			return false, fmt.Sprintf("cannot verify: %v", err)
		}
		img, err := e.image(vctx, op.ImageID)
		if err != nil {
			return false, fmt.Sprintf("cannot verify: %v", err)
		}
		job = &Job{Operation: op, Device: d, Image: img}
	}
	u, ok := e.reg.Lookup(job.Device.Connection)
	v, isV := u.(Verifier)
	if !ok || !isV {
		return false, fmt.Sprintf("the upgrader for %q cannot verify the flash", job.Device.Connection)
	}
	j := *job
	j.Operation = op
	j.Report = &reporter{e: e, op: op, verifying: true}
	if err := e.callVerify(vctx, v, &j); err != nil {
		return false, fmt.Sprintf("verification failed: %v", err)
	}
	return true, "verified: the device runs the new firmware"
}

// verifyInterrupted ends an operation found at or after flashing that no
// attempt is running (after a crash or a stop): it is verified, never
// flashed again.
func (e *Engine) verifyInterrupted(ctx context.Context, op store.Operation, u Upgrader, d store.Device, img Image) (store.Operation, time.Time, error) {
	e.logEvent(op, "resuming an operation interrupted after flashing started: verifying")
	_ = e.store.AppendLog(ctx, op.ID, 0, "resuming an operation interrupted after flashing started: verifying")
	ok, line := e.verify(ctx, op, &Job{Operation: op, Device: d, Image: img})
	if ok {
		return e.succeed(ctx, op, status.ReasonNone, line)
	}
	if stopping(ctx) {
		return op, time.Time{}, nil // left for the next Start to verify
	}
	return e.endWith(ctx, op, status.Failed, status.ReasonWorkerLost, line)
}

// stopping reports whether ctx ended because the engine is stopping.
func stopping(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errStopping)
}

// succeed ends op in success and records the device's firmware.
func (e *Engine) succeed(ctx context.Context, op store.Operation, reason status.Reason, line string) (store.Operation, time.Time, error) {
	ctx, cancel := writeContext(ctx)
	defer cancel()
	end, _, err := e.endWith(ctx, op, status.Success, reason, line)
	if err != nil || end.State != status.Success {
		return end, time.Time{}, err
	}
	if err := e.installed(ctx, end); err != nil {
		e.log.Warn("recording the device firmware failed", slog.String("operation", op.ID), slog.Any("error", err))
		_ = e.store.AppendLog(ctx, op.ID, 0, fmt.Sprintf("warning: recording the device firmware failed: %v", err))
	}
	return end, time.Time{}, nil
}

// endWith moves op into a terminal state. If the operation changed
// meanwhile (a cancel won, another step moved it), it looks again a few
// times: an operation that ended is returned as it is; one that went past
// the point of no return can only end failed, not cancelled or aborted.
func (e *Engine) endWith(ctx context.Context, op store.Operation, to status.State, reason status.Reason, line string) (store.Operation, time.Time, error) {
	wctx, cancel := writeContext(ctx)
	defer cancel()
	var err error
	for range 5 {
		target := to
		if (target == status.Aborted || target == status.Cancelled) && op.Phase.AfterPointOfNoReturn() {
			target = status.Failed
		}
		u := store.OperationUpdate{From: op.State, State: target, Reason: reason, Log: []string{line}}
		if target == status.Success {
			u.Progress = store.Ptr(status.ProgressDone)
		}
		var end store.Operation
		end, err = e.store.UpdateOperation(wctx, op.ID, u)
		if err == nil {
			e.logEvent(end, line)
			e.published(end, EventOperationState)
			e.log.Info("operation ended", slog.String("operation", end.ID), slog.String("device", end.DeviceID),
				slog.String("state", string(end.State)), slog.String("reason", string(end.Reason)))
			return end, time.Time{}, nil
		}
		if !errors.Is(err, store.ErrInvalidTransition) {
			return op, time.Time{}, err
		}
		cur, gerr := e.store.Operation(wctx, op.ID)
		if gerr != nil {
			return op, time.Time{}, gerr
		}
		if cur.State.Terminal() {
			return cur, time.Time{}, nil
		}
		op = cur
	}
	return op, time.Time{}, fmt.Errorf("upgrader: ending operation %s: it kept changing: %w", op.ID, err)
}

func (e *Engine) logEvent(op store.Operation, line string) {
	e.events.publish(Event{Kind: EventOperationLog, Time: e.cfg.Now(), OperationID: op.ID,
		DeviceID: op.DeviceID, BatchID: op.BatchID, State: op.State, Phase: op.Phase, Line: line})
}

// image loads an image with its build and content.
func (e *Engine) image(ctx context.Context, id string) (Image, error) {
	im, err := e.store.Image(ctx, id)
	if err != nil {
		return Image{}, err
	}
	b, err := e.store.Build(ctx, im.BuildID)
	if err != nil {
		return Image{}, err
	}
	files := e.cfg.Files
	return Image{Image: im, Build: b, OpenFunc: func(ctx context.Context) (io.ReadCloser, error) {
		return files.Open(ctx, im.ID)
	}}, nil
}

// writeContext returns a context for writes that must happen even when ctx
// is already done.
func writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
}
