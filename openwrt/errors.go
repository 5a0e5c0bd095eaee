package openwrt

import (
	"fmt"
	"strings"
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
	// Do not split a UTF-8 sequence.
	for cut < len(s) && s[cut]&0xC0 == 0x80 {
		cut++
	}
	return "…" + s[cut:]
}
