package openwrt

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/fwupgrader/fwupgrader/upgrader"
)

// MaxErrorOutput bounds CommandError.Output, in bytes: longer device output
// keeps its last MaxErrorOutput bytes (where the shell prints its errors),
// after a "…" marker.
const MaxErrorOutput = 4096

// CommandError reports a command that ran on the device and exited with a
// non-zero status. Find it with errors.As.
type CommandError struct {
	// Cmd is the command line as sent to the device.
	Cmd string
	// ExitStatus is the command's exit status.
	ExitStatus int
	// Output is the command's combined standard output and error, trimmed
	// and truncated to MaxErrorOutput bytes.
	Output string
}

func (e *CommandError) Error() string {
	if e.Output == "" {
		return fmt.Sprintf("openwrt: command %s exited with status %d", e.Cmd, e.ExitStatus)
	}
	return fmt.Sprintf("openwrt: command %s exited with status %d: %s", e.Cmd, e.ExitStatus, e.Output)
}

// truncateOutput trims s and keeps at most its last max bytes.
func truncateOutput(s string, max int) string {
	s = strings.TrimSpace(s)
	if len(s) <= max {
		return s
	}
	cut := len(s) - max
	// Do not split a UTF-8 sequence (skipping at most the continuation
	// bytes one can have: a run of stray ones is kept).
	for i := 0; i < utf8.UTFMax-1 && cut < len(s) && !utf8.RuneStart(s[cut]); i++ {
		cut++
	}
	return "…" + s[cut:]
}

// prefix starts the messages of this package's errors.
const prefix = "openwrt: "

// textError is an error with a message of its own, written for an
// operator, over the error it wraps (which errors.Is and errors.As still
// find).
type textError struct {
	text string
	err  error
}

func (e *textError) Error() string { return e.text }
func (e *textError) Unwrap() error { return e.err }

// describe returns err with the message format makes instead of err's own
// (a *CommandError's, for example, would carry the whole output, which is
// in the operation's log already).
func describe(err error, format string, args ...any) error {
	return &textError{text: fmt.Sprintf(format, args...), err: err}
}

// lastLine returns the last line of a command's output that is not blank,
// cut to maxLineLen bytes: where the shell and sysupgrade print their
// verdict.
func lastLine(output string) string {
	lines := strings.Split(strings.TrimSpace(output), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > maxLineLen {
		l = strings.ToValidUTF8(l[:maxLineLen], "") + " …"
	}
	return l
}

// tidy returns the error an attempt ends with, its message written for the
// operation's log: the package's prefix once, however many of the errors
// it wraps start with it ("openwrt: flash: openwrt: command ..." reads
// "openwrt: flash: command ..."), and every secret hidden (redact). The
// classification (*upgrader.Error) and everything errors.Is and errors.As
// find stay as they were.
func tidy(err error, redact func(string) string) error {
	if err == nil {
		return nil
	}
	if ue, ok := err.(*upgrader.Error); ok {
		inner := tidy(ue.Err, redact)
		if inner == ue.Err {
			return err
		}
		return &upgrader.Error{Kind: ue.Kind, Reason: ue.Reason, Err: inner}
	}
	msg := err.Error()
	text := redact(prefixOnce(msg))
	if text == msg {
		return err
	}
	return &textError{text: text, err: err}
}

// prefixOnce removes from s every "openwrt: " after the first one that
// starts a wrapped message (after a space, a "(" or a line break).
func prefixOnce(s string) string {
	first := strings.Index(s, prefix)
	if first < 0 {
		return s
	}
	keep := first + len(prefix)
	var b strings.Builder
	b.WriteString(s[:keep])
	rest := s[keep:]
	for {
		i := strings.Index(rest, prefix)
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		starts := i == 0 && b.Len() > 0 && strings.ContainsRune(" (\n", rune(s[keep-1])) ||
			i > 0 && strings.ContainsRune(" (\n", rune(rest[i-1]))
		b.WriteString(rest[:i])
		if !starts {
			b.WriteString(prefix)
		}
		rest = rest[i+len(prefix):]
		keep = len(s) - len(rest) // index in s of rest
	}
}

// plain is err's message for a log line: without the classification an
// *upgrader.Error adds, and with the package's prefix once.
func plain(err error) string { return prefixOnce(inner(err).Error()) }
