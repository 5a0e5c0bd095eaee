package memory_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
)

// roFix is a memory store with one build and image, for rollout reviews.
type roFix struct {
	t   testing.TB
	ctx context.Context
	s   *memory.Store
	bld store.Build
	im  store.Image
}

func newRoFix(t testing.TB) *roFix {
	t.Helper()
	ctx := context.Background()
	s := memory.New()
	cat, err := s.CreateCategory(ctx, store.Category{Name: "c"})
	require.NoError(t, err)
	b, err := s.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"})
	require.NoError(t, err)
	im, err := s.CreateImage(ctx, store.Image{BuildID: b.ID, Type: "t", Name: "n", Size: 1, SHA256: fmt.Sprintf("%064x", 1)})
	require.NoError(t, err)
	return &roFix{t: t, ctx: ctx, s: s, bld: b, im: im}
}

func (f *roFix) device(id, location string) store.Device {
	f.t.Helper()
	d, err := f.s.PutDevice(f.ctx, store.Device{ID: id, Name: id, Connection: "x", Active: true, Location: location})
	require.NoError(f.t, err)
	return d
}

// batch creates a batch in progress with one operation per device, the
// operation of device "dX" named "op-dX" so claims come in device order.
func (f *roFix) batch(r store.Rollout, devs ...store.Device) (store.Batch, []store.Operation) {
	f.t.Helper()
	ops := make([]store.Operation, len(devs))
	for i, d := range devs {
		ops[i] = store.Operation{ID: "op-" + d.ID, DeviceID: d.ID, ImageID: f.im.ID}
	}
	b, created, err := f.s.CreateBatch(f.ctx, store.Batch{BuildID: f.bld.ID, State: status.BatchInProgress, Rollout: r}, ops)
	require.NoError(f.t, err)
	return b, created
}

func (f *roFix) claim(limit int) []string {
	f.t.Helper()
	got, err := f.s.ClaimOperations(f.ctx, "engine", limit, time.Hour)
	require.NoError(f.t, err)
	ids := make([]string, len(got))
	for i, op := range got {
		ids[i] = op.ID
	}
	return ids
}

// drive takes a pending operation through in-progress to state to.
func (f *roFix) drive(id string, to status.State) {
	f.t.Helper()
	_, err := f.s.UpdateOperation(f.ctx, id, store.OperationUpdate{From: status.Pending, State: status.InProgress,
		Phase: store.Ptr(status.PhaseConnecting)})
	require.NoError(f.t, err)
	reason := status.ReasonNone
	if to == status.Failed {
		reason = status.ReasonFlashFailed
	}
	_, err = f.s.UpdateOperation(f.ctx, id, store.OperationUpdate{From: status.InProgress, State: to, Reason: reason})
	require.NoError(f.t, err)
}

// A device whose operation waits in the claim queue moves to another
// location (PutDevice): the group limit must count it in the group it is in
// now (found in review: the operation stayed in its old group's lane).
func TestGroupLimitHoldsWhenAQueuedDeviceMovesIntoAFullGroup(t *testing.T) {
	t.Parallel()
	f := newRoFix(t)
	a := f.device("d1", "north")
	b := f.device("d2", "south")
	f.batch(store.Rollout{GroupLimit: 1, GroupBy: store.GroupByLocation}, a, b)
	require.Equal(t, []string{"op-d1"}, f.claim(1), "d1 (north) starts")

	b.Location = "north" // d2 is moved while its operation waits
	_, err := f.s.PutDevice(f.ctx, b)
	require.NoError(t, err)

	assert.Empty(t, f.claim(10), "north already runs one operation: GroupLimit 1 must hold d2 back")
}

// The same while the moved device's operation runs: it counts in its new
// group at once (found in review: it stayed counted in its old group until
// its lease ended).
func TestGroupLimitCountsARunningDeviceInTheGroupItMovedTo(t *testing.T) {
	t.Parallel()
	f := newRoFix(t)
	a := f.device("d1", "north")
	b := f.device("d2", "south")
	f.batch(store.Rollout{GroupLimit: 1, GroupBy: store.GroupByLocation}, a, b)
	require.Equal(t, []string{"op-d1"}, f.claim(1), "d1 (north) starts")

	a.Location = "south" // d1 is moved while it runs
	_, err := f.s.PutDevice(f.ctx, a)
	require.NoError(t, err)

	assert.Empty(t, f.claim(10), "south already runs d1: GroupLimit 1 must hold d2 back")
}

// FailureThreshold with MinFinished: the wave's failures came first (before
// MinFinished operations had finished), then successes brought the wave to
// MinFinished. The wave is then strictly above the threshold with enough
// finished: the batch pauses (found in review: the threshold was only
// evaluated on a failing transition, and the next wave started).
func TestFailureThresholdTripsOnceMinFinishedIsReachedBySuccesses(t *testing.T) {
	t.Parallel()
	f := newRoFix(t)
	var devs []store.Device
	for i := range 10 {
		devs = append(devs, f.device(fmt.Sprintf("d%d", i), ""))
	}
	bt, ops := f.batch(store.Rollout{
		Waves:            []store.WaveSize{{Count: 5}},
		FailureThreshold: store.Ptr(10.0),
		MinFinished:      5,
	}, devs...)
	f.drive(ops[0].ID, status.Failed)
	f.drive(ops[1].ID, status.Failed) // 2 finished < MinFinished: not yet
	for _, op := range ops[2:5] {
		f.drive(op.ID, status.Success) // 5 finished, 2 of 5 failed: 40 % > 10 %
	}
	got, err := f.s.Batch(f.ctx, bt.ID)
	require.NoError(t, err)
	assert.Equal(t, status.BatchPaused, got.State, "40 %% of the wave failed, over the 10 %% threshold, with MinFinished finished")

	_, err = f.s.AdvanceBatches(f.ctx, 10)
	require.NoError(t, err)
	got, err = f.s.Batch(f.ctx, bt.ID)
	require.NoError(t, err)
	assert.Equal(t, 0, got.Wave, "a wave over its failure threshold must not lead to the next wave")
}

// WaveSizes rounds percentages up; an exact percentage must not be pushed
// to the next device by float error: 16.1 % of 1000 is 161 devices.
func TestWaveSizesExactPercentageIsNotRoundedUpByFloatError(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		pct  float64
		n    int
		want int
	}{
		{16.1, 1000, 161},
		{4.4, 750, 33},
		{32.2, 500, 161},
	} {
		got := store.WaveSizes([]store.WaveSize{{Percent: c.pct}}, c.n)
		assert.Equal(t, c.want, got[0], "%v%% of %d", c.pct, c.n)
	}
}

// An operator who sets a start rate on a running batch (things go wrong:
// slow down) expects it to cap the starts from now on, counting the starts
// of the last period (found in review: starts were recorded only while a
// rate was set).
func TestStartRateSetLaterCountsStartsAlreadyMade(t *testing.T) {
	t.Parallel()
	f := newRoFix(t)
	var devs []store.Device
	for i := range 6 {
		devs = append(devs, f.device(fmt.Sprintf("d%d", i), ""))
	}
	bt, _ := f.batch(store.Rollout{}, devs...)
	require.Len(t, f.claim(3), 3, "three start at once without a rate")
	_, err := f.s.SetRollout(f.ctx, bt.ID, store.Rollout{StartRate: store.Rate{Count: 1, Per: time.Hour}})
	require.NoError(t, err)
	assert.Empty(t, f.claim(10), "three started within the last hour: a rate of 1 per hour allows no more")
}

// The same with a longer period: it sees the starts older than the old
// period.
func TestStartRateLongerPeriodCountsStartsAlreadyMade(t *testing.T) {
	t.Parallel()
	f := newRoFix(t)
	var devs []store.Device
	for i := range 6 {
		devs = append(devs, f.device(fmt.Sprintf("d%d", i), ""))
	}
	r := store.Rollout{StartRate: store.Rate{Count: 2, Per: 20 * time.Millisecond}, MaxConcurrent: 2}
	bt, _ := f.batch(r, devs...)
	require.Len(t, f.claim(10), 2)
	time.Sleep(40 * time.Millisecond)
	assert.Empty(t, f.claim(10), "MaxConcurrent holds (and the claim drops the old starts)")
	r.StartRate.Per, r.MaxConcurrent = time.Hour, 0
	_, err := f.s.SetRollout(f.ctx, bt.ID, r)
	require.NoError(t, err)
	assert.Empty(t, f.claim(10), "two started within the last hour: a rate of 2 per hour allows no more")
}

// BenchmarkCappedClaimManyGroups measures a claim that a capped batch
// refuses, with its operations in one group and in one group per device. A
// group limit splits the batch into one lane per group, and a refused
// batch costs one check, one heap pop and one push per lane on every claim
// (see lanes.go): the per-group figure grows with the groups.
//
//	go test ./storeadapters/memory -run '^$' -bench CappedClaimManyGroups
func BenchmarkCappedClaimManyGroups(b *testing.B) {
	for _, groups := range []int{1, 5000} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			f := newRoFix(b)
			const n = 5000
			devs := make([]store.Device, n)
			for i := range n {
				devs[i] = f.device(fmt.Sprintf("d%05d", i), fmt.Sprint(i%groups))
			}
			f.batch(store.Rollout{MaxConcurrent: 1, GroupLimit: 1, GroupBy: store.GroupByLocation}, devs...)
			require.Len(b, f.claim(10), 1)
			b.ResetTimer()
			for range b.N {
				require.Empty(b, f.claim(10))
			}
		})
	}
}

// TestClaimsFollowTheRolloutAtRandom extends the review walk with a rollout
// that has caps (MaxConcurrent, GroupLimit), waves, pauses, rollout changes
// (SetRollout regrouping), devices moving between groups, and operations
// going back to pending. After every step, what ClaimOperations hands out
// must be what the records say: runnable operations in due order, each
// allowed by store.ClaimAllowed with the batch's use counted from the
// records (live leases; per group by the device's current group).
func TestClaimsFollowTheRolloutAtRandom(t *testing.T) {
	t.Parallel()
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rolloutWalk(t, seed)
		})
	}
}

func rolloutWalk(t *testing.T, seed uint64) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 11))
	f := newRoFix(t)
	s := f.s
	locs := []string{"a", "b", "c"}
	groups := []string{"x", "y"}
	var devs []store.Device
	for i := range 10 {
		d, err := s.PutDevice(ctx, store.Device{ID: fmt.Sprintf("d%d", i), Name: "d", Connection: "x", Active: true,
			Location: locs[r.IntN(3)], Group: groups[r.IntN(2)]})
		require.NoError(t, err)
		devs = append(devs, d)
	}
	waves := []store.WaveSize{{Count: 3}, {Percent: 100}}
	randRollout := func() store.Rollout {
		ro := store.Rollout{Waves: waves, MaxConcurrent: r.IntN(4)}
		if n := r.IntN(3); n > 0 {
			ro.GroupLimit = n
			ro.GroupBy = []store.GroupKey{store.GroupByLocation, store.GroupByGroup}[r.IntN(2)]
		}
		return ro
	}
	bt, created := f.batch(randRollout(), devs...)
	ids := make([]string, len(created))
	for i, op := range created {
		ids[i] = op.ID
	}
	tokens := map[string]int64{}
	lease := func() time.Duration {
		if r.IntN(2) == 0 {
			return time.Nanosecond
		}
		return time.Hour
	}
	for step := range 300 {
		id := ids[r.IntN(len(ids))]
		op, err := s.Operation(ctx, id)
		require.NoError(t, err)
		var what string
		switch r.IntN(12) {
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
			what = "back-to-pending"
			_, _ = s.UpdateOperation(ctx, id, store.OperationUpdate{From: status.InProgress, State: status.Pending,
				Reason: status.ReasonConnectionFailed, Token: tokens[id]})
		case 5:
			what = "end"
			if r.IntN(3) == 0 {
				_, _ = s.UpdateOperation(ctx, id, store.OperationUpdate{From: op.State,
					State: []status.State{status.Failed, status.Success, status.Cancelled}[r.IntN(3)], Token: tokens[id]})
			}
		case 6:
			what = "flashing"
			_, _ = s.UpdateOperation(ctx, id, store.OperationUpdate{From: status.InProgress,
				Phase: store.Ptr(status.PhaseFlashing), Token: tokens[id]})
		case 7:
			what = "set-rollout"
			_, _ = s.SetRollout(ctx, bt.ID, randRollout())
		case 8:
			what = "move-device"
			d, err := s.Device(ctx, op.DeviceID)
			require.NoError(t, err)
			d.Location, d.Group = locs[r.IntN(3)], groups[r.IntN(2)]
			_, err = s.PutDevice(ctx, d)
			require.NoError(t, err)
		case 9:
			what = "pause"
			if b, err := s.Batch(ctx, bt.ID); err == nil {
				switch b.State {
				case status.BatchInProgress:
					_, _ = s.SetBatchState(ctx, b.ID, b.State, status.BatchPaused)
				case status.BatchPaused:
					_, _ = s.SetBatchState(ctx, b.ID, b.State, status.BatchInProgress)
				}
			}
		case 10:
			what = "advance"
			_, err := s.AdvanceBatches(ctx, 10)
			require.NoError(t, err)
		default:
			what = "claim"
		}
		b, err := s.Batch(ctx, bt.ID)
		require.NoError(t, err)
		all, err := s.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID})
		require.NoError(t, err)
		now := time.Now()
		groupOf := func(o store.Operation) string {
			d, err := s.Device(ctx, o.DeviceID)
			require.NoError(t, err)
			return b.Rollout.GroupBy.Of(d)
		}
		running, inGroup := 0, map[string]int{}
		var ready []store.Operation
		for _, o := range all {
			switch {
			case o.State.Terminal():
			case store.LeaseLive(o, now):
				running++
				inGroup[groupOf(o)]++
			case store.Runnable(o, now):
				ready = append(ready, o)
			}
		}
		slices.SortFunc(ready, func(x, y store.Operation) int {
			// Operations in progress first, then pending ones.
			if px, py := x.State == status.Pending, y.State == status.Pending; px != py {
				if px {
					return 1
				}
				return -1
			}
			if c := store.DueAt(x).Compare(store.DueAt(y)); c != 0 {
				return c
			}
			return strings.Compare(x.ID, y.ID)
		})
		var want []string
		for _, o := range ready {
			g := groupOf(o)
			use := store.BatchUse{Running: running, RunningInGroup: inGroup[g]}
			if store.ClaimAllowed(&b, use, o, now) {
				want = append(want, o.ID)
				running++
				inGroup[g]++
			}
		}
		got, err := s.ClaimOperations(ctx, "o2", 100, time.Nanosecond)
		require.NoError(t, err)
		var gotIDs []string
		for _, o := range got {
			gotIDs = append(gotIDs, o.ID)
			tokens[o.ID] = o.Token
		}
		slices.Sort(want)
		slices.Sort(gotIDs)
		require.Equal(t, want, gotIDs, "seed %d step %d after %s on %s (rollout %+v)", seed, step, what, id, b.Rollout)
	}
}

// A wave settles when its operations ended or wait for an offline device:
// "an offline device does not hold the rollout back". Each time the offline
// device is tried again, its operation is in progress for the length of a
// connection attempt; the wave must stay settled meanwhile (found in
// review: WaveWait started over, so one offline device could stop the
// rollout).
func TestOfflineDeviceRetriesDoNotRestartTheWaveWait(t *testing.T) {
	t.Parallel()
	f := newRoFix(t)
	on, off, next := f.device("d0", ""), f.device("d1", ""), f.device("d2", "")
	const wait = 150 * time.Millisecond
	bt, ops := f.batch(store.Rollout{Waves: []store.WaveSize{{Count: 2}}, WaveWait: wait}, on, off, next)
	f.drive(ops[0].ID, status.Success)
	offline := func() { // an attempt on d1 that cannot reach it
		_, err := f.s.UpdateOperation(f.ctx, ops[1].ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
			Phase: store.Ptr(status.PhaseConnecting)})
		require.NoError(t, err)
		_, err = f.s.AdvanceBatches(f.ctx, 10) // maintenance runs during the attempt
		require.NoError(t, err)
		_, err = f.s.UpdateOperation(f.ctx, ops[1].ID, store.OperationUpdate{From: status.InProgress, State: status.Pending,
			Reason: status.ReasonConnectionFailed})
		require.NoError(t, err)
		_, err = f.s.AdvanceBatches(f.ctx, 10)
		require.NoError(t, err)
	}
	offline() // wave 0 settles: d0 done, d1 waits for its device
	first := time.Now()
	for time.Since(first) < 3*wait {
		time.Sleep(wait / 3) // d1's offline backoff, shorter than WaveWait
		offline()
	}
	got, err := f.s.Batch(f.ctx, bt.ID)
	require.NoError(t, err)
	assert.Equal(t, 1, got.Wave, "wave 0 settled %s ago (d1 offline all along), WaveWait is %s", time.Since(first).Round(time.Millisecond), wait)
}

// DESIGN.md: "start rate (count per period; a start is any claim before
// flashing)"; ClaimOperation's lease "counts as running in its batch like
// any other". A claim by ID (a synchronous Run) ignores the rollout but
// counts as a start for the batch's rate.
func TestClaimByIDCountsAsAStartForTheRate(t *testing.T) {
	t.Parallel()
	f := newRoFix(t)
	_, ops := f.batch(store.Rollout{StartRate: store.Rate{Count: 1, Per: time.Hour}}, f.device("d0", ""), f.device("d1", ""))
	_, err := f.s.ClaimOperation(f.ctx, ops[0].ID, "runner", time.Hour)
	require.NoError(t, err)
	assert.Empty(t, f.claim(10), "d0 started within the hour (claimed by ID): a rate of 1 per hour allows no more")
}
