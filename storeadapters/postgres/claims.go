package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// How ClaimOperations works.
//
// Runnable operations wait in lanes, each an index range in claim order
// (store.DueAt, then ID), as the memory store's lanes do:
//
//   - the free lanes: operations outside any batch and those at or after
//     flashing (never held back by a batch), in progress and pending;
//   - per batch: its operations in progress before flashing, and its pending
//     operations of each wave.
//
// A claim first locks the rows of the batches that may start something (in
// progress, paused or idle with operations in progress; not cancelled) FOR
// NO KEY UPDATE in ID order and reads them, in one round trip, then counts
// what each capped batch uses of its rollout: leases live now (up to
// MaxConcurrent), per group with a group limit, and for the start
// rate its starts in flight (operations.start_in_flight under a live lease)
// plus the contacts of the last period (batch_starts), counted in one
// statement so that a start moving from one to the other is counted once.
// A batch capped, paused or outside its windows gets no
// lane, or only the lane ClaimAllowed can let through, each asked for no more
// operations than the batch can still start: a batch of 100,000 pending
// operations capped at 10 costs a few index probes, not a scan. The lanes are
// read in one round trip, each with FOR NO KEY UPDATE SKIP LOCKED (rows
// another claim holds are skipped, never waited for), merged in claim order,
// and every candidate goes through store.ClaimAllowed with its batch's use
// counted up as claims are taken. The claims (and their starts in flight)
// are written before the transaction commits, so the batch locks make
// checking and taking the caps one atomic step per batch across every
// process. A contact (store.Contacted, in UpdateOperation) turns a start in
// flight into a dated row of batch_starts in one transaction.
//
// Lock order, everywhere: operation rows before batch rows, batch rows in ID
// order; a claim takes batch rows first but never waits for an operation's
// row (SKIP LOCKED), so no cycle forms.

// claimRounds bounds how often ClaimOperations reads more of the lanes
// whose group limit refused operations.
const claimRounds = 4

// batchUse is a locked batch and what it uses of its rollout, counted up as
// the claim takes operations.
type batchUse struct {
	b       *store.Batch
	running int
	recent  int
	group   map[string]int
}

func (u *batchUse) use(group string) store.BatchUse {
	return store.BatchUse{Running: u.running, RunningInGroup: u.group[group], RecentStarts: u.recent}
}

// groupCol returns the devices column of a group key.
func groupCol(k store.GroupKey) string {
	if k == store.GroupByGroup {
		return "d.group_name"
	}
	return "d.location"
}

// lane is one index range of runnable operations.
type lane struct {
	batch   *batchUse // nil for a free lane
	started bool      // in progress, or pending
	wave    int
	need    int
	// got is how many rows the last read returned, refused whether the
	// group limit refused one of them.
	got     int
	refused bool
}

type candidate struct {
	op       store.Operation
	lane     *lane
	location string
	group    string
}

func (c candidate) groupOf(k store.GroupKey) string {
	switch k {
	case store.GroupByLocation:
		return c.location
	case store.GroupByGroup:
		return c.group
	}
	return ""
}

// claimOrder orders candidates as claims take them: in progress before
// pending, then store.DueAt, then ID.
func claimOrder(a, b store.Operation) int {
	ap, bp := a.State == status.Pending, b.State == status.Pending
	if ap != bp {
		if bp {
			return -1
		}
		return 1
	}
	if c := store.DueAt(a).Compare(store.DueAt(b)); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

const runnableCond = ` AND coalesce(o.next_attempt_at, o.created_at) <= $1
	AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= $1)
	AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= $1)`

const laneTail = ` ORDER BY coalesce(o.next_attempt_at, o.created_at), o.id LIMIT $2 FOR NO KEY UPDATE OF o SKIP LOCKED`

// laneQuery returns the query and arguments that read ln at t, without the
// operations of seen and of ln's batch's full groups.
func (s *Store) laneQuery(ln *lane, t time.Time, seen []string) (string, []any) {
	q := `SELECT ` + opCols + `, d.location, d.group_name FROM {{schema}}.operations o
		JOIN {{schema}}.devices d ON d.id = o.device_id WHERE `
	state := `'pending'`
	if ln.started {
		state = `'in-progress'`
	}
	args := []any{t, ln.need}
	if ln.batch == nil {
		q += `o.state = ` + state + ` AND (o.batch_id IS NULL OR o.after_flash)`
	} else {
		args = append(args, ln.batch.b.ID)
		q += `o.batch_id = $3 AND o.state = ` + state
		if ln.started {
			q += ` AND NOT o.after_flash`
		} else {
			args = append(args, ln.wave)
			q += ` AND o.wave = $4`
		}
		if r := ln.batch.b.Rollout; r.GroupLimit > 0 {
			var full []string
			for g, n := range ln.batch.group {
				if n >= r.GroupLimit {
					full = append(full, g)
				}
			}
			if len(full) > 0 {
				args = append(args, full)
				q += fmt.Sprintf(` AND NOT (%s = ANY($%d))`, groupCol(r.GroupBy), len(args))
			}
		}
	}
	if len(seen) > 0 {
		args = append(args, seen)
		q += fmt.Sprintf(` AND NOT (o.id = ANY($%d))`, len(args))
	}
	return s.sql(q + runnableCond + laneTail), args
}

// readLanes reads every lane in one round trip.
func (s *Store) readLanes(ctx context.Context, tx pgx.Tx, lanes []*lane, t time.Time, seen []string) ([]candidate, error) {
	b := &pgx.Batch{}
	var out []candidate
	for _, ln := range lanes {
		q, args := s.laneQuery(ln, t, seen)
		ln.got, ln.refused = 0, false
		b.Queue(q, args...).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var c candidate
				op, err := scanOp(rows, &c.location, &c.group)
				if err != nil {
					return err
				}
				c.op, c.lane = op, ln
				out = append(out, c)
				ln.got++
			}
			return rows.Err()
		})
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// ClaimOperations implements store.Claims (see the comment at the top of
// this file).
func (s *Store) ClaimOperations(ctx context.Context, owner string, limit int, lease time.Duration) ([]store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := store.ValidateClaim(owner, limit, lease); err != nil {
		return nil, err
	}
	var out []store.Operation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = []store.Operation{}
		locked, bs, t, err := s.lockLiveBatches(ctx, tx)
		if err != nil {
			return err
		}
		uses, err := s.batchUses(ctx, tx, bs, t)
		if err != nil {
			return err
		}
		lanes := []*lane{{started: true, need: limit}, {need: limit}}
		for _, id := range locked {
			u := uses[id]
			if u == nil {
				continue
			}
			lanes = append(lanes, batchLanes(u, limit, t)...)
		}
		var claimed []store.Operation
		var seen []string
		for round := 0; round < claimRounds && len(lanes) > 0 && len(claimed) < limit; round++ {
			cands, err := s.readLanes(ctx, tx, lanes, t, seen)
			if err != nil {
				return err
			}
			slices.SortFunc(cands, func(a, b candidate) int { return claimOrder(a.op, b.op) })
			for _, c := range cands {
				seen = append(seen, c.op.ID)
				if len(claimed) == limit {
					break
				}
				u := uses[c.op.BatchID]
				var group string
				if u != nil {
					group = c.groupOf(u.b.Rollout.GroupBy)
				}
				flashed := c.op.Phase.AfterPointOfNoReturn()
				if c.op.BatchID != "" && !flashed {
					if u == nil || !store.ClaimAllowed(u.b, u.use(group), c.op, t) {
						if c.lane.batch != nil && u != nil && u.b.Rollout.GroupLimit > 0 && !store.Capped(u.b.Rollout,
							store.BatchUse{Running: u.running, RecentStarts: u.recent}) {
							c.lane.refused = true
						}
						continue
					}
				}
				next := store.ApplyClaim(c.op, owner, t, lease)
				normOp(&next)
				claimed = append(claimed, next)
				if u != nil {
					u.running++
					u.group[group]++
					if !flashed {
						u.recent++
					}
				}
			}
			// Only lanes whose group limit refused operations, that may
			// hold more, are read again.
			var again []*lane
			for _, ln := range lanes {
				if ln.refused && ln.got == ln.need {
					ln.need = max(limit-len(claimed), 0)
					if ln.need > 0 {
						again = append(again, ln)
					}
				}
			}
			lanes = again
		}
		if err := s.writeOps(ctx, tx, claimed, claimFlights(claimed)); err != nil {
			return err
		}
		slices.SortFunc(claimed, claimOrder)
		out = claimed
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// liveBatches selects the batches that may have something to claim: in
// progress, paused or idle with operations in progress, not cancelled.
const liveBatches = `FROM {{schema}}.batches b
	WHERE b.state IN ('idle', 'in-progress', 'paused') AND NOT b.cancel_requested
	AND EXISTS (SELECT 1 FROM {{schema}}.batch_waves w WHERE w.batch_id = b.id
		AND (w.in_progress > 0 OR (b.state = 'in-progress' AND w.wave <= b.wave AND w.pending > 0)))`

// lockLiveBatches locks the rows of the live batches (liveBatches) in ID
// order, then reads the database's clock and the batches, in one round trip
// (the reads run once the locks are granted). It returns the locked IDs in
// order, the batches among them still live, and the time, normalised.
func (s *Store) lockLiveBatches(ctx context.Context, tx pgx.Tx) ([]string, map[string]*store.Batch, time.Time, error) {
	var (
		locked []string
		t      time.Time
	)
	bs := map[string]*store.Batch{}
	pb := &pgx.Batch{}
	pb.Queue(s.sql(`SELECT b.id ` + liveBatches + ` ORDER BY b.id FOR NO KEY UPDATE OF b`)).Query(func(rows pgx.Rows) error {
		var err error
		locked, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	pb.Queue(nowSQL).QueryRow(func(r pgx.Row) error { return r.Scan(&t) })
	// A batch that turned live after the lock above is read but not
	// locked: it is left out below, for the next claim.
	pb.Queue(s.sql(batchSelect + ` WHERE b.id IN (SELECT b.id ` + liveBatches + `)`)).Query(func(rows pgx.Rows) error {
		_, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct{}, error) {
			b, err := scanBatch(r)
			if err == nil {
				bs[b.ID] = &b
			}
			return struct{}{}, err
		})
		return err
	})
	if err := tx.SendBatch(ctx, pb).Close(); err != nil {
		return nil, nil, time.Time{}, err
	}
	for id := range bs {
		if _, ok := slices.BinarySearch(locked, id); !ok {
			delete(bs, id)
		}
	}
	return locked, bs, norm(t.UTC()), nil
}

// batchLanes returns the lanes of u's batch ClaimAllowed can let anything
// through at t, each asked for what the batch can still start.
func batchLanes(u *batchUse, limit int, t time.Time) []*lane {
	b := u.b
	if b.CancelRequested || b.State.Terminal() {
		return nil // only its flashed operations, in the free lane
	}
	need := limit
	if r := b.Rollout; r.MaxConcurrent > 0 {
		need = min(need, r.MaxConcurrent-u.running)
	}
	if r := b.Rollout; r.StartRate.Count > 0 {
		need = min(need, r.StartRate.Count-u.recent)
	}
	if need <= 0 {
		return nil // capped: ClaimAllowed refuses every claim before flashing
	}
	var lanes []*lane
	if b.Counts[status.InProgress] > 0 {
		lanes = append(lanes, &lane{batch: u, started: true, need: need})
	}
	if store.Hold(*b, t) == store.HoldNone {
		for w := 0; w <= b.Wave && w < len(b.WaveTallies); w++ {
			if b.WaveTallies[w].Counts[status.Pending] > 0 {
				lanes = append(lanes, &lane{batch: u, wave: w, need: need})
			}
		}
	}
	return lanes
}

// batchUses counts, for every batch of bs (locked), what ClaimAllowed reads
// of it, in one round trip: with a group limit the leases live at t per
// group; else with MaxConcurrent those leases up to the cap; with a start
// rate the starts in flight plus the contacts within the period. A batch
// without caps costs nothing here.
func (s *Store) batchUses(ctx context.Context, tx pgx.Tx, bs map[string]*store.Batch, t time.Time) (map[string]*batchUse, error) {
	uses := make(map[string]*batchUse, len(bs))
	if len(bs) == 0 {
		return uses, nil
	}
	pb := &pgx.Batch{}
	for id, b := range bs {
		u := &batchUse{b: b, group: map[string]int{}}
		uses[id] = u
		if b.Rollout.GroupLimit > 0 {
			pb.Queue(s.sql(`SELECT `+groupCol(b.Rollout.GroupBy)+`, count(*) FROM {{schema}}.operations o
				JOIN {{schema}}.devices d ON d.id = o.device_id
				WHERE o.batch_id = $1 AND o.lease_expires_at > $2 GROUP BY 1`), id, t).Query(func(rows pgx.Rows) error {
				var g string
				var n int
				_, err := pgx.ForEachRow(rows, []any{&g, &n}, func() error {
					u.group[g] = n
					u.running += n
					return nil
				})
				return err
			})
		} else if b.Rollout.MaxConcurrent > 0 {
			// Counted up to the cap: more changes nothing.
			pb.Queue(s.sql(`SELECT count(*) FROM (SELECT FROM {{schema}}.operations o
				WHERE o.batch_id = $1 AND o.lease_expires_at > $2 LIMIT $3) l`), id, t,
				b.Rollout.MaxConcurrent).QueryRow(func(r pgx.Row) error {
				return r.Scan(&u.running)
			})
		} // else nothing reads the count: ClaimAllowed checks no cap
		if b.Rollout.StartRate.Count > 0 {
			// One statement, one snapshot: a start moving from in flight
			// to contacted is counted once.
			pb.Queue(s.sql(`SELECT
				(SELECT count(*) FROM {{schema}}.operations o
					WHERE o.batch_id = $1 AND o.lease_expires_at > $2 AND o.start_in_flight)
				+ (SELECT count(*) FROM {{schema}}.batch_starts WHERE batch_id = $1 AND contacted_at > $3)`),
				id, t, t.Add(-b.Rollout.StartRate.Period())).QueryRow(func(r pgx.Row) error {
				return r.Scan(&u.recent)
			})
		}
	}
	if pb.Len() == 0 {
		return uses, nil
	}
	if err := tx.SendBatch(ctx, pb).Close(); err != nil {
		return nil, err
	}
	return uses, nil
}

// claimFlights returns what claims of ops do to their starts in flight: a
// claim before flashing of a batch's operation is one; any other claim
// forgets the start of the claim it took over.
func claimFlights(ops []store.Operation) []int16 {
	out := make([]int16, len(ops))
	for i, op := range ops {
		out[i] = flightClear
		if op.BatchID != "" && !op.Phase.AfterPointOfNoReturn() {
			out[i] = flightSet
		}
	}
	return out
}

// clearAll returns n flightClear: the operations ended.
func clearAll(n int) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = flightClear
	}
	return out
}

// ClaimOperation implements store.Claims. Claiming an operation of a batch
// before flashing locks the batch (after the operation, the usual order) so
// that the start in flight it makes is seen by every claim that checks the
// batch's start rate after it.
func (s *Store) ClaimOperation(ctx context.Context, id, owner string, lease time.Duration) (store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Operation{}, err
	}
	if err := store.ValidateClaim(owner, 1, lease); err != nil {
		return store.Operation{}, err
	}
	var out store.Operation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		op, t, err := s.lockOpNow(ctx, tx, id)
		if err != nil {
			return err
		}
		if op.BatchID != "" && !op.Phase.AfterPointOfNoReturn() && !op.State.Terminal() {
			if _, err := s.lockBatches(ctx, tx, []string{op.BatchID}); err != nil {
				return err
			}
		}
		t = norm(t)
		if err := store.CheckClaimOne(op, t); err != nil {
			return err
		}
		next := store.ApplyClaim(op, owner, t, lease)
		normOp(&next)
		if err := s.writeOps(ctx, tx, []store.Operation{next}, claimFlights([]store.Operation{next})); err != nil {
			return err
		}
		out = next
		return nil
	})
	if err != nil {
		return store.Operation{}, err
	}
	return out, nil
}

// RenewLeases implements store.Claims with store.RenewOne, on the rows of
// the leases' operations locked in ID order.
func (s *Store) RenewLeases(ctx context.Context, owner string, lease time.Duration, held []store.Lease) ([]store.Renewal, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := store.ValidateClaim(owner, 1, lease); err != nil {
		return nil, err
	}
	out := make([]store.Renewal, len(held))
	if len(held) == 0 {
		return out, nil
	}
	ids := make([]string, len(held))
	for i, l := range held {
		ids[i] = l.OperationID
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var (
			ops []store.Operation
			t   time.Time
		)
		pb := &pgx.Batch{}
		pb.Queue(s.sql(`SELECT `+opCols+` FROM {{schema}}.operations o WHERE o.id = ANY($1)
			ORDER BY o.id FOR NO KEY UPDATE`), ids).Query(func(rows pgx.Rows) (err error) {
			ops, err = collectOps(rows)
			return err
		})
		pb.Queue(nowSQL).QueryRow(func(r pgx.Row) error { return r.Scan(&t) })
		if err := tx.SendBatch(ctx, pb).Close(); err != nil {
			return err
		}
		t = norm(t.UTC())
		byID := make(map[string]store.Operation, len(ops))
		for _, op := range ops {
			byID[op.ID] = op
		}
		changed := map[string]bool{}
		for i, l := range held {
			op, found := byID[l.OperationID]
			r, next := store.RenewOne(op, found, l, owner, t, lease)
			if r.Status == store.LeaseHeld {
				normOp(&next)
				r.ExpiresAt = next.LeaseExpiresAt
				byID[op.ID] = next
				changed[op.ID] = true
			}
			out[i] = r
		}
		var writes []store.Operation
		for id := range changed {
			writes = append(writes, byID[id])
		}
		slices.SortFunc(writes, func(a, b store.Operation) int { return cmp.Compare(a.ID, b.ID) })
		return s.writeOps(ctx, tx, writes, nil)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReleaseOperation implements store.Claims with store.CheckRelease.
func (s *Store) ReleaseOperation(ctx context.Context, id string, token int64) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		op, err := s.lockOp(ctx, tx, id)
		if err != nil {
			return err
		}
		clear, err := store.CheckRelease(op, token)
		if err != nil || !clear {
			return err
		}
		_, err = tx.Exec(ctx, s.sql(`UPDATE {{schema}}.operations SET lease_expires_at = NULL, start_in_flight = false
			WHERE id = $1`), id)
		if err == nil {
			err = s.notifyWork(ctx, tx)
		}
		return err
	})
}

// ExpireDeadlines implements store.Claims with store.Expired and
// store.ExpireUpdate. The overdue rows are taken FOR NO KEY UPDATE SKIP
// LOCKED, so engines calling it at once end each operation once, then their
// batches are locked in ID order and their tallies updated.
func (s *Store) ExpireDeadlines(ctx context.Context, limit int) ([]store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, &store.ValidationError{Record: "claim", Field: "Limit", Problem: fmt.Sprintf("must be positive, got %d", limit)}
	}
	var out []store.Operation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = []store.Operation{}
		t, err := now(ctx, tx)
		if err != nil {
			return err
		}
		t = norm(t)
		rows, err := tx.Query(ctx, s.sql(`SELECT `+opCols+` FROM {{schema}}.operations o
			WHERE o.deadline <= $1 AND o.state IN ('pending', 'in-progress') AND NOT o.after_flash
				AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= $1)
			ORDER BY o.id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED`), t, limit)
		if err != nil {
			return err
		}
		ops, err := collectOps(rows)
		if err != nil {
			return err
		}
		ops = slices.DeleteFunc(ops, func(op store.Operation) bool { return !store.Expired(op, t) })
		var batchIDs []string
		for _, op := range ops {
			if op.BatchID != "" {
				batchIDs = append(batchIDs, op.BatchID)
			}
		}
		slices.Sort(batchIDs)
		batchIDs = slices.Compact(batchIDs)
		bs := map[string]*store.Batch{}
		if len(batchIDs) > 0 {
			locked, err := s.lockBatches(ctx, tx, batchIDs)
			if err != nil {
				return err
			}
			if bs, err = s.loadBatches(ctx, tx, locked); err != nil {
				return err
			}
		}
		logs := map[string][]string{}
		waves := map[string][]int{}
		var changed []store.Operation
		for _, op := range ops {
			u := store.ExpireUpdate(op)
			next, err := store.ApplyUpdate(op, u, t)
			if err != nil {
				return err
			}
			normOp(&next)
			changed = append(changed, next)
			logs[op.ID] = u.Log
			if b := bs[op.BatchID]; b != nil {
				store.Tally(b, &op, next)
				*b = store.AfterOperationChange(*b, next.Wave, op.State, next.State, t)
				waves[b.ID] = append(waves[b.ID], next.Wave)
			}
		}
		if err := s.writeOps(ctx, tx, changed, clearAll(len(changed))); err != nil {
			return err
		}
		if err := s.appendLogs(ctx, tx, t, logs); err != nil {
			return err
		}
		for _, id := range batchIDs {
			if b := bs[id]; b != nil {
				if err := s.writeBatch(ctx, tx, *b, waves[id]...); err != nil {
					return err
				}
			}
		}
		out = changed
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
