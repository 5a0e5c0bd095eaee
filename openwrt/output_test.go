package openwrt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

func TestLineWriterSplitsLines(t *testing.T) {
	t.Parallel()
	var got []string
	w := &lineWriter{emit: func(l string) { got = append(got, l) }}
	// Written in pieces that cut lines and line ends apart.
	for _, p := range []string{"Saving config", " files...\nCommencing", " upgrade.\r", "\nprogress 10%\rprogress 20%\r\n", "\n", "no newline at the end"} {
		n, err := w.Write([]byte(p))
		require.NoError(t, err)
		require.Equal(t, len(p), n)
	}
	require.Equal(t, []string{"Saving config files...", "Commencing upgrade.", "progress 10%", "progress 20%", ""}, got,
		"a line ends at \\n, \\r\\n or a lone \\r; the last one waits for flush")
	w.flush()
	require.Equal(t, "no newline at the end", got[len(got)-1])
	w.flush()
	require.Len(t, got, 6, "flush passes nothing on twice")
}

func TestLineWriterCutsLongLines(t *testing.T) {
	t.Parallel()
	var got []string
	w := &lineWriter{emit: func(l string) { got = append(got, l) }}
	long := strings.Repeat("é", maxLineLen) // 2 bytes each: the cut falls inside a character
	_, _ = w.Write([]byte(long))
	_, _ = w.Write([]byte(long + "\nnext\n"))
	require.Len(t, got, 2)
	assert.True(t, strings.HasSuffix(got[0], " …[line cut]"), got[0][len(got[0])-20:])
	assert.LessOrEqual(t, len(got[0]), maxLineLen+len(" …[line cut]"))
	assert.True(t, strings.HasPrefix(got[0], "éé"))
	assert.NotContains(t, got[0], "\uFFFD", "no broken character")
	assert.Equal(t, "next", got[1])
}

// newTestAttempt returns an attempt that logs to a testReporter.
func newTestAttempt() (*attempt, *testReporter) {
	rep := &testReporter{}
	a := &attempt{job: &upgrader.Job{Report: rep}, log: slog.New(slog.DiscardHandler), cfg: &Config{}}
	return a, rep
}

func TestOutputLogIsBounded(t *testing.T) {
	t.Parallel()
	for _, n := range []int{3, MaxOutputLines, MaxOutputLines + 1, MaxOutputLines + OutputTailLines, MaxOutputLines + OutputTailLines + 1, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			a, rep := newTestAttempt()
			o := a.newOutputLog(context.Background())
			for i := range n {
				o.line(false, fmt.Sprintf("line %05d", i))
				if i == 1 {
					o.line(false, "   ") // blank: not logged
				}
			}
			o.close()
			o.line(false, "after close") // dropped
			logs := rep.logs
			want := min(n, MaxOutputLines+OutputTailLines)
			skipped := n - want
			if skipped > 0 {
				want++ // the line that counts what was left out
			}
			require.Len(t, logs, want)
			for i, l := range logs[:min(n, MaxOutputLines)] {
				assert.Equal(t, fmt.Sprintf("line %05d", i), l, "the first lines, in order")
			}
			if skipped > 0 {
				assert.Equal(t, fmt.Sprintf("…[%d more lines of standard output not logged]…", skipped), logs[MaxOutputLines])
			}
			if n > MaxOutputLines {
				k := min(n-MaxOutputLines, OutputTailLines)
				for i, l := range logs[len(logs)-k:] {
					assert.Equal(t, fmt.Sprintf("line %05d", n-k+i), l, "the end of the output, where the verdict is, is logged")
				}
			}
			assert.NotContains(t, logs, "after close")
		})
	}
}

// TestOutputLogStreamsCountApart: a flood on standard output (sysupgrade
// -v's list of files) does not crowd out standard error (sysupgrade's own
// messages on 21.02 to 23.05), and each stream keeps its order while both
// are read at once.
func TestOutputLogStreamsCountApart(t *testing.T) {
	t.Parallel()
	a, rep := newTestAttempt()
	o := a.newOutputLog(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 10 * MaxOutputLines {
			o.line(false, fmt.Sprintf("out %05d", i))
		}
	})
	wg.Go(func() {
		for i := range 5 {
			o.line(true, fmt.Sprintf("err %05d", i))
		}
	})
	wg.Wait()
	o.close()
	require.Len(t, rep.logs, MaxOutputLines+1+OutputTailLines+5)
	assert.Contains(t, rep.logs, fmt.Sprintf("…[%d more lines of standard output not logged]…", 10*MaxOutputLines-MaxOutputLines-OutputTailLines))
	last := map[string]int{"out": -1, "err": -1}
	for _, l := range rep.logs {
		var stream string
		var i int
		if _, err := fmt.Sscanf(l, "%s %d", &stream, &i); err != nil {
			continue
		}
		assert.Greater(t, i, last[stream], "each stream's lines keep their order")
		last[stream] = i
	}
	assert.Equal(t, 4, last["err"], "every line of standard error is logged")
	assert.Equal(t, 10*MaxOutputLines-1, last["out"], "the end of standard output is logged")
}

func TestRedactHidesThePassword(t *testing.T) {
	t.Parallel()
	a, rep := newTestAttempt()
	a.addSecret("")
	a.addSecret("s3cr3t")
	a.addSecret("s3cr3t")
	o := a.newOutputLog(context.Background())
	o.line(false, "etc/config/s3cr3t.conf")
	o.close()
	require.Equal(t, []string{"etc/config/" + redactedMark + ".conf"}, rep.logs)
	err := a.result(upgrader.Failed(status.ReasonFlashFailed, errors.New("openwrt: echoed s3cr3t")))
	assert.NotContains(t, err.Error(), "s3cr3t")
	requireKind(t, err, upgrader.KindFailed, status.ReasonFlashFailed)
}

func TestPrefixOnce(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"openwrt: flash: openwrt: command 'x' exited with status 1": "openwrt: flash: command 'x' exited with status 1",
		"openwrt: openwrt: x":                 "openwrt: x",
		"openwrt: a (openwrt: b): openwrt: c": "openwrt: a (b): c",
		"no prefix: at all":                   "no prefix: at all",
		"openwrt: device d not reachable (3 attempts): openwrt: connect to h: refused": "openwrt: device d not reachable (3 attempts): connect to h: refused",
		"openwrt: the file /tmp/openwrt: kept as is":                                   "openwrt: the file /tmp/openwrt: kept as is",
		"upgrader: x: openwrt: y: openwrt: z":                                          "upgrader: x: openwrt: y: z",
	} {
		assert.Equal(t, want, prefixOnce(in), in)
	}
}

func TestTidyKeepsTheChain(t *testing.T) {
	t.Parallel()
	ce := &CommandError{Cmd: "'sysupgrade'", ExitStatus: 1, Output: "sysupgrade: failed"}
	err := upgrader.Failed(status.ReasonFlashFailed, fmt.Errorf("openwrt: flash: %w", ce))
	got := tidy(err, func(s string) string { return s })
	assert.Equal(t, "upgrader: failed (flash-failed): openwrt: flash: command 'sysupgrade' exited with status 1: sysupgrade: failed", got.Error())
	var gotCE *CommandError
	require.ErrorAs(t, got, &gotCE)
	assert.Same(t, ce, gotCE)
	requireKind(t, got, upgrader.KindFailed, status.ReasonFlashFailed)
	assert.ErrorIs(t, tidy(fmt.Errorf("openwrt: stop: %w", upgrader.ErrCancelled), func(s string) string { return s }), upgrader.ErrCancelled)
	plainErr := errors.New("openwrt: once")
	assert.Same(t, plainErr, tidy(plainErr, func(s string) string { return s }), "nothing to tidy: the same error")
}
