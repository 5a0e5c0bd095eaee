package storetest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

func operationTests() []test {
	return []test{
		{"CreatePending", func(t *testing.T, f *fixture) {
			d, im := f.device("org-a"), f.imageOf("org-a")
			opts := json.RawMessage(`{"keep_config": true, "retries": 3}`)
			op, err := f.s.CreateOperation(f.ctx, store.Operation{DeviceID: d.ID, ImageID: im.ID, Options: opts, Attempt: 0})
			require.NoError(t, err)
			assert.NotEmpty(t, op.ID)
			assert.Equal(t, status.Pending, op.State)
			assert.Equal(t, "org-a", op.Organization)
			assert.Empty(t, op.BatchID)
			assert.Empty(t, op.Phase)
			assert.Positive(t, op.Version)
			assert.False(t, op.CreatedAt.IsZero())
			assert.True(t, op.StartedAt.IsZero(), "not started yet")
			assert.True(t, op.FinishedAt.IsZero())
			assert.JSONEq(t, string(opts), string(op.Options))
			assert.Equal(t, string(opts), string(op.Options), "options kept verbatim")
			got := f.get(op.ID)
			requireSame(t, op, got)
		}},
		{"OrganizationFromDevice", func(t *testing.T, f *fixture) {
			d := f.device("org-b")
			op, err := f.s.CreateOperation(f.ctx, store.Operation{Organization: "org-a", DeviceID: d.ID, ImageID: f.imageOf("").ID})
			require.NoError(t, err)
			assert.Equal(t, "org-b", op.Organization, "the device's organization wins over the caller's")
		}},
		{"UnknownID", func(t *testing.T, f *fixture) {
			id := store.NewID()
			_, err := f.s.Operation(f.ctx, id)
			require.ErrorIs(t, err, store.ErrNotFound)
			_, err = f.s.UpdateOperation(f.ctx, id, store.OperationUpdate{From: status.Pending, State: status.InProgress})
			require.ErrorIs(t, err, store.ErrNotFound)
			require.ErrorIs(t, f.s.SetProgress(f.ctx, id, 0, 10), store.ErrNotFound)
			require.ErrorIs(t, f.s.AppendLog(f.ctx, id, 0, "x"), store.ErrNotFound)
			_, err = f.s.Logs(f.ctx, id, 0, 0)
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"UnknownDeviceOrImage", func(t *testing.T, f *fixture) {
			d, im := f.device("org-a"), f.imageOf("org-a")
			_, err := f.s.CreateOperation(f.ctx, store.Operation{DeviceID: "no-such-device", ImageID: im.ID})
			require.ErrorIs(t, err, store.ErrNotFound)
			_, err = f.s.CreateOperation(f.ctx, store.Operation{DeviceID: d.ID, ImageID: store.NewID()})
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"DuplicateID", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			_, err := f.s.CreateOperation(f.ctx, store.Operation{ID: "op-1", DeviceID: f.device("org-a").ID, ImageID: im.ID})
			require.NoError(t, err)
			_, err = f.s.CreateOperation(f.ctx, store.Operation{ID: "op-1", DeviceID: f.device("org-a").ID, ImageID: im.ID})
			require.ErrorIs(t, err, store.ErrConflict)
		}},
		{"DeviceBusy", func(t *testing.T, f *fixture) {
			d, im := f.device("org-a"), f.imageOf("org-a")
			first := f.op(d.ID, im.ID)
			_, err := f.s.CreateOperation(f.ctx, store.Operation{DeviceID: d.ID, ImageID: im.ID})
			require.ErrorIs(t, err, store.ErrDeviceBusy, "pending operation")
			f.start(first.ID, status.PhaseUpload)
			_, err = f.s.CreateOperation(f.ctx, store.Operation{DeviceID: d.ID, ImageID: im.ID})
			require.ErrorIs(t, err, store.ErrDeviceBusy, "in-progress operation")
			ops, err := f.s.ListOperations(f.ctx, store.OperationFilter{DeviceID: d.ID})
			require.NoError(t, err)
			assert.Len(t, ops, 1)
			other := f.op(f.device("org-a").ID, im.ID)
			assert.NotEqual(t, first.ID, other.ID, "another device is not busy")
		}},
		{"DeviceFreeAfterTerminal", func(t *testing.T, f *fixture) {
			for _, s := range []status.State{status.Success, status.Failed, status.Aborted, status.Cancelled} {
				d, im := f.device("org-a"), f.imageOf("org-a")
				op := f.op(d.ID, im.ID)
				f.drive(op.ID, s, status.PhaseConnecting)
				second := f.op(d.ID, im.ID)
				assert.Equal(t, status.Pending, second.State, "after %s", s)
			}
		}},
	}
}

func transitionTests() []test {
	tests := []test{
		{"CanTransitionTable", func(t *testing.T, f *fixture) {
			for _, from := range status.States() {
				for _, to := range status.States() {
					if from == to {
						continue
					}
					t.Run(fmt.Sprintf("%s_to_%s", from, to), func(t *testing.T) {
						t.Parallel()
						f := f.with(t)
						op := f.newOp("org-a")
						op = f.drive(op.ID, from, status.PhaseConnecting)
						got, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: from, State: to, Reason: reasonFor(to)})
						if !status.CanTransition(from, to) {
							require.ErrorIs(t, err, store.ErrInvalidTransition)
							requireSame(t, op, f.get(op.ID), "refused change left the operation unchanged")
							return
						}
						require.NoError(t, err)
						assert.Equal(t, to, got.State)
						assert.Equal(t, reasonFor(to), got.Reason)
						requireSame(t, got, f.get(op.ID))
					})
				}
			}
		}},
		{"SameStateIsNoStateChange", func(t *testing.T, f *fixture) {
			// State equal to From (or empty) leaves the state as it is; the
			// other fields still apply.
			op := f.newOp("org-a")
			got := f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.Pending, Attempt: store.Ptr(1)})
			assert.Equal(t, status.Pending, got.State)
			assert.Equal(t, 1, got.Attempt)
			f.start(op.ID, status.PhaseConnecting)
			got = f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: status.InProgress, Phase: store.Ptr(status.PhaseIdentity)})
			assert.Equal(t, status.InProgress, got.State)
			assert.Equal(t, status.PhaseIdentity, got.Phase)
		}},
		{"WrongFromRefused", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			before := f.snapshot()
			_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: status.Success})
			require.ErrorIs(t, err, store.ErrInvalidTransition)
			f.requireUnchanged(before)
			f.start(op.ID, status.PhaseUpload)
			before = f.snapshot()
			_, err = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Log: []string{"no"}})
			require.ErrorIs(t, err, store.ErrInvalidTransition)
			_, err = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending, Progress: store.Ptr(50)})
			require.ErrorIs(t, err, store.ErrInvalidTransition, "CAS applies to updates without a state change too")
			f.requireUnchanged(before)
		}},
		{"TerminalImmutable", func(t *testing.T, f *fixture) {
			for _, s := range []status.State{status.Success, status.Failed, status.Aborted, status.Cancelled} {
				op := f.drive(f.newOp("org-a").ID, s, status.PhaseConnecting)
				before := f.get(op.ID)
				for _, u := range []store.OperationUpdate{
					{From: s},
					{From: s, State: status.InProgress},
					{From: s, State: status.Pending},
					{From: s, Progress: store.Ptr(100)},
					{From: s, Phase: store.Ptr(status.PhaseVerifying)},
					{From: s, Attempt: store.Ptr(7)},
				} {
					_, err := f.s.UpdateOperation(f.ctx, op.ID, u)
					require.ErrorIs(t, err, store.ErrInvalidTransition, "%s: %+v", s, u)
				}
				require.ErrorIs(t, f.s.SetProgress(f.ctx, op.ID, 0, 100), store.ErrInvalidTransition, "%s", s)
				requireSame(t, before, f.get(op.ID), "%s operation unchanged", s)
				require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0, "post mortem"), "%s: logs still append", s)
				logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
				require.NoError(t, err)
				require.NotEmpty(t, logs)
				assert.Equal(t, "post mortem", logs[len(logs)-1].Line)
				requireSame(t, before, f.get(op.ID), "%s: AppendLog changes no field (Version included)", s)
			}
		}},
		{"CancelAllowedBeforeFlashing", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			got := f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			assert.Equal(t, status.Cancelled, got.State, "pending")
			for _, p := range status.Phases() {
				if p.AfterPointOfNoReturn() {
					continue
				}
				for _, to := range []status.State{status.Cancelled, status.Aborted} {
					op := f.drive(f.newOp("org-a").ID, status.InProgress, p)
					got := f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: to, Reason: reasonFor(to)})
					assert.Equal(t, to, got.State, "in %s", p)
					assert.Equal(t, p, got.Phase, "the phase reached is kept")
				}
			}
		}},
		{"CancelRefusedAtOrAfterFlashing", func(t *testing.T, f *fixture) {
			for _, p := range status.Phases() {
				if !p.AfterPointOfNoReturn() {
					continue
				}
				op := f.drive(f.newOp("org-a").ID, status.InProgress, p)
				for _, to := range []status.State{status.Cancelled, status.Aborted} {
					_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: to, Reason: reasonFor(to)})
					require.ErrorIs(t, err, store.ErrInvalidTransition, "%s in %s", to, p)
				}
				requireSame(t, op, f.get(op.ID))
				for _, to := range []status.State{status.Success, status.Failed} {
					other := f.drive(f.newOp("org-a").ID, status.InProgress, p)
					got := f.update(other.ID, store.OperationUpdate{From: status.InProgress, State: to, Reason: reasonFor(to)})
					assert.Equal(t, to, got.State, "%s from %s", to, p)
				}
			}
		}},
		{"PhaseCannotGoBackFromFlashing", func(t *testing.T, f *fixture) {
			op := f.drive(f.newOp("org-a").ID, status.InProgress, status.PhaseUpload)
			op = f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing)})
			for _, p := range append(status.Phases(), status.PhaseNone) {
				if p.AfterPointOfNoReturn() {
					continue
				}
				_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(p)})
				require.ErrorIs(t, err, store.ErrInvalidTransition, "back to %q", p)
			}
			requireSame(t, op, f.get(op.ID))
			got := f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseRebooting)})
			assert.Equal(t, status.PhaseRebooting, got.Phase, "forward is fine")
		}},
		{"PhaseMovesFreelyBeforeFlashing", func(t *testing.T, f *fixture) {
			op := f.drive(f.newOp("org-a").ID, status.InProgress, status.PhaseConnecting)
			for _, p := range []status.Phase{status.PhaseUpload, status.PhaseNone, status.PhaseConnecting, status.PhaseImageTest} {
				got := f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(p)})
				assert.Equal(t, p, got.Phase, "a retry may start over")
			}
		}},
		{"PhaseOnPendingRefused", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			before := f.snapshot()
			_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending, Phase: store.Ptr(status.PhaseConnecting)})
			require.ErrorIs(t, err, store.ErrInvalidTransition)
			_, err = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Phase: store.Ptr(status.PhaseConnecting)})
			require.ErrorIs(t, err, store.ErrInvalidTransition, "phases belong to in-progress operations")
			f.requireUnchanged(before)
		}},
		{"StartedAtAndFinishedAt", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			t0 := f.get(op.ID).CreatedAt
			started := f.start(op.ID, status.PhaseConnecting)
			require.False(t, started.StartedAt.IsZero(), "set on the move to in-progress")
			assert.False(t, started.StartedAt.Before(t0.Add(-time.Millisecond)))
			assert.True(t, started.FinishedAt.IsZero())
			time.Sleep(2 * time.Millisecond)
			mid := f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseUpload)})
			assert.WithinDuration(t, started.StartedAt, mid.StartedAt, time.Millisecond, "kept while running")
			done := f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: status.Success})
			require.False(t, done.FinishedAt.IsZero(), "set on the terminal move")
			assert.False(t, done.FinishedAt.Before(started.StartedAt))
			assert.WithinDuration(t, started.StartedAt, done.StartedAt, time.Millisecond)
			requireSame(t, done, f.get(op.ID))

			cancelled := f.update(f.newOp("org-a").ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled})
			assert.True(t, cancelled.StartedAt.IsZero(), "never started")
			assert.False(t, cancelled.FinishedAt.IsZero())
		}},
		{"VersionIncrements", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			v := op.Version
			op = f.start(op.ID, status.PhaseConnecting)
			assert.Equal(t, v+1, op.Version, "UpdateOperation")
			op = f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseUpload)})
			assert.Equal(t, v+2, op.Version, "UpdateOperation without a state change")
			require.NoError(t, f.s.SetProgress(f.ctx, op.ID, 0, 30))
			assert.Equal(t, v+3, f.get(op.ID).Version, "SetProgress")
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0, "line"))
			assert.Equal(t, v+3, f.get(op.ID).Version, "AppendLog does not count")
			_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending})
			require.ErrorIs(t, err, store.ErrInvalidTransition)
			assert.Equal(t, v+3, f.get(op.ID).Version, "a refused update does not count")
		}},
		{"LogOnlyUpdateKeepsVersion", func(t *testing.T, f *fixture) {
			op := f.start(f.newOp("org-a").ID, status.PhaseConnecting)
			got := f.update(op.ID, store.OperationUpdate{From: status.InProgress, Log: []string{"only a log line"}})
			assert.Equal(t, op.Version, got.Version, "Version counts changes of the record, logs excepted")
			logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
			require.NoError(t, err)
			require.NotEmpty(t, logs)
			assert.Equal(t, "only a log line", logs[len(logs)-1].Line)
		}},
		{"ProgressOnlyInProgressOrAtSuccess", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			before := f.snapshot()
			_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending, Progress: store.Ptr(50)})
			require.ErrorIs(t, err, store.ErrInvalidTransition, "a pending operation has no progress")
			f.requireUnchanged(before)
			_, err = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled,
				Reason: status.ReasonCancelledByUser, Progress: store.Ptr(50)})
			require.ErrorIs(t, err, store.ErrInvalidTransition, "nor a cancelled one")
			f.start(op.ID, status.PhaseConnecting)
			done := f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: status.Success, Progress: store.Ptr(100)})
			assert.Equal(t, 100, done.Progress)
		}},
		{"FieldsApplied", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			next := time.Now().Add(time.Minute).UTC().Truncate(time.Millisecond)
			deadline := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
			got := f.update(op.ID, store.OperationUpdate{From: status.Pending,
				Attempt: store.Ptr(2), NextAttemptAt: &next, Deadline: &deadline})
			assert.Equal(t, 2, got.Attempt)
			assert.WithinDuration(t, next, got.NextAttemptAt, time.Millisecond)
			assert.WithinDuration(t, deadline, got.Deadline, time.Millisecond)
			got = f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
				Phase: store.Ptr(status.PhaseChecksum), Progress: store.Ptr(status.ProgressChecksum)})
			assert.Equal(t, status.PhaseChecksum, got.Phase)
			assert.Equal(t, status.ProgressChecksum, got.Progress)
			assert.Equal(t, 2, got.Attempt, "nil fields leave values alone")
			assert.WithinDuration(t, deadline, got.Deadline, time.Millisecond)
			zero := time.Time{}
			got = f.update(op.ID, store.OperationUpdate{From: status.InProgress, NextAttemptAt: &zero})
			assert.True(t, got.NextAttemptAt.IsZero(), "a pointer to the zero time clears")
			requireSame(t, got, f.get(op.ID))
		}},
		{"ReasonFollowsState", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			got := f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Reason: status.ReasonConnectionFailed})
			assert.Equal(t, status.ReasonConnectionFailed, got.Reason, "set with the state change")
			got = f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseUpload), Reason: status.ReasonTimeout})
			assert.Equal(t, status.ReasonConnectionFailed, got.Reason, "only a state change sets the reason")
			got = f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: status.Success})
			assert.Equal(t, status.ReasonNone, got.Reason, "cleared by a state change without reason")
			assert.Equal(t, status.ReasonNone, f.get(op.ID).Reason)
		}},
		{"UpdateAppendsLogAtomically", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
				Phase: store.Ptr(status.PhaseConnecting), Log: []string{"connecting", "connected"}})
			_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending, Log: []string{"lost"}})
			require.ErrorIs(t, err, store.ErrInvalidTransition)
			f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: status.Failed, Log: []string{"gave up"}})
			logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
			require.NoError(t, err)
			assert.Equal(t, []string{"connecting", "connected", "gave up"}, lines(logs), "lines of a refused update are not appended")
			assert.Equal(t, []int64{1, 2, 3}, seqs(logs))
		}},
	}
	return tests
}

func lines(logs []store.LogEntry) []string {
	out := make([]string, len(logs))
	for i, l := range logs {
		out[i] = l.Line
	}
	return out
}

func seqs(logs []store.LogEntry) []int64 {
	out := make([]int64, len(logs))
	for i, l := range logs {
		out[i] = l.Seq
	}
	return out
}

func progressTests() []test {
	return []test{
		{"SetOnInProgress", func(t *testing.T, f *fixture) {
			op := f.drive(f.newOp("org-a").ID, status.InProgress, status.PhaseUpload)
			for _, p := range []int{0, 20, 42, 100} {
				require.NoError(t, f.s.SetProgress(f.ctx, op.ID, 0, p))
				got := f.get(op.ID)
				assert.Equal(t, p, got.Progress)
				assert.Equal(t, status.InProgress, got.State)
				assert.Equal(t, status.PhaseUpload, got.Phase, "progress changes nothing else")
			}
		}},
		{"RefusedUnlessInProgress", func(t *testing.T, f *fixture) {
			for _, s := range status.States() {
				if s == status.InProgress {
					continue
				}
				op := f.drive(f.newOp("org-a").ID, s, status.PhaseConnecting)
				require.ErrorIs(t, f.s.SetProgress(f.ctx, op.ID, 0, 50), store.ErrInvalidTransition, "%s", s)
				requireSame(t, op, f.get(op.ID))
			}
		}},
		{"OutOfRange", func(t *testing.T, f *fixture) {
			op := f.drive(f.newOp("org-a").ID, status.InProgress, status.PhaseUpload)
			require.NoError(t, f.s.SetProgress(f.ctx, op.ID, 0, 30))
			for _, p := range []int{-1, 101} {
				requireInvalid(t, f.s.SetProgress(f.ctx, op.ID, 0, p), "Progress")
			}
			assert.Equal(t, 30, f.get(op.ID).Progress)
		}},
		{"AfterCancelDoesNotResurrect", func(t *testing.T, f *fixture) {
			op := f.drive(f.newOp("org-a").ID, status.InProgress, status.PhaseUpload)
			cancelled := f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			require.ErrorIs(t, f.s.SetProgress(f.ctx, op.ID, 0, 55), store.ErrInvalidTransition)
			requireSame(t, cancelled, f.get(op.ID), "still cancelled, progress untouched")
		}},
	}
}

func logTests() []test {
	return []test{
		{"AppendAndRead", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0, "one", "two"))
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0), 0)
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0, "three"))
			logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
			require.NoError(t, err)
			assert.Equal(t, []string{"one", "two", "three"}, lines(logs))
			assert.Equal(t, []int64{1, 2, 3}, seqs(logs))
			for _, l := range logs {
				assert.Equal(t, op.ID, l.OperationID)
				assert.False(t, l.Time.IsZero())
			}
		}},
		{"AfterSeqAndLimit", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			var want []string
			for i := range 10 {
				want = append(want, fmt.Sprintf("line %d", i+1))
			}
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0, want...))
			for _, tc := range []struct {
				after int64
				limit int
				want  []int64
			}{
				{0, 0, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
				{0, 3, []int64{1, 2, 3}},
				{3, 2, []int64{4, 5}},
				{8, 0, []int64{9, 10}},
				{8, 5, []int64{9, 10}},
				{10, 0, nil},
				{42, 1, nil},
			} {
				logs, err := f.s.Logs(f.ctx, op.ID, tc.after, tc.limit)
				require.NoError(t, err)
				if d := cmp.Diff(tc.want, seqs(logs), cmpRecords); d != "" {
					t.Errorf("Logs(after %d, limit %d) (-want +got):\n%s", tc.after, tc.limit, d)
				}
			}
		}},
		{"LongLineTruncated", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			long := strings.Repeat("é", store.MaxLogLineLen+100)
			exact := strings.Repeat("x", store.MaxLogLineLen)
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0, long, exact))
			logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
			require.NoError(t, err)
			require.Len(t, logs, 2)
			assert.Equal(t, store.TruncateLogLine(long), logs[0].Line)
			assert.LessOrEqual(t, utf8.RuneCountInString(logs[0].Line), store.MaxLogLineLen)
			assert.True(t, strings.HasPrefix(logs[0].Line, strings.Repeat("é", 100)))
			assert.Equal(t, exact, logs[1].Line, "a line at the limit is kept whole")
		}},
		{"SeqPerOperation", func(t *testing.T, f *fixture) {
			a, b := f.newOp("org-a"), f.newOp("org-a")
			require.NoError(t, f.s.AppendLog(f.ctx, a.ID, 0, "a1", "a2"))
			require.NoError(t, f.s.AppendLog(f.ctx, b.ID, 0, "b1"))
			require.NoError(t, f.s.AppendLog(f.ctx, a.ID, 0, "a3"))
			la, err := f.s.Logs(f.ctx, a.ID, 0, 0)
			require.NoError(t, err)
			lb, err := f.s.Logs(f.ctx, b.ID, 0, 0)
			require.NoError(t, err)
			assert.Equal(t, []string{"a1", "a2", "a3"}, lines(la))
			assert.Equal(t, []int64{1, 2, 3}, seqs(la))
			assert.Equal(t, []string{"b1"}, lines(lb))
			assert.Equal(t, []int64{1}, seqs(lb))
		}},
		{"UnknownOperation", func(t *testing.T, f *fixture) {
			require.ErrorIs(t, f.s.AppendLog(f.ctx, store.NewID(), 0, "x"), store.ErrNotFound)
			_, err := f.s.Logs(f.ctx, store.NewID(), 0, 0)
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
	}
}
