package main

// Output: the dry run's plan, and the live view of the rollout built from
// the engine's events. On a terminal the view is a table redrawn in place;
// otherwise (a pipe, a file, a test) it is plain lines, without escape codes.

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// printPlan prints the plan of a dry run with the verdict of each device's
// checks.
func printPlan(out io.Writer, plan upgrader.Plan, r store.Rollout) {
	waves := make([]string, len(plan.WaveSizes))
	for i, n := range plan.WaveSizes {
		waves[i] = fmt.Sprint(n)
	}
	fmt.Fprintf(out, "Dry run of the upgrade to %s (nothing stored, no device changed):\n", plan.Build.Version)
	fmt.Fprintf(out, "%d devices selected, in %d waves of %s devices, at most %d at once; %d skipped.\n\n",
		len(plan.Selected), len(plan.WaveSizes), strings.Join(waves, " + "), r.MaxConcurrent, len(plan.Skipped))
	fmt.Fprintf(out, "  %-4s  %-12s  %-9s  %-34s  %s\n", "wave", "device", "runs", "image", "checks")
	for _, p := range plan.Selected {
		fmt.Fprintf(out, "  %-4d  %-12s  %-9s  %-34s  %s\n", p.Wave+1, p.Device.Name,
			openwrtVersion(p.Device.OSIdentifier), shortType(p.Image.Type), verdict(p.Check))
		if p.Check == nil {
			continue
		}
		for _, c := range p.Check.Checks {
			if !c.OK {
				fmt.Fprintf(out, "  %4s  %12s  %s check: %s\n", "", "", c.Name, c.Detail)
			}
		}
	}
	for _, p := range plan.Skipped {
		fmt.Fprintf(out, "  %-4s  %-12s  %-9s  %-34s  skipped (%s)\n", "-", p.Device.Name,
			openwrtVersion(p.Device.OSIdentifier), "-", p.Skip)
		fmt.Fprintf(out, "  %4s  %12s  %s\n", "", "", p.Detail)
	}
	fmt.Fprintln(out)
}

// verdict is the dry run's verdict of one device, for the plan's table.
func verdict(c *upgrader.DeviceCheck) string {
	switch {
	case c == nil:
		return "not checked"
	case c.Verdict == upgrader.VerdictReady:
		return fmt.Sprintf("ready (%d checks passed)", len(c.Checks))
	case c.Reason != status.ReasonNone:
		return fmt.Sprintf("%s (%s)", c.Verdict, c.Reason)
	default:
		return string(c.Verdict)
	}
}

// shortType drops the common suffix of sysupgrade image types.
func shortType(t string) string {
	return strings.TrimSuffix(t, "-squashfs-sysupgrade.bin")
}

// monitor shows a rollout from the engine's events, and remembers what the
// results need: how many attempts each device had, and whether the rollout
// found it offline.
type monitor struct {
	out       io.Writer
	live      bool
	start     time.Time
	waveSizes []int

	mu         sync.Mutex
	rows       []*row          // the selected devices, in the plan's order
	byID       map[string]*row // by device ID
	wave       int             // the batch's current wave
	batchState status.BatchState
	drawn      int  // lines of the live table on screen
	dirty      bool // the live table needs a redraw

	// paused is closed when the batch pauses.
	paused    chan struct{}
	pauseOnce sync.Once
}

// row is one device of the live view.
type row struct {
	name, before string
	wave         int
	state        status.State
	phase        status.Phase
	progress     int
	reason       status.Reason
	tries        int // attempts: how many times it started connecting
	offline      int // times the rollout found it offline
}

// newMonitor returns a monitor of the plan's selected devices, writing to
// out: a live table when live, else plain lines.
func newMonitor(out io.Writer, live bool, plan upgrader.Plan) *monitor {
	m := &monitor{out: out, live: live, start: time.Now(), waveSizes: plan.WaveSizes, byID: map[string]*row{},
		paused: make(chan struct{})}
	for _, p := range plan.Selected {
		r := &row{name: p.Device.Name, before: openwrtVersion(p.Device.OSIdentifier), wave: p.Wave, state: status.Pending}
		m.rows = append(m.rows, r)
		m.byID[p.Device.ID] = r
	}
	return m
}

// batchCreated announces the batch.
func (m *monitor) batchCreated(b store.Batch) {
	m.note("batch %s started: wave 1 of %d (%s)", b.ID, len(m.waveSizes), devices(m.waveSizes[0]))
}

// note prints a line of the quickstart's own.
func (m *monitor) note(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.line(format, args...)
}

// watch shows events until the channel closes.
func (m *monitor) watch(events <-chan upgrader.Event) {
	var tick <-chan time.Time
	if m.live {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				m.mu.Lock()
				if m.live {
					m.redraw()
				}
				m.mu.Unlock()
				return
			}
			m.mu.Lock()
			m.handle(ev)
			m.mu.Unlock()
		case <-tick:
			m.mu.Lock()
			if m.dirty {
				m.redraw()
			}
			m.mu.Unlock()
		}
	}
}

// handle updates the view with one event.
func (m *monitor) handle(ev upgrader.Event) {
	if ev.Dropped > 0 {
		m.line("(%d events dropped: the view may miss steps)", ev.Dropped)
	}
	if ev.BatchState == status.BatchPaused {
		m.pauseOnce.Do(func() { close(m.paused) })
	}
	switch ev.Kind {
	case upgrader.EventBatchWave:
		switch {
		case ev.BatchState == status.BatchPaused:
			m.line("batch paused (%s): %s", ev.PauseReason, counts(ev.Counts))
		case ev.Wave != m.wave:
			m.wave = ev.Wave
			m.line("wave %d of %d started (%s)", ev.Wave+1, len(m.waveSizes), devices(m.waveSizes[ev.Wave]))
		default:
			m.line("wave %d of %d settled: %s", ev.Wave+1, len(m.waveSizes), counts(ev.Counts))
		}
		return
	case upgrader.EventBatchState:
		if ev.BatchState != m.batchState {
			old := m.batchState
			m.batchState = ev.BatchState
			switch {
			case ev.BatchState == status.BatchPaused:
				m.line("batch paused (%s): %s", ev.PauseReason, counts(ev.Counts))
			case ev.BatchState.Terminal() || old == status.BatchPaused:
				m.line("batch %s: %s", ev.BatchState, counts(ev.Counts))
			}
		}
		return
	}
	r := m.byID[ev.DeviceID]
	if r == nil {
		return
	}
	m.dirty = true
	switch ev.Kind {
	case upgrader.EventOperationState:
		r.state, r.reason = ev.State, ev.Reason
		switch {
		case ev.State == status.Pending && ev.Reason == status.ReasonConnectionFailed:
			r.offline++
			r.phase, r.progress = status.PhaseNone, 0
			m.line("%-12s offline (%s): the batch waits for it and tries again", r.name, ev.Reason)
		case ev.State.Terminal():
			r.progress = ev.Progress
			if ev.Reason != status.ReasonNone {
				m.line("%-12s %s (%s)", r.name, ev.State, ev.Reason)
			} else {
				m.line("%-12s %s", r.name, ev.State)
			}
		}
	case upgrader.EventOperationPhase:
		r.phase, r.progress = ev.Phase, ev.Progress
		if ev.Phase == status.PhaseConnecting {
			r.tries++
		}
		if ev.Phase != status.PhaseNone && !m.live {
			m.line("%-12s %-12s %3d%%", r.name, ev.Phase, ev.Progress)
		}
	case upgrader.EventOperationProgress:
		r.progress = ev.Progress
	}
}

// line prints a timestamped line: above the live table on a terminal.
func (m *monitor) line(format string, args ...any) {
	if m.live {
		m.clear()
	}
	fmt.Fprintf(m.out, "[%5.1fs] %s\n", time.Since(m.start).Seconds(), fmt.Sprintf(format, args...))
	if m.live {
		m.redraw()
	}
}

// clear erases the live table (cursor up, erase to the end of the screen).
func (m *monitor) clear() {
	if m.drawn > 0 {
		fmt.Fprintf(m.out, "\x1b[%dA\x1b[J", m.drawn)
		m.drawn = 0
	}
}

// redraw draws the live table again. Its lines fit in 80 columns: a
// line that wraps would break the count of lines to erase.
func (m *monitor) redraw() {
	m.clear()
	var b strings.Builder
	fmt.Fprintf(&b, "  %-12s %4s  %-9s  %-28s %s\n", "device", "wave", "from", "phase or state", "progress")
	for _, r := range m.rows {
		bar := min(max(r.progress/10, 0), 10)
		fmt.Fprintf(&b, "  %-12s %4d  %-9s  %-28s [%s%s] %3d%%\n", r.name, r.wave+1, r.before, r.status(),
			strings.Repeat("#", bar), strings.Repeat(".", 10-bar), r.progress)
	}
	io.WriteString(m.out, b.String())
	m.drawn = len(m.rows) + 1
	m.dirty = false
}

// status is what the live table says of a device.
func (r *row) status() string {
	switch {
	case r.state.Terminal() && r.reason != status.ReasonNone:
		return fmt.Sprintf("%s (%s)", r.state, r.reason)
	case r.state.Terminal():
		return string(r.state)
	case r.state == status.Pending && r.offline > 0:
		return "offline, waiting"
	case r.state == status.Pending:
		return "waiting for its turn"
	case r.phase == status.PhaseNone:
		return "starting"
	default:
		return string(r.phase)
	}
}

// record returns what the monitor saw of a device: its attempts and how
// many times it was found offline.
func (m *monitor) record(deviceID string) (tries, offline int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.byID[deviceID]; r != nil {
		return r.tries, r.offline
	}
	return 0, 0
}

// counts formats a batch's counts, skipping zeros.
func counts(c status.Counts) string {
	var parts []string
	for _, st := range []status.State{status.Success, status.Failed, status.Aborted, status.Cancelled, status.InProgress, status.Pending} {
		if n := c[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	if len(parts) == 0 {
		return "no operation"
	}
	return strings.Join(parts, ", ")
}

// devices says "1 device", "6 devices".
func devices(n int) string {
	if n == 1 {
		return "1 device"
	}
	return fmt.Sprintf("%d devices", n)
}
