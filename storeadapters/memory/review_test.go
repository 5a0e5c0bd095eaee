package memory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
)

// TestReviewQueuesMatchRecords walks the claim path at random (claims,
// claims by ID, renewals, releases, retries scheduled, terminal updates,
// progress, deadlines) and checks after every step that ClaimOperations
// returns exactly what the records say is runnable: no operation missing
// from the ready queue, none claimable after it ended or while leased.
// Times are far from the boundaries (leases of 1 ns or 1 h, retries an hour
// ago or in an hour) so the check does not depend on timing.
func TestReviewQueuesMatchRecords(t *testing.T) {
	t.Parallel()
	for seed := range uint64(30) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			walk(t, seed)
		})
	}
}

func walk(t *testing.T, seed uint64) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 7))
	s := memory.New()
	cat, err := s.CreateCategory(ctx, store.Category{Name: "c"})
	require.NoError(t, err)
	b, err := s.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"})
	require.NoError(t, err)
	im, err := s.CreateImage(ctx, store.Image{BuildID: b.ID, Type: "t", Name: "n", Size: 1, SHA256: fmt.Sprintf("%064x", 1)})
	require.NoError(t, err)
	var ops []store.Operation
	for i := range 12 {
		d, err := s.PutDevice(ctx, store.Device{ID: fmt.Sprintf("d%d", i), Name: "d", Connection: "x", Active: true})
		require.NoError(t, err)
		ops = append(ops, store.Operation{DeviceID: d.ID, ImageID: im.ID})
	}
	_, created, err := s.CreateBatch(ctx, store.Batch{BuildID: b.ID, State: status.BatchInProgress,
		Rollout: store.Rollout{Waves: []store.WaveSize{{Count: 2}, {Percent: 100}}}}, ops[:6])
	require.NoError(t, err)
	ids := make([]string, 0, len(ops))
	for _, op := range created {
		ids = append(ids, op.ID)
	}
	for _, op := range ops[6:] {
		o, err := s.CreateOperation(ctx, op)
		require.NoError(t, err)
		ids = append(ids, o.ID)
	}
	lease := func() time.Duration {
		if r.IntN(2) == 0 {
			return time.Nanosecond
		}
		return time.Hour
	}
	tokens := map[string]int64{} // the last token this walk was given, per operation
	for step := range 400 {
		id := ids[r.IntN(len(ids))]
		op, err := s.Operation(ctx, id)
		require.NoError(t, err)
		var what string
		switch r.IntN(11) {
		case 0:
			what = "claim-one"
			if c, err := s.ClaimOperation(ctx, id, "o1", lease()); err == nil {
				tokens[id] = c.Token
			}
		case 1:
			what = "renew"
			_, err = s.RenewLeases(ctx, "o1", lease(), []store.Lease{{OperationID: id, Token: tokens[id]}})
			require.NoError(t, err)
		case 2:
			what = "release"
			_ = s.ReleaseOperation(ctx, id, tokens[id])
		case 3:
			what = "start"
			_, _ = s.UpdateOperation(ctx, id, store.OperationUpdate{From: status.Pending, State: status.InProgress,
				Phase: store.Ptr(status.PhaseConnecting), Token: tokens[id]})
		case 4:
			what = "retry"
			at := time.Now().Add(time.Hour)
			if r.IntN(2) == 0 {
				at = time.Now().Add(-time.Hour)
			}
			_, _ = s.UpdateOperation(ctx, id, store.OperationUpdate{From: op.State, NextAttemptAt: &at, Token: tokens[id]})
		case 5:
			what = "end"
			_, _ = s.UpdateOperation(ctx, id, store.OperationUpdate{From: op.State,
				State: []status.State{status.Failed, status.Cancelled, status.Aborted}[r.IntN(3)], Token: tokens[id]})
		case 6:
			what = "progress"
			_ = s.SetProgress(ctx, id, tokens[id], r.IntN(100))
		case 7:
			what = "deadline"
			dl := time.Now().Add(-time.Hour)
			if r.IntN(2) == 0 {
				dl = time.Now().Add(time.Hour)
			}
			_, _ = s.UpdateOperation(ctx, id, store.OperationUpdate{From: op.State, Deadline: &dl, Token: tokens[id]})
			_, err = s.ExpireDeadlines(ctx, 100)
			require.NoError(t, err)
		case 8:
			what = "pause"
			if bt, err := s.Batch(ctx, created[0].BatchID); err == nil {
				switch bt.State {
				case status.BatchInProgress:
					_, _ = s.SetBatchState(ctx, bt.ID, bt.State, status.BatchPaused)
				case status.BatchPaused:
					_, _ = s.SetBatchState(ctx, bt.ID, bt.State, status.BatchInProgress)
				}
			}
		case 9:
			what = "advance"
			_, err := s.AdvanceBatches(ctx, 10)
			require.NoError(t, err)
		default:
			what = "claim"
		}
		// What the records say is runnable now.
		all, err := s.ListOperations(ctx, store.OperationFilter{})
		require.NoError(t, err)
		now := time.Now()
		var want []string
		for _, o := range all {
			var bp *store.Batch
			if o.BatchID != "" {
				bt, err := s.Batch(ctx, o.BatchID)
				require.NoError(t, err)
				bp = &bt
			}
			if store.Runnable(o, now) && store.ClaimAllowed(bp, store.BatchUse{}, o, now) {
				want = append(want, o.ID)
			}
		}
		got, err := s.ClaimOperations(ctx, "o2", 100, time.Nanosecond) // ends at once: changes nothing claimable
		require.NoError(t, err)
		var gotIDs []string
		for _, o := range got {
			gotIDs = append(gotIDs, o.ID)
			tokens[o.ID] = o.Token
		}
		slices.Sort(want)
		slices.Sort(gotIDs)
		require.Equal(t, want, gotIDs, "seed %d step %d after %s on %s", seed, step, what, id)
	}
}
