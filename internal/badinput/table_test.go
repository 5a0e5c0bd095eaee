package badinput_test

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// Surfaces a row reaches the code through.
const (
	surfaceGo   = "go"   // the public Go API, in this process
	surfaceCLI  = "cli"  // the fwupgrade command, as a process
	surfaceREST = "rest" // the NMS example's REST API, over HTTP
)

// row is one bad input and the outcome the project promises for it.
type row struct {
	surface string
	name    string // unique within its surface; the subtest's name
	input   string // the bad input, for people
	want    string // the outcome it must get
	proves  string // what the row proves
	// defect, when set, says how the code under test fails the row today.
	// The row keeps its expectations and fails until the defect is fixed.
	defect string
	run    func(t *testing.T)
}

// allRows is the table.
func allRows() []row {
	var rows []row
	rows = append(rows, goRows()...)
	rows = append(rows, cliRows()...)
	rows = append(rows, restRows()...)
	return rows
}

// TestBadInput runs the table: every bad input, on every surface, gets a
// clear error, stores nothing half-way and sends no device anything it
// should not get. Each row's run asserts all three; see doc.go.
func TestBadInput(t *testing.T) {
	rows := allRows()
	seen := map[string]bool{}
	for _, r := range rows {
		key := r.surface + "/" + r.name
		if seen[key] {
			t.Fatalf("two rows are named %s", key)
		}
		seen[key] = true
		if r.input == "" || r.want == "" || r.proves == "" || r.run == nil {
			t.Fatalf("row %s lacks its input, outcome, proof or run", key)
		}
	}
	t.Cleanup(func() {
		// After every bad request the server is still up and stops as
		// it should.
		if err := stopNMS(); err != nil {
			t.Errorf("the NMS did not exit cleanly after the REST rows: %v", err)
		}
	})
	for _, r := range rows {
		t.Run(r.surface+"/"+r.name, func(t *testing.T) {
			t.Parallel()
			if r.defect != "" {
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("KNOWN DEFECT of the code under test, not of this row: %s", r.defect)
					}
				})
			}
			r.run(t)
		})
	}
}

// writeTable writes rows as a Markdown table: surface | input | expected
// outcome | what it proves.
func writeTable(w io.Writer, rows []row) {
	cell := func(s string) string {
		return strings.NewReplacer("|", `\|`, "*", `\*`, "\n", " ").Replace(s)
	}
	fmt.Fprintln(w, "| surface | input | expected outcome | what it proves |")
	fmt.Fprintln(w, "| --- | --- | --- | --- |")
	for _, r := range rows {
		want := r.want
		if r.defect != "" {
			want += " **(fails today: " + r.defect + ")**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.surface, cell(r.input), cell(want), cell(r.proves))
	}
}
