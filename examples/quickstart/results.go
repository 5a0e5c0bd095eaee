package main

// The results of the rollout: what the store says of each operation, and
// what each simulated device says of itself, checked against what the
// fleet (fleet.go) expects.

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

// rollout is what happened to the fleet.
type rollout struct {
	batch   upgrader.BatchStatus
	took    time.Duration
	devices []result // in the fleet's order
	// store is the engine's store, still readable after the engine stopped.
	store store.Store
}

// result is what happened to one device.
type result struct {
	dev *simDevice
	// op is the device's operation in the batch; nil when the plan
	// skipped the device (skip says why).
	op   *store.Operation
	skip upgrader.SkipReason
	// before and after are the releases the device ran before and runs now
	// (DISTRIB_DESCRIPTION, read from the simulator).
	before, after string
	flashed       int    // flashes that reached the point of no return, on the device
	tries         int    // attempts seen in the events
	offline       int    // times the rollout found the device offline
	last          string // the last line of the operation's log
}

// newRollout gathers the results: the operations, the devices as they are
// now, what the monitor saw, and the last log line of each operation.
func newRollout(ctx context.Context, st store.Store, fl *fleet, plan upgrader.Plan, batch upgrader.BatchStatus,
	mon *monitor, took time.Duration) (*rollout, error) {
	r := &rollout{batch: batch, took: took, store: st}
	ops, err := st.ListOperations(ctx, store.OperationFilter{BatchID: batch.ID})
	if err != nil {
		return nil, err
	}
	byDevice := map[string]*store.Operation{}
	for i := range ops {
		byDevice[ops[i].DeviceID] = &ops[i]
	}
	skipped := map[string]upgrader.SkipReason{}
	for _, p := range plan.Skipped {
		skipped[p.Device.ID] = p.Skip
	}
	for _, d := range fl.devices {
		res := result{dev: d, op: byDevice[d.ID], skip: skipped[d.ID],
			before: d.Sim.Config().Release, after: d.Sim.Release(), flashed: d.Sim.Flashed()}
		res.tries, res.offline = mon.record(d.ID)
		if res.op != nil {
			logs, err := st.Logs(ctx, res.op.ID, 0, 0)
			if err != nil {
				return nil, err
			}
			if len(logs) > 0 {
				res.last = logs[len(logs)-1].Line
			}
		}
		r.devices = append(r.devices, res)
	}
	return r, nil
}

// print prints the table of results and a one-line summary.
func (r *rollout) print(out io.Writer) {
	fmt.Fprintf(out, "\nResults (the releases are what the devices report):\n")
	const format = "  %-12s %-19s %-9s %-18s %8s %6s  %s"
	fmt.Fprintf(out, format+"\n", "device", "release", "state", "reason", "attempts", "time", "note")
	var why []string
	for _, d := range r.devices {
		state, reason, tries, took, note := "skipped", string(d.skip), "-", "-", ""
		if op := d.op; op != nil {
			state, reason, tries = string(op.State), string(op.Reason), fmt.Sprint(d.tries)
			if !op.StartedAt.IsZero() && !op.FinishedAt.IsZero() {
				took = fmt.Sprintf("%.1fs", op.FinishedAt.Sub(op.StartedAt).Seconds())
			}
			if op.Wave == 0 {
				note = "canary"
			}
			if d.offline > 0 {
				note = fmt.Sprintf("was offline %s", times(d.offline))
			}
			if op.State != status.Success {
				why = append(why, fmt.Sprintf("  %-12s %s", d.dev.Name, d.last))
			}
		}
		line := fmt.Sprintf(format, d.dev.Name, openwrtVersion(d.before)+" → "+openwrtVersion(d.after),
			state, reason, tries, took, note)
		fmt.Fprintln(out, strings.TrimRight(line, " "))
	}
	if len(why) > 0 {
		fmt.Fprintf(out, "\nLast log line of the devices not upgraded:\n%s\n", strings.Join(why, "\n"))
	}
	s := r.batch
	fmt.Fprintf(out, "\nSummary: batch %s in %.1fs: %s", s.State, r.took.Seconds(), counts(s.Counts))
	if s.State == status.BatchFailed {
		fmt.Fprint(out, " (one failed or aborted device fails a batch)")
	}
	fmt.Fprintf(out, "; %d skipped by the plan.\n", len(r.devices)-s.Total)
}

// times says "once", "twice", "3 times".
func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return fmt.Sprintf("%d times", n)
}

// check returns an error naming every device that did not end as the
// fleet expects, proved on the simulated devices: an upgraded device was
// flashed once and runs the target release; any other device was never
// flashed and runs the release it had. It also checks that the canary
// wave ended before the next wave started.
func (r *rollout) check() error {
	var problems []string
	bad := func(d result, format string, args ...any) {
		problems = append(problems, d.dev.Name+": "+fmt.Sprintf(format, args...))
	}
	for _, d := range r.devices {
		want := d.dev.Want
		switch {
		case want == "" && d.op != nil:
			bad(d, "in the batch (%s), want skipped (%s)", d.op.State, d.dev.WantSkip)
		case want == "" && d.skip != d.dev.WantSkip:
			bad(d, "skipped as %q, want %q", d.skip, d.dev.WantSkip)
		case want != "" && d.op == nil:
			bad(d, "not in the batch (skipped: %s), want %s", d.skip, want)
		case want != "" && d.op.State != want:
			bad(d, "ended %s (%s), want %s", d.op.State, d.op.Reason, want)
		}
		if want == status.Success {
			if d.op != nil && d.op.State == want && (d.flashed != 1 || d.after != targetRelease) {
				bad(d, "flashes: %d, runs %q; want one flash and %q", d.flashed, d.after, targetRelease)
			}
		} else if d.flashed != 0 || d.after != d.before {
			bad(d, "touched (flashes: %d, runs %q, had %q)", d.flashed, d.after, d.before)
		}
		if d.dev.PoweredOff && d.offline == 0 {
			bad(d, "the rollout never found it offline")
		}
	}
	if err := r.checkWaves(); err != nil {
		problems = append(problems, err.Error())
	}
	if !r.batch.State.Terminal() {
		problems = append(problems, fmt.Sprintf("the batch has not ended: %s", r.batch.Summary))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// checkWaves checks, from the operations' timestamps, that every operation
// of a wave ended before any of the next wave started.
func (r *rollout) checkWaves() error {
	ended := map[int]time.Time{}   // wave → last end
	started := map[int]time.Time{} // wave → first start
	for _, d := range r.devices {
		op := d.op
		if op == nil {
			continue
		}
		if e := op.FinishedAt; e.After(ended[op.Wave]) {
			ended[op.Wave] = e
		}
		if s := op.StartedAt; !s.IsZero() && (started[op.Wave].IsZero() || s.Before(started[op.Wave])) {
			started[op.Wave] = s
		}
	}
	for w := 1; w < len(r.batch.WaveTallies); w++ {
		if s := started[w]; !s.IsZero() && s.Before(ended[w-1]) {
			return fmt.Errorf("wave %d started (%s) before wave %d ended (%s)", w+1, s.Format(time.StampMilli), w, ended[w-1].Format(time.StampMilli))
		}
	}
	return nil
}

// verdict says, in one line, that everything ended as expected.
func (r *rollout) verdict() string {
	upgraded, back := 0, ""
	var others []string
	for _, d := range r.devices {
		switch {
		case d.dev.Want == status.Success:
			upgraded++
			if d.offline > 0 {
				back = fmt.Sprintf("; %s after it came back online", d.dev.Name)
			}
		case d.op == nil:
			others = append(others, fmt.Sprintf("%s skipped (%s)", d.dev.Name, d.skip))
		default:
			others = append(others, fmt.Sprintf("%s %s (%s), never flashed", d.dev.Name, d.op.State, d.op.Reason))
		}
	}
	return fmt.Sprintf("every device ended as expected: %d upgraded to %s (proved on the devices%s), the canary first; %s.",
		upgraded, openwrtVersion(targetRelease), back, strings.Join(others, "; "))
}
