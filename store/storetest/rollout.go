package storetest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Times of the Rollout group. As in the Claims group, a lease that must end
// is roShortLease and the subtest sleeps roAfterLease before relying on its
// end; a lease that must stay live is roLongLease. Times the suite sets
// (StartAt, windows) are taken from records the store stamped, so they are
// on the store's clock; timed rules (start rate, wave wait) are polled with
// generous timeouts and checked on the times the store stamped, never on
// how fast the test ran.
const (
	roShortLease = 150 * time.Millisecond
	roAfterLease = 2 * roShortLease
	roLongLease  = time.Minute
	roPoll       = 10 * time.Second // how long a timed rule may take to let claims through
	roTick       = 20 * time.Millisecond
	roClaimers   = 8
)

// roDevice creates a device of org-a whose GroupBy field key is v.
func (f *fixture) roDevice(key store.GroupKey, v string) store.Device {
	f.t.Helper()
	d := store.Device{ID: f.uniq("device"), Organization: "org-a", Name: "router", Connection: "openwrt-ssh", Active: true}
	switch key {
	case store.GroupByLocation:
		d.Location = v
	case store.GroupByGroup:
		d.Group = v
	}
	d, err := f.s.PutDevice(f.ctx, d)
	require.NoError(f.t, err)
	return d
}

func (f *fixture) roDevices(n int) []store.Device {
	f.t.Helper()
	out := make([]store.Device, n)
	for i := range out {
		out[i] = f.device("org-a")
	}
	return out
}

// roBatchOf creates a batch of org-a in state (empty: idle) with rollout r
// and one operation per device, in order, on one new image.
func (f *fixture) roBatchOf(r store.Rollout, state status.BatchState, devs []store.Device) (store.Batch, []store.Operation) {
	f.t.Helper()
	im := f.imageOf("org-a")
	ops := make([]store.Operation, len(devs))
	for i, d := range devs {
		ops[i] = store.Operation{DeviceID: d.ID, ImageID: im.ID}
	}
	b, out, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID, Name: f.uniq("batch"),
		State: state, Rollout: r}, ops)
	require.NoError(f.t, err)
	require.Len(f.t, out, len(devs))
	return b, out
}

// roRunning creates a batch in progress with rollout r and n operations.
func (f *fixture) roRunning(r store.Rollout, n int) (store.Batch, []store.Operation) {
	f.t.Helper()
	return f.roBatchOf(r, status.BatchInProgress, f.roDevices(n))
}

// roContact moves a claimed operation in progress past connecting (its
// attempt reached the device) and returns when, on the store's clock.
func (f *fixture) roContact(op store.Operation) time.Time {
	f.t.Helper()
	up, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: op.State, State: status.InProgress,
		Phase: store.Ptr(status.PhaseConnecting), Token: op.Token})
	require.NoError(f.t, err)
	up, err = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: up.State, Phase: store.Ptr(status.PhaseIdentity), Token: op.Token})
	require.NoError(f.t, err)
	return up.UpdatedAt
}

// roClaim claims everything ClaimOperations lets owner have.
func (f *fixture) roClaim(owner string) []store.Operation {
	f.t.Helper()
	return f.claim(owner, 100, roLongLease)
}

func (f *fixture) roClaimIDs(owner string) []string {
	f.t.Helper()
	return sorted(ids(f.roClaim(owner), opID)...)
}

func (f *fixture) roAdvance(limit int) []store.Batch {
	f.t.Helper()
	bs, err := f.s.AdvanceBatches(f.ctx, limit)
	require.NoError(f.t, err)
	return bs
}

// roNow returns a time the store stamped just now: the creation time of a
// new device.
func (f *fixture) roNow() time.Time {
	f.t.Helper()
	return f.device("org-a").CreatedAt
}

// roFlashing moves op, claimed with a live lease, into flashing with its
// claim's token.
func (f *fixture) roFlashing(op store.Operation) store.Operation {
	f.t.Helper()
	return f.update(op.ID, store.OperationUpdate{From: op.State, State: status.InProgress,
		Phase: store.Ptr(status.PhaseFlashing), Token: op.Token})
}

// roWindow returns the daily window from now+from to now+to, read in loc and
// named zone; it spans midnight when it has to.
func roWindow(now time.Time, zone string, loc *time.Location, from, to time.Duration) store.Window {
	h, m, s := now.In(loc).Clock()
	tod := h*3600 + m*60 + s
	at := func(d time.Duration) store.TimeOfDay {
		return store.TimeOfDay(((tod+int(d/time.Second))%86400 + 86400) % 86400)
	}
	return store.Window{Start: at(from), End: at(to), TimeZone: zone}
}

// roAround is a UTC window that includes now, roAway one that excludes it.
func roAround(now time.Time) store.Window { return roWindow(now, "", time.UTC, -time.Hour, time.Hour) }
func roAway(now time.Time) store.Window   { return roWindow(now, "", time.UTC, time.Hour, 2*time.Hour) }

func roIDs(ops ...store.Operation) []string { return sorted(ids(ops, opID)...) }

// roTally is a wave tally as the suite compares it.
type roTally struct {
	Size    int
	Counts  map[status.State]int
	Waiting int
}

func roTallies(b store.Batch) []roTally {
	out := make([]roTally, len(b.WaveTallies))
	for i, t := range b.WaveTallies {
		out[i] = roTally{t.Size, nonZero(t.Counts), t.Waiting}
	}
	return out
}

// roFlashingTest is a subtest where op reached flashing, lost its worker,
// and its batch was then held back by hold: the flash must still be
// verified by a claim.
func roFlashingTest(name string, r store.Rollout, hold func(f *fixture, b store.Batch, rest []store.Operation)) test {
	return test{"FlashingClaimableWhen" + name, func(t *testing.T, f *fixture) {
		b, ops := f.roRunning(r, 3)
		got := f.claim("engine-1", 1, roShortLease)
		require.Len(t, got, 1)
		x := f.roFlashing(got[0])
		var rest []store.Operation
		for _, op := range ops {
			if op.ID != x.ID {
				rest = append(rest, op)
			}
		}
		hold(f, b, rest)
		time.Sleep(roAfterLease)
		again := f.roClaim("engine-2")
		assert.Equal(t, []string{x.ID}, roIDs(again...), "%s: only the flash to verify", name)
		for _, op := range again {
			assert.Equal(t, status.PhaseFlashing, op.Phase)
			assert.Equal(t, x.Token+1, op.Token)
		}
	}}
}

func rolloutTests() []test {
	tests := []test{
		{"WavesSplitInOrder", func(t *testing.T, f *fixture) {
			for _, tc := range []struct {
				waves []store.WaveSize
				n     int
			}{
				{nil, 3},
				{[]store.WaveSize{{Count: 1}, {Percent: 30}, {Percent: 60}}, 10},             // 1, 2, 3, 4
				{[]store.WaveSize{{Count: 2}, {Count: 2}, {Percent: 10}, {Percent: 100}}, 5}, // 2, 3
				{[]store.WaveSize{{Count: 10}}, 4},                                           // 4
				{[]store.WaveSize{{Percent: 25}, {Percent: 50}}, 7},                          // 2, 2, 3
			} {
				sizes := store.WaveSizes(tc.waves, tc.n)
				b, ops := f.roBatchOf(store.Rollout{Waves: tc.waves}, "", f.roDevices(tc.n))
				var want []roTally
				var waves []int
				for w, size := range sizes {
					want = append(want, roTally{size, map[status.State]int{status.Pending: size}, 0})
					for range size {
						waves = append(waves, w)
					}
				}
				assert.Equal(t, 0, b.Wave, "waves %v: the first wave is current", tc.waves)
				assert.Equal(t, want, roTallies(b), "waves %v of %d: WaveTallies", tc.waves, tc.n)
				for i, op := range ops {
					assert.Equal(t, waves[i], op.Wave, "waves %v: operation %d, in the order given", tc.waves, i)
					assert.Equal(t, waves[i], f.get(op.ID).Wave, "waves %v: operation %d stored", tc.waves, i)
				}
				requireSame(t, b, f.batch(b.ID))
			}
		}},
		{"CreateOperationJoinsLastWave", func(t *testing.T, f *fixture) {
			b, ops := f.roBatchOf(store.Rollout{Waves: []store.WaveSize{{Count: 1}, {Count: 2}}}, "", f.roDevices(4))
			joined, err := f.s.CreateOperation(f.ctx, store.Operation{DeviceID: f.device("org-a").ID, ImageID: ops[0].ImageID, BatchID: b.ID})
			require.NoError(t, err)
			assert.Equal(t, 2, joined.Wave)
			assert.Equal(t, 2, f.get(joined.ID).Wave)
			assert.Equal(t, []roTally{
				{1, map[status.State]int{status.Pending: 1}, 0},
				{1, map[status.State]int{status.Pending: 1}, 0},
				{3, map[status.State]int{status.Pending: 3}, 0},
			}, roTallies(f.batch(b.ID)))
		}},
		{"InvalidRolloutRefused", func(t *testing.T, f *fixture) {
			devs := f.roDevices(2)
			im := f.imageOf("org-a")
			before := f.snapshot()
			for _, tc := range []struct {
				name  string
				r     store.Rollout
				field string
			}{
				{"negative MaxConcurrent", store.Rollout{MaxConcurrent: -1}, "MaxConcurrent"},
				{"negative StartRate", store.Rollout{StartRate: store.Rate{Count: -1}}, "StartRate"},
				{"FailureThreshold 150", store.Rollout{FailureThreshold: store.Ptr(150.0)}, "FailureThreshold"},
				{"FailureThreshold NaN", store.Rollout{FailureThreshold: store.Ptr(math.NaN())}, "FailureThreshold"},
				{"SuccessThreshold negative", store.Rollout{SuccessThreshold: store.Ptr(-1.0)}, "SuccessThreshold"},
				{"wave of 0", store.Rollout{Waves: []store.WaveSize{{Count: 1}, {}}}, "Waves"},
				{"wave of 120%", store.Rollout{Waves: []store.WaveSize{{Percent: 120}}}, "Waves"},
				{"negative wave", store.Rollout{Waves: []store.WaveSize{{Count: -1}}}, "Waves"},
				{"negative WaveWait", store.Rollout{WaveWait: -time.Second}, "WaveWait"},
				{"GroupLimit without GroupBy", store.Rollout{GroupLimit: 1}, "GroupBy"},
				{"unknown GroupBy", store.Rollout{GroupLimit: 1, GroupBy: "building"}, "GroupBy"},
				{"empty window", store.Rollout{Windows: []store.Window{{Start: 3600, End: 3600}}}, "Windows"},
				{"whole-day window", store.Rollout{Windows: []store.Window{{Start: 0, End: 86400}}}, "Windows"},
				{"window past the day", store.Rollout{Windows: []store.Window{{Start: 3600, End: 90000}}}, "Windows"},
				{"unknown time zone", store.Rollout{Windows: []store.Window{{Start: 3600, End: 7200, TimeZone: "Mars/Olympus_Mons"}}}, "Windows"},
			} {
				_, _, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID, Rollout: tc.r},
					[]store.Operation{{DeviceID: devs[0].ID, ImageID: im.ID}, {DeviceID: devs[1].ID, ImageID: im.ID}})
				require.ErrorIs(t, err, store.ErrInvalid, tc.name)
				var ve *store.ValidationError
				require.True(t, errors.As(err, &ve), "%s: %v is not a *store.ValidationError", tc.name, err)
				assert.Equal(t, tc.field, ve.Field, "%s: ValidationError.Field", tc.name)
			}
			f.requireUnchanged(before)
			for _, d := range devs {
				f.op(d.ID, im.ID) // the devices are not busy
			}
		}},
		{"IdleBatchStartsNothingUntilStarted", func(t *testing.T, f *fixture) {
			b, ops := f.roBatchOf(store.Rollout{}, "", f.roDevices(2))
			require.Equal(t, status.BatchIdle, b.State)
			assert.Empty(t, f.roClaim("engine-1"), "an idle batch starts nothing")
			_, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchIdle, status.BatchInProgress)
			require.NoError(t, err)
			assert.Equal(t, roIDs(ops...), f.roClaimIDs("engine-1"), "started")
		}},
		{"SetBatchStateStartPauseResume", func(t *testing.T, f *fixture) {
			b, _ := f.roBatchOf(store.Rollout{}, "", f.roDevices(2))
			for _, step := range []struct {
				from, to status.BatchState
				reason   status.PauseReason
			}{
				{status.BatchIdle, status.BatchInProgress, status.PauseNone},
				{status.BatchInProgress, status.BatchPaused, status.PauseOperator},
				{status.BatchPaused, status.BatchInProgress, status.PauseNone},
			} {
				got, err := f.s.SetBatchState(f.ctx, b.ID, step.from, step.to)
				require.NoError(t, err, "%s → %s", step.from, step.to)
				assert.Equal(t, step.to, got.State, "%s → %s", step.from, step.to)
				assert.Equal(t, step.reason, got.PauseReason, "%s → %s", step.from, step.to)
				requireSame(t, got, f.batch(b.ID), "%s → %s: stored", step.from, step.to)
			}
		}},
		{"MaxConcurrentCapsLiveLeases", func(t *testing.T, f *fixture) {
			_, ops := f.roRunning(store.Rollout{MaxConcurrent: 2}, 5)
			first := f.roClaim("engine-1")
			require.Len(t, first, 2)
			assert.Empty(t, f.roClaim("engine-2"), "the cap counts every engine's leases")
			require.NoError(t, f.s.ReleaseOperation(f.ctx, first[0].ID, first[0].Token))
			assert.Len(t, f.roClaim("engine-2"), 1, "a release frees a slot")
			assert.Empty(t, f.roClaim("engine-2"))
			done := first[1]
			f.update(done.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: store.Ptr(status.PhaseConnecting), Token: done.Token})
			f.update(done.ID, store.OperationUpdate{From: status.InProgress, State: status.Success, Token: done.Token})
			assert.Len(t, f.roClaim("engine-3"), 1, "an operation that ended frees a slot")
			assert.Empty(t, f.roClaim("engine-3"))
			assert.Len(t, ops, 5)
		}},
		{"MaxConcurrentIgnoresExpiredLeases", func(t *testing.T, f *fixture) {
			f.roRunning(store.Rollout{MaxConcurrent: 1}, 3)
			require.Len(t, f.claim("engine-1", 100, roShortLease), 1)
			time.Sleep(roAfterLease)
			assert.Len(t, f.roClaim("engine-2"), 1, "an expired lease holds no slot")
			assert.Empty(t, f.roClaim("engine-2"))
		}},
		{"GroupLimitCapsPerGroup", func(t *testing.T, f *fixture) {
			for _, key := range []store.GroupKey{store.GroupByLocation, store.GroupByGroup} {
				north, south := f.uniq("north"), f.uniq("south")
				var devs []store.Device
				for _, v := range []string{north, north, north, south, south} {
					devs = append(devs, f.roDevice(key, v))
				}
				_, ops := f.roBatchOf(store.Rollout{GroupLimit: 1, GroupBy: key}, status.BatchInProgress, devs)
				where := map[string]string{}
				for i, op := range ops {
					where[op.ID] = []string{north, north, north, south, south}[i]
				}
				got := f.roClaim("engine-1")
				require.Len(t, got, 2, "%s: one per group", key)
				assert.ElementsMatch(t, []string{north, south}, []string{where[got[0].ID], where[got[1].ID]}, "%s", key)
				assert.Empty(t, f.roClaim("engine-2"), "%s: both groups full", key)
				for _, op := range got {
					if where[op.ID] == north {
						require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token))
					}
				}
				again := f.roClaim("engine-2")
				require.Len(t, again, 1, "%s: the released slot", key)
				assert.Equal(t, north, where[again[0].ID], "%s", key)
			}
		}},
		{"StartRateCountsStartsInFlight", func(t *testing.T, f *fixture) {
			const per = 300 * time.Millisecond
			_, ops := f.roRunning(store.Rollout{StartRate: store.Rate{Count: 2, Per: per}}, 5)
			first := f.roClaim("engine-1")
			require.Len(t, first, 2, "Count starts at once, no more")
			time.Sleep(per + 50*time.Millisecond)
			assert.Empty(t, f.roClaim("engine-1"), "starts in flight (device not reached yet) count however long they take")
			// One reaches its device (the first phase after connecting);
			// the other gives up without reaching it (released).
			require.NoError(t, f.s.ReleaseOperation(f.ctx, first[1].ID, first[1].Token))
			again := f.roClaim("engine-1")
			require.Len(t, again, 1, "a start that never reached its device is forgotten; the contact counts")
			assert.Empty(t, f.roClaim("engine-1"))
			// Every start reaches its device at once from now on: the
			// contacts, dated by the store, are never more than Count
			// within one period.
			contacts := []time.Time{f.roContact(first[0]), f.roContact(again[0])}
			done := map[string]bool{first[0].ID: true, again[0].ID: true}
			require.Eventually(t, func() bool {
				for _, op := range f.roClaim("engine-1") {
					if !done[op.ID] {
						done[op.ID] = true
						contacts = append(contacts, f.roContact(op))
					}
				}
				return len(done) == len(ops)
			}, roPoll, roTick, "the rate lets every operation start in time")
			slices.SortFunc(contacts, time.Time.Compare)
			for i := 2; i < len(contacts); i++ {
				assert.GreaterOrEqual(t, contacts[i].Sub(contacts[i-2]), per-time.Millisecond,
					"contacts %d and %d within one period of %s", i-2, i, per)
			}
		}},
		{"StartRateDefaultPeriodIsAMinute", func(t *testing.T, f *fixture) {
			f.roRunning(store.Rollout{StartRate: store.Rate{Count: 1}}, 3)
			got := f.roClaim("engine-1")
			require.Len(t, got, 1)
			_ = f.roContact(got[0])
			require.NoError(t, f.s.ReleaseOperation(f.ctx, got[0].ID, got[0].Token))
			assert.Empty(t, f.roClaim("engine-1"), "one contact a minute, released or not")
		}},
		{"StartAtHoldsUntilDue", func(t *testing.T, f *fixture) {
			now := f.roNow()
			later, lops := f.roRunning(store.Rollout{StartAt: now.Add(time.Hour)}, 2)
			_, pops := f.roRunning(store.Rollout{StartAt: now.Add(-time.Hour)}, 2)
			assert.Equal(t, roIDs(pops...), f.roClaimIDs("engine-1"), "a StartAt to come holds everything, one gone by nothing")
			_, err := f.s.SetRollout(f.ctx, later.ID, store.Rollout{StartAt: now.Add(-time.Minute)})
			require.NoError(t, err)
			assert.Equal(t, roIDs(lops...), f.roClaimIDs("engine-1"), "StartAt moved to the past")
		}},
		{"WindowsHoldOutsideLetInside", func(t *testing.T, f *fixture) {
			now := f.roNow()
			f.roRunning(store.Rollout{Windows: []store.Window{roAway(now)}}, 2)
			_, inside := f.roRunning(store.Rollout{Windows: []store.Window{roAround(now)}}, 2)
			_, either := f.roRunning(store.Rollout{Windows: []store.Window{roAway(now), roAround(now)}}, 1)
			assert.Equal(t, roIDs(append(inside, either...)...), f.roClaimIDs("engine-1"),
				"outside every window: held; inside one: claimed")
		}},
		{"WindowInItsTimeZone", func(t *testing.T, f *fixture) {
			const zone = "Asia/Kolkata" // UTC+05:30, no daylight saving time
			loc, err := time.LoadLocation(zone)
			if err != nil {
				t.Skipf("time zone %s not available here: %v", zone, err)
			}
			now := f.roNow()
			local := roWindow(now, zone, loc, -time.Hour, time.Hour)
			utc := local
			utc.TimeZone = "" // the same hours in UTC exclude now
			_, ops := f.roRunning(store.Rollout{Windows: []store.Window{local}}, 1)
			f.roRunning(store.Rollout{Windows: []store.Window{utc}}, 1)
			assert.Equal(t, roIDs(ops...), f.roClaimIDs("engine-1"), "the window %s is read in its time zone", local)
		}},
		{"OnlyStartedWavesClaimed", func(t *testing.T, f *fixture) {
			_, ops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}, {Count: 2}}}, 3) // 1, 1, 1
			first := f.roClaim("engine-1")
			assert.Equal(t, []string{ops[0].ID}, roIDs(first...), "only wave 0")
			for _, op := range first {
				require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token))
			}
			assert.Equal(t, []string{ops[0].ID}, f.roClaimIDs("engine-1"), "the current wave stays claimable, the next does not")
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			require.Len(t, f.roAdvance(10), 1)
			assert.Equal(t, []string{ops[1].ID}, f.roClaimIDs("engine-1"), "wave 1 once the batch reached it, not wave 2")
		}},
		{"PausedBatchStartsNoDevice", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{}, 3)
			// One started and lost its worker before flashing: claiming it
			// again is a start too.
			c := f.claimOne(ops[0].ID, "engine-1", roShortLease)
			f.update(c.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: store.Ptr(status.PhaseUpload), Token: c.Token})
			_, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchInProgress, status.BatchPaused)
			require.NoError(t, err)
			time.Sleep(roAfterLease)
			assert.Equal(t, []string{ops[0].ID}, f.roClaimIDs("engine-2"),
				"paused: no device starts; the operation already started goes on")
			_, err = f.s.SetBatchState(f.ctx, b.ID, status.BatchPaused, status.BatchInProgress)
			require.NoError(t, err)
			assert.Equal(t, roIDs(ops[1:]...), f.roClaimIDs("engine-2"), "resumed")
		}},
		{"OtherBatchesNotHeldBack", func(t *testing.T, f *fixture) {
			paused, _ := f.roRunning(store.Rollout{}, 2)
			_, err := f.s.SetBatchState(f.ctx, paused.ID, status.BatchInProgress, status.BatchPaused)
			require.NoError(t, err)
			_, capped := f.roRunning(store.Rollout{MaxConcurrent: 1}, 3)
			f.claimOne(capped[0].ID, "engine-9", roLongLease)
			_, rated := f.roRunning(store.Rollout{StartRate: store.Rate{Count: 1, Per: time.Hour}}, 2)
			_, waves := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}}}, 2)
			// The rated batch's only start and the first wave, taken.
			taken := roIDs(f.claim("engine-9", 100, roLongLease)...)
			require.Len(t, taken, 2)
			require.Contains(t, taken, waves[0].ID)
			require.Contains(t, roIDs(rated...), slices.DeleteFunc(taken, func(id string) bool { return id == waves[0].ID })[0])
			f.roBatchOf(store.Rollout{}, "", f.roDevices(2))
			_, free := f.roRunning(store.Rollout{}, 2)
			loose := f.newOp("org-a")
			assert.Equal(t, roIDs(append(free, loose)...), f.roClaimIDs("engine-1"),
				"a batch held back (paused, capped, rated, idle, later wave) holds back nothing else")
		}},
		{"ClaimOperationIgnoresRollout", func(t *testing.T, f *fixture) {
			now := f.roNow()
			var targets []store.Operation
			_, idle := f.roBatchOf(store.Rollout{}, "", f.roDevices(1))
			targets = append(targets, idle[0])
			paused, pops := f.roRunning(store.Rollout{}, 1)
			_, err := f.s.SetBatchState(f.ctx, paused.ID, status.BatchInProgress, status.BatchPaused)
			require.NoError(t, err)
			targets = append(targets, pops[0])
			_, sops := f.roRunning(store.Rollout{StartAt: now.Add(time.Hour)}, 1)
			targets = append(targets, sops[0])
			_, wops := f.roRunning(store.Rollout{Windows: []store.Window{roAway(now)}}, 1)
			targets = append(targets, wops[0])
			_, lops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}}}, 2)
			targets = append(targets, lops[1])
			_, cops := f.roRunning(store.Rollout{MaxConcurrent: 1, StartRate: store.Rate{Count: 1, Per: time.Hour}}, 3)
			targets = append(targets, cops...)
			for i, op := range targets {
				got := f.claimOne(op.ID, "engine-1", roLongLease)
				assert.Equal(t, int64(1), got.Token, "target %d", i)
				assert.Equal(t, "engine-1", got.LeaseOwner, "target %d", i)
			}
		}},
		{"FailureThresholdPausesStrictlyAbove", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{FailureThreshold: store.Ptr(20.0)}, 10)
			for _, op := range ops[5:] {
				f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			}
			f.drive(ops[0].ID, status.Failed, status.PhaseConnecting) // 1 of 5 counted: 20 %
			got := f.batch(b.ID)
			assert.Equal(t, status.BatchInProgress, got.State, "exactly at the threshold; cancelled operations count on neither side")
			assert.Equal(t, status.PauseNone, got.PauseReason)
			f.drive(ops[1].ID, status.Aborted, status.PhaseConnecting) // 2 of 5: 40 %
			got = f.batch(b.ID)
			assert.Equal(t, status.BatchPaused, got.State, "above the threshold, at the terminal update")
			assert.Equal(t, status.PauseFailureThreshold, got.PauseReason)
			assert.Empty(t, f.roClaim("engine-1"))
			resumed, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchPaused, status.BatchInProgress)
			require.NoError(t, err)
			assert.Equal(t, status.BatchInProgress, resumed.State)
			assert.Equal(t, status.PauseNone, resumed.PauseReason, "resuming clears the reason")
			requireSame(t, resumed, f.batch(b.ID))
			assert.Equal(t, roIDs(ops[2:5]...), f.roClaimIDs("engine-1"))
		}},
		{"FailureThresholdWaitsForMinFinished", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{FailureThreshold: store.Ptr(20.0), MinFinished: 4}, 10)
			for i, op := range ops[:3] {
				f.drive(op.ID, status.Failed, status.PhaseConnecting)
				assert.Equal(t, status.BatchInProgress, f.batch(b.ID).State, "%d of 4 finished", i+1)
			}
			f.drive(ops[3].ID, status.Failed, status.PhaseConnecting)
			got := f.batch(b.ID)
			assert.Equal(t, status.BatchPaused, got.State, "4 finished, 40 %% failed")
			assert.Equal(t, status.PauseFailureThreshold, got.PauseReason)
		}},
		{"FailureThresholdCountsTheWave", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{FailureThreshold: store.Ptr(20.0), Waves: []store.WaveSize{{Count: 2}}}, 10)
			f.drive(ops[0].ID, status.Failed, status.PhaseConnecting) // 1 of wave 0's 2, 1 of the batch's 10
			got := f.batch(b.ID)
			assert.Equal(t, status.BatchPaused, got.State, "50 %% of the wave failed")
			assert.Equal(t, status.PauseFailureThreshold, got.PauseReason)
		}},
		{"AdvanceBatchesStartsNextWave", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}}}, 3)
			other, oops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}}}, 2)
			assert.Empty(t, f.roAdvance(10), "no wave settled")
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			got := f.roAdvance(10)
			require.Len(t, got, 1, "only the batch it changed")
			assert.Equal(t, b.ID, got[0].ID)
			assert.Equal(t, 1, got[0].Wave, "no WaveWait: at once")
			assert.True(t, got[0].WaveSettledAt.IsZero(), "the new wave has not settled")
			assert.Equal(t, status.BatchInProgress, got[0].State)
			requireSame(t, got[0], f.batch(b.ID))
			assert.Equal(t, 0, f.batch(other.ID).Wave)
			assert.Empty(t, f.roAdvance(10), "the last wave: nothing left to advance")
			assert.Equal(t, roIDs(ops[1], ops[2], oops[0]), f.roClaimIDs("engine-1"))
		}},
		{"AdvanceBatchesWaitingOfflineSettles", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 2}}}, 3)
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			f.start(ops[1].ID, status.PhaseConnecting)
			assert.Empty(t, f.roAdvance(10), "an operation of the wave runs")
			f.update(ops[1].ID, store.OperationUpdate{From: status.InProgress, State: status.Pending})
			got := f.roAdvance(10)
			require.Len(t, got, 1, "a device offline does not hold the rollout back")
			assert.Equal(t, b.ID, got[0].ID)
			assert.Equal(t, 1, got[0].Wave)
		}},
		{"AdvanceBatchesAfterWaveWait", func(t *testing.T, f *fixture) {
			const wait = 300 * time.Millisecond
			b, ops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}}, WaveWait: wait}, 2)
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			got := f.roAdvance(10)
			require.Len(t, got, 1, "the wave settled: a change")
			settled := got[0]
			assert.Equal(t, 0, settled.Wave)
			assert.False(t, settled.WaveSettledAt.IsZero(), "WaveSettledAt set")
			requireSame(t, settled, f.batch(b.ID))
			assert.Empty(t, f.roClaim("engine-1"), "the next wave waits")
			var advanced store.Batch
			var err error
			var unchanged []store.Batch
			require.Eventually(t, func() bool {
				bs, e := f.s.AdvanceBatches(f.ctx, 10)
				if e != nil {
					err = e
					return true
				}
				for _, x := range bs {
					if x.Wave == 1 {
						advanced = x
						return true
					}
					unchanged = append(unchanged, x)
				}
				return false
			}, roPoll, roTick, "the next wave starts after WaveWait")
			require.NoError(t, err)
			assert.Empty(t, unchanged, "AdvanceBatches returns only the batches it changed")
			assert.Equal(t, b.ID, advanced.ID)
			assert.False(t, advanced.UpdatedAt.Before(settled.WaveSettledAt.Add(wait)),
				"advanced at %s, settled at %s", advanced.UpdatedAt, settled.WaveSettledAt)
			assert.True(t, advanced.WaveSettledAt.IsZero())
			assert.Equal(t, []string{ops[1].ID}, f.roClaimIDs("engine-1"))
		}},
		{"SuccessThresholdMissedPausesResumeStartsNextWave", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 2}}, SuccessThreshold: store.Ptr(60.0)}, 4)
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			f.drive(ops[1].ID, status.Failed, status.PhaseConnecting) // 50 %
			got := f.roAdvance(10)
			require.Len(t, got, 1)
			assert.Equal(t, status.BatchPaused, got[0].State)
			assert.Equal(t, status.PauseSuccessThreshold, got[0].PauseReason)
			assert.Equal(t, 0, got[0].Wave)
			requireSame(t, got[0], f.batch(b.ID))
			assert.Empty(t, f.roAdvance(10), "a paused batch does not advance")
			assert.Empty(t, f.roClaim("engine-1"))
			resumed, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchPaused, status.BatchInProgress)
			require.NoError(t, err)
			assert.Equal(t, 1, resumed.Wave, "resuming accepts the wave and starts the next")
			assert.Equal(t, status.PauseNone, resumed.PauseReason)
			requireSame(t, resumed, f.batch(b.ID))
			assert.Equal(t, roIDs(ops[2:]...), f.roClaimIDs("engine-1"))
		}},
		{"SuccessThresholdReachedExactly", func(t *testing.T, f *fixture) {
			_, ops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 3}}, SuccessThreshold: store.Ptr(50.0)}, 4)
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			f.drive(ops[1].ID, status.Failed, status.PhaseConnecting)
			f.update(ops[2].ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			got := f.roAdvance(10)
			require.Len(t, got, 1)
			assert.Equal(t, status.BatchInProgress, got[0].State, "1 of 2 counted: 50 %%, cancelled left out")
			assert.Equal(t, 1, got[0].Wave)
		}},
		{"AdvanceBatchesLimit", func(t *testing.T, f *fixture) {
			var want []string
			for range 3 {
				b, ops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}}}, 2)
				f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
				want = append(want, b.ID)
			}
			paused, pops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}}}, 2)
			f.drive(pops[0].ID, status.Success, status.PhaseVerifying)
			_, err := f.s.SetBatchState(f.ctx, paused.ID, status.BatchInProgress, status.BatchPaused)
			require.NoError(t, err)
			var got []string
			for _, size := range []int{2, 1, 0} {
				bs := f.roAdvance(2)
				require.Len(t, bs, size)
				for _, b := range bs {
					assert.Equal(t, 1, b.Wave)
					got = append(got, b.ID)
				}
			}
			assert.Equal(t, sorted(want...), sorted(got...), "each batch advanced once, the paused one never")
			assert.Equal(t, 0, f.batch(paused.ID).Wave)
		}},
		{"AdvanceBatchesLimitNotPositive", func(t *testing.T, f *fixture) {
			_, ops := f.roRunning(store.Rollout{Waves: []store.WaveSize{{Count: 1}}}, 2)
			f.drive(ops[0].ID, status.Success, status.PhaseVerifying)
			before := f.snapshot()
			for _, limit := range []int{0, -1} {
				_, err := f.s.AdvanceBatches(f.ctx, limit)
				requireInvalid(t, err, "Limit")
			}
			f.requireUnchanged(before)
		}},
		{"BackToPendingWaits", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{}, 3)
			c := f.claimOne(ops[0].ID, "engine-1", roLongLease)
			f.update(c.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: store.Ptr(status.PhaseUpload),
				Progress: store.Ptr(40), Token: c.Token})
			back := f.update(c.ID, store.OperationUpdate{From: status.InProgress, State: status.Pending, Token: c.Token})
			assert.Equal(t, status.Pending, back.State)
			assert.Equal(t, status.PhaseNone, back.Phase, "back to pending clears the phase")
			assert.Equal(t, 0, back.Progress, "and the progress")
			got := f.batch(b.ID)
			assert.Equal(t, map[status.State]int{status.Pending: 3}, nonZero(got.Counts), "counted as pending")
			assert.Equal(t, []roTally{{3, map[status.State]int{status.Pending: 3}, 1}}, roTallies(got))
			assert.Equal(t, 1, got.Waiting())
			f.update(c.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: store.Ptr(status.PhaseConnecting), Token: c.Token})
			assert.Equal(t, 0, f.batch(b.ID).Waiting(), "running again")
			f.update(c.ID, store.OperationUpdate{From: status.InProgress, State: status.Pending, Token: c.Token})
			f.update(c.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			assert.Equal(t, []roTally{{3, map[status.State]int{status.Pending: 2, status.Cancelled: 1}, 0}}, roTallies(f.batch(b.ID)),
				"a waiting operation that ends waits no more")
		}},
		{"BackToPendingRefusedAtFlashing", func(t *testing.T, f *fixture) {
			_, ops := f.roRunning(store.Rollout{}, 1)
			op := f.drive(ops[0].ID, status.InProgress, status.PhaseFlashing)
			for _, p := range []status.Phase{status.PhaseFlashing, status.PhaseRebooting} {
				if p != op.Phase {
					op = f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: &p})
				}
				before := f.snapshot()
				_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: status.Pending})
				require.ErrorIs(t, err, store.ErrInvalidTransition, "%s", p)
				f.requireUnchanged(before)
			}
		}},
		{"CancelBatchCancelsBeforeFlashing", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{}, 5)
			pending := ops[0]
			running := f.claimOne(ops[1].ID, "engine-1", roLongLease)
			f.update(running.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: store.Ptr(status.PhaseUpload), Token: running.Token})
			flashing := f.roFlashing(f.claimOne(ops[2].ID, "engine-1", roLongLease))
			done := f.drive(ops[3].ID, status.Success, status.PhaseVerifying)
			waiting := f.start(ops[4].ID, status.PhaseConnecting)
			waiting = f.update(waiting.ID, store.OperationUpdate{From: status.InProgress, State: status.Pending})

			cb, cancelled, err := f.s.CancelBatch(f.ctx, b.ID)
			require.NoError(t, err)
			assert.True(t, cb.CancelRequested)
			assert.Equal(t, roIDs(pending, running, waiting), roIDs(cancelled...))
			for _, op := range cancelled {
				assert.Equal(t, status.Cancelled, op.State)
				assert.Equal(t, status.ReasonCancelledByUser, op.Reason)
				requireSame(t, op, f.get(op.ID), "returned as stored")
			}
			fl := f.get(flashing.ID)
			assert.Equal(t, status.InProgress, fl.State, "at flashing: left to finish")
			assert.Equal(t, status.PhaseFlashing, fl.Phase)
			assert.Equal(t, status.Success, f.get(done.ID).State)
			got := f.batch(b.ID)
			requireSame(t, cb, got)
			assert.Equal(t, map[status.State]int{status.Cancelled: 3, status.InProgress: 1, status.Success: 1}, nonZero(got.Counts))
			rs := f.renew("engine-1", roLongLease, leaseOf(running), leaseOf(flashing))
			assert.Equal(t, store.LeaseCancelRequested, rs[0].Status, "the holder learns it at its next renewal")
			assert.Equal(t, store.LeaseHeld, rs[1].Status, "the flash goes on")
		}},
		{"CancelledBatchOnlyVerifies", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{}, 3)
			x := f.roFlashing(f.claimOne(ops[0].ID, "engine-1", roShortLease))
			_, _, err := f.s.CancelBatch(f.ctx, b.ID)
			require.NoError(t, err)
			time.Sleep(roAfterLease)
			got := f.roClaim("engine-2")
			assert.Equal(t, []string{x.ID}, roIDs(got...), "nothing of the batch is claimed but the flash to verify")
		}},
		{"CancelledBatchRefusesChanges", func(t *testing.T, f *fixture) {
			b, ops := f.roRunning(store.Rollout{}, 2)
			f.drive(ops[0].ID, status.InProgress, status.PhaseFlashing) // keeps the batch in progress
			_, _, err := f.s.CancelBatch(f.ctx, b.ID)
			require.NoError(t, err)
			require.Equal(t, status.BatchInProgress, f.batch(b.ID).State)
			d := f.device("org-a")
			before := f.snapshot()
			_, err = f.s.SetBatchState(f.ctx, b.ID, status.BatchInProgress, status.BatchPaused)
			require.ErrorIs(t, err, store.ErrInvalidTransition, "SetBatchState")
			_, err = f.s.CreateOperation(f.ctx, store.Operation{DeviceID: d.ID, ImageID: ops[0].ImageID, BatchID: b.ID})
			require.ErrorIs(t, err, store.ErrInvalidTransition, "CreateOperation joining it")
			_, err = f.s.SetRollout(f.ctx, b.ID, store.Rollout{MaxConcurrent: 1})
			require.ErrorIs(t, err, store.ErrInvalidTransition, "SetRollout")
			f.requireUnchanged(before)
		}},
		{"CancelEndedBatchRefused", func(t *testing.T, f *fixture) {
			succeeded, sops := f.roRunning(store.Rollout{}, 1)
			f.drive(sops[0].ID, status.Success, status.PhaseVerifying)
			cancelled, _ := f.roRunning(store.Rollout{}, 1)
			_, _, err := f.s.CancelBatch(f.ctx, cancelled.ID)
			require.NoError(t, err)
			require.Equal(t, status.BatchCancelled, f.batch(cancelled.ID).State, "every operation cancelled: the batch ended")
			before := f.snapshot()
			for _, id := range []string{succeeded.ID, cancelled.ID} {
				_, _, err := f.s.CancelBatch(f.ctx, id)
				require.ErrorIs(t, err, store.ErrInvalidTransition, "batch %s", f.batch(id).State)
			}
			_, _, err = f.s.CancelBatch(f.ctx, store.NewID())
			require.ErrorIs(t, err, store.ErrNotFound)
			f.requireUnchanged(before)
		}},
		{"SetRolloutChangesCaps", func(t *testing.T, f *fixture) {
			b, _ := f.roRunning(store.Rollout{MaxConcurrent: 1}, 4)
			require.Len(t, f.roClaim("engine-1"), 1)
			assert.Empty(t, f.roClaim("engine-1"))
			got, err := f.s.SetRollout(f.ctx, b.ID, store.Rollout{MaxConcurrent: 3})
			require.NoError(t, err)
			assert.Equal(t, 3, got.Rollout.MaxConcurrent)
			requireSame(t, got, f.batch(b.ID))
			assert.Len(t, f.roClaim("engine-1"), 2, "a raised cap lets more claims through, from the next claim")
			assert.Empty(t, f.roClaim("engine-1"))
			_, err = f.s.SetRollout(f.ctx, b.ID, store.Rollout{})
			require.NoError(t, err)
			assert.Len(t, f.roClaim("engine-1"), 1, "no cap")
		}},
		{"SetRolloutRefused", func(t *testing.T, f *fixture) {
			waves := []store.WaveSize{{Count: 1}}
			b, _ := f.roRunning(store.Rollout{Waves: waves}, 2)
			ended, eops := f.roRunning(store.Rollout{}, 1)
			f.drive(eops[0].ID, status.Success, status.PhaseVerifying)
			cancelled, cops := f.roRunning(store.Rollout{}, 2)
			f.drive(cops[0].ID, status.InProgress, status.PhaseFlashing)
			_, _, err := f.s.CancelBatch(f.ctx, cancelled.ID)
			require.NoError(t, err)
			before := f.snapshot()
			for _, tc := range []struct {
				name string
				id   string
				r    store.Rollout
				want error
			}{
				{"other waves", b.ID, store.Rollout{Waves: []store.WaveSize{{Count: 2}}}, store.ErrInvalidTransition},
				{"no waves", b.ID, store.Rollout{}, store.ErrInvalidTransition},
				{"invalid", b.ID, store.Rollout{Waves: waves, MaxConcurrent: -1}, store.ErrInvalid},
				{"ended", ended.ID, store.Rollout{MaxConcurrent: 1}, store.ErrInvalidTransition},
				{"cancelled", cancelled.ID, store.Rollout{MaxConcurrent: 1}, store.ErrInvalidTransition},
				{"unknown", store.NewID(), store.Rollout{MaxConcurrent: 1}, store.ErrNotFound},
			} {
				_, err := f.s.SetRollout(f.ctx, tc.id, tc.r)
				require.ErrorIs(t, err, tc.want, tc.name)
			}
			f.requireUnchanged(before)
			got, err := f.s.SetRollout(f.ctx, b.ID, store.Rollout{Waves: []store.WaveSize{{Count: 1}}, MaxConcurrent: 2})
			require.NoError(t, err, "the same waves")
			assert.Equal(t, 2, got.Rollout.MaxConcurrent)
		}},
		{"CopyWaveTalliesAndRollout", func(t *testing.T, f *fixture) {
			rollout := func() store.Rollout {
				return store.Rollout{Waves: []store.WaveSize{{Count: 1}, {Percent: 50}},
					Windows: []store.Window{{Start: 3600, End: 7200}}, FailureThreshold: store.Ptr(20.0)}
			}
			in := rollout()
			b, _ := f.roBatchOf(in, status.BatchInProgress, f.roDevices(4))
			mutate := func(r *store.Rollout, b *store.Batch) {
				r.Waves[0].Count, r.Windows[0].Start, *r.FailureThreshold = 3, 0, 99
				if b != nil && len(b.WaveTallies) > 0 {
					b.WaveTallies[0].Size = 42
					b.WaveTallies[0].Waiting = 5
					if b.WaveTallies[0].Counts != nil {
						b.WaveTallies[0].Counts[status.Failed] = 7
					}
				}
			}
			check := func(got store.Batch, msg string) {
				t.Helper()
				want := rollout()
				assert.Equal(t, want.Waves, got.Rollout.Waves, msg)
				assert.Equal(t, want.Windows, got.Rollout.Windows, msg)
				if assert.NotNil(t, got.Rollout.FailureThreshold, msg) {
					assert.Equal(t, 20.0, *got.Rollout.FailureThreshold, msg)
				}
				assert.Equal(t, []roTally{
					{1, map[status.State]int{status.Pending: 1}, 0},
					{1, map[status.State]int{status.Pending: 1}, 0},
					{2, map[status.State]int{status.Pending: 2}, 0},
				}, roTallies(got), msg)
			}
			mutate(&in, nil)
			mutate(&b.Rollout, &b)
			got := f.batch(b.ID)
			check(got, "after changing the input and the returned batch")
			mutate(&got.Rollout, &got)
			listed, err := f.s.ListBatches(f.ctx, store.BatchFilter{})
			require.NoError(t, err)
			require.Len(t, listed, 1)
			check(listed[0], "after changing Batch's answer")
			mutate(&listed[0].Rollout, &listed[0])
			check(f.batch(b.ID), "after changing ListBatches' answer")
			in = rollout()
			set, err := f.s.SetRollout(f.ctx, b.ID, in)
			require.NoError(t, err)
			mutate(&in, nil)
			mutate(&set.Rollout, &set)
			check(f.batch(b.ID), "after changing SetRollout's input and answer")
		}},
		{"CapsHoldUnderConcurrentClaims", func(t *testing.T, f *fixture) {
			_, capped := f.roRunning(store.Rollout{MaxConcurrent: 3}, 20)
			_, rated := f.roRunning(store.Rollout{StartRate: store.Rate{Count: 2, Per: time.Hour}}, 20)
			where := f.uniq("north")
			var devs []store.Device
			for range 20 {
				devs = append(devs, f.roDevice(store.GroupByLocation, where))
			}
			_, grouped := f.roBatchOf(store.Rollout{GroupLimit: 2, GroupBy: store.GroupByLocation}, status.BatchInProgress, devs)
			batchOf := map[string]string{}
			for name, ops := range map[string][]store.Operation{"capped": capped, "rated": rated, "grouped": grouped} {
				for _, op := range ops {
					batchOf[op.ID] = name
				}
			}
			got := make([][]store.Operation, roClaimers)
			errs := make([]error, roClaimers)
			fns := make([]func(), roClaimers)
			for i := range fns {
				fns[i] = func() {
					for range 20 {
						ops, err := f.s.ClaimOperations(f.ctx, fmt.Sprintf("engine-%d", i), 1+i%3, roLongLease)
						if err != nil || len(ops) == 0 {
							errs[i] = err
							return
						}
						got[i] = append(got[i], ops...)
					}
				}
			}
			race(fns...)
			count := map[string]int{}
			for i := range got {
				require.NoError(t, errs[i])
				for _, op := range got[i] {
					count[batchOf[op.ID]]++
				}
			}
			// A store may answer fewer while other claims hold rows: sweep.
			for _, op := range f.roClaim("sweeper") {
				count[batchOf[op.ID]]++
			}
			assert.Equal(t, map[string]int{"capped": 3, "rated": 2, "grouped": 2}, count,
				"the caps hold however many engines claim at once")
		}},
	}
	tests = append(tests,
		roFlashingTest("Paused", store.Rollout{}, func(f *fixture, b store.Batch, _ []store.Operation) {
			_, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchInProgress, status.BatchPaused)
			require.NoError(f.t, err)
		}),
		roFlashingTest("Capped", store.Rollout{MaxConcurrent: 1}, func(f *fixture, _ store.Batch, rest []store.Operation) {
			f.claimOne(rest[0].ID, "engine-9", roLongLease) // the only slot, taken by ID
		}),
		roFlashingTest("OutsideWindow", store.Rollout{}, func(f *fixture, b store.Batch, _ []store.Operation) {
			_, err := f.s.SetRollout(f.ctx, b.ID, store.Rollout{Windows: []store.Window{roAway(f.roNow())}})
			require.NoError(f.t, err)
		}),
	)
	return tests
}
