package openwrt

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Bounds of the device output that goes to an operation's log, line by
// line, for sysupgrade and sysupgrade --test (with -v, sysupgrade lists
// every configuration file it saves: thousands on some devices). Standard
// output and standard error count apart: on OpenWrt 21.02 to 23.05 the
// list fills standard output while sysupgrade's own messages go to
// standard error, and those must not be crowded out.
const (
	// MaxOutputLines is how many lines of a command's standard output,
	// and as many of its standard error, are logged as the device prints
	// them.
	MaxOutputLines = 100
	// OutputTailLines is how many of the last lines of a stream beyond
	// MaxOutputLines are logged when the command ends, after a line saying
	// how many were left out: sysupgrade's verdict is at the end.
	OutputTailLines = 20
)

// outputLog logs a command's output line by line while it runs: the first
// MaxOutputLines lines of each stream as they arrive, then, when the
// command ends, how many were left out and the last OutputTailLines. Lines
// longer than maxLineLen are cut (lineWriter), blank ones skipped, secrets
// hidden (logf).
//
// The lines reach the log from a goroutine of its own: a slow store must
// never hold up the reading of the device's output, since a full SSH
// window would block sysupgrade itself.
type outputLog struct {
	a    *attempt
	ctx  context.Context
	live chan string // never more than 2*MaxOutputLines sent: never blocks
	done chan struct{}

	mu      sync.Mutex
	streams [2]streamLog // standard output, standard error
	closed  bool
}

// streamLog counts the lines of one stream.
type streamLog struct {
	n    int      // lines seen
	tail []string // the last lines beyond MaxOutputLines, oldest first
}

func (a *attempt) newOutputLog(ctx context.Context) *outputLog {
	o := &outputLog{a: a, ctx: ctx, live: make(chan string, 2*MaxOutputLines), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for l := range o.live {
			a.logf(ctx, "%s", l)
		}
	}()
	return o
}

// line takes one line of standard output, or of standard error when
// stderr (from the goroutines reading them).
func (o *outputLog) line(stderr bool, l string) {
	l = strings.TrimRight(l, " \t")
	if strings.TrimSpace(l) == "" {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	s := &o.streams[0]
	if stderr {
		s = &o.streams[1]
	}
	s.n++
	if s.n <= MaxOutputLines {
		o.live <- l
		return
	}
	if len(s.tail) == OutputTailLines {
		copy(s.tail, s.tail[1:])
		s.tail = s.tail[:OutputTailLines-1]
	}
	s.tail = append(s.tail, l)
}

// close waits for the live lines to be logged, then logs the end of the
// output that was held back. Call it once the command returned.
func (o *outputLog) close() {
	o.mu.Lock()
	o.closed = true
	close(o.live)
	streams := o.streams
	o.mu.Unlock()
	<-o.done
	for i, s := range streams {
		name := "standard output"
		if i == 1 {
			name = "standard error"
		}
		if left := s.n - MaxOutputLines - len(s.tail); left > 0 {
			o.a.logf(o.ctx, "…[%d more lines of %s not logged]…", left, name)
		}
		for _, l := range s.tail {
			o.a.logf(o.ctx, "%s", l)
		}
	}
}

// runLogged runs cmd on the attempt's connection, as run does, and logs
// its output line by line as the device prints it (see outputLog). It also
// returns standard error alone (see streams), capped as the combined
// output is.
func (a *attempt) runLogged(ctx context.Context, timeout time.Duration, cmd string) (out, stderr string, err error) {
	if a.c == nil {
		return "", "", fmt.Errorf("%w: no connection", errNotStarted)
	}
	o := a.newOutputLog(ctx)
	errOut := &capBuffer{max: maxCapture}
	out, err = a.c.runLines(ctx, timeout, cmd, &streams{line: o.line, stderr: errOut})
	o.close()
	return out, errOut.String(), err
}
