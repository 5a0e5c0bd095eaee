package storetest

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// newBatch creates a started batch (in progress) of organization org with
// one operation per new device of org, all on one new image of org.
func (f *fixture) newBatch(org string, n int) (store.Batch, []store.Operation) {
	f.t.Helper()
	return f.newBatchIn(org, n, status.BatchInProgress)
}

// newIdleBatch is newBatch for a batch not started.
func (f *fixture) newIdleBatch(org string, n int) (store.Batch, []store.Operation) {
	f.t.Helper()
	return f.newBatchIn(org, n, "")
}

func (f *fixture) newBatchIn(org string, n int, st status.BatchState) (store.Batch, []store.Operation) {
	f.t.Helper()
	im := f.imageOf(org)
	ops := make([]store.Operation, n)
	for i := range ops {
		ops[i] = store.Operation{DeviceID: f.device(org).ID, ImageID: im.ID}
	}
	b, out, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: org, BuildID: im.BuildID, Name: f.uniq("batch"), State: st}, ops)
	require.NoError(f.t, err)
	require.Len(f.t, out, n)
	return b, out
}

func batchTests() []test {
	return []test{
		{"CreateWithOperations", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			d1, d2 := f.device("org-a"), f.device("org-a")
			opts := json.RawMessage(`{"concurrency":10,"failure_threshold":0.1}`)
			b, ops, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID, Name: "wave 1", Options: opts},
				[]store.Operation{{DeviceID: d1.ID, ImageID: im.ID}, {DeviceID: d2.ID, ImageID: im.ID, Options: json.RawMessage(`{"keep":1}`)}})
			require.NoError(t, err)
			assert.NotEmpty(t, b.ID)
			assert.Equal(t, status.BatchIdle, b.State, "a batch created without a state starts idle")
			assert.Equal(t, string(opts), string(b.Options), "options kept verbatim")
			assert.Equal(t, map[status.State]int{status.Pending: 2}, nonZero(b.Counts))
			require.Len(t, ops, 2)
			for i, d := range []store.Device{d1, d2} {
				assert.NotEmpty(t, ops[i].ID)
				assert.Equal(t, b.ID, ops[i].BatchID, "operations get BatchID")
				assert.Equal(t, d.ID, ops[i].DeviceID, "operations come back in the order given")
				assert.Equal(t, status.Pending, ops[i].State)
				assert.Equal(t, "org-a", ops[i].Organization)
				requireSame(t, ops[i], f.get(ops[i].ID))
			}
			assert.Equal(t, `{"keep":1}`, string(ops[1].Options))
			requireSame(t, b, f.batch(b.ID))
			listed, err := f.s.ListOperations(f.ctx, store.OperationFilter{BatchID: b.ID})
			require.NoError(t, err)
			assert.Len(t, listed, 2)
		}},
		{"StartsInProgressWhenAsked", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			b, _, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID, State: status.BatchInProgress},
				[]store.Operation{{DeviceID: f.device("org-a").ID, ImageID: im.ID}})
			require.NoError(t, err)
			assert.Equal(t, status.BatchInProgress, b.State)
		}},
		{"NoOperationsRefused", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			for _, ops := range [][]store.Operation{nil, {}} {
				_, _, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID}, ops)
				requireInvalid(t, err, "Operations")
			}
			bs, err := f.s.ListBatches(f.ctx, store.BatchFilter{})
			require.NoError(t, err)
			assert.Empty(t, bs)
		}},
		{"UnknownBuildOrDevice", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			_, _, err := f.s.CreateBatch(f.ctx, store.Batch{BuildID: store.NewID()},
				[]store.Operation{{DeviceID: f.device("org-a").ID, ImageID: im.ID}})
			require.ErrorIs(t, err, store.ErrNotFound)
			_, _, err = f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID},
				[]store.Operation{{DeviceID: f.device("org-a").ID, ImageID: im.ID}, {DeviceID: "no-such-device", ImageID: im.ID}})
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"BusyDeviceFailsAtomically", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			free, busy := f.device("org-a"), f.device("org-a")
			f.op(busy.ID, im.ID)
			before := f.snapshot()
			_, _, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID},
				[]store.Operation{{DeviceID: free.ID, ImageID: im.ID}, {DeviceID: busy.ID, ImageID: im.ID}})
			require.ErrorIs(t, err, store.ErrDeviceBusy)
			f.requireUnchanged(before)
			_, _, err = f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID},
				[]store.Operation{{DeviceID: free.ID, ImageID: im.ID}, {DeviceID: free.ID, ImageID: im.ID}})
			require.ErrorIs(t, err, store.ErrDeviceBusy, "the same device twice in one batch")
			f.requireUnchanged(before)
		}},
		{"StateInProgressOnceStarted", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", 3)
			f.start(ops[0].ID, status.PhaseConnecting)
			got := f.batch(b.ID)
			assert.Equal(t, status.BatchInProgress, got.State)
			assert.Equal(t, map[status.State]int{status.Pending: 2, status.InProgress: 1}, nonZero(got.Counts))
			f.update(ops[0].ID, store.OperationUpdate{From: status.InProgress, State: status.Success})
			got = f.batch(b.ID)
			assert.Equal(t, status.BatchInProgress, got.State, "pending operations remain")
			assert.Equal(t, map[status.State]int{status.Pending: 2, status.Success: 1}, nonZero(got.Counts))
		}},
		{"StateSuccessWhenAllSucceed", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", 3)
			for _, op := range ops {
				f.drive(op.ID, status.Success, status.PhaseVerifying)
			}
			got := f.batch(b.ID)
			assert.Equal(t, status.BatchSuccess, got.State)
			assert.Equal(t, map[status.State]int{status.Success: 3}, nonZero(got.Counts))
		}},
		{"StateFailedWhenAnyFailed", func(t *testing.T, f *fixture) {
			for _, bad := range []status.State{status.Failed, status.Aborted} {
				b, ops := f.newBatch("org-a", 3)
				f.drive(ops[0].ID, bad, status.PhaseConnecting)
				assert.Equal(t, status.BatchInProgress, f.batch(b.ID).State, "%s: others still pending", bad)
				f.drive(ops[1].ID, status.Success, status.PhaseVerifying)
				f.drive(ops[2].ID, status.Success, status.PhaseVerifying)
				got := f.batch(b.ID)
				assert.Equal(t, status.BatchFailed, got.State, "one %s, rest success", bad)
				assert.Equal(t, map[status.State]int{bad: 1, status.Success: 2}, nonZero(got.Counts))
			}
		}},
		{"StateCancelledWhenAnyCancelled", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", 3)
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			f.update(ops[1].ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled})
			f.drive(ops[2].ID, status.Cancelled, status.PhaseUpload)
			got := f.batch(b.ID)
			assert.Equal(t, status.BatchCancelled, got.State)
			assert.Equal(t, map[status.State]int{status.Success: 1, status.Cancelled: 2}, nonZero(got.Counts))
		}},
		{"StateMatchesDeriveBatchState", func(t *testing.T, f *fixture) {
			// After every operation update, the batch's state is what
			// status.DeriveBatchState says of its counts.
			b, ops := f.newBatch("org-a", 4)
			steps := []struct {
				op int
				u  store.OperationUpdate
			}{
				{0, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: store.Ptr(status.PhaseConnecting)}},
				{1, store.OperationUpdate{From: status.Pending, State: status.Aborted}},
				{0, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing)}},
				{2, store.OperationUpdate{From: status.Pending, State: status.Cancelled}},
				{0, store.OperationUpdate{From: status.InProgress, State: status.Success}},
				{3, store.OperationUpdate{From: status.Pending, State: status.InProgress}},
				{3, store.OperationUpdate{From: status.InProgress, State: status.Success}},
			}
			for i, st := range steps {
				f.update(ops[st.op].ID, st.u)
				got := f.batch(b.ID)
				counts := status.Counts{}
				all, err := f.s.ListOperations(f.ctx, store.OperationFilter{BatchID: b.ID})
				require.NoError(t, err)
				for _, op := range all {
					counts[op.State]++
				}
				assert.Equal(t, nonZero(counts), nonZero(got.Counts), "step %d: Counts", i)
				assert.Equal(t, status.DeriveBatchState(counts), got.State, "step %d", i)
			}
			assert.Equal(t, status.BatchFailed, f.batch(b.ID).State)
		}},
		{"PauseAndResume", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", 3)
			f.start(ops[0].ID, status.PhaseConnecting)
			got, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchInProgress, status.BatchPaused)
			require.NoError(t, err)
			assert.Equal(t, status.BatchPaused, got.State)
			requireSame(t, got, f.batch(b.ID))
			got, err = f.s.SetBatchState(f.ctx, b.ID, status.BatchPaused, status.BatchInProgress)
			require.NoError(t, err)
			assert.Equal(t, status.BatchInProgress, got.State)
			assert.Equal(t, status.BatchInProgress, f.batch(b.ID).State)
		}},
		{"SetBatchStateRefused", func(t *testing.T, f *fixture) {
			idle, _ := f.newIdleBatch("org-a", 1)
			running, rops := f.newBatch("org-a", 2)
			f.start(rops[0].ID, status.PhaseConnecting)
			done, dops := f.newBatch("org-a", 1)
			f.drive(dops[0].ID, status.Success, status.PhaseVerifying)
			require.Equal(t, status.BatchSuccess, f.batch(done.ID).State)
			before := f.snapshot()
			for _, tc := range []struct {
				id       string
				from, to status.BatchState
			}{
				{idle.ID, status.BatchIdle, status.BatchPaused},
				{idle.ID, status.BatchInProgress, status.BatchPaused}, // wrong from
				{running.ID, status.BatchInProgress, status.BatchSuccess},
				{running.ID, status.BatchInProgress, status.BatchCancelled},
				{running.ID, status.BatchInProgress, status.BatchFailed},
				{running.ID, status.BatchInProgress, status.BatchIdle},
				{running.ID, status.BatchInProgress, status.BatchInProgress},
				{running.ID, status.BatchPaused, status.BatchInProgress}, // wrong from
				{done.ID, status.BatchSuccess, status.BatchPaused},
				{done.ID, status.BatchSuccess, status.BatchInProgress},
			} {
				_, err := f.s.SetBatchState(f.ctx, tc.id, tc.from, tc.to)
				require.ErrorIs(t, err, store.ErrInvalidTransition, "%s → %s", tc.from, tc.to)
			}
			_, err := f.s.SetBatchState(f.ctx, running.ID, status.BatchInProgress, "bogus")
			require.ErrorIs(t, err, store.ErrInvalid)
			_, err = f.s.SetBatchState(f.ctx, store.NewID(), status.BatchInProgress, status.BatchPaused)
			require.ErrorIs(t, err, store.ErrNotFound)
			f.requireUnchanged(before)
		}},
		{"PausedStaysPausedUntilOperationsEnd", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", 3)
			f.start(ops[0].ID, status.PhaseConnecting)
			_, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchInProgress, status.BatchPaused)
			require.NoError(t, err)
			f.update(ops[0].ID, store.OperationUpdate{From: status.InProgress, State: status.Failed, Reason: status.ReasonFlashFailed})
			assert.Equal(t, status.BatchPaused, f.batch(b.ID).State, "operations remain: still paused")
			f.drive(ops[1].ID, status.InProgress, status.PhaseConnecting)
			assert.Equal(t, status.BatchPaused, f.batch(b.ID).State, "an operation starting does not resume the batch")
			f.update(ops[1].ID, store.OperationUpdate{From: status.InProgress, State: status.Cancelled})
			f.update(ops[2].ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled})
			got := f.batch(b.ID)
			assert.Equal(t, status.BatchFailed, got.State, "all ended: terminal, derived from the operations")
			_, err = f.s.SetBatchState(f.ctx, b.ID, status.BatchPaused, status.BatchInProgress)
			require.ErrorIs(t, err, store.ErrInvalidTransition, "nothing left to resume")
		}},
		{"UnknownID", func(t *testing.T, f *fixture) {
			_, err := f.s.Batch(f.ctx, store.NewID())
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"SharedBuildAnyOrganization", func(t *testing.T, f *fixture) {
			im := f.imageOf("")
			for _, org := range []string{"org-a", "org-b"} {
				b, ops, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: org, BuildID: im.BuildID},
					[]store.Operation{{DeviceID: f.device(org).ID, ImageID: im.ID}})
				require.NoError(t, err, "organization %q", org)
				assert.Equal(t, org, b.Organization)
				assert.Equal(t, org, ops[0].Organization)
			}
		}},
		{"IdleUntilStarted", func(t *testing.T, f *fixture) {
			b, ops := f.newIdleBatch("org-a", 3)
			f.update(ops[0].ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			got := f.batch(b.ID)
			assert.Equal(t, status.BatchIdle, got.State, "not started")
			assert.Equal(t, map[status.State]int{status.Pending: 2, status.Cancelled: 1}, nonZero(got.Counts))
			f.start(ops[1].ID, status.PhaseConnecting) // run directly, not through a claim
			assert.Equal(t, status.BatchIdle, f.batch(b.ID).State, "an operation run directly does not start the batch")
			got, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchIdle, status.BatchInProgress)
			require.NoError(t, err)
			assert.Equal(t, status.BatchInProgress, got.State)
			assert.Equal(t, status.BatchInProgress, f.batch(b.ID).State)
		}},
		{"IdleEndsWhenAllEnd", func(t *testing.T, f *fixture) {
			b, ops := f.newIdleBatch("org-a", 2)
			for _, op := range ops {
				f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			}
			assert.Equal(t, status.BatchCancelled, f.batch(b.ID).State)
		}},
		{"JoinWithCreateOperation", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", 1)
			op := store.Operation{DeviceID: f.device("org-a").ID, ImageID: ops[0].ImageID, BatchID: b.ID}
			joined, err := f.s.CreateOperation(f.ctx, op)
			require.NoError(t, err)
			assert.Equal(t, b.ID, joined.BatchID)
			assert.Equal(t, map[status.State]int{status.Pending: 2}, nonZero(f.batch(b.ID).Counts))
		}},
		{"EndedBatchTakesNoOperation", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", 1)
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			require.Equal(t, status.BatchSuccess, f.batch(b.ID).State)
			op := store.Operation{DeviceID: f.device("org-a").ID, ImageID: ops[0].ImageID, BatchID: b.ID}
			snap := f.snapshot()
			_, err := f.s.CreateOperation(f.ctx, op)
			require.ErrorIs(t, err, store.ErrInvalidTransition)
			f.requireUnchanged(snap)
			assert.Equal(t, status.BatchSuccess, f.batch(b.ID).State, "an ended batch is not reopened")
		}},
	}
}
