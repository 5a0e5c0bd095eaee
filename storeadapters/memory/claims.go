package memory

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/store"
)

var _ store.Claims = (*Store)(nil)

// Where a non-terminal operation waits, for the claim path: in a lane of
// ready operations (no live lease) or in the lease queue (ordered by the end
// of its lease). See lanes.go.
const (
	queueNone = iota
	queueReady
	queueLeased
)

// opQueue is a heap of operations ordered by less, each knowing its index
// (opRec.idx) so it can be removed or moved in O(log n).
type opQueue struct {
	recs []*opRec
	less func(a, b *opRec) bool
}

func (q *opQueue) Len() int           { return len(q.recs) }
func (q *opQueue) Less(i, j int) bool { return q.less(q.recs[i], q.recs[j]) }
func (q *opQueue) Swap(i, j int) {
	q.recs[i], q.recs[j] = q.recs[j], q.recs[i]
	q.recs[i].idx, q.recs[j].idx = i, j
}
func (q *opQueue) Push(x any) { r := x.(*opRec); r.idx = len(q.recs); q.recs = append(q.recs, r) }
func (q *opQueue) Pop() any {
	old := q.recs
	r := old[len(old)-1]
	old[len(old)-1] = nil
	q.recs = old[:len(old)-1]
	r.idx = -1
	return r
}

// readyFirst orders a lane: the longest due first, then ID.
func readyFirst(a, b *opRec) bool {
	da, db := store.DueAt(a.op), store.DueAt(b.op)
	if !da.Equal(db) {
		return da.Before(db)
	}
	return a.op.ID < b.op.ID
}

// leaseEndsFirst orders the lease queue by the end of the lease.
func leaseEndsFirst(a, b *opRec) bool { return a.op.LeaseExpiresAt.Before(b.op.LeaseExpiresAt) }

// unqueue takes r out of whichever queue holds it (store held locked).
func (s *Store) unqueue(r *opRec) {
	switch r.queue {
	case queueReady:
		s.leaveLane(r)
	case queueLeased:
		heap.Remove(s.leased, r.idx)
		s.stopRunning(r)
	}
	r.queue, r.idx = queueNone, -1
}

// requeue puts r where its record says it belongs (store held locked):
// nowhere when terminal, the lease queue while its lease lives, its lane
// otherwise.
func (s *Store) requeue(r *opRec, t time.Time) {
	s.unqueue(r)
	switch {
	case r.op.State.Terminal():
		s.forgetStart(r)
	case store.LeaseLive(r.op, t):
		r.queue = queueLeased
		heap.Push(s.leased, r)
		s.startRunning(r)
	default:
		s.forgetStart(r)
		s.enterLane(r)
	}
}

// expireLeases moves the operations whose lease ended by t to their lanes
// (store held locked).
func (s *Store) expireLeases(t time.Time) {
	for s.leased.Len() > 0 && !t.Before(s.leased.recs[0].op.LeaseExpiresAt) {
		r := heap.Pop(s.leased).(*opRec)
		r.queue = queueNone
		s.stopRunning(r)
		s.forgetStart(r)
		s.enterLane(r)
	}
}

// ClaimOperations implements store.Claims. Lanes of operations in progress
// come first, then lanes of pending ones, each in the order of their
// longest-due operation; a lane its batch holds back is set aside for the
// rest of the call, so a capped batch costs one check per lane, whatever
// its size.
func (s *Store) ClaimOperations(ctx context.Context, owner string, limit int, lease time.Duration) ([]store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := store.ValidateClaim(owner, limit, lease); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now()
	s.expireLeases(t)
	out := []store.Operation{}
	for _, h := range s.lanes {
		var aside []*lane // held back by their batch: back in the heap afterwards
		for len(out) < limit && h.Len() > 0 {
			ln := h.items[0]
			r := ln.ops.recs[0]
			if t.Before(store.DueAt(r.op)) {
				break // the earliest is not due: none is
			}
			if !s.laneAllowed(ln, r, t) {
				heap.Pop(h)
				aside = append(aside, ln)
				continue
			}
			s.unqueue(r)
			r.op = store.ApplyClaim(r.op, owner, t, lease)
			s.started(r)
			s.requeue(r, t)
			out = append(out, cloneOp(r.op))
		}
		for _, ln := range aside {
			heap.Push(h, ln)
		}
	}
	return out, nil
}

// ClaimOperation implements store.Claims.
func (s *Store) ClaimOperation(ctx context.Context, id, owner string, lease time.Duration) (store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Operation{}, err
	}
	if err := store.ValidateClaim(owner, 1, lease); err != nil {
		return store.Operation{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.opRec(id)
	if err != nil {
		return store.Operation{}, err
	}
	t := now()
	if err := store.CheckClaimOne(r.op, t); err != nil {
		return store.Operation{}, err
	}
	s.unqueue(r)
	r.op = store.ApplyClaim(r.op, owner, t, lease)
	s.started(r)
	s.requeue(r, t)
	return cloneOp(r.op), nil
}

// RenewLeases implements store.Claims.
func (s *Store) RenewLeases(ctx context.Context, owner string, lease time.Duration, held []store.Lease) ([]store.Renewal, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := store.ValidateClaim(owner, 1, lease); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now()
	out := make([]store.Renewal, len(held))
	for i, l := range held {
		r, ok := s.ops[l.OperationID]
		var op store.Operation
		if ok {
			op = r.op
		}
		ren, next := store.RenewOne(op, ok, l, owner, t, lease)
		if ok && ren.Status == store.LeaseHeld {
			r.op = next
			s.requeue(r, t)
		}
		out[i] = ren
	}
	return out, nil
}

// ReleaseOperation implements store.Claims.
func (s *Store) ReleaseOperation(ctx context.Context, id string, token int64) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.opRec(id)
	if err != nil {
		return err
	}
	clear, err := store.CheckRelease(r.op, token)
	if err != nil || !clear {
		return err
	}
	t := now()
	r.op.LeaseExpiresAt = time.Time{}
	s.requeue(r, t)
	return nil
}

// ExpireDeadlines implements store.Claims.
func (s *Store) ExpireDeadlines(ctx context.Context, limit int) ([]store.Operation, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, &store.ValidationError{Record: "claim", Field: "Limit", Problem: fmt.Sprintf("must be positive, got %d", limit)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now()
	var due []*opRec
	for _, id := range s.activeOp {
		if r := s.ops[id]; r != nil && store.Expired(r.op, t) {
			due = append(due, r)
		}
	}
	slices.SortFunc(due, func(a, b *opRec) int { return strings.Compare(a.op.ID, b.op.ID) })
	if len(due) > limit {
		due = due[:limit]
	}
	out := make([]store.Operation, 0, len(due))
	for _, r := range due {
		next, err := s.update(r, store.ExpireUpdate(r.op), t)
		if err != nil {
			return out, err
		}
		out = append(out, cloneOp(next))
	}
	return out, nil
}
