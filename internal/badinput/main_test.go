package badinput_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rowsAtOnce is how many rows run at once unless -test.parallel says
// otherwise. Rows mostly wait for processes, SSH handshakes and simulated
// reboots; GOMAXPROCS (the default) would run them nearly one by one on a
// small machine.
const rowsAtOnce = 16

// printTable, set with -args -table, prints the rows as the Markdown table
// of docs/RELIABILITY.md and runs nothing.
var printTable = flag.Bool("table", false, "print the bad-input table as Markdown and exit")

// bin holds the paths of the commands TestMain built.
var bin struct {
	fwupgrade string // examples/fwupgrade
	nms       string // examples/nms
	err       error  // why they could not be built
}

func TestMain(m *testing.M) {
	flag.Parse()
	if *printTable {
		writeTable(os.Stdout, allRows())
		os.Exit(0)
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", strconv.Itoa(rowsAtOnce))
	}
	dir, err := os.MkdirTemp("", "badinput-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "badinput:", err)
		os.Exit(1)
	}
	bin.err = buildCommands(dir)
	code := m.Run()
	_ = stopNMS() // when a test other than TestBadInput started it
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildCommands builds the CLI and the NMS example into dir with the go
// command that runs this test, from the module's root.
func buildCommands(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	gobin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	out, err := exec.CommandContext(ctx, gobin, "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return fmt.Errorf("go env GOMOD: not inside the module (%q)", gomod)
	}
	// One go build for both: the go command links them in parallel.
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", dir+string(filepath.Separator),
		"./examples/fwupgrade", "./examples/nms")
	cmd.Dir = filepath.Dir(gomod)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./examples/fwupgrade ./examples/nms: %w: %s", err, stderr.String())
	}
	bin.fwupgrade = filepath.Join(dir, "fwupgrade")
	bin.nms = filepath.Join(dir, "nms")
	return nil
}

// requireCommands fails the test when TestMain could not build the
// commands.
func requireCommands(t *testing.T) {
	t.Helper()
	if bin.err != nil {
		t.Fatalf("the commands under test could not be built: %v", bin.err)
	}
}
