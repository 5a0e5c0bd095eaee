// Command bench measures fwupgrader against what its users would otherwise
// use, side by side in one run, and prints each figure with its goal and
// whether the goal is met:
//
//	go run ./internal/cmd/bench [-quick] [-only upload,batch,reconnect,postgres,engine] [-json]
//
// Sections (all by default, in this order):
//
//   - upload: the openwrt upgrader's three upload methods (SFTP, SCP, cat)
//     against OpenSSH's "scp -O" and "sftp" and a raw "cat >" channel, to
//     a simulated device (openwrttest, real SSH) and to Debian's dropbear
//     on loopback (the SSH server of real OpenWrt), when installed;
//   - batch: a 1,000-device batch against a batch of one device, and the
//     library's peak memory during a batch of 32 MiB uploads (the devices in
//     a child process, so that the figure is the library's own);
//   - reconnect: the time from a rebooted device answering SSH again to its
//     operation recorded a success, with the openwrt defaults;
//   - postgres: the PostgreSQL store's batch creation, transitions and claims;
//   - engine: the engine's own cost per operation (a no-op upgrader), on the
//     memory store and on PostgreSQL.
//
// The machines this runs on are shared and noisy: every comparison is made
// in one run, the contenders alternating, and reported as medians and
// ratios. -quick keeps a run within about two minutes on a 2-core machine
// (smaller sizes and fewer rounds, printed at the top).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Sections, in the order they run.
var sectionNames = []string{"upload", "batch", "reconnect", "postgres", "engine"}

// section measures one group of figures into r.
type section func(ctx context.Context, r *run) error

var sections = map[string]section{
	"upload":    uploadSection,
	"batch":     batchSection,
	"reconnect": reconnectSection,
	"postgres":  postgresSection,
	"engine":    engineSection,
}

// Verdicts of a figure.
const (
	verdictMet     = "met"
	verdictMissed  = "missed"
	verdictInfo    = "-" // a figure without a goal
	verdictSkipped = "skipped"
	verdictError   = "error"
)

// Figure is one measured value.
type Figure struct {
	Section string `json:"section"`
	Name    string `json:"name"`
	// Value is nil for a skipped figure or a section that failed.
	Value   *float64 `json:"value"`
	Unit    string   `json:"unit"`
	Goal    string   `json:"goal,omitempty"`
	Verdict string   `json:"verdict"`
	Note    string   `json:"note,omitempty"`
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUs       int        `json:"cpus"`
	CPUModel   string     `json:"cpu_model"`
	GoVersion  string     `json:"go_version"`
	GOOS       string     `json:"goos"`
	GOARCH     string     `json:"goarch"`
	Kernel     string     `json:"kernel"`
	MemTotalMB int64      `json:"mem_total_mib"`
	LoadStart  [3]float64 `json:"load_average_start"`
	LoadEnd    [3]float64 `json:"load_average_end"`
}

// Report is what -json prints.
type Report struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Machine  Machine   `json:"machine"`
	Mode     string    `json:"mode"`
	Settings []string  `json:"settings"`
	Figures  []Figure  `json:"figures"`
	Notes    []string  `json:"notes,omitempty"`
}

// goal is a figure's target: at least or at most limit.
type goal struct {
	atMost bool
	limit  float64
	text   string
}

func atLeast(limit float64, text string) *goal { return &goal{limit: limit, text: text} }
func atMost(limit float64, text string) *goal  { return &goal{atMost: true, limit: limit, text: text} }

func (g *goal) met(v float64) bool {
	if g.atMost {
		return v <= g.limit
	}
	return v >= g.limit
}

// run is one invocation of the program.
type run struct {
	set      settings
	report   *Report
	progress io.Writer // progress lines (stderr)
	section  string    // the section running
}

// add records a figure of the running section.
func (r *run) add(name string, v float64, unit string, g *goal, note string) {
	f := Figure{Section: r.section, Name: name, Value: &v, Unit: unit, Verdict: verdictInfo, Note: note}
	if g != nil {
		f.Goal = g.text
		f.Verdict = verdictMissed
		if g.met(v) {
			f.Verdict = verdictMet
		}
	}
	r.report.Figures = append(r.report.Figures, f)
}

// skip records a figure that could not be measured, and why.
func (r *run) skip(name, unit string, g *goal, why string) {
	f := Figure{Section: r.section, Name: name, Unit: unit, Verdict: verdictSkipped, Note: why}
	if g != nil {
		f.Goal = g.text
	}
	r.report.Figures = append(r.report.Figures, f)
}

// note adds a line under the table.
func (r *run) note(format string, args ...any) {
	r.report.Notes = append(r.report.Notes, r.section+": "+fmt.Sprintf(format, args...))
}

// logf prints a progress line.
func (r *run) logf(format string, args ...any) {
	fmt.Fprintf(r.progress, "[%s] %s: %s\n", time.Now().Format("15:04:05"), r.section, fmt.Sprintf(format, args...))
}

func main() {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(mainArgs(os.Args[1:], os.Stdout, os.Stderr))
}

// mainArgs runs the program with args and returns its exit status: 0, 1
// when a section failed (the others still ran), 2 for bad usage.
func mainArgs(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "smaller sizes and fewer rounds: about two minutes on a 2-core machine")
	only := fs.String("only", "", "comma-separated sections to run: "+strings.Join(sectionNames, ","))
	asJSON := fs.Bool("json", false, "print the report as JSON")
	uploadMiB := fs.Int("upload-mib", 0, "upload size in MiB (default 32, 8 with -quick)")
	rounds := fs.Int("rounds", 0, "upload rounds (default 5, 3 with -quick)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench [-quick] [-only %s] [-json]\n", strings.Join(sectionNames, ","))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	todo := sectionNames
	if *only != "" {
		todo = nil
		for _, s := range strings.Split(*only, ",") {
			s = strings.TrimSpace(s)
			if _, ok := sections[s]; !ok {
				fmt.Fprintf(stderr, "bench: unknown section %q in -only (sections: %s)\n", s, strings.Join(sectionNames, ", "))
				return 2
			}
			if !slices.Contains(todo, s) {
				todo = append(todo, s)
			}
		}
		slices.SortFunc(todo, func(a, b string) int { return slices.Index(sectionNames, a) - slices.Index(sectionNames, b) })
	}
	if *uploadMiB < 0 || *uploadMiB > 1024 || *rounds < 0 || *rounds > 100 {
		fmt.Fprintln(stderr, "bench: -upload-mib must be within 1..1024 and -rounds within 1..100")
		return 2
	}
	set := defaults(*quick)
	if *uploadMiB > 0 {
		set.uploadSize = int64(*uploadMiB) << 20
	}
	if *rounds > 0 {
		set.rounds = *rounds
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer stopPostgres()
	rep := &Report{Started: time.Now(), Machine: machine(), Mode: "full"}
	if *quick {
		rep.Mode = "quick"
	}
	rep.Settings = set.describe(todo)
	r := &run{set: set, report: rep, progress: stderr}
	if !*asJSON {
		printHeader(stdout, rep)
	}
	status := 0
	for _, name := range todo {
		r.section = name
		if err := runSection(ctx, r, sections[name]); err != nil {
			status = 1
			r.report.Figures = append(r.report.Figures, Figure{Section: name, Name: "section failed", Verdict: verdictError, Note: err.Error()})
			r.logf("failed: %v", err)
		}
		if ctx.Err() != nil {
			status = 1
			break
		}
	}
	rep.Machine.LoadEnd = loadAverage()
	rep.Seconds = time.Since(rep.Started).Seconds()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return status
	}
	printTable(stdout, rep)
	return status
}

// runSection runs s, turning a panic into an error so that the other
// sections still run.
func runSection(ctx context.Context, r *run, s section) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	start := time.Now()
	r.logf("start")
	err = s(ctx, r)
	r.logf("done in %s", time.Since(start).Round(time.Millisecond))
	return err
}

// printHeader prints the machine and the settings.
func printHeader(w io.Writer, rep *Report) {
	m := rep.Machine
	fmt.Fprintf(w, "fwupgrader benchmarks, %s (%s mode)\n", rep.Started.Format(time.RFC3339), rep.Mode)
	fmt.Fprintf(w, "machine: %d CPUs, %s, %d MiB RAM; %s %s/%s; Linux %s\n", m.CPUs, m.CPUModel, m.MemTotalMB,
		m.GoVersion, m.GOOS, m.GOARCH, m.Kernel)
	fmt.Fprintf(w, "load average at start: %.2f %.2f %.2f (1, 5, 15 min): a shared machine, figures are noisy;\n", m.LoadStart[0], m.LoadStart[1], m.LoadStart[2])
	fmt.Fprintln(w, "  comparisons are made side by side in this run (medians, ratios).")
	for _, s := range rep.Settings {
		fmt.Fprintf(w, "  %s\n", s)
	}
	fmt.Fprintln(w)
}

// printTable prints the figures, one a line, and the notes.
func printTable(w io.Writer, rep *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SECTION\tFIGURE\tVALUE\tUNIT\tGOAL\tVERDICT")
	for _, f := range rep.Figures {
		v := "n/a"
		if f.Value != nil {
			v = formatValue(*f.Value)
		}
		g := f.Goal
		if g == "" {
			g = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Section, f.Name, v, f.Unit, g, f.Verdict)
	}
	tw.Flush()
	var notes []string
	for _, f := range rep.Figures {
		if f.Note != "" {
			notes = append(notes, fmt.Sprintf("%s / %s: %s", f.Section, f.Name, f.Note))
		}
	}
	notes = append(notes, rep.Notes...)
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	m := rep.Machine
	fmt.Fprintf(w, "\nload average at end: %.2f %.2f %.2f; run took %s\n", m.LoadEnd[0], m.LoadEnd[1], m.LoadEnd[2],
		(time.Duration(rep.Seconds * float64(time.Second))).Round(time.Second))
}

// formatValue prints v with 3 significant digits at least, without
// exponent.
func formatValue(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// machine describes this machine.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
		CPUModel: "unknown", Kernel: "unknown", LoadStart: loadAverage()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if kb, ok := procStatusKB("/proc/meminfo", "MemTotal"); ok {
		m.MemTotalMB = kb / 1024
	}
	return m
}

// loadAverage reads /proc/loadavg (zeros when it cannot).
func loadAverage() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	_, _ = fmt.Sscanf(string(b), "%f %f %f", &l[0], &l[1], &l[2])
	return l
}
