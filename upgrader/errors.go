package upgrader

import (
	"fmt"
	"strings"

	"github.com/fwupgrader/fwupgrader/status"
)

// How an operation's log says why it ended.
//
// Every terminal line starts with the outcome, once: "success", "already
// installed", "not needed (reason)", "cancelled", or the state and the
// reason, "aborted (identity-mismatch)", "failed (flash-failed)". What
// follows is the attempt's error in its own words: the classification that
// *Error adds to its text ("upgrader: aborted (identity-mismatch): ...") is
// left out, since the label already says it, so that no word-prefix reads
// twice ("not needed: upgrader: not-needed (already-installed): ...").

// outcome names how an operation ended, for the start of its last log line.
func outcome(to status.State, reason status.Reason) string {
	switch {
	case to == status.Success && reason == status.ReasonNone:
		return "success"
	case to == status.Success && reason == status.ReasonAlreadyInstalled:
		return "already installed"
	case to == status.Success:
		return fmt.Sprintf("not needed (%s)", reason)
	case to == status.Cancelled && (reason == status.ReasonCancelledByUser || reason == status.ReasonNone):
		return "cancelled"
	case reason == status.ReasonNone:
		return string(to)
	}
	return fmt.Sprintf("%s (%s)", to, reason)
}

// endLine is the last log line of an operation that ended in to for
// reason: the outcome, then detail when there is one.
func endLine(to status.State, reason status.Reason, detail string) string {
	label := outcome(to, reason)
	if detail = strings.TrimSpace(detail); detail == "" {
		return label
	}
	return label + ": " + detail
}

// message returns the text of an attempt's error for the operation's log,
// on one line: err's own words, without the kind and reason each *Error in
// its chain adds to the text (the log line's label and the operation's
// Reason say them).
func message(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	walkErrors(err, func(e error) {
		ue, ok := e.(*Error)
		if !ok {
			return
		}
		full := ue.Error()
		plain := ""
		if ue.Err != nil {
			plain = ue.Err.Error()
		}
		if i := strings.Index(msg, full); i >= 0 {
			msg = msg[:i] + plain + msg[i+len(full):]
		}
	})
	// One line: a log line is read as one (errors.Join puts each error on
	// a line of its own).
	var parts []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	msg = strings.Join(parts, "; ")
	return strings.TrimSpace(strings.TrimSuffix(msg, ":"))
}

// walkErrors calls fn on err and on every error it wraps, depth first.
func walkErrors(err error, fn func(error)) {
	for err != nil {
		fn(err)
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walkErrors(e, fn)
			}
			return
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		default:
			return
		}
	}
}
