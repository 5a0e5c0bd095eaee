package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Exit codes. They are part of the command's interface: scripts depend on
// them (see the package documentation).
const (
	exitSuccess   = 0
	exitFailed    = 1
	exitAborted   = 2
	exitCancelled = 3
	exitError     = 4
	exitUsage     = 64
)

// exitCodesHelp is printed by every help page.
const exitCodesHelp = `Exit codes:
  0   success: every device runs the image (or already did); a control
      command did what was asked; a dry run found every device ready
  1   failed: at least one device failed (flash failed, never came back,
      came back on the old firmware, retries exhausted, timeout)
  2   aborted or skipped: at least one device was left untouched on purpose
      (wrong board, wrong UUID, host key mismatch, not enough memory, image
      refused, no image for its board, busy elsewhere); for a dry run: at
      least one device would not be upgraded
  3   cancelled or paused: the upgrade or the batch was cancelled, or the
      batch is paused (Ctrl-C, an operator, a failure threshold) and can be
      resumed
  4   the command could not run: the store is unreachable, the batch does
      not exist or is not in a state that allows the command
  64  bad usage: a bad flag, a missing or unreadable file, a malformed
      inventory; nothing was started
When several apply, the first in this order wins: 1, 3, 2.
`

// streams are the process's outputs and its interrupt signals.
type streams struct {
	stdout, stderr io.Writer
	sig            <-chan os.Signal
}

// command is one subcommand. define registers its flags on f and returns
// the function that runs it once the flags are parsed; help calls define
// only to list the flags.
type command struct {
	name     string
	summary  string
	synopsis string
	details  string // before the flags
	after    string // after the flags
	example  string
	define   func(f *flagSet) func(ctx context.Context, s *streams) int
}

func commands() []*command {
	return []*command{upgradeCommand(), batchCommand(), statusCommand(), pauseCommand(), resumeCommand(), cancelCommand()}
}

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

func commandNames() string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

// run is the whole program; main only wires the process to it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, sig <-chan os.Signal) int {
	// Display goroutines and this one both write: serialise them.
	var mu sync.Mutex
	s := &streams{stdout: &syncWriter{mu: &mu, w: stdout}, stderr: &syncWriter{mu: &mu, w: stderr}, sig: sig}
	if len(args) == 0 {
		fmt.Fprintf(s.stderr, "fwupgrade: no command given: use one of %s (see 'fwupgrade --help')\n", commandNames())
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "--h":
		writeMainHelp(s.stdout)
		return exitSuccess
	case "help":
		if len(args) == 1 {
			writeMainHelp(s.stdout)
			return exitSuccess
		}
		c := findCommand(args[1])
		if c == nil || len(args) > 2 {
			fmt.Fprintf(s.stderr, "fwupgrade help: unknown command %q: use one of %s (see 'fwupgrade --help')\n",
				strings.Join(args[1:], " "), commandNames())
			return exitUsage
		}
		writeCommandHelp(s.stdout, c)
		return exitSuccess
	}
	c := findCommand(args[0])
	if c == nil {
		if strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(s.stderr, "fwupgrade: a command comes first, before %s: use one of %s (see 'fwupgrade --help')\n", args[0], commandNames())
		} else {
			fmt.Fprintf(s.stderr, "fwupgrade: unknown command %q: use one of %s (see 'fwupgrade --help')\n", args[0], commandNames())
		}
		return exitUsage
	}
	f := newFlagSet("fwupgrade " + c.name)
	runCmd := c.define(f)
	if err := f.parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeCommandHelp(s.stdout, c)
			return exitSuccess
		}
		return usage(s, c.name, err)
	}
	return runCmd(ctx, s)
}

// usageError is a problem with the command line or the files it names,
// found before anything is started.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// usage prints err as one line with a pointer to the command's help and
// returns exitUsage.
func usage(s *streams, cmd string, err error) int {
	fmt.Fprintf(s.stderr, "fwupgrade %s: %s (see 'fwupgrade %s --help')\n", cmd, oneLine(err.Error(), 2000), cmd)
	return exitUsage
}

// fail prints err as one line and returns code.
func fail(s *streams, cmd string, code int, err error) int {
	var ue *usageError
	if errors.As(err, &ue) {
		return usage(s, cmd, err)
	}
	fmt.Fprintf(s.stderr, "fwupgrade %s: %s\n", cmd, oneLine(err.Error(), 2000))
	return code
}

func writeMainHelp(w io.Writer) {
	fmt.Fprint(w, `fwupgrade upgrades the firmware of OpenWrt devices over SSH, one device or a
fleet from an inventory, with the fwupgrader engine.

Usage:
  fwupgrade COMMAND [flags]
  fwupgrade help COMMAND        (or fwupgrade COMMAND --help)

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Host keys are always verified against known_hosts files: there is no way to
skip the check. Flags take one or two dashes (--image or -image).

`)
	fmt.Fprint(w, exitCodesHelp)
	fmt.Fprint(w, `
Examples:
  fwupgrade upgrade --host 192.0.2.10 --identity ~/.ssh/id_ed25519 \
      --known-hosts ~/.ssh/known_hosts --image openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin \
      --uuid 5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e
  fwupgrade batch --inventory fleet.json --image openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin \
      --waves 1,10%,100% --failure-threshold 20% --dry-run --check
  fwupgrade status --store postgres://fw@db.example.net/fw --batch 0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f
`)
}

func writeCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "fwupgrade %s: %s\n\nUsage:\n  %s\n", c.name, c.summary, c.synopsis)
	if c.details != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.details, "\n"))
	}
	f := newFlagSet("fwupgrade " + c.name)
	c.define(f)
	fmt.Fprint(w, "\nFlags:\n")
	f.writeHelp(w)
	fmt.Fprint(w, "  --help\n      Print this help and exit 0.\n      Default: false. Example: fwupgrade "+c.name+" --help\n")
	if c.after != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.after, "\n"))
	}
	fmt.Fprintf(w, "\n%s", exitCodesHelp)
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n%s", c.example)
		if !strings.HasSuffix(c.example, "\n") {
			fmt.Fprintln(w)
		}
	}
}

// syncWriter serialises writes to w with a mutex shared with other writers.
type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// file returns the *os.File under w, if there is one.
func file(w io.Writer) (*os.File, bool) {
	if sw, ok := w.(*syncWriter); ok {
		w = sw.w
	}
	f, ok := w.(*os.File)
	return f, ok
}

// quietLogger drops the library's own log records: the command prints what
// a person needs, and the operations' logs are in the store.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
