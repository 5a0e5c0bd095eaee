package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

func runQuick(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, nil)
	return code, stdout.String(), stderr.String()
}

// flagBlock returns the help block of flag name: its head line and the
// indented lines under it.
func flagBlock(help, name string) (string, bool) {
	lines := strings.Split(help, "\n")
	for i, l := range lines {
		if l == "  --"+name || strings.HasPrefix(l, "  --"+name+" ") {
			block := []string{l}
			for _, next := range lines[i+1:] {
				if !strings.HasPrefix(next, "      ") {
					break
				}
				block = append(block, next)
			}
			return strings.Join(block, "\n"), true
		}
	}
	return "", false
}

func TestHelpListsEveryFlag(t *testing.T) {
	t.Parallel()
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			f := newFlagSet(c.name)
			c.define(f)
			var names []string
			f.fs.VisitAll(func(fl *flag.Flag) { names = append(names, fl.Name) })
			require.NotEmpty(t, names)
			for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}, {c.name, "--no-such-flag", "--help"}} {
				code, stdout, stderr := runQuick(args...)
				assert.Equal(t, exitSuccess, code, "%v", args)
				assert.Empty(t, stderr, "%v: help goes to stdout", args)
				assert.True(t, strings.HasPrefix(stdout, "fwupgrade "+c.name+": "), "%v", args)
				assert.Contains(t, stdout, "Exit codes:")
				assert.Contains(t, stdout, "Example:")
				usageLine := stdout[strings.Index(stdout, "Usage:"):strings.Index(stdout, "\nFlags:")]
				for _, name := range names {
					block, ok := flagBlock(stdout, name)
					if !assert.True(t, ok, "%v: --%s is listed", args, name) {
						continue
					}
					assert.Regexp(t, `\n      Default: [^.].*\. Example: `, block, "--%s has a default and an example", name)
					assert.Regexp(t, `\n      [A-Za-z"]`, block, "--%s has a description", name)
					assert.Regexp(t, regexp.MustCompile(`--`+regexp.QuoteMeta(name)+`([^a-z-]|$)`), usageLine,
						"the usage names --%s", name)
				}
			}
		})
	}
}

func TestHelpOfTheProgram(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, stdout, stderr := runQuick(args...)
		assert.Equal(t, exitSuccess, code, "%v", args)
		assert.Empty(t, stderr)
		for _, c := range commands() {
			assert.Contains(t, stdout, "\n  "+c.name+" ", "%v lists %s", args, c.name)
		}
		assert.Contains(t, stdout, "Exit codes:")
		assert.Contains(t, stdout, "64  bad usage")
	}
}

func TestUpgradeHelpIsNotAnError(t *testing.T) {
	t.Parallel()
	// What a newcomer met: "flag: help requested" and exit 64.
	code, stdout, stderr := runQuick("upgrade", "--help")
	assert.Equal(t, exitSuccess, code)
	assert.NotContains(t, stdout+stderr, "help requested")
	for _, f := range []string{"--retries N", "--retry-delay D", "--expect-release STRING"} {
		assert.Contains(t, stdout, f, "the usage lists %s", f)
	}
}

func TestBadUsageOfEveryCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		cmd  string
		want string
	}{
		{[]string{"help", "nope"}, "help", `unknown command "nope"`},
		{[]string{"--image", "x.bin"}, "", "a command comes first"},
		{[]string{"upgrade", "--port", "x"}, "upgrade", `invalid value "x" for flag --port`},
		{[]string{"status"}, "status", "--store is required"},
		{[]string{"status", "--store", "postgres://u@h/db"}, "status", "--batch is required"},
		{[]string{"pause", "--store", "mysql://h/db", "--batch", "x"}, "pause", "postgres://"},
		{[]string{"cancel", "--store", "postgres://u@h/db", "--batch", "x", "--force"}, "cancel", "unknown flag --force"},
		{[]string{"resume", "--store", "postgres://u@h/db", "--batch", "x", "--inventory", "/nonexistent.json"}, "resume", "/nonexistent.json"},
		{[]string{"resume", "--store", "postgres://u@h/db", "--inventory", "/nonexistent.json"}, "resume", "--batch is required"},
		{[]string{"status", "--store", "postgres://fw:hunter2@h/db", "--schema", "bad name", "--batch", "x"}, "status", "schema"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runQuick(tc.args...)
			assert.Equal(t, exitUsage, code, stderr)
			assert.Empty(t, stdout)
			msg := strings.TrimSpace(stderr)
			assert.NotContains(t, msg, "\n", "one line")
			assert.Contains(t, msg, tc.want)
			assert.Contains(t, msg, "--help'", "it points to the help")
			assert.NotContains(t, msg, "hunter2", "a password never reaches a message")
			if tc.cmd != "" && tc.cmd != "help" {
				assert.True(t, strings.HasPrefix(msg, "fwupgrade "+tc.cmd+": "), msg)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "postgres://fw:REDACTED@db:5432/fleet", redactURL("postgres://fw:hunter2@db:5432/fleet"))
	assert.Equal(t, "postgres://fw@db/fleet", redactURL("postgres://fw@db/fleet"))
	assert.Equal(t, "fwupgrade status --store 'postgres://fw:REDACTED@db/fleet?sslmode=require' --schema lab --batch B",
		controlLine("status", &storeFlags{url: "postgres://fw:hunter2@db/fleet?sslmode=require", schema: "lab"}, "B"))
}

func TestParseRateAndPercent(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]store.Rate{
		"30/min": {Count: 30, Per: 60e9}, "5/s": {Count: 5, Per: 1e9}, "100/h": {Count: 100, Per: 3600e9},
		"10/30s": {Count: 10, Per: 30e9}, "12": {Count: 12, Per: 60e9},
	} {
		got, err := parseRate(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "0/min", "-1/min", "x/min", "5/fortnight", "5/0s", "1/48h"} {
		_, err := parseRate(in)
		assert.Error(t, err, in)
	}
	for in, want := range map[string]float64{"20%": 20, "12.5": 12.5, "0%": 0, "100%": 100} {
		got, err := parsePercent(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "101%", "-1%", "x%"} {
		_, err := parsePercent(in)
		assert.Error(t, err, in)
	}
}

func TestBatchViewTable(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	v := newBatchView(&out, nil)
	v.tty, v.height = true, 8 // as on a small terminal
	bs := upgrader.BatchStatus{Batch: store.Batch{ID: "B1", State: status.BatchInProgress}, Summary: "1 of 9 done, 7 pending"}
	var ops []store.Operation
	for i := range 9 {
		ops = append(ops, store.Operation{ID: fmt.Sprint("op", i), DeviceID: fmt.Sprint("dev-", i), State: status.Pending})
	}
	ops[0].State, ops[0].Phase, ops[0].Progress = status.Success, status.PhaseVerifying, 100
	ops[4].State, ops[4].Phase, ops[4].Progress = status.InProgress, status.PhaseUpload, 42
	v.update(bs, ops)
	first := out.String()
	assert.Contains(t, first, "batch B1: in-progress, 1 of 9 done, 7 pending")
	assert.Contains(t, first, "DEVICE")
	assert.Regexp(t, `dev-4 +1  in-progress +upload +42% \[====`, first, "the running device comes first, with its phase and percent")
	assert.Contains(t, first, "... and ", "rows beyond the terminal's height are counted, not drawn")
	assert.NotRegexp(t, `\x1b\[\d+A`, first, "no cursor-up on the first draw")
	out.Reset()
	ops[4].Phase, ops[4].Progress = status.PhaseFlashing, 65
	v.update(bs, ops)
	assert.True(t, strings.HasPrefix(out.String(), fmt.Sprintf("\x1b[%dA", v.drawn)), "the table is redrawn in place")
	assert.Contains(t, out.String(), "flashing")
}
