package upgrader

import (
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// EventKind says what an Event reports.
type EventKind string

// Event kinds.
const (
	EventOperationCreated  EventKind = "operation-created"
	EventOperationState    EventKind = "operation-state"
	EventOperationPhase    EventKind = "operation-phase"
	EventOperationProgress EventKind = "operation-progress"
	EventOperationLog      EventKind = "operation-log"
	// EventBatchState: a batch was created, started, paused, resumed,
	// cancelled, changed its rollout, or one of its operations changed
	// state (its counts moved).
	EventBatchState EventKind = "batch-state"
	// EventBatchWave: a batch's current wave settled (WaveWait starts) or
	// the next wave started, or the batch paused on its success threshold.
	EventBatchWave EventKind = "batch-wave"
)

// Event is something that happened to an operation or a batch. Fields that
// do not apply to the Kind are zero.
type Event struct {
	Kind        EventKind
	Time        time.Time
	OperationID string
	DeviceID    string
	BatchID     string
	State       status.State
	Phase       status.Phase
	Progress    int
	Reason      status.Reason
	// Line is the log line of an EventOperationLog.
	Line string
	// BatchState, PauseReason, Wave (0-based) and Counts describe the batch
	// of a batch event.
	BatchState  status.BatchState
	PauseReason status.PauseReason
	Wave        int
	Counts      status.Counts
	// Dropped counts the events this subscriber lost (its buffer was full)
	// since the previous event it received.
	Dropped uint64
}

func opEvent(kind EventKind, op store.Operation, now time.Time) Event {
	return Event{
		Kind: kind, Time: now, OperationID: op.ID, DeviceID: op.DeviceID, BatchID: op.BatchID,
		State: op.State, Phase: op.Phase, Progress: op.Progress, Reason: op.Reason,
	}
}

type subscriber struct {
	ch      chan Event
	dropped uint64
}

// hub fans events out to subscribers without ever blocking the publisher.
type hub struct {
	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	dropped uint64 // total over all subscribers
	closed  bool   // after closeAll: new subscriptions start closed
}

func (h *hub) subscribe(buffer int) (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, buffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	if h.subs == nil {
		h.subs = map[*subscriber]struct{}{}
	}
	h.subs[s] = struct{}{}
	return s.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[s]; ok { // not already closed by closeAll
			delete(h.subs, s)
			close(s.ch)
		}
	}
}

func (h *hub) publish(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		e := ev
		e.Dropped = s.dropped
		select {
		case s.ch <- e:
			s.dropped = 0
		default:
			s.dropped++
			h.dropped++
		}
	}
}

func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		close(s.ch)
		delete(h.subs, s)
	}
}

// Subscribe returns a channel of the engine's events and a function that
// ends the subscription and closes the channel. buffer is the channel's
// capacity (0 = Config.EventBuffer; at most MaxEventBuffer). A subscriber that does not keep up
// never slows upgrades down: events that do not fit are dropped, and the
// next event it receives says how many in Event.Dropped. Subscriptions end
// (their channels close) when Stop returns; a Subscribe after Stop returns a
// closed channel. The unsubscribe function may be called any number of
// times, before or after Stop.
func (e *Engine) Subscribe(buffer int) (<-chan Event, func()) {
	if buffer <= 0 {
		buffer = e.cfg.EventBuffer
	}
	buffer = min(buffer, MaxEventBuffer) // a buffer too large to allocate is capped, not a crash
	return e.events.subscribe(buffer)
}

// DroppedEvents returns how many events were dropped in total, over all
// subscribers, because their buffers were full.
func (e *Engine) DroppedEvents() uint64 {
	e.events.mu.Lock()
	defer e.events.mu.Unlock()
	return e.events.dropped
}
