package status

import (
	"fmt"
	"slices"
)

// State is the persisted state of one upgrade operation.
type State string

// Operation states, persisted as these exact strings.
const (
	Pending    State = "pending"
	InProgress State = "in-progress"
	Success    State = "success"
	Failed     State = "failed"
	Aborted    State = "aborted"
	Cancelled  State = "cancelled"
)

var states = []State{Pending, InProgress, Success, Failed, Aborted, Cancelled}

// States returns every operation state in lifecycle order. The slice is a
// fresh copy the caller may modify.
func States() []State { return slices.Clone(states) }

// Valid reports whether s is one of the operation states.
func (s State) Valid() bool { return slices.Contains(states, s) }

// Terminal reports whether s is an outcome (success, failed, aborted or
// cancelled). Terminal states never transition further.
func (s State) Terminal() bool {
	switch s {
	case Success, Failed, Aborted, Cancelled:
		return true
	}
	return false
}

// Terminal reports whether s is a terminal operation state. It is the
// function form of [State.Terminal].
func Terminal(s State) bool { return s.Terminal() }

// ParseState converts a persisted string into a State, or returns an error
// naming the unknown value.
func ParseState(s string) (State, error) {
	st := State(s)
	if !st.Valid() {
		return "", fmt.Errorf("status: unknown operation state %q (want one of %v)", s, states)
	}
	return st, nil
}

// CanTransition reports whether an operation may move from one state to
// another:
//
//   - pending → in-progress, cancelled, aborted (aborted covers refusals found
//     before any attempt, such as an unknown connection kind);
//   - pending → failed is allowed too, for operations that time out or run out
//     of retries while waiting for their next attempt;
//   - in-progress → success, failed, aborted, cancelled (an operation waiting
//     for a retry stays in-progress, with no phase);
//   - in-progress → pending, for a batch's operation whose device could not
//     be reached before flashing: it waits for the device with its own long
//     backoff (the store refuses this move at or after the flashing phase);
//   - nothing out of a terminal state, and no move to the same state.
func CanTransition(from, to State) bool {
	if !from.Valid() || !to.Valid() || from == to {
		return false
	}
	switch from {
	case Pending:
		return to == InProgress || to == Cancelled || to == Aborted || to == Failed
	case InProgress:
		return to.Terminal() || to == Pending
	}
	return false // terminal
}
