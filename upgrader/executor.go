package upgrader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// writeTimeout bounds one store write of the executor.
const writeTimeout = 30 * time.Second

// The executor runs one step of one claimed operation: an attempt, a
// verification, or its end. Every write it makes carries the claim's fencing
// token, so a step whose lease was lost (taken over by another engine) can
// no longer change the operation.

// execute holds the claim on op while it runs one step, and releases the
// lease afterwards unless the operation ended. base is the context of the
// caller: the engine's work context for workers, the caller's for Run. It
// returns the operation afterwards and, when it waits for a retry, when the
// retry is due; err is only a store failure. sent is when the claim was
// asked for: the lease runs from then at the latest.
func (e *Engine) execute(base context.Context, claimed store.Operation, sent time.Time) (store.Operation, time.Time, error) {
	c := e.hold(claimed, sent)
	op, retryAt, err := e.step(base, c, claimed)
	// After a store failure the lease is kept until it expires: that is the
	// backoff before any engine tries the operation again.
	e.unhold(c, err == nil && !op.State.Terminal())
	return op, retryAt, err
}

func (e *Engine) step(ctx context.Context, c *claim, op store.Operation) (store.Operation, time.Time, error) {
	if op.State.Terminal() {
		return op, time.Time{}, nil
	}
	if ctx.Err() != nil {
		return e.interrupted(ctx, c, op)
	}
	now := e.cfg.Now()
	if !op.Deadline.IsZero() && !now.Before(op.Deadline) {
		op, err := e.timeout(ctx, c, op, nil)
		return op, time.Time{}, err
	}
	if now.Before(op.NextAttemptAt) {
		return op, op.NextAttemptAt, nil // claimed by ID before its time (Run)
	}

	// Reads with the claim's context: a caller giving up now must not leave
	// the operation unended (the attempt below sees ctx and ends it).
	d, err := e.store.Device(c.wctx, op.DeviceID)
	if errors.Is(err, store.ErrNotFound) {
		return e.endWith(c, op, status.Aborted, status.ReasonUpgraderError, fmt.Sprintf("device %s: %s", op.DeviceID, message(err)))
	}
	if err != nil {
		return op, time.Time{}, err
	}
	img, err := e.image(c.wctx, op.ImageID)
	if errors.Is(err, store.ErrNotFound) {
		return e.endWith(c, op, status.Aborted, status.ReasonUpgraderError, fmt.Sprintf("image %s: %s", op.ImageID, message(err)))
	}
	if err != nil {
		return op, time.Time{}, err
	}
	u, ok := e.reg.Lookup(d.Connection)
	if op.Phase.AfterPointOfNoReturn() {
		if !ok {
			return e.endWith(c, op, status.Failed, status.ReasonUnknownConnection,
				fmt.Sprintf("no upgrader for connection kind %q to verify the flash", d.Connection))
		}
		return e.verifyInterrupted(ctx, c, op, d, img)
	}
	if !ok {
		return e.endWith(c, op, status.Aborted, status.ReasonUnknownConnection,
			fmt.Sprintf("no upgrader registered for connection kind %q", d.Connection))
	}
	if reason, why := e.attemptChecks(ctx, d, img, op.Options, u); reason != status.ReasonNone {
		return e.endWith(c, op, status.Aborted, reason, why)
	}

	// What earlier attempts may have left changed on the device: this
	// attempt undoes it with its own changes, or endWith restores it.
	st := &undoState{}
	if !op.StartedAt.IsZero() {
		if st.records, err = e.loadUndo(c.wctx, op.ID); err != nil {
			return op, time.Time{}, err
		}
	}
	e.maint.track(op.ID, st)
	defer e.maint.untrack(op.ID, st)

	// Start the attempt.
	var lines []string
	if op.Phase != status.PhaseNone {
		// A claim found an attempt in the middle: its engine stopped
		// renewing the lease (a crash) before flashing. That attempt counts.
		lines = append(lines, fmt.Sprintf("attempt %d was interrupted in phase %s: its engine stopped renewing the lease", op.Attempt, op.Phase))
		if op.Attempt > e.cfg.Retry.MaxRetries {
			return e.endWith(c, op, status.Failed, status.ReasonMaxRetriesExceeded,
				fmt.Sprintf("%d attempts, the last one interrupted (%s)", op.Attempt, status.ReasonWorkerLost))
		}
	}
	attempt := op.Attempt + 1
	lines = append(lines, fmt.Sprintf("attempt %d of %d", attempt, e.cfg.Retry.MaxRetries+1))
	upd := store.OperationUpdate{
		From: op.State, State: status.InProgress, Phase: store.Ptr(status.PhaseNone),
		Progress: store.Ptr(0), Attempt: &attempt, Log: lines, Token: c.token,
	}
	if op.Deadline.IsZero() {
		upd.DeadlineAfter = store.Ptr(e.cfg.OperationTimeout) // on the store's clock
	}
	var started store.Operation
	err = e.persist(c, func(ctx context.Context) (err error) {
		started, err = e.store.UpdateOperation(ctx, op.ID, upd)
		return err
	})
	if err != nil {
		return e.refused(c, op, err)
	}
	if op.State != status.InProgress {
		e.published(started, EventOperationState)
	}
	for _, l := range lines {
		e.logEvent(started, l)
	}

	actx, cancel := context.WithDeadline(ctx, started.Deadline)
	actx, cancelCause := context.WithCancelCause(actx)
	defer cancel()
	defer cancelCause(nil)
	c.setCancel(cancelCause)
	defer c.setCancel(nil)

	rep := &reporter{e: e, c: c, op: started}
	job := &Job{Operation: started, Device: d, Image: img, Report: &undoReporter{reporter: rep, st: st},
		WrongBoard: e.wrongBoard(img.Image, d), Undo: st.pending()}
	uerr := e.callUpgrade(actx, u, job)
	return e.finish(ctx, actx, c, started, job, rep.proved(), uerr)
}

// attemptChecks repeats, at the start of every attempt, what Create checks:
// the store may have changed since (a device deactivated or moved, an
// operation created directly in the store, image bytes removed). It returns
// the reason to abort, or status.ReasonNone.
func (e *Engine) attemptChecks(ctx context.Context, d store.Device, img Image, opts json.RawMessage, u Upgrader) (status.Reason, string) {
	if err := e.checkFit(d, img.Image); err != nil {
		var re *RefusedError
		if errors.As(err, &re) && re.Err != nil {
			return re.Reason, message(re.Err)
		}
		if errors.As(err, &re) {
			return re.Reason, ""
		}
		return status.ReasonUpgraderError, message(err)
	}
	if err := validateOptions(u, opts); err != nil {
		return status.ReasonInvalidOptions, message(err)
	}
	rc, err := img.Open(ctx)
	if errors.Is(err, ErrFileNotFound) || errors.Is(err, fs.ErrNotExist) {
		return status.ReasonImageMissing, fmt.Sprintf("the bytes of image %s are not in the image storage: %v", img.ID, err)
	}
	if err == nil {
		rc.Close()
	}
	// Other errors may pass: the upgrader meets them and classifies them.
	return status.ReasonNone, ""
}

// validateOptions asks u to check opts, when it can; a validator that
// panics refuses the options.
func validateOptions(u Upgrader, opts json.RawMessage) (err error) {
	v, ok := u.(OptionsValidator)
	if !ok || len(opts) == 0 {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("upgrader: the options validator panicked: %v", r)
		}
	}()
	return v.ValidateOptions(opts)
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

// finish ends or reschedules the operation after an attempt returned uerr;
// proof is what the upgrader said it proved (Prover), if anything.
func (e *Engine) finish(ctx, actx context.Context, c *claim, started store.Operation, job *Job, proof string, uerr error) (store.Operation, time.Time, error) {
	cause := context.Cause(actx)
	if c.gone() || errors.Is(cause, ErrLeaseLost) || errors.Is(uerr, ErrLeaseLost) {
		return e.current(started) // another engine owns it now: write nothing
	}
	var op store.Operation
	err := e.persist(c, func(ctx context.Context) (err error) {
		op, err = e.store.Operation(ctx, started.ID)
		return err
	})
	if err != nil {
		return started, time.Time{}, err
	}
	if op.State.Terminal() {
		// Cancelled while the attempt ran: the attempt undid its changes,
		// unless its cleanup failed; then one more try, after the end.
		if st := e.maint.undoOf(op.ID); st != nil && len(st.pending()) > 0 && !op.Phase.AfterPointOfNoReturn() {
			e.restoreLater(op, e.cfg.Now())
		}
		return op, time.Time{}, nil
	}
	pastFlash := op.Phase.AfterPointOfNoReturn()

	if uerr == nil {
		return e.succeed(c, op, status.ReasonNone, successDetail(proof, job.Image))
	}
	kind, reason := Classify(uerr)
	msg := message(uerr)
	switch {
	case kind == KindNotNeeded:
		return e.succeed(c, op, reason, msg)
	case actx.Err() != nil && ctx.Err() == nil && errors.Is(cause, context.DeadlineExceeded):
		op, err := e.timeout(ctx, c, op, job) // ctx: a Stop interrupts the verification
		return op, time.Time{}, err
	case errors.Is(cause, errStopping) || ctx.Err() != nil:
		return e.interrupted(actx, c, op)
	case kind == KindCancelled || errors.Is(cause, ErrCancelled):
		if pastFlash {
			return e.endWith(c, op, status.Failed, status.ReasonUpgraderError,
				fmt.Sprintf("the upgrader reported a cancel after flashing started (%s)", msg))
		}
		return e.endWith(c, op, status.Cancelled, status.ReasonCancelledByUser, "")
	case pastFlash:
		if reason.Retryable() || kind == KindAborted {
			// The upgrader's own reason, which cannot end an operation
			// past the point of no return, stays in the line.
			msg = fmt.Sprintf("%s (%s after flashing started)", msg, reason)
			reason = status.ReasonFlashFailed
		}
		return e.endWith(c, op, status.Failed, reason, msg)
	case kind == KindRecoverable && reason == status.ReasonConnectionFailed && op.BatchID != "" && !e.cfg.Offline.Disabled:
		return e.waitOffline(c, op, uerr)
	case kind == KindRecoverable:
		if op.Attempt <= e.cfg.Retry.MaxRetries {
			return e.retryLater(c, op, reason, uerr)
		}
		if reason.Outcome() == status.Aborted {
			return e.endWith(c, op, status.Aborted, reason, fmt.Sprintf("gave up after %d attempts: %s", op.Attempt, msg))
		}
		return e.endWith(c, op, status.Failed, status.ReasonMaxRetriesExceeded,
			fmt.Sprintf("%d attempts, the last one %s: %s", op.Attempt, reason, msg))
	case kind == KindAborted:
		return e.endWith(c, op, status.Aborted, reason, msg)
	default:
		return e.endWith(c, op, status.Failed, reason, msg)
	}
}

// successDetail is what a success line says was proven: the upgrader's
// proof (Prover), else that the upgrader reported the image installed.
func successDetail(proof string, img Image) string {
	if proof != "" {
		return proof
	}
	name := img.Name
	if name == "" {
		name = img.ID
	}
	return fmt.Sprintf("the upgrader reports that the device runs image %s", name)
}

// retryLater schedules the next attempt in the store (NextAttemptAt): the
// lease is released afterwards and whichever engine claims the operation
// when it is due runs it.
func (e *Engine) retryLater(c *claim, op store.Operation, reason status.Reason, uerr error) (store.Operation, time.Time, error) {
	d := e.cfg.Retry.Delay(op.Attempt)
	at := e.cfg.Now().Add(d) // for this engine's wake-up; the store sets the due time on its own clock
	line := fmt.Sprintf("recoverable failure (%s): %s; retrying in %s (retry %d of %d)",
		reason, message(uerr), d.Round(time.Millisecond), op.Attempt, e.cfg.Retry.MaxRetries)
	var upd store.Operation
	err := e.persist(c, func(ctx context.Context) (err error) {
		upd, err = e.store.UpdateOperation(ctx, op.ID, store.OperationUpdate{
			From: status.InProgress, Phase: store.Ptr(status.PhaseNone), Progress: store.Ptr(0),
			RetryAfter: &d, Log: []string{line}, Token: c.token,
		})
		return err
	})
	if err != nil {
		return e.refused(c, op, err)
	}
	e.published(upd, EventOperationPhase)
	e.logEvent(upd, line)
	return upd, at, nil
}

// waitOffline sends a batch's operation whose device could not be reached
// back to pending, to be tried again after Config.Offline's wait; its
// attempts start again from zero and its deadline is cleared (the next
// attempt gets a new one). After Offline.MaxWait it fails instead.
func (e *Engine) waitOffline(c *claim, op store.Operation, uerr error) (store.Operation, time.Time, error) {
	offline := max(e.cfg.Now().Sub(op.StartedAt), 0)
	if w := e.cfg.Offline.MaxWait; w > 0 && offline >= w {
		return e.endWith(c, op, status.Failed, status.ReasonConnectionFailed,
			fmt.Sprintf("device unreachable for %s, longer than the offline limit (%s): %s", offline.Round(time.Second), w, message(uerr)))
	}
	d := e.cfg.Offline.Delay(offline)
	at := e.cfg.Now().Add(d)
	line := fmt.Sprintf("device unreachable (%s); waiting for it: next try in %s", message(uerr), d.Round(time.Second))
	var upd store.Operation
	err := e.persist(c, func(ctx context.Context) (err error) {
		upd, err = e.store.UpdateOperation(ctx, op.ID, store.OperationUpdate{
			From: status.InProgress, State: status.Pending, Reason: status.ReasonConnectionFailed,
			Attempt: store.Ptr(0), Deadline: &time.Time{}, RetryAfter: &d, Log: []string{line}, Token: c.token,
		})
		return err
	})
	if err != nil {
		return e.refused(c, op, err)
	}
	e.published(upd, EventOperationState)
	e.logEvent(upd, line)
	return upd, at, nil
}

// interrupted handles an attempt cut short by the caller's context (Stop
// running out of time, or a synchronous caller giving up).
func (e *Engine) interrupted(ctx context.Context, c *claim, op store.Operation) (store.Operation, time.Time, error) {
	if stopping(ctx) {
		// Leave it to the next claim, by any engine: a new attempt before
		// flashing, a verification after.
		if !op.Phase.AfterPointOfNoReturn() && op.State == status.InProgress && op.Phase != status.PhaseNone {
			line := "engine stopped during the attempt; the operation resumes when an engine claims it"
			wctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			defer cancel()
			upd, err := e.store.UpdateOperation(wctx, op.ID, store.OperationUpdate{
				From: status.InProgress, Phase: store.Ptr(status.PhaseNone), Log: []string{line}, Token: c.token,
			})
			if err == nil {
				e.published(upd, EventOperationPhase)
				return upd, time.Time{}, nil
			}
		}
		return op, time.Time{}, nil
	}
	if op.Phase.AfterPointOfNoReturn() {
		op, err := e.timeout(ctx, c, op, nil)
		return op, time.Time{}, err
	}
	return e.endWith(c, op, status.Cancelled, status.ReasonCancelledByUser, "the caller's context ended")
}

// timeout ends an operation whose deadline passed: at or after flashing it
// is verified first.
func (e *Engine) timeout(ctx context.Context, c *claim, op store.Operation, job *Job) (store.Operation, error) {
	if op.Phase.AfterPointOfNoReturn() && op.State == status.InProgress {
		if !e.note(c, op, "deadline passed after flashing: verifying the outcome") {
			cur, _, err := e.current(op)
			return cur, err
		}
		ok, detail := e.verify(ctx, c, op, job)
		if !ok && (stopping(ctx) || c.gone()) {
			return op, nil // left for the next claim to verify
		}
		if ok {
			op, _, err := e.succeed(c, op, status.ReasonNone, detail)
			return op, err
		}
		op, _, err := e.endWith(c, op, status.Failed, status.ReasonTimeout, detail)
		return op, err
	}
	op, _, err := e.endWith(c, op, status.Failed, status.ReasonTimeout,
		fmt.Sprintf("operation timed out (deadline %s)", op.Deadline.Format(time.RFC3339)))
	return op, err
}

// verify asks the device's Verifier whether the flash succeeded. It returns
// the verdict and what it rests on: the proof of a success (see Prover), or
// why the flash could not be proven.
//
// The verification ends with ctx (a Stop interrupts it, see stopping),
// except when ctx is already done on entry: a caller that gave up still gets
// its operation verified, within Config.VerifyTimeout.
func (e *Engine) verify(ctx context.Context, c *claim, op store.Operation, job *Job) (bool, string) {
	base := ctx
	if ctx.Err() != nil {
		base = context.WithoutCancel(ctx)
	}
	vctx, cancel := context.WithTimeout(base, e.cfg.VerifyTimeout)
	defer cancel()
	vctx, cancelCause := context.WithCancelCause(vctx)
	defer cancelCause(nil)
	c.setCancel(func(cause error) {
		if errors.Is(cause, ErrLeaseLost) { // a cancel cannot stop a verification
			cancelCause(cause)
		}
	})
	defer c.setCancel(nil)
	if job == nil {
		d, err := e.store.Device(vctx, op.DeviceID)
		if err != nil {
			return false, fmt.Sprintf("cannot verify: %s", message(err))
		}
		img, err := e.image(vctx, op.ImageID)
		if err != nil {
			return false, fmt.Sprintf("cannot verify: %s", message(err))
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
	rep := &reporter{e: e, c: c, op: op, verifying: true}
	j.Report = rep
	if err := e.callVerify(vctx, v, &j); err != nil {
		return false, fmt.Sprintf("verification failed: %s", message(err))
	}
	return true, successDetail(rep.proved(), j.Image)
}

// verifyInterrupted ends an operation found at or after flashing with no
// attempt running (its engine crashed or stopped): it is verified, never
// flashed again.
func (e *Engine) verifyInterrupted(ctx context.Context, c *claim, op store.Operation, d store.Device, img Image) (store.Operation, time.Time, error) {
	if !e.note(c, op, "resuming an operation interrupted after flashing started: verifying") {
		return e.current(op)
	}
	ok, detail := e.verify(ctx, c, op, &Job{Operation: op, Device: d, Image: img})
	if ok {
		return e.succeed(c, op, status.ReasonNone, detail)
	}
	if stopping(ctx) || c.gone() {
		return op, time.Time{}, nil // left for the next claim to verify
	}
	return e.endWith(c, op, status.Failed, status.ReasonWorkerLost, detail)
}

// note appends line to the operation's log under the claim. It reports
// false when the claim was lost (another engine owns the operation now);
// a line the store could not take is only missing from the log.
func (e *Engine) note(c *claim, op store.Operation, line string) bool {
	wctx, cancel := context.WithTimeout(c.wctx, writeTimeout)
	defer cancel()
	err := e.store.AppendLog(wctx, op.ID, c.token, line)
	if errors.Is(err, store.ErrStaleToken) {
		c.markLost()
		return false
	}
	e.logEvent(op, store.TruncateLogLine(line))
	return true
}

// stopping reports whether ctx ended because the engine is stopping.
func stopping(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errStopping)
}

// succeed records the device's firmware, then ends op in success: a host
// that sees the success (through Wait, an event, or the store from another
// process) finds the firmware record already written. detail is what was
// proven (or, not needed, why).
func (e *Engine) succeed(c *claim, op store.Operation, reason status.Reason, detail string) (store.Operation, time.Time, error) {
	err := e.persist(c, func(ctx context.Context) error { return e.installed(ctx, op) })
	if err != nil && !c.gone() {
		e.log.Warn("recording the device firmware failed", slog.String("operation", op.ID), slog.Any("error", err))
		detail += fmt.Sprintf(" (warning: recording the device firmware failed: %v)", err)
	}
	return e.endWith(c, op, status.Success, reason, detail)
}

// endWith moves op into a terminal state, with the claim's token, and logs
// one line: the outcome as it ended (see endLine), then detail. If the
// operation changed meanwhile (a cancel won, another step moved it), it
// looks again a few times: an operation that ended is returned as it is; one
// that went past the point of no return can only end failed, not cancelled
// or aborted. A store that keeps failing is retried with backoff until the
// write lands, the lease is lost or the engine stops for good: an operation
// is never left in progress by one failed write.
func (e *Engine) endWith(c *claim, op store.Operation, to status.State, reason status.Reason, detail string) (store.Operation, time.Time, error) {
	// Before flashing, what an attempt left changed on the device is undone
	// first, under the claim: no other operation of the device can start
	// before this one ends.
	e.restoreBeforeEnd(c, op)
	var err error
	for range 5 {
		target := to
		if (target == status.Aborted || target == status.Cancelled) && op.Phase.AfterPointOfNoReturn() {
			target = status.Failed
		}
		line := endLine(target, reason, detail)
		u := store.OperationUpdate{From: op.State, State: target, Reason: reason, Log: []string{line}, Token: c.token}
		if target == status.Success {
			u.Progress = store.Ptr(status.ProgressDone)
		}
		var end store.Operation
		err = e.persist(c, func(ctx context.Context) (err error) {
			end, err = e.store.UpdateOperation(ctx, op.ID, u)
			return err
		})
		if err == nil {
			e.logEvent(end, line)
			e.published(end, EventOperationState)
			e.log.Info("operation ended", slog.String("operation", end.ID), slog.String("device", end.DeviceID),
				slog.String("state", string(end.State)), slog.String("reason", string(end.Reason)))
			return end, time.Time{}, nil
		}
		if !errors.Is(err, store.ErrInvalidTransition) {
			return e.refused(c, op, err)
		}
		cur, _, gerr := e.current(op)
		if gerr != nil || cur.State.Terminal() {
			return cur, time.Time{}, gerr
		}
		op = cur
	}
	return op, time.Time{}, fmt.Errorf("upgrader: ending operation %s: it kept changing: %w", op.ID, err)
}

// refused handles a write the store refused: a stale token means another
// engine owns the operation now (nothing more to do here); anything else is
// a store failure.
func (e *Engine) refused(c *claim, op store.Operation, err error) (store.Operation, time.Time, error) {
	if errors.Is(err, store.ErrStaleToken) || c.gone() {
		c.markLost()
		return e.current(op)
	}
	if errors.Is(err, store.ErrInvalidTransition) {
		return e.current(op) // cancelled meanwhile
	}
	return op, time.Time{}, err
}

// current reads op again, for a step that must not write any more.
func (e *Engine) current(op store.Operation) (store.Operation, time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	cur, err := e.store.Operation(ctx, op.ID)
	if err != nil {
		return op, time.Time{}, err
	}
	return cur, time.Time{}, nil
}

// permanent reports whether a store error is one that retrying cannot fix.
func permanent(err error) bool {
	for _, s := range []error{store.ErrInvalidTransition, store.ErrStaleToken, store.ErrNotFound,
		store.ErrInvalid, store.ErrConflict, store.ErrDeviceBusy, store.ErrOrganizationMismatch, store.ErrLeased} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// persist runs write until it succeeds or fails for good: a refusal by
// the store (permanent), the claim's lease lost, or the engine stopped after
// its grace period. Transient failures (a database restarting, a network
// blip) are retried with exponential backoff, so that one failed write does
// not strand an operation in progress.
func (e *Engine) persist(c *claim, write func(ctx context.Context) error) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	for {
		err := write(c.wctx) // ends when the lease is lost: a hung store call gives up then
		if err == nil || permanent(err) {
			return err
		}
		if c.gone() {
			return err
		}
		e.log.Warn("store write failed; retrying", slog.String("operation", c.id), slog.Any("error", err))
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-t.C:
		case <-c.lost:
			t.Stop()
			return err
		case <-e.dead.Done():
			t.Stop()
			return err
		}
	}
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
