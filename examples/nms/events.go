package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Server-Sent Events: the engine's events (eng.Subscribe) as a stream per
// client.
//
// The engine never waits for a subscriber: when a stream's buffer is full
// the engine drops events for it and says so in the next one (Dropped); the
// stream then sends a fresh snapshot of its batch, so the client's view is
// right again. A write that the client does not take within
// StreamWriteTimeout ends the stream, and so do the client leaving, the
// server shutting down and the engine stopping: each stream's goroutine and
// subscription end with it.

type operationEvent struct {
	Kind      upgrader.EventKind `json:"kind"`
	Operation string             `json:"operation"`
	Device    string             `json:"device"`
	Batch     *string            `json:"batch"`
	Status    status.State       `json:"status"`
	Phase     status.Phase       `json:"phase"`
	Progress  int                `json:"progress"`
	Reason    status.Reason      `json:"reason"`
	Time      time.Time          `json:"time"`
}

type logEvent struct {
	Operation string    `json:"operation"`
	Device    string    `json:"device"`
	Batch     *string   `json:"batch"`
	Line      string    `json:"line"`
	Time      time.Time `json:"time"`
}

type batchEvent struct {
	Kind        upgrader.EventKind `json:"kind"`
	Batch       string             `json:"batch"`
	Status      status.BatchState  `json:"status"`
	PauseReason status.PauseReason `json:"pause_reason"`
	Wave        int                `json:"wave"`
	Counts      map[string]int     `json:"counts"`
	Total       int                `json:"total"`
	Done        int                `json:"done"`
	Time        time.Time          `json:"time"`
}

type snapshotEvent struct {
	// Resync is true when the snapshot replaces events the stream lost.
	Resync     bool              `json:"resync"`
	Batch      any               `json:"batch"`
	Operations []operationView   `json:"operations"`
	Devices    map[string]string `json:"devices"` // device ID -> name
}

// stream writes one client's events.
type stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	seq     int64
}

// send writes one event and flushes it, within the write timeout.
func (st *stream) send(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	st.seq++
	return st.write(fmt.Appendf(nil, "id: %d\nevent: %s\ndata: %s\n\n", st.seq, name, data))
}

func (st *stream) write(b []byte) error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(st.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := st.w.Write(b); err != nil {
		return err
	}
	return st.rc.Flush()
}

// events is GET events/: ?batch=ID follows one batch (a snapshot first),
// ?operation=ID one operation; otherwise every event of the caller's
// organization (X-Organization, or ?organization= for EventSource), or of
// all of them.
func (s *server) events(w http.ResponseWriter, r *http.Request, sc scope) error {
	q := r.URL.Query()
	if org := q.Get("organization"); org != "" {
		if sc.scoped() && org != sc.org {
			return forbidden("organization %q is not yours (%s: %s)", org, orgHeader, sc.org)
		}
		sc = scope{org: org}
	}
	batchID, opID := q.Get("batch"), q.Get("operation")
	if batchID != "" {
		if _, err := s.batch(r.Context(), sc, batchID); err != nil {
			return err
		}
	}
	if opID != "" {
		if _, err := s.operation(r.Context(), sc, opID); err != nil {
			return err
		}
	}
	s.serveEvents(w, r, sc, batchID, opID)
	return nil
}

// serveEvents streams the events of events/ until the client leaves, the
// server shuts down or the engine stops. Once the stream has started, a
// failure only ends it.
func (s *server) serveEvents(w http.ResponseWriter, r *http.Request, sc scope, batchID, opID string) {
	// Subscribe before the snapshot: what happens while it is read comes
	// after it.
	ch, unsubscribe := s.eng.Subscribe(s.cfg.StreamBuffer)
	defer unsubscribe()
	s.streams.Add(1)
	defer s.streams.Add(-1)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st := &stream{w: w, rc: http.NewResponseController(w), timeout: s.cfg.StreamWriteTimeout}
	if err := st.write([]byte("retry: 2000\n: connected\n\n")); err != nil {
		return
	}
	if batchID != "" {
		if err := s.sendSnapshot(r.Context(), st, batchID, false); err != nil {
			return
		}
	}

	orgs := map[string]string{} // device or batch ID -> organization
	keepAlive := time.NewTicker(s.cfg.StreamKeepAlive)
	defer keepAlive.Stop()
	for {
		var ev upgrader.Event
		var ok bool
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-keepAlive.C:
			if err := st.write([]byte(": keep-alive\n\n")); err != nil {
				return
			}
			continue
		case ev, ok = <-ch:
			if !ok {
				return // the engine stopped
			}
		}
		if ev.Dropped > 0 {
			var err error
			if batchID != "" {
				err = s.sendSnapshot(r.Context(), st, batchID, true)
			} else {
				err = st.send("dropped", map[string]uint64{"dropped": ev.Dropped})
			}
			if err != nil {
				return
			}
		}
		switch {
		case batchID != "" && ev.BatchID != batchID,
			opID != "" && ev.OperationID != opID,
			batchID == "" && opID == "" && sc.scoped() && s.orgOf(r.Context(), orgs, ev) != sc.org:
			continue
		}
		if err := st.send(eventOf(ev)); err != nil {
			return
		}
	}
}

// eventOf is the stream's name and payload of an engine event.
func eventOf(ev upgrader.Event) (string, any) {
	switch ev.Kind {
	case upgrader.EventOperationLog:
		return "log", logEvent{Operation: ev.OperationID, Device: ev.DeviceID, Batch: nullable(ev.BatchID),
			Line: ev.Line, Time: ev.Time.UTC()}
	case upgrader.EventBatchState, upgrader.EventBatchWave:
		done := 0
		for st, n := range ev.Counts {
			if st.Terminal() {
				done += n
			}
		}
		return "batch", batchEvent{Kind: ev.Kind, Batch: ev.BatchID, Status: ev.BatchState, PauseReason: ev.PauseReason,
			Wave: ev.Wave, Counts: countsJSON(ev.Counts), Total: ev.Counts.Total(), Done: done, Time: ev.Time.UTC()}
	default:
		return "operation", operationEvent{Kind: ev.Kind, Operation: ev.OperationID, Device: ev.DeviceID,
			Batch: nullable(ev.BatchID), Status: ev.State, Phase: ev.Phase, Progress: ev.Progress, Reason: ev.Reason,
			Time: ev.Time.UTC()}
	}
}

// orgOf returns the organization an event belongs to, from its device or
// its batch, remembered in cache.
func (s *server) orgOf(ctx context.Context, cache map[string]string, ev upgrader.Event) string {
	key := ev.DeviceID
	if key == "" {
		key = ev.BatchID
	}
	if org, ok := cache[key]; ok {
		return org
	}
	var org string
	if ev.DeviceID != "" {
		if d, err := s.st.Device(ctx, ev.DeviceID); err == nil {
			org = d.Organization
		}
	} else if ev.BatchID != "" {
		if b, err := s.st.Batch(ctx, ev.BatchID); err == nil {
			org = b.Organization
		}
	}
	cache[key] = org
	return org
}

// sendSnapshot sends the batch and all its operations.
func (s *server) sendSnapshot(ctx context.Context, st *stream, batchID string, resync bool) error {
	b, err := s.eng.Batch(ctx, batchID)
	if err != nil {
		return err
	}
	ops, err := s.st.ListOperations(ctx, store.OperationFilter{BatchID: batchID})
	if err != nil {
		return err
	}
	snap := snapshotEvent{Resync: resync, Batch: batchJSON(b), Operations: make([]operationView, 0, len(ops)),
		Devices: make(map[string]string, len(ops))}
	for _, op := range ops {
		snap.Operations = append(snap.Operations, operationWith(op, nil))
		if d, err := s.st.Device(ctx, op.DeviceID); err == nil {
			snap.Devices[d.ID] = d.Name
		}
	}
	return st.send("snapshot", snap)
}
