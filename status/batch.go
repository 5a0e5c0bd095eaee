package status

import (
	"fmt"
	"slices"
)

// BatchState is the persisted state of a batch (mass upgrade).
type BatchState string

// Batch states, persisted as these exact strings.
const (
	BatchIdle       BatchState = "idle"
	BatchInProgress BatchState = "in-progress"
	// BatchPaused is set explicitly, by an operator or by the store when a
	// rollout's threshold trips (see PauseReason); it is never derived from
	// operation counts. A paused batch can be resumed.
	BatchPaused    BatchState = "paused"
	BatchSuccess   BatchState = "success"
	BatchFailed    BatchState = "failed"
	BatchCancelled BatchState = "cancelled"
)

var batchStates = []BatchState{BatchIdle, BatchInProgress, BatchPaused, BatchSuccess, BatchFailed, BatchCancelled}

// BatchStates returns every batch state. The slice is a fresh copy.
func BatchStates() []BatchState { return slices.Clone(batchStates) }

// Valid reports whether b is a known batch state.
func (b BatchState) Valid() bool { return slices.Contains(batchStates, b) }

// Terminal reports whether b is success, failed or cancelled.
func (b BatchState) Terminal() bool {
	return b == BatchSuccess || b == BatchFailed || b == BatchCancelled
}

// ParseBatchState converts a persisted string into a BatchState.
func ParseBatchState(s string) (BatchState, error) {
	b := BatchState(s)
	if !b.Valid() {
		return "", fmt.Errorf("status: unknown batch state %q (want one of %v)", s, batchStates)
	}
	return b, nil
}

// PauseReason says why a batch is paused.
type PauseReason string

// Pause reasons, persisted as these exact strings.
const (
	PauseNone PauseReason = ""
	// PauseOperator: a user paused the batch.
	PauseOperator PauseReason = "operator"
	// PauseFailureThreshold: the failed and aborted operations of the
	// current wave went over the rollout's failure threshold.
	PauseFailureThreshold PauseReason = "failure-threshold"
	// PauseSuccessThreshold: the current wave settled without reaching the
	// rollout's success threshold, so the next wave does not start.
	PauseSuccessThreshold PauseReason = "success-threshold"
)

// Valid reports whether r is a known pause reason (PauseNone included).
func (r PauseReason) Valid() bool {
	switch r {
	case PauseNone, PauseOperator, PauseFailureThreshold, PauseSuccessThreshold:
		return true
	}
	return false
}

// Counts holds how many of a batch's operations are in each state.
type Counts map[State]int

// Total returns the number of operations counted.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// DeriveBatchState computes a batch's state from its operations' states,
// following openwisp-firmware-upgrader's rules, applied in this order:
//
//   - no operations → idle;
//   - any pending or in-progress → in-progress;
//   - any failed or aborted → failed;
//   - any cancelled → cancelled;
//   - otherwise (all success) → success.
func DeriveBatchState(c Counts) BatchState {
	switch {
	case c.Total() == 0:
		return BatchIdle
	case c[Pending] > 0 || c[InProgress] > 0:
		return BatchInProgress
	case c[Failed] > 0 || c[Aborted] > 0:
		return BatchFailed
	case c[Cancelled] > 0:
		return BatchCancelled
	}
	return BatchSuccess
}
