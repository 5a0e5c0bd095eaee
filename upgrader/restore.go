package upgrader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Undo records and restores.
//
// An attempt that changes its device before flashing (services stopped, an
// image in RAM) records each change first (UndoRecorder.RecordUndo): a line
// of the operation's log, written under the attempt's claim. The records
// are where every engine can read them, whatever became of the engine that
// wrote them, and without asking the device. An attempt that puts the
// device back says so (Undone): a line that clears every record before it.
//
// What is recorded and not cleared is undone by whoever runs the operation
// next: the next attempt (Job.Undo: its cleanup undoes it with its own), or,
// when the operation ends before flashing with no attempt to follow, the
// upgrader's Restorer:
//   - under the claim, before the terminal move, when this engine ends the
//     operation (a deadline found at the claim, attempts exhausted, an
//     abort, an attempt whose own cleanup failed);
//   - after the end, when the end was a compare-and-set that needs no claim
//     (Engine.Cancel of an operation no attempt of this engine runs, a
//     deadline expired by maintenance). A terminal operation can no longer
//     be claimed, so the engine that won the compare-and-set, and only it,
//     restores: once the lease of the attempt it interrupted has lapsed
//     (that attempt, if alive, has stopped by then, undoing its own changes
//     when it learnt of the cancel), and not while another operation of the
//     device runs (a restore then waits for that operation: if it flashes,
//     its reboot puts the device right).

const (
	// undoPrefix starts a log line that holds an undo record.
	undoPrefix = "undo record: "
	// undoneLine clears every undo record before it.
	undoneLine = "undo records cleared: nothing is left to undo on the device"
	// restoreTimeout bounds one restore, whatever the upgrader's own
	// budget.
	restoreTimeout = 5 * time.Minute
)

// ordinaryLine returns a line an upgrader logs (through Reporter.Log) so
// that it cannot read as an undo record or as their clearing: a device's
// output is logged too, and must not decide what the engine undoes.
func ordinaryLine(line string) string {
	if strings.HasPrefix(line, undoPrefix) || line == undoneLine {
		return "device: " + line
	}
	return line
}

// pendingUndo returns the undo records of an operation's log that no later
// line cleared, oldest first.
func pendingUndo(entries []store.LogEntry) []string {
	var recs []string
	for _, l := range entries {
		switch {
		case l.Line == undoneLine:
			recs = nil
		case strings.HasPrefix(l.Line, undoPrefix):
			recs = append(recs, strings.TrimPrefix(l.Line, undoPrefix))
		}
	}
	return recs
}

// loadUndo reads the pending undo records of operation id.
func (e *Engine) loadUndo(ctx context.Context, id string) ([]string, error) {
	entries, err := e.store.Logs(ctx, id, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("upgrader: reading the undo records of operation %s: %w", id, err)
	}
	return pendingUndo(entries), nil
}

// undoState is what the attempts of an operation this engine runs left to
// undo, as far as this engine knows: the records found when the attempt
// started, plus those the attempt recorded, until it cleared them.
type undoState struct {
	mu      sync.Mutex
	records []string
}

func (s *undoState) pending() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.records)
}

func (s *undoState) add(rec string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, rec)
}

func (s *undoState) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = nil
}

// track registers the undo state of an operation this engine runs, for
// endWith; untrack forgets it.
func (m *maintenance) track(id string, st *undoState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.undo == nil {
		m.undo = map[string]*undoState{}
	}
	m.undo[id] = st
}

func (m *maintenance) untrack(id string, st *undoState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.undo[id] == st {
		delete(m.undo, id)
	}
}

func (m *maintenance) undoOf(id string) *undoState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.undo[id]
}

// checkUndoRecord refuses a record the log cannot keep as one line.
func checkUndoRecord(rec string) error {
	switch {
	case rec == "":
		return errors.New("upgrader: empty undo record")
	case !utf8.ValidString(rec) || strings.ContainsAny(rec, "\x00\r\n"):
		return errors.New("upgrader: an undo record must be one line of valid UTF-8")
	case utf8.RuneCountInString(rec) > MaxUndoRecordLen:
		return fmt.Errorf("upgrader: undo record of %d characters, the limit is %d", utf8.RuneCountInString(rec), MaxUndoRecordLen)
	}
	return nil
}

// undoReporter is the engine's Reporter for an attempt: the reporter, and
// the UndoRecorder that keeps its records under the attempt's claim.
type undoReporter struct {
	*reporter
	st *undoState
}

var (
	_ UndoRecorder = (*undoReporter)(nil)
	_ Prover       = (*undoReporter)(nil)
)

func (r *undoReporter) RecordUndo(ctx context.Context, rec string) error {
	if err := checkUndoRecord(rec); err != nil {
		return err
	}
	// A change must not be made once the attempt has to stop.
	if err := r.Cancelled(ctx); err != nil {
		return err
	}
	line := undoPrefix + rec
	wctx, cancel := writeContext(ctx)
	defer cancel()
	if err := r.e.store.AppendLog(wctx, r.op.ID, r.c.token, line); err != nil {
		if errors.Is(err, store.ErrStaleToken) {
			return r.why(wctx, err)
		}
		return fmt.Errorf("upgrader: recording what to undo: %w", err)
	}
	r.st.add(rec)
	r.e.logEvent(r.op, line)
	return nil
}

func (r *undoReporter) Undone(ctx context.Context) error {
	wctx, cancel := writeContext(ctx)
	defer cancel()
	if err := r.e.store.AppendLog(wctx, r.op.ID, r.c.token, undoneLine); err != nil {
		if errors.Is(err, store.ErrStaleToken) {
			return r.why(wctx, err)
		}
		return err
	}
	r.st.clear()
	r.e.logEvent(r.op, undoneLine)
	return nil
}

// errRestoreReport is what a restore's Reporter answers to Phase and
// Progress: a restore is no attempt.
var errRestoreReport = errors.New("upgrader: a restore reports no phase or progress")

// restoreReporter is the Reporter of a Restore call. Its lines carry the
// claim's token, or 0 for an operation that ended (nobody can claim it).
type restoreReporter struct {
	e     *Engine
	op    store.Operation
	token int64

	mu     sync.Mutex
	undone bool
}

var (
	_ Reporter     = (*restoreReporter)(nil)
	_ UndoRecorder = (*restoreReporter)(nil)
)

func (r *restoreReporter) Phase(context.Context, status.Phase) error { return errRestoreReport }

func (r *restoreReporter) Progress(context.Context, int) error { return errRestoreReport }

func (r *restoreReporter) Log(ctx context.Context, line string) error {
	return r.e.appendLine(ctx, r.op, r.token, ordinaryLine(line))
}

// Cancelled is nil while ctx lives: a restore cannot be cancelled.
func (r *restoreReporter) Cancelled(ctx context.Context) error { return ctx.Err() }

func (r *restoreReporter) RecordUndo(context.Context, string) error {
	return errors.New("upgrader: a restore records nothing to undo")
}

func (r *restoreReporter) Undone(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.undone {
		return nil
	}
	if err := r.e.appendLine(ctx, r.op, r.token, undoneLine); err != nil {
		return err
	}
	r.undone = true
	return nil
}

// appendLine appends line to op's log with token (0: unfenced) and
// publishes it.
func (e *Engine) appendLine(ctx context.Context, op store.Operation, token int64, line string) error {
	wctx, cancel := writeContext(ctx)
	defer cancel()
	if err := e.store.AppendLog(wctx, op.ID, token, line); err != nil {
		if errors.Is(err, store.ErrStaleToken) {
			return fmt.Errorf("%w: %v", ErrLeaseLost, err)
		}
		return err
	}
	e.logEvent(op, store.TruncateLogLine(line))
	return nil
}

// restoreContext bounds a restore: restoreTimeout, parent, and a Stop that
// gave up waiting.
func (e *Engine) restoreContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, restoreTimeout)
	stop := context.AfterFunc(e.dead, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// restoreBeforeEnd runs, under claim c, the Restorer of an operation that
// endWith is about to end before flashing, when undo records are pending.
func (e *Engine) restoreBeforeEnd(c *claim, op store.Operation) {
	if op.Phase.AfterPointOfNoReturn() || c.gone() {
		return
	}
	var undo []string
	if st := e.maint.undoOf(op.ID); st != nil {
		undo = st.pending()
	} else if !op.StartedAt.IsZero() {
		var err error
		if undo, err = e.loadUndo(c.wctx, op.ID); err != nil {
			e.log.Warn("cannot tell whether the device has changes to undo", slog.String("operation", op.ID), slog.Any("error", err))
			return
		}
	}
	if len(undo) == 0 {
		return
	}
	ctx, cancel := e.restoreContext(c.wctx)
	defer cancel()
	e.restore(ctx, op, c.token, undo)
}

// restore undoes the records undo of op on its device with the device's
// Restorer, and logs how it went on the operation (lines fenced with token;
// 0 for an operation that ended). It reports whether everything was undone.
func (e *Engine) restore(ctx context.Context, op store.Operation, token int64, undo []string) bool {
	note := func(line string) {
		if err := e.appendLine(ctx, op, token, line); err != nil {
			e.log.Warn("cannot append to the operation log", slog.String("operation", op.ID), slog.Any("error", err))
		}
	}
	left := func(why string) bool {
		e.reportLeft(ctx, op, token, len(undo), why)
		return false
	}
	d, err := e.store.Device(ctx, op.DeviceID)
	if err != nil {
		return left(fmt.Sprintf("device %s: %s", op.DeviceID, message(err)))
	}
	img, err := e.image(ctx, op.ImageID)
	if err != nil {
		return left(fmt.Sprintf("image %s: %s", op.ImageID, message(err)))
	}
	u, ok := e.reg.Lookup(d.Connection)
	r, isR := u.(Restorer)
	if !ok || !isR {
		return left(fmt.Sprintf("the upgrader for %q cannot undo them", d.Connection))
	}
	note("undoing what an interrupted attempt left changed on the device")
	rep := &restoreReporter{e: e, op: op, token: token}
	job := &Job{Operation: op, Device: d, Image: img, Report: rep, Undo: slices.Clone(undo)}
	if err := e.callRestore(ctx, r, job); err != nil {
		return left(message(err))
	}
	if err := rep.Undone(ctx); err != nil {
		e.log.Warn("cannot clear the undo records", slog.String("operation", op.ID), slog.Any("error", err))
	}
	e.log.Info("changes of an interrupted attempt undone", slog.String("operation", op.ID), slog.String("device", op.DeviceID))
	return true
}

func records(n int) string {
	if n == 1 {
		return "1 undo record"
	}
	return fmt.Sprintf("%d undo records", n)
}

// callRestore runs the restorer, turning a panic into an error.
func (e *Engine) callRestore(ctx context.Context, r Restorer, job *Job) (err error) {
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("restorer panicked", slog.String("operation", job.Operation.ID), slog.Any("panic", p))
			err = fmt.Errorf("upgrader: the restorer panicked: %v", p)
		}
	}()
	return r.Restore(ctx, job)
}

// restoreRequest asks maintenance to restore, after its end, what an
// interrupted attempt of an operation left on the device.
type restoreRequest struct {
	id string
	// at is when it may run (this engine's clock): once the lease of the
	// interrupted attempt has lapsed.
	at time.Time
	// after is another operation of the device that ran when the restore
	// was due: it waits for that one.
	after string
}

// restoreLater asks maintenance to restore op, which ended before flashing
// by a compare-and-set of this engine without a claim, at at or later. It
// runs once this engine's maintenance runs (Start); Stop waits for it.
func (e *Engine) restoreLater(op store.Operation, at time.Time) {
	e.maint.mu.Lock()
	if e.maint.drained {
		e.maint.mu.Unlock()
		e.restoreDropped(op.ID)
		return
	}
	e.maint.restores = append(e.maint.restores, restoreRequest{id: op.ID, at: at})
	e.maint.mu.Unlock()
	e.maint.wakeAt(at)
}

// restoreDropped says, on the operation and in the engine's log, that a
// restore asked for once this engine's maintenance had ended (the engine
// stopped, or was never started) will not run here.
func (e *Engine) restoreDropped(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), restoreTimeout)
	defer cancel()
	op, err := e.store.Operation(ctx, id)
	if err != nil {
		e.log.Error("restore: cannot read the operation", slog.String("operation", id), slog.Any("error", err))
		return
	}
	undo, err := e.loadUndo(ctx, id)
	if err != nil || len(undo) == 0 {
		return
	}
	e.reportLeft(ctx, op, 0, len(undo), "this engine is stopped: start it again, or cancel from a running engine, to undo them")
}

// reportLeft says, on operation op (a line fenced with token) and in the
// engine's log, that n undo records of an interrupted attempt were not
// undone, and why.
func (e *Engine) reportLeft(ctx context.Context, op store.Operation, token int64, n int, why string) {
	line := fmt.Sprintf("changes of an interrupted attempt may be left on the device (%s): %s", records(n), why)
	if err := e.appendLine(ctx, op, token, line); err != nil {
		e.log.Warn("cannot append to the operation log", slog.String("operation", op.ID), slog.Any("error", err))
	}
	e.log.Error("changes of an interrupted attempt left on the device", slog.String("operation", op.ID),
		slog.String("device", op.DeviceID), slog.String("why", why))
}

// afterCancel is what Cancel does once its compare-and-set won on op (as it
// was read before): interrupt this engine's attempt, which then undoes its
// changes itself, or else have the changes of the interrupted attempt undone
// once its lease lapsed.
func (e *Engine) afterCancel(op store.Operation) {
	if c := e.heldClaim(op.ID); c != nil {
		c.markCancelled() // here at once; another engine's holder learns it at its next renewal
		return
	}
	if op.StartedAt.IsZero() || op.Phase.AfterPointOfNoReturn() {
		return // no attempt ever ran: nothing to undo
	}
	now := e.cfg.Now()
	at := now
	if op.LeaseOwner != "" && op.LeaseExpiresAt.After(now) {
		// The holder, if alive, stops by then (it learns the cancel at its
		// next renewal, or gives the claim up on its own clock).
		at = now.Add(min(op.LeaseExpiresAt.Sub(now), e.cfg.LeaseDuration))
	}
	e.restoreLater(op, at)
}

// runRestores starts the restores that are due, at most Config.Workers at
// once. final says that the engine stops: a restore that finds another
// operation of its device running then gives up instead of waiting.
func (e *Engine) runRestores(final bool) {
	m := &e.maint
	now := e.cfg.Now()
	m.mu.Lock()
	if m.sem == nil {
		m.sem = make(chan struct{}, e.cfg.Workers)
	}
	var due, kept []restoreRequest
	for _, r := range m.restores {
		if now.Before(r.at) {
			kept = append(kept, r)
		} else {
			due = append(due, r)
		}
	}
	m.restores = kept
	m.mu.Unlock()
	for _, r := range due {
		m.running.Add(1)
		go func() {
			defer m.running.Done()
			select {
			case m.sem <- struct{}{}:
			case <-e.dead.Done():
				return
			}
			defer func() { <-m.sem }()
			e.restoreEnded(r, final)
		}()
	}
}

// drainRestores runs, as the engine stops, every restore still asked for,
// each once its time came, and waits for them all; a Stop that gives up
// waiting interrupts them.
func (e *Engine) drainRestores() {
	m := &e.maint
	for {
		m.mu.Lock()
		var next time.Time
		for i, r := range m.restores {
			if i == 0 || r.at.Before(next) {
				next = r.at
			}
		}
		left := len(m.restores)
		m.mu.Unlock()
		if left == 0 {
			// Restores still running may ask for more (a restore that
			// failed asks again): look again once they ended.
			m.running.Wait()
			m.mu.Lock()
			if len(m.restores) == 0 {
				m.drained = true // restoreLater reports from now on
				m.mu.Unlock()
				return
			}
			m.mu.Unlock()
			continue
		}
		if wait := next.Sub(e.cfg.Now()); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-e.dead.Done():
				t.Stop()
				m.running.Wait()
				m.mu.Lock()
				dropped := m.restores
				m.restores, m.drained = nil, true
				m.mu.Unlock()
				for _, r := range dropped {
					e.restoreDropped(r.id)
				}
				return
			}
		}
		e.runRestores(true)
	}
}

// restoreEnded restores an operation that ended before flashing without a
// claim (see restoreLater). While another operation of the device runs it
// waits for it (asks again later), unless final: the engine stops.
func (e *Engine) restoreEnded(r restoreRequest, final bool) {
	ctx, cancel := e.restoreContext(context.Background())
	defer cancel()
	op, err := e.store.Operation(ctx, r.id)
	if err != nil {
		e.log.Warn("restore: cannot read the operation", slog.String("operation", r.id), slog.Any("error", err))
		return
	}
	if !op.State.Terminal() || op.Phase.AfterPointOfNoReturn() {
		return // its next attempt undoes it, or the flash's reboot did
	}
	undo, err := e.loadUndo(ctx, op.ID)
	if err != nil {
		e.log.Warn("restore: cannot read the undo records", slog.String("operation", op.ID), slog.Any("error", err))
		return
	}
	if len(undo) == 0 {
		return // the interrupted attempt undid its changes itself
	}
	note := func(line string) {
		if err := e.appendLine(ctx, op, 0, line); err != nil {
			e.log.Warn("cannot append to the operation log", slog.String("operation", op.ID), slog.Any("error", err))
		}
	}
	if r.after != "" {
		if prev, err := e.store.Operation(ctx, r.after); err == nil && prev.Phase.AfterPointOfNoReturn() {
			note(fmt.Sprintf("nothing to undo: operation %s flashed the device since, and its reboot put it right", prev.ID))
			return
		}
	}
	others, err := e.store.ListOperations(ctx, store.OperationFilter{DeviceID: op.DeviceID,
		States: []status.State{status.Pending, status.InProgress}})
	if err != nil {
		e.log.Warn("restore: cannot list the device's operations", slog.String("operation", op.ID), slog.Any("error", err))
		return
	}
	if len(others) > 0 {
		other := others[0]
		switch {
		case other.Phase.AfterPointOfNoReturn():
			note(fmt.Sprintf("nothing to undo: operation %s is flashing the device, and its reboot puts it right", other.ID))
		case final:
			note(fmt.Sprintf("changes of an interrupted attempt may be left on the device (%s): "+
				"operation %s of the device runs, and this engine stopped before it ended", records(len(undo)), other.ID))
		default:
			r.after = other.ID
			r.at = e.cfg.Now().Add(e.cfg.MaintenanceInterval)
			e.maint.mu.Lock()
			e.maint.restores = append(e.maint.restores, r)
			e.maint.mu.Unlock()
			e.maint.wakeAt(r.at)
		}
		return
	}
	e.restore(ctx, op, 0, undo)
}
