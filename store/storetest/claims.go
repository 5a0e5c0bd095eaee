package storetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Leases of the Claims group. Lease times come from the store's clock, which
// the suite does not control: a subtest that needs a lease to end claims it
// for shortLease and sleeps afterLease (twice as long) before relying on its
// end; a lease that must stay live is longLease. Other times are taken from
// records the store stamped (CreatedAt, LeaseExpiresAt), never from the
// test's clock.
const (
	shortLease = 150 * time.Millisecond
	afterLease = 2 * shortLease
	longLease  = time.Minute
)

// claimers is how many engines race in the concurrent claim subtests.
const claimers = 8

func (f *fixture) claim(owner string, limit int, lease time.Duration) []store.Operation {
	f.t.Helper()
	ops, err := f.s.ClaimOperations(f.ctx, owner, limit, lease)
	require.NoError(f.t, err)
	return ops
}

func (f *fixture) claimOne(id, owner string, lease time.Duration) store.Operation {
	f.t.Helper()
	op, err := f.s.ClaimOperation(f.ctx, id, owner, lease)
	require.NoError(f.t, err)
	return op
}

func (f *fixture) renew(owner string, lease time.Duration, held ...store.Lease) []store.Renewal {
	f.t.Helper()
	rs, err := f.s.RenewLeases(f.ctx, owner, lease, held)
	require.NoError(f.t, err)
	require.Len(f.t, rs, len(held), "one answer per lease")
	return rs
}

func leaseOf(op store.Operation) store.Lease {
	return store.Lease{OperationID: op.ID, Token: op.Token}
}

// claimedRunning creates an operation, claims it by ID for owner and moves
// it, with the claim's token, to in-progress in phase p (a phase before
// flashing).
func (f *fixture) claimedRunning(owner string, lease time.Duration, p status.Phase) store.Operation {
	f.t.Helper()
	require.False(f.t, p.AfterPointOfNoReturn(), "claimedRunning takes a phase before flashing")
	op := f.claimOne(f.newOp("org-a").ID, owner, lease)
	return f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: &p, Token: op.Token})
}

// requireEnded asserts op was ended into state s by a change that ended its
// lease and kept its claim's owner and token.
func requireEnded(t *testing.T, op store.Operation, s status.State, owner string, token int64) {
	t.Helper()
	assert.Equal(t, s, op.State)
	assert.True(t, op.LeaseExpiresAt.IsZero(), "a terminal transition ends the lease, got %s", op.LeaseExpiresAt)
	assert.Equal(t, owner, op.LeaseOwner, "LeaseOwner stays")
	assert.Equal(t, token, op.Token, "Token stays")
}

// ignoreClaim ignores what a claim changes.
var ignoreClaim = cmpopts.IgnoreFields(store.Operation{}, "Token", "LeaseOwner", "LeaseExpiresAt", "Version", "UpdatedAt")

func claimTests(n int) []test {
	return []test{
		{"ClaimSetsTokenLeaseAndVersion", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			got := f.claim("engine-1", 10, time.Hour)
			require.Len(t, got, 1)
			c := got[0]
			assert.Equal(t, op.ID, c.ID)
			assert.Equal(t, op.Token+1, c.Token, "every claim increments the token")
			assert.Equal(t, "engine-1", c.LeaseOwner)
			assert.Equal(t, op.Version+1, c.Version, "a claim counts as a change")
			// The store's now + lease: at least an hour after the
			// operation was created, and not much more.
			assert.False(t, c.LeaseExpiresAt.Before(op.CreatedAt.Add(time.Hour)), "lease ends at %s, created %s", c.LeaseExpiresAt, op.CreatedAt)
			assert.True(t, c.LeaseExpiresAt.Before(op.CreatedAt.Add(time.Hour+time.Minute)), "lease ends at %s, created %s", c.LeaseExpiresAt, op.CreatedAt)
			if d := cmp.Diff(op, c, cmpRecords, ignoreClaim); d != "" {
				t.Errorf("a claim changes only the claim's fields (-before +claimed):\n%s", d)
			}
			requireSame(t, c, f.get(op.ID), "the claim is stored")

			require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, c.Token))
			c2 := f.claimOne(op.ID, "engine-2", time.Hour)
			assert.Equal(t, c.Token+1, c2.Token, "ClaimOperation increments the token too")
			assert.Equal(t, "engine-2", c2.LeaseOwner)
			assert.Equal(t, c.Version+1, c2.Version)
			assert.False(t, c2.LeaseExpiresAt.Before(op.CreatedAt.Add(time.Hour)))
			if d := cmp.Diff(op, c2, cmpRecords, ignoreClaim); d != "" {
				t.Errorf("a claim changes only the claim's fields (-before +claimed):\n%s", d)
			}
			requireSame(t, c2, f.get(op.ID))
		}},
		{"ClaimRespectsLimit", func(t *testing.T, f *fixture) {
			var want []string
			for range 5 {
				want = append(want, f.newOp("org-a").ID)
			}
			var got []string
			for _, size := range []int{2, 2, 1} {
				ops := f.claim("engine-1", 2, longLease)
				require.Len(t, ops, size)
				got = append(got, ids(ops, opID)...)
			}
			assert.Equal(t, sorted(want...), sorted(got...), "each operation claimed once")
			assert.Empty(t, f.claim("engine-1", 2, longLease))
		}},
		{"NothingRunnableIsEmptyNotError", func(t *testing.T, f *fixture) {
			assert.Empty(t, f.claim("engine-1", 10, longLease), "empty store")
			f.drive(f.newOp("org-a").ID, status.Success, status.PhaseVerifying)
			f.drive(f.newOp("org-a").ID, status.Cancelled, status.PhaseNone)
			f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			later := f.newOp("org-a")
			at := later.CreatedAt.Add(time.Hour)
			f.update(later.ID, store.OperationUpdate{From: status.Pending, NextAttemptAt: &at})
			before := f.snapshot()
			assert.Empty(t, f.claim("engine-2", 10, longLease), "terminal, leased or not yet due")
			f.requireUnchanged(before)
		}},
		{"ConcurrentClaimersShareNothing", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			total := 2 * n
			for range total {
				f.op(f.device("org-a").ID, im.ID)
			}
			got := make([][]store.Operation, claimers)
			errs := make([]error, claimers)
			fns := make([]func(), claimers)
			for i := range fns {
				fns[i] = func() {
					owner := fmt.Sprintf("engine-%d", i)
					// More than total claims is a failure: stop (a store that
					// hands out leased operations would never answer empty).
					for len(got[i]) <= total {
						ops, err := f.s.ClaimOperations(f.ctx, owner, 1+i%3, longLease)
						if err != nil || len(ops) == 0 {
							errs[i] = err
							return
						}
						got[i] = append(got[i], ops...)
					}
				}
			}
			race(fns...)
			owners := map[string]string{}
			for i := range got {
				require.NoError(t, errs[i])
				owner := fmt.Sprintf("engine-%d", i)
				for _, op := range got[i] {
					if prev, dup := owners[op.ID]; dup {
						t.Fatalf("operation %s claimed by %s and by %s", op.ID, prev, owner)
					}
					owners[op.ID] = owner
					assert.Equal(t, owner, op.LeaseOwner)
					assert.Equal(t, int64(1), op.Token, "claimed once")
				}
			}
			// A store may answer fewer than are runnable while other claims
			// hold rows; whatever is left must still be claimable.
			for _, op := range f.claim("sweeper", total, longLease) {
				_, dup := owners[op.ID]
				require.False(t, dup, "operation %s claimed twice", op.ID)
				owners[op.ID] = "sweeper"
			}
			assert.Len(t, owners, total, "every runnable operation claimed exactly once")
			for id, owner := range owners {
				got := f.get(id)
				assert.Equal(t, owner, got.LeaseOwner, "operation %s", id)
				assert.Equal(t, int64(1), got.Token, "operation %s", id)
			}
		}},
		{"ConcurrentClaimOperationOneWinner", func(t *testing.T, f *fixture) {
			for range 5 {
				op := f.newOp("org-a")
				errs := make([]error, n)
				fns := make([]func(), n)
				for i := range fns {
					fns[i] = func() { _, errs[i] = f.s.ClaimOperation(f.ctx, op.ID, fmt.Sprintf("engine-%d", i), longLease) }
				}
				race(fns...)
				winner := -1
				for i, err := range errs {
					if err == nil {
						require.Equal(t, -1, winner, "two claims won: engines %d and %d", winner, i)
						winner = i
						continue
					}
					require.ErrorIs(t, err, store.ErrLeased)
				}
				require.NotEqual(t, -1, winner, "no claim won")
				got := f.get(op.ID)
				assert.Equal(t, fmt.Sprintf("engine-%d", winner), got.LeaseOwner)
				assert.Equal(t, int64(1), got.Token)
			}
		}},
		{"LiveLeaseNotClaimable", func(t *testing.T, f *fixture) {
			pending := f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			running := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			before := f.snapshot()
			for _, owner := range []string{"engine-2", "engine-1"} {
				assert.Empty(t, f.claim(owner, 10, longLease), "%s: ClaimOperations", owner)
				for _, op := range []store.Operation{pending, running} {
					_, err := f.s.ClaimOperation(f.ctx, op.ID, owner, longLease)
					require.ErrorIs(t, err, store.ErrLeased, "%s: ClaimOperation of a %s operation", owner, op.State)
				}
			}
			f.requireUnchanged(before)
		}},
		{"ExpiredLeaseClaimableWithNewToken", func(t *testing.T, f *fixture) {
			a, b := f.newOp("org-a"), f.newOp("org-a")
			first := f.claim("engine-1", 10, shortLease)
			require.Len(t, first, 2)
			tokens := map[string]int64{first[0].ID: first[0].Token, first[1].ID: first[1].Token}
			time.Sleep(afterLease)
			got := f.claim("engine-2", 1, longLease)
			require.Len(t, got, 1, "ClaimOperations takes an expired lease over")
			assert.Equal(t, "engine-2", got[0].LeaseOwner)
			assert.Equal(t, tokens[got[0].ID]+1, got[0].Token, "a new token")
			other := a.ID
			if got[0].ID == a.ID {
				other = b.ID
			}
			again := f.claimOne(other, "engine-1", longLease)
			assert.Equal(t, tokens[other]+1, again.Token, "ClaimOperation takes an expired lease over, the same owner's too")
			assert.Equal(t, "engine-1", again.LeaseOwner)
			assert.Empty(t, f.claim("engine-3", 10, longLease), "both live again")
		}},
		{"StaleTokenWritesRefused", func(t *testing.T, f *fixture) {
			old := f.claimedRunning("engine-1", shortLease, status.PhaseUpload)
			require.NoError(t, f.s.AppendLog(f.ctx, old.ID, old.Token, "uploading"))
			time.Sleep(afterLease)
			got := f.claim("engine-2", 10, longLease)
			require.Len(t, got, 1)
			cur := got[0]
			require.Equal(t, old.ID, cur.ID)
			require.Equal(t, old.Token+1, cur.Token)
			retry := old.CreatedAt.Add(time.Minute)
			before := f.snapshot()
			for _, tok := range []int64{old.Token, cur.Token + 1} {
				for name, u := range map[string]store.OperationUpdate{
					"phase":    {From: status.InProgress, Phase: store.Ptr(status.PhaseChecksum)},
					"flashing": {From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing), Progress: store.Ptr(status.ProgressFlashing)},
					"progress": {From: status.InProgress, Progress: store.Ptr(40)},
					"retry":    {From: status.InProgress, Attempt: store.Ptr(2), NextAttemptAt: &retry, Log: []string{"retrying"}},
					"deadline": {From: status.InProgress, Deadline: &retry},
					"log":      {From: status.InProgress, Log: []string{"late"}},
					"failed":   {From: status.InProgress, State: status.Failed, Reason: status.ReasonConnectionFailed},
					"success":  {From: status.InProgress, State: status.Success},
					"cancel":   {From: status.InProgress, State: status.Cancelled, Reason: status.ReasonCancelledByUser},
				} {
					u.Token = tok
					_, err := f.s.UpdateOperation(f.ctx, old.ID, u)
					require.ErrorIs(t, err, store.ErrStaleToken, "token %d: %s", tok, name)
				}
				require.ErrorIs(t, f.s.SetProgress(f.ctx, old.ID, tok, 40), store.ErrStaleToken, "token %d: SetProgress", tok)
				require.ErrorIs(t, f.s.AppendLog(f.ctx, old.ID, tok, "late"), store.ErrStaleToken, "token %d: AppendLog", tok)
				require.ErrorIs(t, f.s.ReleaseOperation(f.ctx, old.ID, tok), store.ErrStaleToken, "token %d: ReleaseOperation", tok)
			}
			f.requireUnchanged(before)
		}},
		{"CurrentTokenWrites", func(t *testing.T, f *fixture) {
			op := f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			tok := op.Token
			f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: store.Ptr(status.PhaseConnecting), Token: tok})
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, tok, "connected"))
			require.NoError(t, f.s.SetProgress(f.ctx, op.ID, tok, 10))
			assert.Equal(t, 10, f.get(op.ID).Progress)
			retry := op.CreatedAt.Add(time.Minute)
			f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseUpload), Progress: store.Ptr(30),
				Attempt: store.Ptr(1), NextAttemptAt: &retry, Token: tok})
			f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing), Token: tok})
			f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseRebooting), Token: tok})
			done := f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: status.Success, Progress: store.Ptr(100), Token: tok})
			assert.Equal(t, status.PhaseRebooting, done.Phase)
			assert.Equal(t, 100, done.Progress)
			assert.Equal(t, 1, done.Attempt)
			requireEnded(t, done, status.Success, "engine-1", tok)
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, tok, "verified"), "logs append in any state")
			logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
			require.NoError(t, err)
			assert.Equal(t, []string{"connected", "verified"}, lines(logs))
			requireSame(t, done, f.get(op.ID))
		}},
		{"UnfencedWritesIgnoreToken", func(t *testing.T, f *fixture) {
			op := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0, "host note"))
			require.NoError(t, f.s.SetProgress(f.ctx, op.ID, 0, 20))
			got := f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseChecksum)})
			assert.Equal(t, status.PhaseChecksum, got.Phase)
			assert.Equal(t, 20, got.Progress)
			assert.Equal(t, op.Token, got.Token, "writes never change the token")
			assert.Equal(t, op.LeaseOwner, got.LeaseOwner)
			assert.WithinDuration(t, op.LeaseExpiresAt, got.LeaseExpiresAt, time.Millisecond, "nor the lease")
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, op.Token, "holder still writes"), "the holder's token is still current")
		}},
		{"UnfencedCancelEndsLease", func(t *testing.T, f *fixture) {
			running := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			pending := f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			for _, op := range []store.Operation{running, pending} {
				got := f.update(op.ID, store.OperationUpdate{From: op.State, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
				requireEnded(t, got, status.Cancelled, "engine-1", op.Token)
				_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: op.State, Progress: store.Ptr(50), Token: op.Token})
				require.ErrorIs(t, err, store.ErrInvalidTransition, "the holder's writes fail: the operation ended")
				require.ErrorIs(t, f.s.SetProgress(f.ctx, op.ID, op.Token, 50), store.ErrInvalidTransition)
				rs := f.renew("engine-1", longLease, leaseOf(op))
				assert.Equal(t, store.LeaseCancelRequested, rs[0].Status, "the holder learns of the cancel at its next renew")
				requireSame(t, got, f.get(op.ID), "renewing does not revive an ended lease")
			}
		}},
		{"TerminalTransitionEndsLease", func(t *testing.T, f *fixture) {
			for _, s := range []status.State{status.Success, status.Failed, status.Aborted} {
				op := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
				got := f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: s, Reason: reasonFor(s), Token: op.Token})
				requireEnded(t, got, s, "engine-1", op.Token)
				rs := f.renew("engine-1", longLease, leaseOf(op))
				assert.Equal(t, store.LeaseLost, rs[0].Status, "%s", s)
				assert.True(t, rs[0].ExpiresAt.IsZero(), "%s: a lost lease has no end", s)
				require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token), "%s: releasing an ended operation is no error", s)
				_, err := f.s.ClaimOperation(f.ctx, op.ID, "engine-2", longLease)
				require.ErrorIs(t, err, store.ErrInvalidTransition, "%s", s)
				requireSame(t, got, f.get(op.ID), "%s", s)
			}
		}},
		{"FlashingOnceStaleHolderLosesRace", func(t *testing.T, f *fixture) {
			const k = 10
			olds := make([]store.Operation, k)
			for i := range olds {
				olds[i] = f.claimedRunning("engine-1", shortLease, status.PhaseUpload)
			}
			time.Sleep(afterLease)
			curs := f.claim("engine-2", k, longLease)
			require.Len(t, curs, k)
			tokens := map[string]int64{}
			for _, c := range curs {
				tokens[c.ID] = c.Token
			}
			oldErr, curErr := make([]error, k), make([]error, k)
			var fns []func()
			for i, old := range olds {
				flash := func(tok int64, err *error) func() {
					return func() {
						_, *err = f.s.UpdateOperation(f.ctx, old.ID, store.OperationUpdate{
							From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing), Token: tok})
					}
				}
				fns = append(fns, flash(old.Token, &oldErr[i]), flash(tokens[old.ID], &curErr[i]))
			}
			race(fns...)
			for i, old := range olds {
				require.ErrorIs(t, oldErr[i], store.ErrStaleToken, "op %d: the old holder", i)
				require.NoError(t, curErr[i], "op %d: the new holder", i)
				got := f.get(old.ID)
				assert.Equal(t, status.PhaseFlashing, got.Phase)
				assert.Equal(t, tokens[old.ID], got.Token)
				_, err := f.s.UpdateOperation(f.ctx, old.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing), Token: old.Token})
				require.ErrorIs(t, err, store.ErrStaleToken, "op %d: the old holder, after", i)
			}
		}},
		{"FlashingOnceSameHolder", func(t *testing.T, f *fixture) {
			flash := func(op store.Operation) error {
				_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing), Token: op.Token})
				return err
			}
			op := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			require.NoError(t, flash(op))
			flashed := f.get(op.ID)
			require.ErrorIs(t, flash(op), store.ErrInvalidTransition, "twice in a row")
			f.update(op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseRebooting), Token: op.Token})
			rebooting := f.get(op.ID)
			require.ErrorIs(t, flash(op), store.ErrInvalidTransition, "after rebooting")
			_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing)})
			require.ErrorIs(t, err, store.ErrInvalidTransition, "unfenced")
			requireSame(t, rebooting, f.get(op.ID))
			assert.Equal(t, status.PhaseFlashing, flashed.Phase)

			// A new claim of a flashed operation (a crashed worker's) must
			// verify it, never flash it again.
			require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token))
			again := f.claimOne(op.ID, "engine-2", longLease)
			require.ErrorIs(t, flash(again), store.ErrInvalidTransition, "a new claim")
			assert.Equal(t, status.PhaseRebooting, f.get(op.ID).Phase)
		}},
		{"FlashingRaceOneWinner", func(t *testing.T, f *fixture) {
			for range 5 {
				op := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
				errs := make([]error, n)
				fns := make([]func(), n)
				for i := range fns {
					fns[i] = func() {
						_, errs[i] = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress,
							Phase: store.Ptr(status.PhaseFlashing), Log: []string{fmt.Sprintf("flash %d", i)}, Token: op.Token})
					}
				}
				race(fns...)
				ok := 0
				for _, err := range errs {
					if err == nil {
						ok++
						continue
					}
					require.ErrorIs(t, err, store.ErrInvalidTransition)
				}
				assert.Equal(t, 1, ok, "the move into flashing happens once")
				logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
				require.NoError(t, err)
				assert.Len(t, logs, 1, "only the winner's log line")
			}
		}},
		{"FlashingNeedsLiveLease", func(t *testing.T, f *fixture) {
			op := f.claimedRunning("engine-1", shortLease, status.PhaseUpload)
			released := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			require.NoError(t, f.s.ReleaseOperation(f.ctx, released.ID, released.Token))
			time.Sleep(afterLease)
			flash := func(op store.Operation) error {
				_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress,
					Phase: store.Ptr(status.PhaseFlashing), Log: []string{"flashing"}, Token: op.Token})
				return err
			}
			before := f.snapshot()
			require.ErrorIs(t, flash(op), store.ErrStaleToken, "the lease expired")
			require.ErrorIs(t, flash(released), store.ErrStaleToken, "the lease was released")
			f.requireUnchanged(before)

			rs := f.renew("engine-1", longLease, leaseOf(op))
			require.Equal(t, store.LeaseHeld, rs[0].Status, "nobody took the operation over")
			require.NoError(t, flash(op), "revived by RenewLeases")
			assert.Equal(t, status.PhaseFlashing, f.get(op.ID).Phase)
		}},
		{"RenewExtendsHeldLease", func(t *testing.T, f *fixture) {
			op := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			rs := f.renew("engine-1", 2*longLease, leaseOf(op))
			assert.Equal(t, leaseOf(op), rs[0].Lease)
			require.Equal(t, store.LeaseHeld, rs[0].Status)
			assert.True(t, rs[0].ExpiresAt.After(op.LeaseExpiresAt.Add(longLease/2)), "now+lease: %s, was %s", rs[0].ExpiresAt, op.LeaseExpiresAt)
			got := f.get(op.ID)
			assert.WithinDuration(t, rs[0].ExpiresAt, got.LeaseExpiresAt, time.Millisecond, "stored")
			assert.Equal(t, op.Token, got.Token, "renewing keeps the token")
			assert.Equal(t, op.LeaseOwner, got.LeaseOwner)
			assert.Equal(t, op.Version, got.Version, "renewals do not count as changes")

			expired := f.claimOne(f.newOp("org-a").ID, "engine-1", shortLease)
			time.Sleep(afterLease)
			rs = f.renew("engine-1", longLease, leaseOf(expired))
			require.Equal(t, store.LeaseHeld, rs[0].Status, "an expired lease nobody took over is renewed")
			assert.True(t, rs[0].ExpiresAt.After(expired.LeaseExpiresAt.Add(longLease/2)))
			_, err := f.s.ClaimOperation(f.ctx, expired.ID, "engine-2", longLease)
			require.ErrorIs(t, err, store.ErrLeased, "live again")
			assert.Empty(t, f.claim("engine-2", 10, longLease))
			assert.Empty(t, f.renew("engine-1", longLease), "nothing to renew")
		}},
		{"RenewAnswersInOrder", func(t *testing.T, f *fixture) {
			held := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			cancelled := f.claimedRunning("engine-1", longLease, status.PhaseConnecting)
			f.update(cancelled.ID, store.OperationUpdate{From: status.InProgress, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			failed := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			f.update(failed.ID, store.OperationUpdate{From: status.InProgress, State: status.Failed, Reason: status.ReasonFlashFailed, Token: failed.Token})
			takenOver := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			require.NoError(t, f.s.ReleaseOperation(f.ctx, takenOver.ID, takenOver.Token))
			f.claimOne(takenOver.ID, "engine-2", longLease)
			others := f.claimOne(f.newOp("org-a").ID, "engine-2", longLease)
			pendingCancelled := f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			f.update(pendingCancelled.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled})
			wrongToken := leaseOf(f.claimOne(f.newOp("org-a").ID, "engine-1", longLease))
			wrongToken.Token++
			unknown := store.Lease{OperationID: store.NewID(), Token: 1}

			leases := []store.Lease{unknown, leaseOf(cancelled), leaseOf(held), leaseOf(failed), leaseOf(takenOver),
				leaseOf(others), wrongToken, leaseOf(pendingCancelled)}
			want := []store.LeaseStatus{store.LeaseLost, store.LeaseCancelRequested, store.LeaseHeld, store.LeaseLost, store.LeaseLost,
				store.LeaseLost, store.LeaseLost, store.LeaseCancelRequested}
			before := f.snapshot()
			rs := f.renew("engine-1", 2*longLease, leases...)
			for i, r := range rs {
				assert.Equal(t, leases[i], r.Lease, "answer %d is for lease %d", i, i)
				assert.Equal(t, want[i], r.Status, "lease %d", i)
				if r.Status == store.LeaseLost {
					assert.True(t, r.ExpiresAt.IsZero(), "lease %d: lost, no end", i)
				}
			}
			assert.True(t, rs[2].ExpiresAt.After(held.LeaseExpiresAt))
			// Only the held lease changed.
			after := f.get(held.ID)
			assert.WithinDuration(t, rs[2].ExpiresAt, after.LeaseExpiresAt, time.Millisecond)
			for i := range before.Operations {
				if before.Operations[i].ID == held.ID {
					before.Operations[i] = after
				}
			}
			f.requireUnchanged(before)
		}},
		{"NextAttemptAtDefersClaim", func(t *testing.T, f *fixture) {
			// A retry NextAttemptAt = wait after the claim, on a pending
			// operation and on one in progress, scheduled with the claim's
			// token, then released.
			const wait = 500 * time.Millisecond
			var ops []store.Operation
			for _, op := range []store.Operation{f.claimOne(f.newOp("org-a").ID, "engine-1", longLease),
				f.claimedRunning("engine-1", longLease, status.PhaseConnecting)} {
				next := op.LeaseExpiresAt.Add(-longLease).Add(wait)
				f.update(op.ID, store.OperationUpdate{From: op.State, Attempt: store.Ptr(1), NextAttemptAt: &next, Token: op.Token})
				require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token))
				ops = append(ops, op)
			}
			assert.Empty(t, f.claim("engine-2", 10, longLease), "not before NextAttemptAt")
			time.Sleep(wait + 200*time.Millisecond)
			got := f.claim("engine-2", 10, longLease)
			assert.Equal(t, sorted(ops[0].ID, ops[1].ID), sorted(ids(got, opID)...), "due now")
			for _, g := range got {
				assert.Equal(t, int64(2), g.Token)
				assert.Equal(t, 1, g.Attempt)
			}
		}},
		{"ClaimOperationIgnoresNextAttemptAt", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			next := op.CreatedAt.Add(time.Hour)
			f.update(op.ID, store.OperationUpdate{From: status.Pending, NextAttemptAt: &next})
			assert.Empty(t, f.claim("engine-1", 10, longLease))
			got := f.claimOne(op.ID, "engine-1", longLease)
			assert.Equal(t, int64(1), got.Token)
			assert.WithinDuration(t, next, got.NextAttemptAt, time.Millisecond, "NextAttemptAt kept")
		}},
		{"DueOldestNextAttemptFirstThenID", func(t *testing.T, f *fixture) {
			// Hours before the first creation, out of ID order, with a tie.
			ago := []int{2, 5, 3, 5, 1, 4}
			ops := make([]store.Operation, len(ago))
			for i := range ops {
				ops[i] = f.newOp("org-a")
			}
			ref := ops[0].CreatedAt
			for i, op := range ops {
				at := ref.Add(-time.Duration(ago[i]) * time.Hour)
				ops[i] = f.update(op.ID, store.OperationUpdate{From: status.Pending, NextAttemptAt: &at})
			}
			want := slices.Clone(ops)
			slices.SortFunc(want, func(a, b store.Operation) int {
				if c := a.NextAttemptAt.Compare(b.NextAttemptAt); c != 0 {
					return c
				}
				return strings.Compare(a.ID, b.ID)
			})
			got := f.claim("engine-1", 4, longLease)
			got = append(got, f.claim("engine-1", 10, longLease)...)
			assert.Equal(t, ids(want, opID), ids(got, opID), "oldest NextAttemptAt first, then ID")

			// The same NextAttemptAt (never set): in ID order.
			var fresh []string
			for range 5 {
				fresh = append(fresh, f.newOp("org-a").ID)
			}
			var claimed []string
			for range fresh {
				one := f.claim("engine-1", 1, longLease)
				require.Len(t, one, 1)
				claimed = append(claimed, one[0].ID)
			}
			assert.Equal(t, sorted(fresh...), claimed)
		}},
		{"DueRetryBeforeNewerPending", func(t *testing.T, f *fixture) {
			// A retry that came due before newer operations were created is
			// claimed first: new work does not starve it.
			retry := f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			at := retry.CreatedAt
			retry = f.update(retry.ID, store.OperationUpdate{From: status.Pending, NextAttemptAt: &at, Token: retry.Token})
			require.NoError(t, f.s.ReleaseOperation(f.ctx, retry.ID, retry.Token))
			for range 3 {
				f.newOp("org-a")
			}
			got := f.claim("engine-2", 1, longLease)
			require.Len(t, got, 1)
			assert.Equal(t, retry.ID, got[0].ID, "the due retry first (store.DueAt), not the newer pending operations")
		}},
		{"RenewalCrossingReleaseIsLost", func(t *testing.T, f *fixture) {
			// A renewal sent before a release and arriving after it must not
			// lease the operation again: a release is final.
			op := f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token))
			rs, err := f.s.RenewLeases(f.ctx, "engine-1", longLease, []store.Lease{{OperationID: op.ID, Token: op.Token}})
			require.NoError(t, err)
			require.Len(t, rs, 1)
			assert.Equal(t, store.LeaseLost, rs[0].Status)
			assert.True(t, f.get(op.ID).LeaseExpiresAt.IsZero(), "still released")
			got := f.claim("engine-2", 1, longLease)
			require.Len(t, got, 1, "claimable at once by another engine")
		}},
		{"RetryAfterOnStoreClock", func(t *testing.T, f *fixture) {
			// Due times written as delays are measured on the store's clock
			// (the one claims compare them with), not the writer's.
			op := f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			d, dl := 90*time.Minute, 3*time.Hour
			upd := f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
				RetryAfter: &d, DeadlineAfter: &dl, Token: op.Token})
			assert.True(t, upd.NextAttemptAt.Equal(upd.UpdatedAt.Add(d)), "NextAttemptAt %s = UpdatedAt %s + %s", upd.NextAttemptAt, upd.UpdatedAt, d)
			assert.True(t, upd.Deadline.Equal(upd.UpdatedAt.Add(dl)), "Deadline %s = UpdatedAt %s + %s", upd.Deadline, upd.UpdatedAt, dl)
			require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token))
			assert.Empty(t, f.claim("engine-2", 1, longLease), "not due for 90 minutes")
			neg := -time.Second
			_, err := f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, RetryAfter: &neg})
			requireInvalid(t, err, "RetryAfter")
		}},
		{"ReleasedClaimableAgain", func(t *testing.T, f *fixture) {
			op := f.claimOne(f.newOp("org-a").ID, "engine-1", longLease)
			require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token))
			released := f.get(op.ID)
			assert.True(t, released.LeaseExpiresAt.IsZero(), "released: no lease")
			assert.Equal(t, op.Token, released.Token, "the token stays")
			assert.Equal(t, op.Version, released.Version, "releases do not count as changes")
			require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token), "releasing twice is harmless")
			requireSame(t, released, f.get(op.ID))

			got := f.claim("engine-2", 10, longLease)
			require.Len(t, got, 1)
			assert.Equal(t, op.ID, got[0].ID)
			assert.Equal(t, op.Token+1, got[0].Token)
			before := f.snapshot()
			require.ErrorIs(t, f.s.ReleaseOperation(f.ctx, op.ID, op.Token), store.ErrStaleToken, "a stale token releases nothing")
			f.requireUnchanged(before)
			assert.Empty(t, f.claim("engine-3", 10, longLease), "still engine-2's")

			f.update(op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
			require.NoError(t, f.s.ReleaseOperation(f.ctx, op.ID, got[0].Token), "releasing a terminal operation is no error")
			assert.Empty(t, f.claim("engine-3", 10, longLease))
		}},
		{"TerminalNeverClaimable", func(t *testing.T, f *fixture) {
			var ops []store.Operation
			for _, s := range []status.State{status.Success, status.Failed, status.Aborted, status.Cancelled} {
				ops = append(ops, f.drive(f.newOp("org-a").ID, s, status.PhaseConnecting))
				op := f.claimedRunning("engine-1", shortLease, status.PhaseUpload)
				ops = append(ops, f.update(op.ID, store.OperationUpdate{From: status.InProgress, State: s, Reason: reasonFor(s), Token: op.Token}))
			}
			time.Sleep(afterLease) // long past any lease: still not claimable
			before := f.snapshot()
			assert.Empty(t, f.claim("engine-2", 10, longLease))
			for _, op := range ops {
				_, err := f.s.ClaimOperation(f.ctx, op.ID, "engine-2", longLease)
				require.ErrorIs(t, err, store.ErrInvalidTransition, "%s", op.State)
			}
			f.requireUnchanged(before)
		}},
		{"ExpiredInProgressClaimableAgain", func(t *testing.T, f *fixture) {
			// Workers that crashed mid-attempt, before and after flashing.
			phases := []status.Phase{status.PhaseUpload, status.PhaseFlashing, status.PhaseRebooting}
			crashed := map[string]store.Operation{}
			for _, p := range phases {
				op := f.drive(f.newOp("org-a").ID, status.InProgress, p)
				crashed[op.ID] = f.claimOne(op.ID, "engine-1", shortLease)
			}
			time.Sleep(afterLease)
			got := f.claim("engine-2", 10, longLease)
			require.Len(t, got, len(phases))
			for _, g := range got {
				was := crashed[g.ID]
				assert.Equal(t, status.InProgress, g.State)
				assert.Equal(t, was.Phase, g.Phase, "the phase reached is kept")
				assert.Equal(t, was.Token+1, g.Token)
				assert.Equal(t, "engine-2", g.LeaseOwner)
			}
		}},
		{"PausedBatchHoldsPending", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", 3)
			f.start(ops[0].ID, status.PhaseConnecting)
			loose := f.newOp("org-a")
			_, err := f.s.SetBatchState(f.ctx, b.ID, status.BatchInProgress, status.BatchPaused)
			require.NoError(t, err)
			got := f.claim("engine-1", 10, longLease)
			assert.Equal(t, sorted(ops[0].ID, loose.ID), sorted(ids(got, opID)...),
				"a paused batch starts no pending operation; its operations in progress go on")
			byID := f.claimOne(ops[1].ID, "engine-1", longLease)
			assert.Equal(t, status.Pending, byID.State, "ClaimOperation ignores the batch's policy")
			assert.Empty(t, f.claim("engine-1", 10, longLease))
			_, err = f.s.SetBatchState(f.ctx, b.ID, status.BatchPaused, status.BatchInProgress)
			require.NoError(t, err)
			got = f.claim("engine-1", 10, longLease)
			assert.Equal(t, []string{ops[2].ID}, ids(got, opID), "resumed")
		}},
		{"ExpireDeadlinesEndsOverdue", func(t *testing.T, f *fixture) {
			b, bops := f.newBatch("org-a", 3)
			past := bops[0].CreatedAt.Add(-time.Hour)
			future := bops[0].CreatedAt.Add(time.Hour)
			pending := f.update(bops[0].ID, store.OperationUpdate{From: status.Pending, Deadline: &past})
			running := f.start(bops[1].ID, status.PhaseUpload)
			running = f.update(running.ID, store.OperationUpdate{From: status.InProgress, Deadline: &past})
			f.update(bops[2].ID, store.OperationUpdate{From: status.Pending, Deadline: &future})
			crashed := f.claimedRunning("engine-1", shortLease, status.PhaseMemory)
			f.update(crashed.ID, store.OperationUpdate{From: status.InProgress, Deadline: &past, Token: crashed.Token})
			// Waiting for a retry, its lease released.
			waiting := f.claimedRunning("engine-1", longLease, status.PhaseConnecting)
			f.update(waiting.ID, store.OperationUpdate{From: status.InProgress, Deadline: &past, NextAttemptAt: &future, Token: waiting.Token})
			require.NoError(t, f.s.ReleaseOperation(f.ctx, waiting.ID, waiting.Token))
			time.Sleep(afterLease)

			got, err := f.s.ExpireDeadlines(f.ctx, 100)
			require.NoError(t, err)
			assert.Equal(t, sorted(pending.ID, running.ID, crashed.ID, waiting.ID), sorted(ids(got, opID)...))
			phase := map[string]status.Phase{pending.ID: status.PhaseNone, running.ID: status.PhaseUpload,
				crashed.ID: status.PhaseMemory, waiting.ID: status.PhaseConnecting}
			for _, op := range got {
				assert.Equal(t, status.Failed, op.State)
				assert.Equal(t, status.ReasonTimeout, op.Reason)
				assert.Equal(t, phase[op.ID], op.Phase, "the phase reached is kept")
				assert.False(t, op.FinishedAt.IsZero())
				assert.True(t, op.LeaseExpiresAt.IsZero())
				requireSame(t, op, f.get(op.ID), "returned as stored")
			}
			gb := f.batch(b.ID)
			assert.Equal(t, map[status.State]int{status.Failed: 2, status.Pending: 1}, nonZero(gb.Counts), "the batch counts follow")
			assert.Equal(t, status.BatchInProgress, gb.State)

			again, err := f.s.ExpireDeadlines(f.ctx, 100)
			require.NoError(t, err)
			assert.Empty(t, again, "nothing ends twice")
			_, err = f.s.UpdateOperation(f.ctx, crashed.ID, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseUpload), Token: crashed.Token})
			require.ErrorIs(t, err, store.ErrInvalidTransition, "the crashed holder cannot write")
			assert.Equal(t, store.LeaseLost, f.renew("engine-1", longLease, leaseOf(crashed))[0].Status)
		}},
		{"ExpireDeadlinesSparesFlashingLeasedAndNotDue", func(t *testing.T, f *fixture) {
			ref := f.newOp("org-a") // no deadline
			past := ref.CreatedAt.Add(-time.Hour)
			future := ref.CreatedAt.Add(time.Hour)
			deadline := func(op store.Operation, at time.Time) store.Operation {
				return f.update(op.ID, store.OperationUpdate{From: op.State, Deadline: &at})
			}
			leased := f.claimOne(deadline(f.newOp("org-a"), past).ID, "engine-1", longLease)
			running := f.claimedRunning("engine-1", longLease, status.PhaseUpload)
			deadline(running, past)
			deadline(f.newOp("org-a"), future)
			for _, p := range []status.Phase{status.PhaseFlashing, status.PhaseRebooting, status.PhaseVerifying} {
				deadline(f.drive(f.newOp("org-a").ID, status.InProgress, p), past)
			}
			crashedFlashing := deadline(f.drive(f.newOp("org-a").ID, status.InProgress, status.PhaseFlashing), past)
			f.claimOne(crashedFlashing.ID, "engine-1", shortLease)
			done := deadline(f.newOp("org-a"), past)
			f.drive(done.ID, status.Success, status.PhaseVerifying)
			time.Sleep(afterLease)

			before := f.snapshot()
			got, err := f.s.ExpireDeadlines(f.ctx, 100)
			require.NoError(t, err)
			assert.Empty(t, got, "at or after flashing, leased, not due, no deadline or ended: left alone")
			f.requireUnchanged(before)

			// Once the lease ends, the deadline applies.
			f.renew("engine-1", shortLease, leaseOf(leased))
			time.Sleep(afterLease)
			got, err = f.s.ExpireDeadlines(f.ctx, 100)
			require.NoError(t, err)
			assert.Equal(t, []string{leased.ID}, ids(got, opID))
		}},
		{"ExpireDeadlinesLimit", func(t *testing.T, f *fixture) {
			var want []string
			for range 5 {
				op := f.newOp("org-a")
				past := op.CreatedAt.Add(-time.Hour)
				f.update(op.ID, store.OperationUpdate{From: status.Pending, Deadline: &past})
				want = append(want, op.ID)
			}
			var got []string
			for _, size := range []int{2, 2, 1, 0} {
				ops, err := f.s.ExpireDeadlines(f.ctx, 2)
				require.NoError(t, err)
				require.Len(t, ops, size)
				got = append(got, ids(ops, opID)...)
			}
			assert.Equal(t, sorted(want...), sorted(got...))
		}},
		{"ExpireDeadlinesConcurrentOnce", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", n)
			for _, op := range ops {
				past := op.CreatedAt.Add(-time.Hour)
				f.update(op.ID, store.OperationUpdate{From: status.Pending, Deadline: &past})
			}
			var mu sync.Mutex
			ended := map[string]int{}
			answers := 0 // operations returned, by all calls
			var errs []error
			fns := make([]func(), claimers)
			for i := range fns {
				fns[i] = func() {
					for {
						got, err := f.s.ExpireDeadlines(f.ctx, 3)
						mu.Lock()
						if err != nil {
							errs = append(errs, err)
						}
						for _, op := range got {
							ended[op.ID]++
						}
						answers += len(got)
						stop := err != nil || len(got) == 0 || answers > n // more than n: some ended twice
						mu.Unlock()
						if stop {
							return
						}
					}
				}
			}
			race(fns...)
			require.Empty(t, errs)
			// As for claims, a store may answer fewer while other calls
			// hold rows: sweep what is left.
			rest, err := f.s.ExpireDeadlines(f.ctx, n)
			require.NoError(t, err)
			for _, op := range rest {
				ended[op.ID]++
			}
			require.Len(t, ended, n, "every overdue operation ended")
			for id, times := range ended {
				assert.Equal(t, 1, times, "operation %s ended %d times", id, times)
			}
			gb := f.batch(b.ID)
			assert.Equal(t, map[status.State]int{status.Failed: n}, nonZero(gb.Counts))
			assert.Equal(t, status.BatchFailed, gb.State)
		}},
	}
}
