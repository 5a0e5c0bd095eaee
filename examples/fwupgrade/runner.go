package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// refreshInterval is how often a running batch is read back from the store
// for the display and for the decision to stop.
const refreshInterval = 500 * time.Millisecond

// runner runs a batch's operations in this process (batch, resume with
// --inventory) and shows them until the batch ends or pauses.
type runner struct {
	s       *streams
	cmd     string
	eng     *upgrader.Engine
	inv     *inventory
	flags   *runFlags
	batchID string
	skipped []skipSummary
}

func (r *runner) human() io.Writer {
	if r.flags.p.json {
		return r.s.stderr
	}
	return r.s.stdout
}

// run starts the engine, then the batch with start, and waits. The first
// Ctrl-C pauses the batch and lets the running devices finish; the second
// cancels it.
func (r *runner) run(ctx context.Context, start func(context.Context) error) int {
	human := r.human()
	if err := r.eng.Start(ctx); err != nil {
		return fail(r.s, r.cmd, exitError, err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = r.eng.Stop(sctx)
	}()
	select {
	case <-r.s.sig:
		fmt.Fprintf(r.s.stderr, "fwupgrade %s: interrupted before the batch started: no device was contacted\n", r.cmd)
		if r.flags.store.url != "" {
			fmt.Fprintf(r.s.stderr, "fwupgrade %s: batch %s waits in the store; start it with: %s\n", r.cmd, r.batchID, r.resumeHint())
		}
		return r.finish(ctx, true)
	default:
	}
	if err := start(ctx); err != nil {
		return fail(r.s, r.cmd, exitError, r.flags.store.storeProblem(err))
	}
	view := newBatchView(human, r.inv)
	interrupts := 0
	hinted := false
	var lastErr time.Time
	tick := time.NewTicker(refreshInterval)
	defer tick.Stop()
	for {
		bs, err := r.eng.Batch(ctx, r.batchID)
		var ops []store.Operation
		if err == nil {
			ops, err = r.eng.Store().ListOperations(ctx, store.OperationFilter{BatchID: r.batchID})
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if time.Since(lastErr) > 30*time.Second {
				fmt.Fprintf(r.s.stderr, "fwupgrade %s: reading batch %s: %v (trying again)\n", r.cmd, r.batchID, r.flags.store.storeProblem(err))
				lastErr = time.Now()
			}
		} else {
			view.update(bs, ops)
			if bs.State.Terminal() {
				break
			}
			if bs.State == status.BatchPaused && bs.Counts[status.InProgress] == 0 {
				if interrupts > 0 || !r.flags.waitPaused {
					break
				}
				if !hinted {
					view.flush()
					fmt.Fprintf(human, "batch %s is paused (%s): waiting for %s\n", r.batchID, bs.PauseReason,
						r.controlHint("resume"))
					hinted = true
				}
			} else {
				hinted = false
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		case <-r.s.sig:
			interrupts++
			r.interrupt(ctx, interrupts, view)
			continue
		}
		break
	}
	view.flush()
	return r.finish(ctx, false)
}

// interrupt handles the n-th Ctrl-C.
func (r *runner) interrupt(ctx context.Context, n int, view *batchView) {
	view.flush()
	if n == 1 {
		_, err := r.eng.PauseBatch(ctx, r.batchID)
		switch {
		case err == nil, errors.Is(err, store.ErrInvalidTransition):
			// Already paused (a threshold) or ending: the same for us.
			fmt.Fprintf(r.s.stderr, "fwupgrade %s: pausing batch %s: no new device starts; devices already running finish (Ctrl-C again cancels the batch)\n",
				r.cmd, r.batchID)
		default:
			fmt.Fprintf(r.s.stderr, "fwupgrade %s: pause: %v\n", r.cmd, r.flags.store.storeProblem(err))
		}
		return
	}
	_, err := r.eng.CancelBatch(ctx, r.batchID)
	switch {
	case err == nil:
		fmt.Fprintf(r.s.stderr, "fwupgrade %s: cancelling batch %s: devices not yet flashing are cancelled (their stopped services restarted); devices flashing finish and are verified\n",
			r.cmd, r.batchID)
	case errors.Is(err, store.ErrInvalidTransition):
		fmt.Fprintf(r.s.stderr, "fwupgrade %s: batch %s is already ending\n", r.cmd, r.batchID)
	default:
		fmt.Fprintf(r.s.stderr, "fwupgrade %s: cancel: %v\n", r.cmd, r.flags.store.storeProblem(err))
	}
}

// finish prints the batch's summary and returns the exit code. A batch left
// idle is a success when it was created held on purpose (--hold), and is
// interrupted (exit 3) when a Ctrl-C came before it started.
func (r *runner) finish(ctx context.Context, interrupted bool) int {
	ctx = context.WithoutCancel(ctx)
	sum, err := summarize(ctx, r.eng.Store(), r.batchID, r.inv, r.skipped, storeKind(r.flags.store.url))
	if err != nil {
		return fail(r.s, r.cmd, exitError, r.flags.store.storeProblem(err))
	}
	human := r.human()
	if r.flags.p.json {
		writeJSON(r.s.stdout, sum)
	} else {
		writeSummary(human, sum)
	}
	code := sum.exitCode()
	if sum.State == string(status.BatchIdle) && !interrupted {
		return exitSuccess // created held, as asked
	}
	if sum.State == string(status.BatchPaused) || sum.State == string(status.BatchIdle) {
		left := sum.Counts.Pending + sum.Counts.InProgress
		if r.flags.store.url == "" {
			fmt.Fprintf(r.s.stderr, "fwupgrade %s: batch %s is %s; it lived only in this process (memory store) and ends with it: %s not upgraded.\n"+
				"  Run the same command again to upgrade them (devices already upgraded end already-installed),\n"+
				"  or use --store to keep a batch that can be resumed.\n",
				r.cmd, r.batchID, sum.State, pluralWere(left))
		} else {
			fmt.Fprintf(r.s.stderr, "fwupgrade %s: batch %s is %s with %s left.\n  go on:   %s\n  cancel:  %s\n  see it:  %s\n",
				r.cmd, r.batchID, sum.State, plural(left, "device"), r.resumeHint(), r.controlHint("cancel"), r.controlHint("status"))
		}
		if code == exitSuccess || code == exitAborted {
			code = exitCancelled
		}
	}
	return code
}

// controlHint is the command line of a control command for this batch.
func (r *runner) controlHint(cmd string) string {
	return controlLine(cmd, &r.flags.store, r.batchID)
}

// resumeHint is the command line that resumes (or starts) the batch and
// runs it.
func (r *runner) resumeHint() string {
	line := r.controlHint("resume") + " --inventory " + shellQuote(r.inv.path)
	if r.flags.noIdentity {
		line += " --no-identity-check"
	}
	if r.flags.imageMap != "" {
		line += " --image-map " + shellQuote(r.flags.imageMap)
	}
	return line
}

func controlLine(cmd string, sf *storeFlags, batchID string) string {
	line := "fwupgrade " + cmd + " --store " + shellQuote(redactURL(sf.url))
	if sf.schema != "" && sf.schema != defaultSchema {
		line += " --schema " + sf.schema
	}
	return line + " --batch " + batchID
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@,+=%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// pluralWere is "1 device was", "2 devices were".
func pluralWere(n int) string {
	if n == 1 {
		return "1 device was"
	}
	return fmt.Sprintf("%d devices were", n)
}

func storeKind(url string) string {
	if url == "" {
		return "memory"
	}
	return "postgres"
}
