package memory

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// prepareOp checks a new operation against the store (held locked) and
// returns the record to insert. batch is the batch it joins, or nil. busy and
// ids hold the devices and IDs taken by operations prepared earlier in the
// same CreateBatch call.
func (s *Store) prepareOp(op store.Operation, batch *store.Batch, busy, ids map[string]bool, t time.Time) (store.Operation, error) {
	d, ok := s.devices[op.DeviceID]
	if !ok {
		return op, notFound("device", op.DeviceID)
	}
	im, ok := s.images[op.ImageID]
	if !ok {
		return op, notFound("image", op.ImageID)
	}
	if err := store.CheckOperationFits(op, d.Organization, im.Organization, im.BuildID, batch); err != nil {
		return op, err
	}
	if batch != nil {
		op.BatchID = batch.ID
	}
	if id, ok := s.activeOp[d.ID]; ok {
		return op, fmt.Errorf("%w: device %q has operation %s", store.ErrDeviceBusy, d.ID, id)
	}
	if busy[d.ID] {
		return op, fmt.Errorf("%w: device %q appears twice in the batch", store.ErrDeviceBusy, d.ID)
	}
	if op.ID == "" {
		op.ID = store.NewID()
	} else if _, ok := s.ops[op.ID]; ok || ids[op.ID] {
		return op, fmt.Errorf("%w: operation %q exists", store.ErrConflict, op.ID)
	}
	op.Organization = d.Organization
	op.State = status.Pending
	op.Options = slices.Clone(op.Options)
	op.Version = 1
	op.CreatedAt, op.UpdatedAt = t, t
	op.StartedAt, op.FinishedAt = time.Time{}, time.Time{}
	return op, nil
}

// insertOp stores a prepared operation (store held locked).
func (s *Store) insertOp(op store.Operation) {
	r := &opRec{op: op, idx: -1}
	s.ops[op.ID] = r
	s.requeue(r, op.CreatedAt)
	s.deviceOps[op.DeviceID] = append(s.deviceOps[op.DeviceID], op.ID)
	s.activeOp[op.DeviceID] = op.ID
}

// CreateOperation implements store.Operations. An operation with a BatchID
// joins that existing batch, checked as by CreateBatch.
func (s *Store) CreateOperation(ctx context.Context, op store.Operation) (store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Operation{}, err
	}
	if err := op.Validate(); err != nil {
		return store.Operation{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var br *batchRec
	if op.BatchID != "" {
		var ok bool
		if br, ok = s.batches[op.BatchID]; !ok {
			return store.Operation{}, notFound("batch", op.BatchID)
		}
		if err := store.CheckBatchJoin(br.b); err != nil {
			return store.Operation{}, err
		}
	}
	var b *store.Batch
	if br != nil {
		b = &br.b
	}
	t := now()
	op, err := s.prepareOp(op, b, nil, nil, t)
	if err != nil {
		return store.Operation{}, err
	}
	if br != nil {
		op.Wave = len(br.b.WaveTallies) - 1 // joins the last wave
		br.b.WaveTallies[op.Wave].Size++
	}
	s.insertOp(op)
	if br != nil {
		br.ops = append(br.ops, op.ID)
		s.tally(br, nil, op, t)
	}
	return cloneOp(op), nil
}

// tally counts one operation of the batch moving from old (nil = new) to
// cur, and applies the batch rules (derived state, failure threshold).
func (s *Store) tally(br *batchRec, old *store.Operation, cur store.Operation, t time.Time) {
	store.Tally(&br.b, old, cur)
	var from status.State
	if old != nil {
		from = old.State
	}
	br.b = store.AfterOperationChange(br.b, cur.Wave, from, cur.State, t)
	if br.b.State.Terminal() {
		delete(s.live, br.b.ID)
	}
}

// Operation implements store.Operations.
func (s *Store) Operation(ctx context.Context, id string) (store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Operation{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, err := s.opRec(id)
	if err != nil {
		return store.Operation{}, err
	}
	return cloneOp(r.op), nil
}

// ListOperations implements store.Operations. Filters on a batch or a
// device use their indexes, so listing one batch does not scan every
// operation.
func (s *Store) ListOperations(ctx context.Context, f store.OperationFilter) ([]store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := f.Page.Validate(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	match := func(op *store.Operation) bool {
		if (f.Organization != "" && op.Organization != f.Organization) ||
			(f.ImageID != "" && op.ImageID != f.ImageID) ||
			(f.BatchID != "" && op.BatchID != f.BatchID) ||
			(f.DeviceID != "" && op.DeviceID != f.DeviceID) ||
			(len(f.States) > 0 && !slices.Contains(f.States, op.State)) {
			return false
		}
		if f.BuildID != "" && s.images[op.ImageID].BuildID != f.BuildID {
			return false
		}
		if f.Group != "" || f.Location != "" {
			d := s.devices[op.DeviceID]
			if (f.Group != "" && d.Group != f.Group) || (f.Location != "" && d.Location != f.Location) {
				return false
			}
		}
		return true
	}
	var recs []*opRec
	add := func(r *opRec) {
		if r != nil && match(&r.op) {
			recs = append(recs, r)
		}
	}
	switch {
	case f.BatchID != "":
		if br, ok := s.batches[f.BatchID]; ok {
			for _, id := range br.ops {
				add(s.ops[id])
			}
		}
	case f.DeviceID != "":
		for _, id := range s.deviceOps[f.DeviceID] {
			add(s.ops[id])
		}
	default:
		for _, r := range s.ops {
			add(r)
		}
	}
	recs = paginate(recs, func(r *opRec) string { return r.op.ID }, f.Page)
	out := make([]store.Operation, len(recs))
	for i, r := range recs {
		out[i] = cloneOp(r.op)
	}
	return out, nil
}

// opRec returns the record of operation id, or ErrNotFound (store held
// locked, or read-locked).
func (s *Store) opRec(id string) (*opRec, error) {
	r, ok := s.ops[id]
	if !ok {
		return nil, notFound("operation", id)
	}
	return r, nil
}

// appendLogs appends lines to r's log (store held locked).
func appendLogs(r *opRec, lines []string, t time.Time) {
	for _, l := range lines {
		r.logs = append(r.logs, store.LogEntry{
			OperationID: r.op.ID,
			Seq:         int64(len(r.logs)) + 1,
			Time:        t,
			Line:        store.TruncateLogLine(l),
		})
	}
}

// UpdateOperation implements store.Operations with store.ApplyUpdate.
func (s *Store) UpdateOperation(ctx context.Context, id string, u store.OperationUpdate) (store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Operation{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.opRec(id)
	if err != nil {
		return store.Operation{}, err
	}
	next, err := s.update(r, u, now())
	if err != nil {
		return store.Operation{}, err
	}
	return cloneOp(next), nil
}

// update applies u to r at t with store.ApplyUpdate and keeps the indexes,
// queues and batch counts right (store held locked).
func (s *Store) update(r *opRec, u store.OperationUpdate, t time.Time) (store.Operation, error) {
	next, err := store.ApplyUpdate(r.op, u, t)
	if err != nil {
		return store.Operation{}, err
	}
	prev := r.op
	r.op = next
	appendLogs(r, u.Log, t)
	if store.Contacted(prev.Phase, next.Phase) {
		s.contacted(r, t)
	}
	if next.State != prev.State || !next.NextAttemptAt.Equal(prev.NextAttemptAt) ||
		next.Phase.AfterPointOfNoReturn() != prev.Phase.AfterPointOfNoReturn() {
		s.requeue(r, t)
	}
	if next.State != prev.State {
		if next.State.Terminal() && s.activeOp[next.DeviceID] == next.ID {
			delete(s.activeOp, next.DeviceID)
		}
		if br := s.batches[next.BatchID]; br != nil {
			s.tally(br, &prev, next, t)
		}
	}
	return next, nil
}

// SetProgress implements store.Operations.
func (s *Store) SetProgress(ctx context.Context, id string, token int64, percent int) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.opRec(id)
	if err != nil {
		return err
	}
	if err := store.CheckProgress(r.op, token, percent); err != nil {
		return err
	}
	r.op.Progress = percent
	r.op.Version++
	r.op.UpdatedAt = now()
	return nil
}

// AppendLog implements store.Operations.
func (s *Store) AppendLog(ctx context.Context, id string, token int64, lines ...string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.opRec(id)
	if err != nil {
		return err
	}
	if err := store.CheckToken(r.op, token); err != nil {
		return err
	}
	appendLogs(r, lines, now())
	return nil
}

// Logs implements store.Operations. A negative limit is ErrInvalid.
func (s *Store) Logs(ctx context.Context, id string, afterSeq int64, limit int) ([]store.LogEntry, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, &store.ValidationError{Record: "log", Field: "Limit", Problem: fmt.Sprintf("is negative (%d)", limit)}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, err := s.opRec(id)
	if err != nil {
		return nil, err
	}
	// Seq n is at index n-1.
	start := min(max(afterSeq, 0), int64(len(r.logs)))
	logs := r.logs[start:]
	if limit > 0 && len(logs) > limit {
		logs = logs[:limit]
	}
	return slices.Clone(logs[:len(logs):len(logs)]), nil
}

// ---- batches ----

// CreateBatch implements store.Batches. A batch with an organization only
// takes devices of that organization (ErrOrganizationMismatch). The batch
// starts in b.State, idle when empty.
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
	s.mu.Lock()
	defer s.mu.Unlock()
	build, ok := s.builds[b.BuildID]
	if !ok {
		return store.Batch{}, nil, notFound("build", b.BuildID)
	}
	if !store.ImageFitsOrganization(build.Organization, b.Organization) {
		return store.Batch{}, nil, fmt.Errorf("%w: build %s of organization %q in a batch of organization %q",
			store.ErrOrganizationMismatch, build.ID, build.Organization, b.Organization)
	}
	if b.ID == "" {
		b.ID = store.NewID()
	} else if _, ok := s.batches[b.ID]; ok {
		return store.Batch{}, nil, fmt.Errorf("%w: batch %q exists", store.ErrConflict, b.ID)
	}
	if b.State == "" {
		b.State = status.BatchIdle
	}
	t := now()
	b.Options = slices.Clone(b.Options)
	b.Rollout = cloneRollout(b.Rollout)
	b.CreatedAt, b.UpdatedAt = t, t
	sizes := store.WaveSizes(b.Rollout.Waves, len(ops))
	b.Counts = status.Counts{status.Pending: len(ops)}
	b.WaveTallies = make([]store.WaveTally, len(sizes))
	prepared := make([]store.Operation, 0, len(ops))
	busy := make(map[string]bool, len(ops))
	ids := make(map[string]bool, len(ops))
	wave, left := 0, sizes[0]
	for _, op := range ops {
		p, err := s.prepareOp(op, &b, busy, ids, t)
		if err != nil {
			return store.Batch{}, nil, err
		}
		if left == 0 {
			wave++
			left = sizes[wave]
		}
		p.Wave = wave
		left--
		busy[p.DeviceID], ids[p.ID] = true, true
		prepared = append(prepared, p)
	}
	for i, n := range sizes {
		b.WaveTallies[i] = store.WaveTally{Size: n, Counts: status.Counts{status.Pending: n}}
	}
	br := &batchRec{b: b, ops: make([]string, 0, len(prepared)), groupRunning: map[string]int{}, inflight: map[string]struct{}{}}
	s.batches[b.ID] = br // before the operations enter their lanes
	s.live[b.ID] = br
	out := make([]store.Operation, len(prepared))
	for i, op := range prepared {
		s.insertOp(op)
		br.ops = append(br.ops, op.ID)
		out[i] = cloneOp(op)
	}
	return br.out(), out, nil
}

// batchRec returns the record of batch id, or ErrNotFound (store held
// locked, or read-locked).
func (s *Store) batchRec(id string) (*batchRec, error) {
	br, ok := s.batches[id]
	if !ok {
		return nil, notFound("batch", id)
	}
	return br, nil
}

// Batch implements store.Batches.
func (s *Store) Batch(ctx context.Context, id string) (store.Batch, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Batch{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	br, err := s.batchRec(id)
	if err != nil {
		return store.Batch{}, err
	}
	return br.out(), nil
}

// ListBatches implements store.Batches.
func (s *Store) ListBatches(ctx context.Context, f store.BatchFilter) ([]store.Batch, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := f.Page.Validate(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []store.Batch
	for _, br := range s.batches {
		b := &br.b
		if (f.Organization == "" || b.Organization == f.Organization) &&
			(f.BuildID == "" || b.BuildID == f.BuildID) &&
			(len(f.States) == 0 || slices.Contains(f.States, b.State)) {
			out = append(out, br.out())
		}
	}
	return paginate(out, func(b store.Batch) string { return b.ID }, f.Page), nil
}

// SetBatchState implements store.Batches with store.CheckBatchStateChange.
func (s *Store) SetBatchState(ctx context.Context, id string, from, to status.BatchState) (store.Batch, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Batch{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	br, err := s.batchRec(id)
	if err != nil {
		return store.Batch{}, err
	}
	if err := store.CheckBatchStateChange(br.b, from, to); err != nil {
		return store.Batch{}, err
	}
	br.b = store.ApplyBatchState(br.b, to, now())
	return br.out(), nil
}

// SetRollout implements store.Batches with store.CheckRolloutChange.
func (s *Store) SetRollout(ctx context.Context, id string, r store.Rollout) (store.Batch, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Batch{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	br, err := s.batchRec(id)
	if err != nil {
		return store.Batch{}, err
	}
	if err := store.CheckRolloutChange(br.b, r); err != nil {
		return store.Batch{}, err
	}
	old := br.b.Rollout
	br.b.Rollout = cloneRollout(r)
	br.b.UpdatedAt = now()
	if old.GroupBy != r.GroupBy || (old.GroupLimit > 0) != (r.GroupLimit > 0) {
		s.regroup(br)
	}
	return br.out(), nil
}

// CancelBatch implements store.Batches with store.CancelInBatch.
func (s *Store) CancelBatch(ctx context.Context, id string) (store.Batch, []store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Batch{}, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	br, err := s.batchRec(id)
	if err != nil {
		return store.Batch{}, nil, err
	}
	if err := store.CheckBatchCancel(br.b); err != nil {
		return store.Batch{}, nil, err
	}
	t := now()
	br.b.CancelRequested = true
	br.b.UpdatedAt = t
	var out []store.Operation
	for _, opID := range br.ops {
		r := s.ops[opID]
		u, ok := store.CancelInBatch(r.op)
		if !ok {
			continue
		}
		next, err := s.update(r, u, t)
		if err != nil { // cannot happen: CancelInBatch checked the state
			return store.Batch{}, nil, err
		}
		out = append(out, cloneOp(next))
	}
	return br.out(), out, nil
}

// AdvanceBatches implements store.Batches with store.NextWave.
func (s *Store) AdvanceBatches(ctx context.Context, limit int) ([]store.Batch, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, &store.ValidationError{Record: "batch", Field: "Limit", Problem: fmt.Sprintf("must be positive, got %d", limit)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now()
	var out []store.Batch
	for _, br := range s.live {
		if len(out) == limit {
			break
		}
		if next, changed := store.NextWave(br.b, t); changed {
			br.b = next
			out = append(out, br.out())
		}
	}
	return out, nil
}
