package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// batchSelect reads a batch with its wave tallies in one statement (so the
// two are consistent), from batches aliased b; scanBatch reads it.
const batchSelect = `SELECT b.id, b.organization, b.build_id, b.name, b.state, b.options::text,
	b.max_concurrent, b.start_rate_count, b.start_rate_per_ns, b.wave_counts, b.wave_percents, b.wave_wait_ns,
	b.failure_threshold, b.min_finished, b.success_threshold, b.group_limit, b.group_by, b.start_at,
	b.window_starts, b.window_ends, b.window_zones,
	b.wave, b.wave_settled_at, b.pause_reason, b.cancel_requested, b.created_at, b.updated_at,
	w.size, w.pending, w.in_progress, w.success, w.failed, w.aborted, w.cancelled, w.waiting
	FROM {{schema}}.batches b CROSS JOIN LATERAL (
		SELECT array_agg(size ORDER BY wave) size, array_agg(pending ORDER BY wave) pending,
			array_agg(in_progress ORDER BY wave) in_progress, array_agg(success ORDER BY wave) success,
			array_agg(failed ORDER BY wave) failed, array_agg(aborted ORDER BY wave) aborted,
			array_agg(cancelled ORDER BY wave) cancelled, array_agg(waiting ORDER BY wave) waiting
		FROM {{schema}}.batch_waves WHERE batch_id = b.id) w`

// waveStates are the states counted by batch_waves' columns, in column order.
var waveStates = []status.State{status.Pending, status.InProgress, status.Success, status.Failed, status.Aborted, status.Cancelled}

func scanBatch(r pgx.Row) (store.Batch, error) {
	var b store.Batch
	var options *string
	var waveCounts []int32
	var wavePercents []float64
	var perNS, waitNS int64
	var startAt, settled *time.Time
	var winStarts, winEnds []int32
	var winZones []string
	var maxConc, rateCount, minFinished, groupLimit int32
	var groupBy string
	var sizes, waiting []int32
	counts := make([][]int32, len(waveStates))
	dest := []any{&b.ID, &b.Organization, &b.BuildID, &b.Name, &b.State, &options,
		&maxConc, &rateCount, &perNS, &waveCounts, &wavePercents, &waitNS,
		&b.Rollout.FailureThreshold, &minFinished, &b.Rollout.SuccessThreshold, &groupLimit, &groupBy, &startAt,
		&winStarts, &winEnds, &winZones,
		&b.Wave, &settled, &b.PauseReason, &b.CancelRequested, &b.CreatedAt, &b.UpdatedAt, &sizes}
	for i := range counts {
		dest = append(dest, &counts[i])
	}
	dest = append(dest, &waiting)
	if err := r.Scan(dest...); err != nil {
		return store.Batch{}, err
	}
	b.Options = jsonBytes(options)
	ro := &b.Rollout
	ro.MaxConcurrent, ro.MinFinished, ro.GroupLimit = int(maxConc), int(minFinished), int(groupLimit)
	ro.StartRate = store.Rate{Count: int(rateCount), Per: time.Duration(perNS)}
	ro.WaveWait = time.Duration(waitNS)
	ro.GroupBy = store.GroupKey(groupBy)
	ro.StartAt = tv(startAt)
	for i := range waveCounts {
		ro.Waves = append(ro.Waves, store.WaveSize{Count: int(waveCounts[i]), Percent: wavePercents[i]})
	}
	for i := range winStarts {
		ro.Windows = append(ro.Windows, store.Window{Start: store.TimeOfDay(winStarts[i]), End: store.TimeOfDay(winEnds[i]),
			TimeZone: winZones[i]})
	}
	b.WaveSettledAt = tv(settled)
	b.CreatedAt, b.UpdatedAt = b.CreatedAt.UTC(), b.UpdatedAt.UTC()
	b.Counts = status.Counts{}
	b.WaveTallies = make([]store.WaveTally, len(sizes))
	for w := range sizes {
		t := store.WaveTally{Size: int(sizes[w]), Counts: status.Counts{}, Waiting: int(waiting[w])}
		for i, st := range waveStates {
			if n := int(counts[i][w]); n > 0 {
				t.Counts[st] = n
				b.Counts[st] += n
			}
		}
		b.WaveTallies[w] = t
	}
	return b, nil
}

// lockBatch locks batch id's row FOR NO KEY UPDATE until the transaction
// ends, then reads it, in one round trip: the read runs after the lock is
// granted, so it sees the last committed tallies.
func (s *Store) lockBatch(ctx context.Context, tx pgx.Tx, id string) (store.Batch, error) {
	var (
		b      store.Batch
		locked bool
	)
	pb := &pgx.Batch{}
	pb.Queue(s.sql(`SELECT true FROM {{schema}}.batches WHERE id = $1 FOR NO KEY UPDATE`), id).Query(
		func(rows pgx.Rows) error {
			for rows.Next() {
				locked = true
			}
			return rows.Err()
		})
	pb.Queue(s.sql(batchSelect+` WHERE b.id = $1`), id).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var err error
			if b, err = scanBatch(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	if err := tx.SendBatch(ctx, pb).Close(); err != nil {
		return store.Batch{}, err
	}
	if !locked {
		return store.Batch{}, notFound("batch", id)
	}
	return b, nil
}

// lockBatches locks the rows of the batches ids that exist, in ID order (the
// order every transaction locks batches in), and returns their IDs.
func (s *Store) lockBatches(ctx context.Context, tx pgx.Tx, ids []string) ([]string, error) {
	rows, err := tx.Query(ctx, s.sql(`SELECT id FROM {{schema}}.batches WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`), ids)
	if err != nil {
		return nil, err
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(ids) == 1 && len(got) == 0 {
		return nil, notFound("batch", ids[0])
	}
	return got, nil
}

// loadBatches reads the batches ids (locked by the caller) by ID.
func (s *Store) loadBatches(ctx context.Context, tx pgx.Tx, ids []string) (map[string]*store.Batch, error) {
	out := make(map[string]*store.Batch, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := tx.Query(ctx, s.sql(batchSelect+` WHERE b.id = ANY($1)`), ids)
	if err != nil {
		return nil, err
	}
	bs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Batch, error) { return scanBatch(r) })
	if err != nil {
		return nil, err
	}
	for i := range bs {
		out[bs[i].ID] = &bs[i]
	}
	return out, nil
}

// rolloutValues returns r's columns, in the order of batches' rollout
// columns (max_concurrent to window_zones).
func rolloutValues(r store.Rollout) []any {
	counts, percents := make([]int32, len(r.Waves)), make([]float64, len(r.Waves))
	for i, w := range r.Waves {
		counts[i], percents[i] = int32(w.Count), w.Percent
	}
	starts, ends, zones := make([]int32, len(r.Windows)), make([]int32, len(r.Windows)), make([]string, len(r.Windows))
	for i, w := range r.Windows {
		starts[i], ends[i], zones[i] = int32(w.Start), int32(w.End), w.TimeZone
	}
	return []any{int32(r.MaxConcurrent), int32(r.StartRate.Count), int64(r.StartRate.Per), counts, percents,
		int64(r.WaveWait), r.FailureThreshold, int32(r.MinFinished), r.SuccessThreshold, int32(r.GroupLimit),
		string(r.GroupBy), ts(r.StartAt), starts, ends, zones}
}

// cloneRollout returns r with its slices and pointers copied and StartAt as
// the store keeps it.
func cloneRollout(r store.Rollout) store.Rollout {
	r.Waves = slices.Clone(r.Waves)
	r.Windows = slices.Clone(r.Windows)
	if len(r.Waves) == 0 {
		r.Waves = nil
	}
	if len(r.Windows) == 0 {
		r.Windows = nil
	}
	if r.FailureThreshold != nil {
		r.FailureThreshold = store.Ptr(*r.FailureThreshold)
	}
	if r.SuccessThreshold != nil {
		r.SuccessThreshold = store.Ptr(*r.SuccessThreshold)
	}
	r.StartAt = norm(r.StartAt)
	return r
}

// writeBatch writes what the store keeps of b (state, wave, pause, cancel,
// rollout, updated_at), and the tallies of the given waves. The caller holds
// b's row locked.
func (s *Store) writeBatch(ctx context.Context, q execer, b store.Batch, waves ...int) error {
	args := append([]any{b.ID, string(b.State), string(b.PauseReason), int32(b.Wave), ts(b.WaveSettledAt),
		b.CancelRequested, ts(b.UpdatedAt)}, rolloutValues(b.Rollout)...)
	if _, err := q.Exec(ctx, s.sql(`UPDATE {{schema}}.batches SET state = $2, pause_reason = $3, wave = $4,
		wave_settled_at = $5, cancel_requested = $6, updated_at = $7,
		max_concurrent = $8, start_rate_count = $9, start_rate_per_ns = $10, wave_counts = $11, wave_percents = $12,
		wave_wait_ns = $13, failure_threshold = $14, min_finished = $15, success_threshold = $16, group_limit = $17,
		group_by = $18, start_at = $19, window_starts = $20, window_ends = $21, window_zones = $22
		WHERE id = $1`), args...); err != nil {
		return err
	}
	return s.writeWaves(ctx, q, b, false, waves...)
}

// writeWaves writes (or inserts) the tallies of b's given waves.
func (s *Store) writeWaves(ctx context.Context, q execer, b store.Batch, insert bool, waves ...int) error {
	slices.Sort(waves)
	waves = slices.Compact(waves)
	if len(waves) == 0 {
		return nil
	}
	n := len(waves)
	ws, sizes, waiting := make([]int32, n), make([]int32, n), make([]int32, n)
	counts := make([][]int32, len(waveStates))
	for i := range counts {
		counts[i] = make([]int32, n)
	}
	for j, w := range waves {
		t := b.WaveTallies[w]
		ws[j], sizes[j], waiting[j] = int32(w), int32(t.Size), int32(t.Waiting)
		for i, st := range waveStates {
			counts[i][j] = int32(t.Counts[st])
		}
	}
	stmt := `UPDATE {{schema}}.batch_waves bw SET size = u.size, pending = u.pending, in_progress = u.in_progress,
		success = u.success, failed = u.failed, aborted = u.aborted, cancelled = u.cancelled, waiting = u.waiting
		FROM unnest($2::integer[], $3::integer[], $4::integer[], $5::integer[], $6::integer[], $7::integer[],
			$8::integer[], $9::integer[], $10::integer[])
			AS u(wave, size, pending, in_progress, success, failed, aborted, cancelled, waiting)
		WHERE bw.batch_id = $1 AND bw.wave = u.wave`
	if insert {
		stmt = `INSERT INTO {{schema}}.batch_waves (batch_id, wave, size, pending, in_progress, success, failed, aborted,
			cancelled, waiting)
		SELECT $1, u.* FROM unnest($2::integer[], $3::integer[], $4::integer[], $5::integer[], $6::integer[],
			$7::integer[], $8::integer[], $9::integer[], $10::integer[])
			AS u(wave, size, pending, in_progress, success, failed, aborted, cancelled, waiting)`
	}
	args := []any{b.ID, ws, sizes}
	for _, c := range counts {
		args = append(args, c)
	}
	args = append(args, waiting)
	_, err := q.Exec(ctx, s.sql(stmt), args...)
	return err
}

func allWaves(b store.Batch) []int {
	out := make([]int, len(b.WaveTallies))
	for i := range out {
		out[i] = i
	}
	return out
}

// CreateBatch implements store.Batches: the batch, its waves and its
// operations in one transaction, the operations with COPY when there are
// many.
func (s *Store) CreateBatch(ctx context.Context, b store.Batch, ops []store.Operation) (store.Batch, []store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Batch{}, nil, err
	}
	if err := b.Validate(); err != nil {
		return store.Batch{}, nil, err
	}
	if len(ops) == 0 {
		return store.Batch{}, nil, &store.ValidationError{Record: "batch", Field: "Operations", Problem: "a batch needs at least one operation"}
	}
	for _, op := range ops {
		if err := op.Validate(); err != nil {
			return store.Batch{}, nil, err
		}
	}
	in := b
	var outB store.Batch
	var outOps []store.Operation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		b := in
		var buildOrg string
		err := tx.QueryRow(ctx, s.sql(`SELECT organization FROM {{schema}}.builds WHERE id = $1`), b.BuildID).Scan(&buildOrg)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("build", b.BuildID)
		}
		if err != nil {
			return err
		}
		if !store.ImageFitsOrganization(buildOrg, b.Organization) {
			return fmt.Errorf("%w: build %s of organization %q in a batch of organization %q",
				store.ErrOrganizationMismatch, b.BuildID, buildOrg, b.Organization)
		}
		if b.ID == "" {
			b.ID = store.NewID()
		} else {
			var exists bool
			if err := tx.QueryRow(ctx, s.sql(`SELECT EXISTS (SELECT 1 FROM {{schema}}.batches WHERE id = $1)`), b.ID).Scan(&exists); err != nil {
				return err
			}
			if exists {
				return fmt.Errorf("%w: batch %q exists", store.ErrConflict, b.ID)
			}
		}
		if b.State == "" {
			b.State = status.BatchIdle
		}
		b.Options = slices.Clone(b.Options)
		b.Rollout = cloneRollout(b.Rollout)
		sizes := store.WaveSizes(b.Rollout.Waves, len(ops))
		b.Counts = status.Counts{status.Pending: len(ops)}
		b.WaveTallies = make([]store.WaveTally, len(sizes))
		for i, n := range sizes {
			b.WaveTallies[i] = store.WaveTally{Size: n, Counts: status.Counts{status.Pending: n}}
		}
		prepared, t, err := s.prepareOps(ctx, tx, ops, &b)
		if err != nil {
			return err
		}
		b.CreatedAt, b.UpdatedAt = t, t
		wave, left := 0, sizes[0]
		for i := range prepared {
			if left == 0 {
				wave++
				left = sizes[wave]
			}
			prepared[i].Wave = wave
			left--
		}
		args := append([]any{b.ID, b.Organization, b.BuildID, b.Name, string(b.State), jsonText(b.Options),
			int32(len(sizes)), ts(t)}, rolloutValues(b.Rollout)...)
		if _, err := tx.Exec(ctx, s.sql(`INSERT INTO {{schema}}.batches (id, organization, build_id, name, state, options,
			wave_count, created_at, updated_at, wave, pause_reason, cancel_requested,
			max_concurrent, start_rate_count, start_rate_per_ns, wave_counts, wave_percents, wave_wait_ns,
			failure_threshold, min_finished, success_threshold, group_limit, group_by, start_at,
			window_starts, window_ends, window_zones)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 0, '', false,
				$9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)`), args...); err != nil {
			return err
		}
		if err := s.writeWaves(ctx, tx, b, true, allWaves(b)...); err != nil {
			return err
		}
		if err := s.insertOps(ctx, tx, prepared); err != nil {
			return err
		}
		if b.State == status.BatchInProgress {
			if err := s.notifyWork(ctx, tx); err != nil {
				return err
			}
		}
		outB, outOps = b, prepared
		return nil
	})
	if err != nil {
		return store.Batch{}, nil, err
	}
	for i := range outOps {
		outOps[i].Options = slices.Clone(outOps[i].Options)
	}
	return outB, outOps, nil
}

// Batch implements store.Batches.
func (s *Store) Batch(ctx context.Context, id string) (store.Batch, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Batch{}, err
	}
	b, err := scanBatch(s.pool.QueryRow(ctx, s.sql(batchSelect+` WHERE b.id = $1`), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Batch{}, notFound("batch", id)
	}
	if err != nil {
		return store.Batch{}, translate(err)
	}
	return b, nil
}

// ListBatches implements store.Batches.
func (s *Store) ListBatches(ctx context.Context, f store.BatchFilter) ([]store.Batch, error) {
	w := &where{}
	if f.Organization != "" {
		w.add("b.organization = " + w.arg(f.Organization))
	}
	if f.BuildID != "" {
		w.add("b.build_id = " + w.arg(f.BuildID))
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		w.add("b.state = ANY(" + w.arg(states) + ")")
	}
	return list(s, ctx, f.Page, batchSelect, w, "b.id", scanBatch)
}

// changeBatch runs fn on batch id, locked and loaded, and writes what fn
// returns.
func (s *Store) changeBatch(ctx context.Context, id string, fn func(b store.Batch, t time.Time) (store.Batch, error)) (store.Batch, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Batch{}, err
	}
	var out store.Batch
	err := s.tx(ctx, func(tx pgx.Tx) error {
		b, err := s.lockBatch(ctx, tx, id)
		if err != nil {
			return err
		}
		t, err := now(ctx, tx)
		if err != nil {
			return err
		}
		b, err = fn(b, norm(t))
		if err != nil {
			return err
		}
		out = b
		if err := s.writeBatch(ctx, tx, b); err != nil || b.State != status.BatchInProgress {
			return err
		}
		return s.notifyWork(ctx, tx)
	})
	if err != nil {
		return store.Batch{}, err
	}
	return out, nil
}

// SetBatchState implements store.Batches with store.CheckBatchStateChange
// and store.ApplyBatchState.
func (s *Store) SetBatchState(ctx context.Context, id string, from, to status.BatchState) (store.Batch, error) {
	return s.changeBatch(ctx, id, func(b store.Batch, t time.Time) (store.Batch, error) {
		if err := store.CheckBatchStateChange(b, from, to); err != nil {
			return b, err
		}
		return store.ApplyBatchState(b, to, t), nil
	})
}

// SetRollout implements store.Batches with store.CheckRolloutChange.
func (s *Store) SetRollout(ctx context.Context, id string, r store.Rollout) (store.Batch, error) {
	return s.changeBatch(ctx, id, func(b store.Batch, t time.Time) (store.Batch, error) {
		if err := store.CheckRolloutChange(b, r); err != nil {
			return b, err
		}
		b.Rollout = cloneRollout(r)
		b.UpdatedAt = t
		return b, nil
	})
}

// CancelBatch implements store.Batches with store.CancelInBatch. It locks
// the batch's non-terminal operations, then the batch (operations before
// batches, the order of UpdateOperation), and cancels the operations before
// flashing in one transaction. An operation created in the batch between
// the two locks makes it start over.
func (s *Store) CancelBatch(ctx context.Context, id string) (store.Batch, []store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Batch{}, nil, err
	}
	var outB store.Batch
	var outOps []store.Operation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.sql(`SELECT `+opCols+` FROM {{schema}}.operations o
			WHERE o.batch_id = $1 AND o.state IN ('pending', 'in-progress') ORDER BY o.id FOR NO KEY UPDATE`), id)
		if err != nil {
			return err
		}
		ops, err := collectOps(rows)
		if err != nil {
			return err
		}
		b, err := s.lockBatch(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := store.CheckBatchCancel(b); err != nil {
			return err
		}
		locked := make([]string, len(ops))
		for i, op := range ops {
			locked[i] = op.ID
		}
		var more bool
		if err := tx.QueryRow(ctx, s.sql(`SELECT EXISTS (SELECT 1 FROM {{schema}}.operations
			WHERE batch_id = $1 AND state IN ('pending', 'in-progress') AND NOT (id = ANY($2)))`), id, locked).Scan(&more); err != nil {
			return err
		}
		if more {
			return errRetry
		}
		t, err := now(ctx, tx)
		if err != nil {
			return err
		}
		t = norm(t)
		b.CancelRequested = true
		b.UpdatedAt = t
		var changed []store.Operation
		logs := map[string][]string{}
		waves := map[int]bool{}
		for _, op := range ops {
			u, ok := store.CancelInBatch(op)
			if !ok {
				continue
			}
			next, err := store.ApplyUpdate(op, u, t)
			if err != nil { // cannot happen: CancelInBatch checked the state
				return err
			}
			normOp(&next)
			changed = append(changed, next)
			logs[op.ID] = u.Log
			store.Tally(&b, &op, next)
			b = store.AfterOperationChange(b, next.Wave, op.State, next.State, t)
			waves[next.Wave] = true
		}
		if err := s.writeOps(ctx, tx, changed, clearAll(len(changed))); err != nil {
			return err
		}
		if err := s.appendLogs(ctx, tx, t, logs); err != nil {
			return err
		}
		var ws []int
		for w := range waves {
			ws = append(ws, w)
		}
		if err := s.writeBatch(ctx, tx, b, ws...); err != nil {
			return err
		}
		if err := s.notifyCancelled(ctx, tx, ops, changed); err != nil {
			return err
		}
		outB, outOps = b, changed
		return nil
	})
	if err != nil {
		return store.Batch{}, nil, err
	}
	return outB, outOps, nil
}

// advancePage is how many batches AdvanceBatches locks at a time.
const advancePage = 100

// AdvanceBatches implements store.Batches with store.NextWave. It looks
// only at batches in progress whose current wave settled (or whose wave
// wait runs) and that have a wave left, locked in ID order.
func (s *Store) AdvanceBatches(ctx context.Context, limit int) ([]store.Batch, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, &store.ValidationError{Record: "batch", Field: "Limit", Problem: fmt.Sprintf("must be positive, got %d", limit)}
	}
	var out []store.Batch
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		after := ""
		for len(out) < limit {
			rows, err := tx.Query(ctx, s.sql(`SELECT b.id FROM {{schema}}.batches b
				JOIN {{schema}}.batch_waves w ON w.batch_id = b.id AND w.wave = b.wave
				WHERE b.state = 'in-progress' AND NOT b.cancel_requested AND b.wave < b.wave_count - 1
					AND (b.wave_settled_at IS NOT NULL OR (w.in_progress = 0 AND w.pending = w.waiting))
					AND b.id > $1
				ORDER BY b.id LIMIT $2`), after, advancePage)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				break
			}
			after = ids[len(ids)-1]
			locked, err := s.lockBatches(ctx, tx, ids)
			if err != nil {
				return err
			}
			bs, err := s.loadBatches(ctx, tx, locked)
			if err != nil {
				return err
			}
			t, err := now(ctx, tx)
			if err != nil {
				return err
			}
			t = norm(t)
			for _, id := range locked {
				if len(out) == limit {
					break
				}
				next, changed := store.NextWave(*bs[id], t)
				if !changed {
					continue
				}
				if err := s.writeBatch(ctx, tx, next); err != nil {
					return err
				}
				out = append(out, next)
			}
		}
		return s.notifyAdvanced(ctx, tx, out)
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []store.Batch{}
	}
	return out, nil
}
