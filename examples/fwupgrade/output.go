package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// isTerminal reports whether w is a terminal, and its height.
func isTerminal(w io.Writer) (bool, int) {
	f, ok := file(w)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, 0
	}
	_, h, err := term.GetSize(int(f.Fd()))
	if err != nil || h < 8 {
		h = 24
	}
	return true, h
}

// display prints the engine's events of one upgrade for a person.
type display struct {
	w        io.Writer
	tty      bool
	lastBar  int
	barShown bool
}

func newDisplay(w io.Writer) *display {
	tty, _ := isTerminal(w)
	return &display{w: w, lastBar: -1, tty: tty}
}

func (d *display) show(events <-chan upgrader.Event) {
	for ev := range events {
		switch ev.Kind {
		case upgrader.EventOperationPhase:
			d.endBar()
			fmt.Fprintf(d.w, "phase: %s\n", ev.Phase)
		case upgrader.EventOperationProgress:
			d.progress(ev.Progress)
		case upgrader.EventOperationLog:
			d.endBar()
			fmt.Fprintf(d.w, "  %s\n", strings.ReplaceAll(ev.Line, "\n", "\n  "))
		}
	}
	d.endBar()
}

func (d *display) progress(pct int) {
	if d.tty {
		const width = 40
		n := pct * width / 100
		fmt.Fprintf(d.w, "\r[%s%s] %3d%%", strings.Repeat("=", n), strings.Repeat(" ", width-n), pct)
		d.barShown = true
		return
	}
	if pct/10 != d.lastBar/10 {
		d.lastBar = pct
		fmt.Fprintf(d.w, "progress: %d%%\n", pct)
	}
}

func (d *display) endBar() {
	if d.barShown {
		fmt.Fprintln(d.w)
		d.barShown = false
	}
}

// batchView shows a running batch from snapshots of the store: a table
// redrawn in place on a terminal, one line per change otherwise. Reading
// the store (not this engine's events) shows the work of every process
// sharing it.
type batchView struct {
	w      io.Writer
	tty    bool
	height int
	inv    *inventory
	rows   map[string]*viewRow // by operation ID
	order  []string
	head   string
	drawn  int
}

type viewRow struct {
	label    string
	wave     int
	state    status.State
	phase    status.Phase
	progress int
	reason   status.Reason
	step     int // last progress step printed in plain mode
}

func newBatchView(w io.Writer, inv *inventory) *batchView {
	tty, h := isTerminal(w)
	return &batchView{w: w, tty: tty, height: h, inv: inv, rows: map[string]*viewRow{}}
}

// update takes a snapshot of the batch and its operations.
func (v *batchView) update(bs upgrader.BatchStatus, ops []store.Operation) {
	for _, op := range ops {
		row, ok := v.rows[op.ID]
		if !ok {
			row = &viewRow{label: deviceLabel(v.inv, op.DeviceID), wave: op.Wave + 1, state: status.Pending, step: -1}
			v.rows[op.ID] = row
			v.order = append(v.order, op.ID)
		}
		if !v.tty {
			v.plain(row, op)
		}
		row.state, row.phase, row.progress, row.reason = op.State, op.Phase, op.Progress, op.Reason
	}
	head := fmt.Sprintf("batch %s: %s", bs.ID, stateAndSummary(string(bs.State), bs.Summary))
	if !v.tty && head != v.head {
		fmt.Fprintln(v.w, head)
	}
	v.head = head
	if v.tty {
		v.draw()
	}
}

// plain prints what changed in one row.
func (v *batchView) plain(row *viewRow, op store.Operation) {
	switch {
	case op.State != row.state:
		switch {
		case op.State == status.Pending:
			fmt.Fprintf(v.w, "%s: waiting: the device could not be reached; it is tried again later\n", row.label)
		case op.State == status.InProgress && op.Phase != "":
			fmt.Fprintf(v.w, "%s: %s\n", row.label, op.Phase)
		case op.State == status.InProgress:
			fmt.Fprintf(v.w, "%s: starting\n", row.label)
		case op.Reason != "":
			fmt.Fprintf(v.w, "%s: %s (%s)\n", row.label, op.State, op.Reason)
		default:
			fmt.Fprintf(v.w, "%s: %s\n", row.label, op.State)
		}
	case op.Phase != row.phase && op.Phase != "":
		fmt.Fprintf(v.w, "%s: %s\n", row.label, op.Phase)
	}
	if op.State == status.InProgress && op.Progress/25 > row.step && op.Progress > 0 && op.Progress < 100 {
		row.step = op.Progress / 25
		fmt.Fprintf(v.w, "%s: %d%%\n", row.label, op.Progress)
	}
}

// draw redraws the table in place.
func (v *batchView) draw() {
	var b strings.Builder
	if v.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", v.drawn)
	}
	lines := []string{v.head, fmt.Sprintf("%-32s %4s  %-11s %-10s %s", "DEVICE", "WAVE", "STATE", "PHASE", "PROGRESS")}
	room := v.height - 3
	shown := 0
	for _, id := range v.ordered() {
		if shown == room-1 && len(v.order) > room {
			lines = append(lines, fmt.Sprintf("... and %d more", len(v.order)-shown))
			break
		}
		row := v.rows[id]
		phase := string(row.phase)
		if row.state.Terminal() && row.reason != "" {
			phase = string(row.reason)
		}
		bar := strings.Repeat("=", row.progress/10) + strings.Repeat(" ", 10-row.progress/10)
		lines = append(lines, fmt.Sprintf("%s %4d  %-11s %-10s %3d%% [%s]", pad(row.label, 32), row.wave, row.state, phase, row.progress, bar))
		shown++
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K")
		b.WriteString(l)
		b.WriteString("\n")
	}
	v.drawn = len(lines)
	_, _ = io.WriteString(v.w, b.String())
}

// ordered lists the rows to show first: running, then ended badly,
// waiting, and done.
func (v *batchView) ordered() []string {
	rank := func(r *viewRow) int {
		switch r.state {
		case status.InProgress:
			return 0
		case status.Failed, status.Aborted:
			return 1
		case status.Pending:
			return 2
		case status.Cancelled:
			return 3
		}
		return 4
	}
	out := make([]string, 0, len(v.order))
	for r := 0; r <= 4; r++ {
		for _, id := range v.order {
			if rank(v.rows[id]) == r {
				out = append(out, id)
			}
		}
	}
	return out
}

// flush ends the table, so that what is printed next goes below it.
func (v *batchView) flush() { v.drawn = 0 }

// deviceLabel is "name (id)", or the id.
func deviceLabel(inv *inventory, id string) string {
	if name := inv.name(id); name != id {
		return name + " (" + shortID(id) + ")"
	}
	return id
}

// pad cuts or pads s to n characters (runes, not bytes).
func pad(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s + strings.Repeat(" ", n-len(r))
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:8] + "…"
	}
	return id
}

// batchSummary is what batch, resume, status, pause and cancel print with
// --json.
type batchSummary struct {
	BatchID     string        `json:"batch_id"`
	Name        string        `json:"name"`
	State       string        `json:"state"`
	PauseReason string        `json:"pause_reason,omitempty"`
	Hold        string        `json:"hold,omitempty"`
	Summary     string        `json:"summary"`
	Wave        int           `json:"wave"`
	Waves       int           `json:"waves"`
	Store       string        `json:"store"`
	Counts      summaryCounts `json:"counts"`
	Operations  []opSummary   `json:"operations"`
	Skipped     []skipSummary `json:"skipped"`
}

type summaryCounts struct {
	Total      int `json:"total"`
	Pending    int `json:"pending"`
	InProgress int `json:"in_progress"`
	Success    int `json:"success"`
	Failed     int `json:"failed"`
	Aborted    int `json:"aborted"`
	Cancelled  int `json:"cancelled"`
	Skipped    int `json:"skipped"`
}

type opSummary struct {
	ID       string `json:"id"`
	Device   string `json:"device"`
	Name     string `json:"name,omitempty"`
	Image    string `json:"image"`
	Wave     int    `json:"wave"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Phase    string `json:"phase,omitempty"`
	Progress int    `json:"progress"`
	Attempts int    `json:"attempts"`
	LastLog  string `json:"last_log,omitempty"`
}

type skipSummary struct {
	Device string `json:"device"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// summarize reads batch id and its operations from st.
func summarize(ctx context.Context, st store.Store, id string, inv *inventory, skipped []skipSummary, kind string) (batchSummary, error) {
	b, err := st.Batch(ctx, id)
	if err != nil {
		return batchSummary{}, err
	}
	bs := upgrader.StatusOf(b, time.Now())
	sum := batchSummary{BatchID: b.ID, Name: b.Name, State: string(b.State), PauseReason: string(b.PauseReason),
		Summary: bs.Summary, Wave: b.Wave + 1, Waves: len(b.WaveTallies), Store: kind,
		Operations: []opSummary{}, Skipped: skipped}
	if !b.State.Terminal() {
		sum.Hold = string(bs.Hold)
	}
	if sum.Skipped == nil {
		sum.Skipped = []skipSummary{}
	}
	ops, err := st.ListOperations(ctx, store.OperationFilter{BatchID: id})
	if err != nil {
		return sum, err
	}
	images := map[string]string{}
	for _, op := range ops {
		name, ok := images[op.ImageID]
		if !ok {
			if im, err := st.Image(ctx, op.ImageID); err == nil {
				name = im.Name
			}
			images[op.ImageID] = name
		}
		o := opSummary{ID: op.ID, Device: op.DeviceID, Image: name, Wave: op.Wave + 1, State: string(op.State),
			Reason: string(op.Reason), Phase: string(op.Phase), Progress: op.Progress, Attempts: op.Attempt}
		if n := inv.name(op.DeviceID); n != op.DeviceID {
			o.Name = n
		} else if d, err := st.Device(ctx, op.DeviceID); err == nil {
			o.Name = d.Name
		}
		if op.State != status.Success && op.State.Terminal() {
			if logs, err := st.Logs(ctx, op.ID, 0, 0); err == nil && len(logs) > 0 {
				o.LastLog = logs[len(logs)-1].Line
			}
		}
		sum.Operations = append(sum.Operations, o)
		c := &sum.Counts
		c.Total++
		switch op.State {
		case status.Pending:
			c.Pending++
		case status.InProgress:
			c.InProgress++
		case status.Success:
			c.Success++
		case status.Failed:
			c.Failed++
		case status.Aborted:
			c.Aborted++
		case status.Cancelled:
			c.Cancelled++
		}
	}
	sum.Counts.Skipped = len(sum.Skipped)
	return sum, nil
}

// exitCode is the exit code of a batch that ran: see exitCodesHelp.
func (s batchSummary) exitCode() int {
	skipped := 0
	for _, sk := range s.Skipped {
		if sk.Reason != string(upgrader.SkipAlreadyOnBuild) { // already runs it: fine
			skipped++
		}
	}
	c := s.Counts
	switch {
	case c.Failed > 0:
		return exitFailed
	case s.State == string(status.BatchPaused), s.State == string(status.BatchCancelled), s.State == string(status.BatchIdle),
		c.Cancelled > 0, c.Pending+c.InProgress > 0:
		return exitCancelled
	case c.Aborted > 0, skipped > 0:
		return exitAborted
	}
	return exitSuccess
}

// writeSummary prints a summary for a person.
func writeSummary(w io.Writer, s batchSummary) {
	if s.BatchID != "" {
		fmt.Fprintf(w, "batch %s %q: %s\n", s.BatchID, s.Name, stateAndSummary(s.State, s.Summary))
	}
	c := s.Counts
	fmt.Fprintf(w, "  %d success, %d failed, %d aborted, %d cancelled, %d pending, %d running, %d skipped\n",
		c.Success, c.Failed, c.Aborted, c.Cancelled, c.Pending, c.InProgress, c.Skipped)
	all := len(s.Operations) <= 50
	for _, o := range s.Operations {
		if !all && o.State == string(status.Success) {
			continue
		}
		line := fmt.Sprintf("  %s %-11s", pad(labelOf(o.Name, o.Device), 40), o.State)
		if o.Reason != "" {
			line += " " + o.Reason
		}
		if o.State == string(status.InProgress) && o.Phase != "" {
			line += fmt.Sprintf(" %s %d%%", o.Phase, o.Progress)
		}
		if o.LastLog != "" {
			line += ": " + oneLine(o.LastLog, 120)
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	for _, sk := range s.Skipped {
		line := fmt.Sprintf("  %s %-11s %s", pad(labelOf(sk.Name, sk.Device), 40), "skipped", sk.Reason)
		if sk.Detail != "" {
			line += ": " + oneLine(sk.Detail, 120)
		}
		fmt.Fprintln(w, line)
	}
}

// stateAndSummary is "in-progress, 2 of 4 done, ..."; a paused batch's
// summary says so itself.
func stateAndSummary(state, summary string) string {
	if state == string(status.BatchPaused) {
		return summary
	}
	return state + ", " + summary
}

// plural is "1 device", "2 devices".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func labelOf(name, id string) string {
	if name != "" && name != id {
		return name + " (" + shortID(id) + ")"
	}
	return id
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// writePlan prints which device gets which image in which wave, the checks
// of a dry run, and the skipped devices with their reasons.
func writePlan(w io.Writer, plan upgrader.Plan, inv *inventory, skipped []skipSummary) {
	for _, e := range plan.Selected {
		line := fmt.Sprintf("  wave %d  %s <- %s", e.Wave+1, pad(deviceLabel(inv, e.Device.ID), 40), e.Image.Name)
		if e.Check != nil {
			line += "  [" + string(e.Check.Verdict)
			if e.Check.Reason != "" {
				line += ": " + string(e.Check.Reason)
			}
			line += "]"
		}
		fmt.Fprintln(w, line)
		if e.Check == nil || e.Check.Verdict == upgrader.VerdictReady || e.Check.Verdict == upgrader.VerdictNotNeeded {
			continue
		}
		for _, c := range e.Check.Checks {
			if !c.OK {
				fmt.Fprintf(w, "          check %s failed: %s\n", c.Name, oneLine(c.Detail, 160))
			}
		}
		if e.Check.Error != "" {
			fmt.Fprintf(w, "          %s\n", oneLine(e.Check.Error, 160))
		}
	}
	for _, sk := range skipped {
		line := fmt.Sprintf("  skip    %s %s", pad(labelOf(sk.Name, sk.Device), 40), sk.Reason)
		if sk.Detail != "" {
			line += ": " + oneLine(sk.Detail, 160)
		}
		fmt.Fprintln(w, line)
	}
}
