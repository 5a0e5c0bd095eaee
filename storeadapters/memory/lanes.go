package memory

import (
	"container/heap"
	"sort"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Ready operations wait in lanes: one lane per (batch, wave, group, pending
// or started), and
// one free lane for operations outside any batch and for those at or after
// flashing (never held back: their flash must be verified). Every
// operation of a lane gets the same answer from store.ClaimAllowed, so a
// claim asks once per lane, not once per operation: a batch of 100,000
// operations capped at 10 costs one check per claim, not 100,000.

// laneKey names a lane; the zero key is the free lane.
type laneKey struct {
	batch   string
	wave    int
	group   string
	started bool // in progress (ClaimAllowed treats them apart from pending ones)
}

type lane struct {
	key laneKey
	br  *batchRec // nil for the free lane
	ops opQueue   // by readyFirst
	idx int       // in Store.lanes, -1 when out of it
}

// laneHeap orders the non-empty lanes by their longest-due operation.
type laneHeap struct{ items []*lane }

func (h *laneHeap) Len() int { return len(h.items) }
func (h *laneHeap) Less(i, j int) bool {
	return readyFirst(h.items[i].ops.recs[0], h.items[j].ops.recs[0])
}
func (h *laneHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].idx, h.items[j].idx = i, j
}
func (h *laneHeap) Push(x any) { l := x.(*lane); l.idx = len(h.items); h.items = append(h.items, l) }
func (h *laneHeap) Pop() any {
	old := h.items
	l := old[len(old)-1]
	old[len(old)-1] = nil
	h.items = old[:len(old)-1]
	l.idx = -1
	return l
}

// laneOf returns the key of the lane r belongs in (store held locked).
func (s *Store) laneOf(r *opRec) (laneKey, *batchRec) {
	br := s.batches[r.op.BatchID]
	if br == nil || r.op.Phase.AfterPointOfNoReturn() {
		return laneKey{started: r.op.State != status.Pending}, nil
	}
	k := laneKey{batch: br.b.ID, wave: r.op.Wave, started: r.op.State != status.Pending}
	if ro := br.b.Rollout; ro.GroupLimit > 0 {
		k.group = ro.GroupBy.Of(s.devices[r.op.DeviceID])
	}
	return k, br
}

// enterLane puts r, which is in no queue, in its lane (store held locked).
func (s *Store) enterLane(r *opRec) {
	k, br := s.laneOf(r)
	ln := s.laneByKey[k]
	if ln == nil {
		ln = &lane{key: k, br: br, ops: opQueue{less: readyFirst}, idx: -1}
		s.laneByKey[k] = ln
	}
	r.queue, r.lane = queueReady, ln
	heap.Push(&ln.ops, r)
	if ln.idx < 0 {
		heap.Push(s.tier(ln), ln)
	} else {
		heap.Fix(s.tier(ln), ln.idx)
	}
}

// tier returns the heap of ln: operations in progress (retries, take-overs,
// verifications) are claimed before pending ones, so a retry is not
// starved into its deadline by a capped batch's queue of new devices.
func (s *Store) tier(ln *lane) *laneHeap {
	if ln.key.started {
		return s.lanes[0]
	}
	return s.lanes[1]
}

// leaveLane takes r out of its lane, and drops the lane when it empties
// (store held locked).
func (s *Store) leaveLane(r *opRec) {
	ln := r.lane
	heap.Remove(&ln.ops, r.idx)
	r.lane = nil
	switch {
	case ln.ops.Len() == 0:
		if ln.idx >= 0 {
			heap.Remove(s.tier(ln), ln.idx)
		}
		delete(s.laneByKey, ln.key)
	case ln.idx >= 0:
		heap.Fix(s.tier(ln), ln.idx)
	}
}

// laneAllowed asks the rollout of ln's batch whether r, the lane's first
// operation, may be claimed at t (store held locked).
func (s *Store) laneAllowed(ln *lane, r *opRec, t time.Time) bool {
	if ln.br == nil {
		return true
	}
	return store.ClaimAllowed(&ln.br.b, ln.br.use(ln.key.group, t), r.op, t)
}

// use returns how much of its rollout's limits br uses at t.
func (br *batchRec) use(group string, t time.Time) store.BatchUse {
	cut := t.Add(-br.b.Rollout.StartRate.Period())
	recent := len(br.starts) - sort.Search(len(br.starts), func(i int) bool { return br.starts[i].After(cut) })
	return store.BatchUse{Running: br.running, RunningInGroup: br.groupRunning[group], RecentStarts: recent + len(br.inflight)}
}

// started records that the claim of r is a start of its batch, in flight
// until its attempt reaches the device (contacted), for the batch's start
// rate whatever its rollout says now: a rate set or lengthened later counts
// the starts already made (store held locked).
func (s *Store) started(r *opRec) {
	if br := s.batches[r.op.BatchID]; br != nil && !r.op.Phase.AfterPointOfNoReturn() {
		br.inflight[r.op.ID] = struct{}{}
	}
}

// forgetStart forgets r's start in flight, if any: its lease ended before
// its attempt reached the device (store held locked).
func (s *Store) forgetStart(r *opRec) {
	if br := s.batches[r.op.BatchID]; br != nil {
		delete(br.inflight, r.op.ID)
	}
}

// contacted dates r's start in flight by its attempt reaching the device at
// t. Starts older than store.MaxRatePeriod are forgotten (store held
// locked).
func (s *Store) contacted(r *opRec, t time.Time) {
	br := s.batches[r.op.BatchID]
	if br == nil {
		return
	}
	if _, ok := br.inflight[r.op.ID]; !ok {
		return
	}
	delete(br.inflight, r.op.ID)
	cut := t.Add(-store.MaxRatePeriod)
	if i := sort.Search(len(br.starts), func(i int) bool { return br.starts[i].After(cut) }); i > 0 {
		br.starts = append(br.starts[:0], br.starts[i:]...)
	}
	if n := len(br.starts); n > 0 && t.Before(br.starts[n-1]) {
		t = br.starts[n-1] // keep the times sorted if the clock stepped back
	}
	br.starts = append(br.starts, t)
}

// startRunning counts r, which just entered the lease queue, as running in
// its batch and group (store held locked).
func (s *Store) startRunning(r *opRec) {
	br := s.batches[r.op.BatchID]
	if br == nil {
		return
	}
	r.runBatch = br
	r.runGroup = br.b.Rollout.GroupBy.Of(s.devices[r.op.DeviceID])
	br.running++
	br.groupRunning[r.runGroup]++
}

// stopRunning undoes startRunning for r, which left the lease queue.
func (s *Store) stopRunning(r *opRec) {
	br := r.runBatch
	if br == nil {
		return
	}
	br.running--
	if br.groupRunning[r.runGroup]--; br.groupRunning[r.runGroup] <= 0 {
		delete(br.groupRunning, r.runGroup)
	}
	r.runBatch, r.runGroup = nil, ""
}

// regroupOp moves r to the lane and the running group its device's
// current record gives (store held locked): after the device moved to
// another location or group, or its batch's GroupBy changed.
func (s *Store) regroupOp(r *opRec) {
	switch r.queue {
	case queueLeased:
		s.stopRunning(r)
		s.startRunning(r)
	case queueReady:
		s.leaveLane(r)
		r.queue = queueNone
		s.enterLane(r)
	}
}

// regroup applies regroupOp to every operation of br.
func (s *Store) regroup(br *batchRec) {
	for _, id := range br.ops {
		s.regroupOp(s.ops[id])
	}
}
