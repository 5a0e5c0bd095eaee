package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestMain lets the test binary play the program's child roles (see
// runRole), as the program itself does when it starts itself again.
func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(m.Run())
}

// cheap are the arguments of the runs below: the upload section only, a
// 1 MiB file, one round after the warm-up.
var cheap = []string{"-quick", "-only", "upload", "-upload-mib", "1", "-rounds", "1"}

// wantUploadRows are the figures of one upload target.
func wantUploadRows(target string) []string {
	var rows []string
	for _, c := range contenderNames() {
		rows = append(rows, target+": "+c)
	}
	return append(rows, target+": library SCP / OpenSSH scp -O", target+": library best")
}

// TestUploadJSON runs the upload section with -json: the report parses,
// describes the machine and the sizes, and has every figure of both
// targets, each measured or skipped with a reason. The simulator's library
// and raw figures need nothing installed: they are measured, with
// positive values. The values themselves are not checked.
func TestUploadJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := mainArgs(append(slices.Clone(cheap), "-json"), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr.String())
	}
	var rep Report
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("the output is not a report: %v\n%s", err, stdout.String())
	}
	if rep.Machine.CPUs < 1 || rep.Machine.GoVersion == "" || rep.Mode != "quick" {
		t.Errorf("machine %+v, mode %q", rep.Machine, rep.Mode)
	}
	if len(rep.Settings) != 1 || !strings.Contains(rep.Settings[0], "1 MiB") {
		t.Errorf("settings %q do not give the upload size", rep.Settings)
	}
	byName := map[string]Figure{}
	for _, f := range rep.Figures {
		if f.Section != "upload" {
			t.Errorf("figure %q of section %q", f.Name, f.Section)
		}
		byName[f.Name] = f
		switch f.Verdict {
		case verdictMet, verdictMissed, verdictInfo:
			if f.Value == nil || *f.Value <= 0 {
				t.Errorf("figure %q is %s without a positive value", f.Name, f.Verdict)
			}
		case verdictSkipped:
			if f.Value != nil || f.Note == "" {
				t.Errorf("skipped figure %q has a value or no reason: %+v", f.Name, f)
			}
		default:
			t.Errorf("figure %q: verdict %q", f.Name, f.Verdict)
		}
		if strings.Contains(f.Name, " / ") && f.Goal == "" {
			t.Errorf("ratio %q has no goal", f.Name)
		}
	}
	for _, target := range []string{"simulator", "dropbear"} {
		for _, want := range wantUploadRows(target) {
			found := false
			for name := range byName {
				found = found || strings.HasPrefix(name, want)
			}
			if !found {
				t.Errorf("no figure %q in %v", want, slices.Sorted(maps.Keys(byName)))
			}
		}
	}
	for _, name := range []string{"simulator: " + cLibSFTP, "simulator: " + cLibSCP, "simulator: " + cLibCat, "simulator: " + cRawCat} {
		if f := byName[name]; f.Value == nil || f.Unit != "MiB/s" {
			t.Errorf("%s was not measured: %+v", name, f)
		}
	}
}

// TestUploadTable runs the same as a table: the header names the machine,
// and each figure is a line of six columns whose value is a number (or
// n/a when skipped).
func TestUploadTable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := mainArgs(cheap, &stdout, &stderr); code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	if !regexp.MustCompile(`(?m)^machine: \d+ CPUs, .+; go1\.\S+ \S+; Linux \S+$`).MatchString(out) {
		t.Errorf("no machine line in:\n%s", out)
	}
	cols := regexp.MustCompile(`\s{2,}`)
	rows := map[string][]string{}
	inTable := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "SECTION "):
			inTable = true
			continue
		case line == "":
			inTable = false
		}
		if !inTable {
			continue
		}
		f := cols.Split(strings.TrimSpace(line), -1)
		if len(f) != 6 {
			t.Errorf("line %q has %d columns: %q", line, len(f), f)
			continue
		}
		if f[2] != "n/a" {
			if _, err := strconv.ParseFloat(f[2], 64); err != nil {
				t.Errorf("line %q: value %q: %v", line, f[2], err)
			}
		}
		if (f[2] == "n/a") != (f[5] == verdictSkipped) {
			t.Errorf("line %q: value %q with verdict %q", line, f[2], f[5])
		}
		rows[f[1]] = f
	}
	for _, target := range []string{"simulator", "dropbear"} {
		for _, want := range wantUploadRows(target) {
			found := false
			for name := range rows {
				found = found || strings.HasPrefix(name, want)
			}
			if !found {
				t.Errorf("no line for %q in:\n%s", want, out)
			}
		}
	}
	if !strings.Contains(out, "load average at end:") {
		t.Errorf("no closing line in:\n%s", out)
	}
}

// TestBadUsage: an unknown section or an impossible size is refused with
// exit status 2 and one message, before anything runs.
func TestBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-only", "upload,nosuch"},
		{"-upload-mib", "-1"},
		{"-quick", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := mainArgs(args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit status %d, want 2", args, code)
		}
		if stdout.Len() != 0 || stderr.Len() == 0 {
			t.Errorf("%q: stdout %q, stderr %q", args, stdout.String(), stderr.String())
		}
	}
}
