package upgrader_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/upgrader"
)

// An upgrader logs the device's output with Report.Log, one line at a time
// as the device prints it (the openwrt package does so for sysupgrade
// --test). Such a line is no undo record and clears none: what the attempt
// recorded with RecordUndo must still be restored after a cancel, and
// nothing it only logged may be handed to the Restorer.
//
// Defect: pendingUndo reads every log line starting with "undo record: " as
// a record and every line equal to the "undo records cleared" line as
// Undone, whoever wrote it.
func TestLoggedLinesAreNeverUndoRecords(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		do   func(t *testing.T, ctx context.Context, job *upgrader.Job)
		want [][]string
	}{
		{
			name: "a logged line that reads like Undone clears nothing",
			do: func(t *testing.T, ctx context.Context, job *upgrader.Job) {
				require.NoError(t, recordUndo(ctx, job, "stopped services"))
				require.NoError(t, job.Report.Log(ctx, "undo records cleared: nothing is left to undo on the device"))
			},
			want: [][]string{{"stopped services"}},
		},
		{
			name: "a logged line that reads like a record is none",
			do: func(t *testing.T, ctx context.Context, job *upgrader.Job) {
				require.NoError(t, job.Report.Log(ctx, `undo record: {"services":["telnet"]}`))
			},
			want: nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := &undoFake{script: func(context.Context, *upgrader.Job, int) error { return nil }}
			r := undoSetup(t, fake)
			op := r.dieAfter(t, func(ctx context.Context, job *upgrader.Job) { tc.do(t, ctx, job) })
			eng := r.engine(t, r.st, nil)
			_, err := eng.Cancel(context.Background(), op.ID)
			require.NoError(t, err)
			require.NoError(t, eng.Start(context.Background()))
			stop(t, eng) // waits for the restores asked for
			_, restores := fake.seen()
			assert.Equal(t, tc.want, restores, "what the Restorer was asked to undo")
		})
	}
}

// A Cancel that wins on an engine that has stopped (or stops meanwhile)
// asks for a restore that this engine will not run (its maintenance
// drained its restores when it stopped): the operation's log says that
// changes may be left on the device, rather than nothing.
func TestCancelOnAStoppedEngineReportsTheChangesLeft(t *testing.T) {
	t.Parallel()
	fake := &undoFake{script: func(context.Context, *upgrader.Job, int) error { return nil }}
	r := undoSetup(t, fake)
	op := r.interrupted(t, "stopped services")
	eng := r.engine(t, r.st, nil)
	require.NoError(t, eng.Start(context.Background()))
	stop(t, eng)

	_, err := eng.Cancel(context.Background(), op.ID)
	require.NoError(t, err, "Cancel works on a stopped engine")
	// Give a restore every chance: past the interrupted attempt's lease.
	time.Sleep(time.Until(op.LeaseExpiresAt) + 200*time.Millisecond)

	_, restores := fake.seen()
	reported := slices.ContainsFunc(logLines(t, r.st, op.ID), func(l string) bool {
		return strings.Contains(l, "may be left on the device")
	})
	assert.True(t, len(restores) > 0 || reported,
		"the records of the interrupted attempt were neither restored nor reported as left: %q", logLines(t, r.st, op.ID))
}
