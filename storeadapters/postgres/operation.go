package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// opCols are the columns scanOp reads, from operations aliased o.
const opCols = `o.id, o.organization, o.device_id, o.image_id, o.batch_id, o.wave, o.state, o.phase, o.progress, o.reason,
	o.options::text, o.attempt, o.next_attempt_at, o.deadline, o.token, o.lease_owner, o.lease_expires_at, o.version,
	o.created_at, o.updated_at, o.started_at, o.finished_at`

// scanOp reads opCols, and extra destinations after them.
func scanOp(r pgx.Row, extra ...any) (store.Operation, error) {
	var op store.Operation
	var batchID, options *string
	var next, deadline, lease, started, finished *time.Time
	dest := append([]any{&op.ID, &op.Organization, &op.DeviceID, &op.ImageID, &batchID, &op.Wave, &op.State, &op.Phase,
		&op.Progress, &op.Reason, &options, &op.Attempt, &next, &deadline, &op.Token, &op.LeaseOwner, &lease, &op.Version,
		&op.CreatedAt, &op.UpdatedAt, &started, &finished}, extra...)
	if err := r.Scan(dest...); err != nil {
		return store.Operation{}, err
	}
	if batchID != nil {
		op.BatchID = *batchID
	}
	op.Options = jsonBytes(options)
	op.NextAttemptAt, op.Deadline, op.LeaseExpiresAt = tv(next), tv(deadline), tv(lease)
	op.StartedAt, op.FinishedAt = tv(started), tv(finished)
	op.CreatedAt, op.UpdatedAt = op.CreatedAt.UTC(), op.UpdatedAt.UTC()
	return op, nil
}

func collectOps(rows pgx.Rows) ([]store.Operation, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Operation, error) { return scanOp(r) })
}

const lockOpSQL = `SELECT ` + opCols + ` FROM {{schema}}.operations o WHERE o.id = $1 FOR NO KEY UPDATE`

// lockOp reads operation id, locking its row until the transaction ends.
func (s *Store) lockOp(ctx context.Context, tx pgx.Tx, id string) (store.Operation, error) {
	op, err := scanOp(tx.QueryRow(ctx, s.sql(lockOpSQL), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return op, notFound("operation", id)
	}
	return op, err
}

func tsz(t time.Time) pgtype.Timestamptz {
	if t.IsZero() {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: norm(t), Valid: true}
}

// What writeOps does with an operation's start_in_flight.
const (
	flightKeep  int16 = iota
	flightSet         // a claim before flashing of a batch's operation
	flightClear       // the start reached its device, or ended without
)

// pipelinedRows is how many operations writeOps writes with one statement
// each (a primary-key update, planned well however the table grows, sent in
// one round trip); more are written with one statement over arrays.
const pipelinedRows = 64

// writeOps writes the mutable fields of ops, whose rows the transaction
// holds locked; flight[i] (all flightKeep when nil) says what becomes of
// ops[i]'s start in flight. Given a transaction, it sends its statements in
// one round trip.
func (s *Store) writeOps(ctx context.Context, q execer, ops []store.Operation, flight []int16) error {
	if len(ops) == 0 {
		return nil
	}
	if flight == nil {
		flight = make([]int16, len(ops))
	}
	if len(ops) > pipelinedRows {
		return s.writeManyOps(ctx, q, ops, flight)
	}
	if tx, ok := q.(pgx.Tx); ok && len(ops) > 1 {
		var p queue
		if err := s.writeOps(ctx, &p, ops, flight); err != nil {
			return err
		}
		return p.send(ctx, tx)
	}
	for i, op := range ops {
		if _, err := q.Exec(ctx, s.sql(`UPDATE {{schema}}.operations SET state = $2, phase = $3, after_flash = $4,
			progress = $5, reason = $6, attempt = $7, next_attempt_at = $8, deadline = $9, token = $10,
			lease_owner = $11, lease_expires_at = $12, version = $13, updated_at = $14, started_at = $15,
			finished_at = $16,
			start_in_flight = CASE $17::smallint WHEN 1 THEN true WHEN 2 THEN false ELSE start_in_flight END
			WHERE id = $1`),
			op.ID, string(op.State), string(op.Phase), op.Phase.AfterPointOfNoReturn(), int32(op.Progress),
			string(op.Reason), int32(op.Attempt), tsz(op.NextAttemptAt), tsz(op.Deadline), op.Token, op.LeaseOwner,
			tsz(op.LeaseExpiresAt), op.Version, tsz(op.UpdatedAt), tsz(op.StartedAt), tsz(op.FinishedAt),
			flight[i]); err != nil {
			return err
		}
	}
	return nil
}

// writeManyOps is writeOps for many operations: one statement over arrays.
func (s *Store) writeManyOps(ctx context.Context, q execer, ops []store.Operation, flight []int16) error {
	n := len(ops)
	var (
		ids, states, phases, reasons, owners = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		after                                = make([]bool, n)
		progress, attempts                   = make([]int32, n), make([]int32, n)
		tokens, versions                     = make([]int64, n), make([]int64, n)
		next, deadline, lease, updated       = make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
		started, finished                    = make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
	)
	for i, op := range ops {
		ids[i], states[i], phases[i], reasons[i], owners[i] = op.ID, string(op.State), string(op.Phase), string(op.Reason), op.LeaseOwner
		after[i] = op.Phase.AfterPointOfNoReturn()
		progress[i], attempts[i] = int32(op.Progress), int32(op.Attempt)
		tokens[i], versions[i] = op.Token, op.Version
		next[i], deadline[i], lease[i], updated[i] = tsz(op.NextAttemptAt), tsz(op.Deadline), tsz(op.LeaseExpiresAt), tsz(op.UpdatedAt)
		started[i], finished[i] = tsz(op.StartedAt), tsz(op.FinishedAt)
	}
	_, err := q.Exec(ctx, s.sql(`UPDATE {{schema}}.operations o SET state = u.state, phase = u.phase,
		after_flash = u.after_flash, progress = u.progress, reason = u.reason, attempt = u.attempt,
		next_attempt_at = u.next_attempt_at, deadline = u.deadline, token = u.token, lease_owner = u.lease_owner,
		lease_expires_at = u.lease_expires_at, version = u.version, updated_at = u.updated_at,
		started_at = u.started_at, finished_at = u.finished_at,
		start_in_flight = CASE u.flight WHEN 1 THEN true WHEN 2 THEN false ELSE o.start_in_flight END
		FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::integer[], $6::text[], $7::integer[],
			$8::timestamptz[], $9::timestamptz[], $10::bigint[], $11::text[], $12::timestamptz[], $13::bigint[],
			$14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::smallint[])
		AS u(id, state, phase, after_flash, progress, reason, attempt, next_attempt_at, deadline, token, lease_owner,
			lease_expires_at, version, updated_at, started_at, finished_at, flight)
		WHERE o.id = u.id AND o.id = ANY($1)`),
		ids, states, phases, after, progress, reasons, attempts, next, deadline, tokens, owners, lease, versions,
		updated, started, finished, flight)
	return err
}

// appendLogs appends lines to the logs of the operations whose rows the
// transaction holds locked (which serializes the numbering), at t, in one
// statement. Lines are truncated with store.TruncateLogLine.
func (s *Store) appendLogs(ctx context.Context, q execer, t time.Time, logs map[string][]string) error {
	var ids, lines []string
	for id, ls := range logs {
		for _, l := range ls {
			ids, lines = append(ids, id), append(lines, store.TruncateLogLine(l))
		}
	}
	if len(ids) == 0 {
		return nil
	}
	_, err := q.Exec(ctx, s.sql(`INSERT INTO {{schema}}.operation_logs (operation_id, seq, time, line)
		SELECT u.id, coalesce(m.last, 0) + row_number() OVER (PARTITION BY u.id ORDER BY u.n), $3, u.line
		FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(id, line, n)
		LEFT JOIN (SELECT operation_id, max(seq) AS last FROM {{schema}}.operation_logs
			WHERE operation_id = ANY($1) GROUP BY operation_id) m ON m.operation_id = u.id`),
		ids, lines, norm(t))
	return err
}

// ---- creation ----

type devInfo struct{ org string }

type imageInfo struct{ buildID, org string }

// prepareOps checks new operations against the store, in the order given and
// with the rules of CreateOperation, and returns the records to insert. b is
// the batch they join, or nil. The devices are read FOR KEY SHARE, so that
// none moves to another organization before the transaction ends.
func (s *Store) prepareOps(ctx context.Context, tx pgx.Tx, ops []store.Operation, b *store.Batch) ([]store.Operation, time.Time, error) {
	devIDs := make([]string, 0, len(ops))
	imIDs := make([]string, 0, 1)
	var givenIDs []string
	seenIm := map[string]bool{}
	for _, op := range ops {
		devIDs = append(devIDs, op.DeviceID)
		if !seenIm[op.ImageID] {
			seenIm[op.ImageID] = true
			imIDs = append(imIDs, op.ImageID)
		}
		if op.ID != "" {
			givenIDs = append(givenIDs, op.ID)
		}
	}
	// The reads go in one round trip, the clock last (after the locks).
	var (
		id, org, build, dev string
		t                   time.Time
	)
	devs := make(map[string]devInfo, len(ops))
	ims := map[string]imageInfo{}
	busyOp := map[string]string{} // device -> its non-terminal operation
	taken := map[string]bool{}
	pb := &pgx.Batch{}
	pb.Queue(s.sql(`SELECT id, organization FROM {{schema}}.devices WHERE id = ANY($1) FOR KEY SHARE`), devIDs).Query(
		func(rows pgx.Rows) error {
			_, err := pgx.ForEachRow(rows, []any{&id, &org}, func() error { devs[id] = devInfo{org}; return nil })
			return err
		})
	pb.Queue(s.sql(`SELECT id, build_id, organization FROM {{schema}}.images WHERE id = ANY($1)`), imIDs).Query(
		func(rows pgx.Rows) error {
			_, err := pgx.ForEachRow(rows, []any{&id, &build, &org}, func() error { ims[id] = imageInfo{build, org}; return nil })
			return err
		})
	pb.Queue(s.sql(`SELECT device_id, id FROM {{schema}}.operations
		WHERE device_id = ANY($1) AND state IN ('pending', 'in-progress')`), devIDs).Query(func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&dev, &id}, func() error { busyOp[dev] = id; return nil })
		return err
	})
	if len(givenIDs) > 0 {
		pb.Queue(s.sql(`SELECT id FROM {{schema}}.operations WHERE id = ANY($1)`), givenIDs).Query(func(rows pgx.Rows) error {
			_, err := pgx.ForEachRow(rows, []any{&id}, func() error { taken[id] = true; return nil })
			return err
		})
	}
	pb.Queue(nowSQL).QueryRow(func(r pgx.Row) error { return r.Scan(&t) })
	if err := tx.SendBatch(ctx, pb).Close(); err != nil {
		return nil, time.Time{}, err
	}
	t = norm(t.UTC())
	out := make([]store.Operation, 0, len(ops))
	inBatch := make(map[string]bool, len(ops))
	for _, op := range ops {
		d, ok := devs[op.DeviceID]
		if !ok {
			return nil, t, notFound("device", op.DeviceID)
		}
		im, ok := ims[op.ImageID]
		if !ok {
			return nil, t, notFound("image", op.ImageID)
		}
		if err := store.CheckOperationFits(op, d.org, im.org, im.buildID, b); err != nil {
			return nil, t, err
		}
		if b != nil {
			op.BatchID = b.ID
		}
		if other, ok := busyOp[op.DeviceID]; ok {
			return nil, t, fmt.Errorf("%w: device %q has operation %s", store.ErrDeviceBusy, op.DeviceID, other)
		}
		if inBatch[op.DeviceID] {
			return nil, t, fmt.Errorf("%w: device %q appears twice in the batch", store.ErrDeviceBusy, op.DeviceID)
		}
		inBatch[op.DeviceID] = true
		if op.ID == "" {
			op.ID = store.NewID()
		} else if taken[op.ID] {
			return nil, t, fmt.Errorf("%w: operation %q exists", store.ErrConflict, op.ID)
		} else {
			taken[op.ID] = true
		}
		op.Organization = d.org
		op.State = status.Pending
		op.Options = slices.Clone(op.Options)
		op.Version = 1
		op.CreatedAt, op.UpdatedAt = t, t
		op.StartedAt, op.FinishedAt = time.Time{}, time.Time{}
		normOp(&op)
		out = append(out, op)
	}
	return out, t, nil
}

// opColumns are the columns insertOps writes, in opValues' order.
var opColumns = []string{"id", "organization", "device_id", "image_id", "batch_id", "wave", "state", "phase", "after_flash",
	"progress", "reason", "options", "attempt", "next_attempt_at", "deadline", "token", "lease_owner", "lease_expires_at",
	"start_in_flight", "version", "created_at", "updated_at", "started_at", "finished_at"}

func opValues(op store.Operation) []any {
	var batch any
	if op.BatchID != "" {
		batch = op.BatchID
	}
	return []any{op.ID, op.Organization, op.DeviceID, op.ImageID, batch, int32(op.Wave), string(op.State), string(op.Phase),
		op.Phase.AfterPointOfNoReturn(), int32(op.Progress), string(op.Reason), jsonText(op.Options), int32(op.Attempt),
		ts(op.NextAttemptAt), ts(op.Deadline), op.Token, op.LeaseOwner, ts(op.LeaseExpiresAt), false, op.Version,
		ts(op.CreatedAt), ts(op.UpdatedAt), ts(op.StartedAt), ts(op.FinishedAt)}
}

// copyThreshold is from how many operations insertOps uses COPY.
const copyThreshold = 64

// insertOps inserts prepared operations: with COPY when there are many. It
// inserts them in device order, so that two transactions inserting
// operations of the same devices wait for each other in one order (the
// one-operation-per-device index), not into a deadlock.
var insertOpSQL = `INSERT INTO {{schema}}.operations (` + strings.Join(opColumns, ", ") + `) VALUES (` +
	placeholders(len(opColumns)) + `)`

func (s *Store) insertOps(ctx context.Context, tx pgx.Tx, ops []store.Operation) error {
	ops = slices.Clone(ops)
	slices.SortFunc(ops, func(a, b store.Operation) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	if len(ops) >= copyThreshold {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{s.schema, "operations"}, opColumns,
			pgx.CopyFromSlice(len(ops), func(i int) ([]any, error) { return opValues(ops[i]), nil }))
		return err
	}
	b := &pgx.Batch{}
	q := s.sql(insertOpSQL)
	for _, op := range ops {
		b.Queue(q, opValues(op)...)
	}
	return tx.SendBatch(ctx, b).Close()
}

func placeholders(n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = fmt.Sprintf("$%d", i+1)
	}
	return strings.Join(ps, ", ")
}

// CreateOperation implements store.Operations. An operation with a BatchID
// joins that batch (locked until the transaction ends), in its last wave.
func (s *Store) CreateOperation(ctx context.Context, op store.Operation) (store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Operation{}, err
	}
	if err := op.Validate(); err != nil {
		return store.Operation{}, err
	}
	var out store.Operation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var b *store.Batch
		if op.BatchID != "" {
			bt, err := s.lockBatch(ctx, tx, op.BatchID)
			if err != nil {
				return err
			}
			if err := store.CheckBatchJoin(bt); err != nil {
				return err
			}
			b = &bt
		}
		prepared, t, err := s.prepareOps(ctx, tx, []store.Operation{op}, b)
		if err != nil {
			return err
		}
		p := &prepared[0]
		if b != nil {
			p.Wave = len(b.WaveTallies) - 1 // joins the last wave
			b.WaveTallies[p.Wave].Size++
		}
		var q queue // the writes, in one round trip
		if _, err := q.Exec(ctx, s.sql(insertOpSQL), opValues(*p)...); err != nil {
			return err
		}
		if b != nil {
			store.Tally(b, nil, *p)
			*b = store.AfterOperationChange(*b, p.Wave, "", p.State, t)
			if err := s.writeBatch(ctx, &q, *b, p.Wave); err != nil {
				return err
			}
		}
		if b == nil || b.State == status.BatchInProgress {
			if err := s.notifyWork(ctx, &q); err != nil {
				return err
			}
		}
		out = *p
		return q.send(ctx, tx)
	})
	if err != nil {
		return store.Operation{}, err
	}
	return out, nil
}

// ---- reads ----

// Operation implements store.Operations.
func (s *Store) Operation(ctx context.Context, id string) (store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Operation{}, err
	}
	op, err := scanOp(s.pool.QueryRow(ctx, s.sql(`SELECT `+opCols+` FROM {{schema}}.operations o WHERE o.id = $1`), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Operation{}, notFound("operation", id)
	}
	if err != nil {
		return store.Operation{}, translate(err)
	}
	return op, nil
}

// ListOperations implements store.Operations.
func (s *Store) ListOperations(ctx context.Context, f store.OperationFilter) ([]store.Operation, error) {
	w := &where{}
	from := `SELECT ` + opCols + ` FROM {{schema}}.operations o`
	if f.BuildID != "" {
		from += ` JOIN {{schema}}.images i ON i.id = o.image_id`
		w.add("i.build_id = " + w.arg(f.BuildID))
	}
	if f.Group != "" || f.Location != "" {
		from += ` JOIN {{schema}}.devices d ON d.id = o.device_id`
		if f.Group != "" {
			w.add("d.group_name = " + w.arg(f.Group))
		}
		if f.Location != "" {
			w.add("d.location = " + w.arg(f.Location))
		}
	}
	if f.Organization != "" {
		w.add("o.organization = " + w.arg(f.Organization))
	}
	if f.ImageID != "" {
		w.add("o.image_id = " + w.arg(f.ImageID))
	}
	if f.BatchID != "" {
		w.add("o.batch_id = " + w.arg(f.BatchID))
	}
	if f.DeviceID != "" {
		w.add("o.device_id = " + w.arg(f.DeviceID))
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		w.add("o.state = ANY(" + w.arg(states) + ")")
	}
	return list(s, ctx, f.Page, from, w, "o.id", func(r pgx.Row) (store.Operation, error) { return scanOp(r) })
}

// Logs implements store.Operations. A negative limit is ErrInvalid.
func (s *Store) Logs(ctx context.Context, id string, afterSeq int64, limit int) ([]store.LogEntry, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, &store.ValidationError{Record: "log", Field: "Limit", Problem: fmt.Sprintf("is negative (%d)", limit)}
	}
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	// One statement: the operation's row (to tell an unknown operation from
	// an empty log) and its lines.
	rows, err := s.pool.Query(ctx, s.sql(`SELECT l.seq, l.time, l.line FROM {{schema}}.operations o
		LEFT JOIN LATERAL (SELECT seq, time, line FROM {{schema}}.operation_logs
			WHERE operation_id = o.id AND seq > $2 ORDER BY seq LIMIT $3) l ON true
		WHERE o.id = $1 ORDER BY l.seq`), id, afterSeq, lim)
	if err != nil {
		return nil, translate(err)
	}
	found := false
	out := []store.LogEntry{}
	var seq *int64
	var t *time.Time
	var line *string
	_, err = pgx.ForEachRow(rows, []any{&seq, &t, &line}, func() error {
		found = true
		if seq != nil {
			out = append(out, store.LogEntry{OperationID: id, Seq: *seq, Time: tv(t), Line: *line})
		}
		return nil
	})
	if err != nil {
		return nil, translate(err)
	}
	if !found {
		return nil, notFound("operation", id)
	}
	return out, nil
}

// ---- writes ----

// UpdateOperation implements store.Operations with store.ApplyUpdate, on the
// operation's row locked FOR NO KEY UPDATE; a change of state updates its
// batch's tallies and state in the same transaction. Its writes go in one
// round trip (see queue).
func (s *Store) UpdateOperation(ctx context.Context, id string, u store.OperationUpdate) (store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Operation{}, err
	}
	var out store.Operation
	// A change of state may change the batch: it is locked at once.
	err := s.onOp(ctx, id, u.State != "", func(l *opLock, q *queue) error {
		next, err := s.update(ctx, nil, q, l.op, u, l.t, l.b)
		if err != nil {
			return err
		}
		if err := s.notifyCancelled(ctx, q, []store.Operation{l.op}, []store.Operation{next}); err != nil {
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

// update applies u to op (its row locked) at t and queues in q the writes
// of the result, its log lines and, when its state changed, its batch: b
// when the caller holds it locked and loaded, otherwise locked and loaded
// here with tx (which may be nil when the caller locked the batch, if any).
func (s *Store) update(ctx context.Context, tx pgx.Tx, q *queue, op store.Operation, u store.OperationUpdate, t time.Time, b *store.Batch) (store.Operation, error) {
	next, err := store.ApplyUpdate(op, u, t)
	if err != nil {
		return store.Operation{}, err
	}
	normOp(&next)
	flight := flightKeep
	if op.BatchID != "" && (next.State.Terminal() || store.Contacted(op.Phase, next.Phase)) {
		flight = flightClear
		if store.Contacted(op.Phase, next.Phase) {
			// Queued before the write that clears start_in_flight, which
			// it reads.
			if err := s.contacted(ctx, q, op.ID, t); err != nil {
				return store.Operation{}, err
			}
		}
	}
	if next.Version != op.Version { // only log lines otherwise: the row stays as it is
		if err := s.writeOps(ctx, q, []store.Operation{next}, []int16{flight}); err != nil {
			return store.Operation{}, err
		}
	}
	if err := s.appendLogs(ctx, q, t, map[string][]string{op.ID: u.Log}); err != nil {
		return store.Operation{}, err
	}
	if next.State != op.State && op.BatchID != "" {
		if b == nil {
			if tx == nil {
				return store.Operation{}, fmt.Errorf("store/postgres: batch %s of operation %s not locked", op.BatchID, op.ID)
			}
			bt, err := s.lockBatch(ctx, tx, op.BatchID)
			if err != nil {
				return store.Operation{}, err
			}
			b = &bt
		}
		store.Tally(b, &op, next)
		*b = store.AfterOperationChange(*b, next.Wave, op.State, next.State, t)
		if err := s.writeBatch(ctx, q, *b, next.Wave); err != nil {
			return store.Operation{}, err
		}
	}
	return next, nil
}

// contacted queues in q the dating of the start in flight of operation id
// (locked), if it has one, by its attempt reaching the device at t, and the
// forgetting of its batch's contacts older than store.MaxRatePeriod. The
// caller then clears the operation's start_in_flight.
func (s *Store) contacted(ctx context.Context, q execer, id string, t time.Time) error {
	_, err := q.Exec(ctx, s.sql(`WITH c AS (
			INSERT INTO {{schema}}.batch_starts (batch_id, contacted_at)
			SELECT batch_id, $2 FROM {{schema}}.operations WHERE id = $1 AND start_in_flight
			RETURNING batch_id)
		DELETE FROM {{schema}}.batch_starts WHERE batch_id = (SELECT batch_id FROM c) AND contacted_at < $3`),
		id, norm(t), norm(t).Add(-store.MaxRatePeriod))
	return err
}

// SetProgress implements store.Operations, in two round trips.
func (s *Store) SetProgress(ctx context.Context, id string, token int64, percent int) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	return s.onOp(ctx, id, false, func(l *opLock, q *queue) error {
		if err := store.CheckProgress(l.op, token, percent); err != nil {
			return err
		}
		_, err := q.Exec(ctx, s.sql(`UPDATE {{schema}}.operations SET progress = $2, version = version + 1, updated_at = $3
			WHERE id = $1`), id, percent, norm(l.t))
		return err
	})
}

// AppendLog implements store.Operations, in two round trips. It locks the
// operation's row (to check the token and number the lines) but never
// rewrites it.
func (s *Store) AppendLog(ctx context.Context, id string, token int64, lines ...string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	return s.onOp(ctx, id, false, func(l *opLock, q *queue) error {
		if err := store.CheckToken(l.op, token); err != nil {
			return err
		}
		return s.appendLogs(ctx, q, l.t, map[string][]string{id: lines})
	})
}
