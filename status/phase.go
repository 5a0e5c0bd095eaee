package status

import (
	"fmt"
	"slices"
)

// Phase is the step an in-progress operation has reached. The empty Phase
// means "not started" (a pending operation has no phase).
type Phase string

// Phases of an in-progress operation, in the order an attempt goes through
// them. Persisted as these exact strings.
const (
	PhaseNone       Phase = ""
	PhaseConnecting Phase = "connecting"
	PhaseIdentity   Phase = "identity"
	PhaseChecksum   Phase = "checksum"
	PhaseMemory     Phase = "memory"
	PhaseUpload     Phase = "upload"
	PhaseImageTest  Phase = "image-test"
	// PhaseFlashing is the point of no return: once an operation enters it,
	// it can no longer be cancelled or retried, and after a crash it is
	// verified, never flashed again.
	PhaseFlashing  Phase = "flashing"
	PhaseRebooting Phase = "rebooting"
	PhaseVerifying Phase = "verifying"
)

var phases = []Phase{
	PhaseConnecting, PhaseIdentity, PhaseChecksum, PhaseMemory, PhaseUpload,
	PhaseImageTest, PhaseFlashing, PhaseRebooting, PhaseVerifying,
}

// Phases returns the phases in order (without PhaseNone). The slice is a fresh
// copy.
func Phases() []Phase { return slices.Clone(phases) }

// Valid reports whether p is a known phase or PhaseNone.
func (p Phase) Valid() bool { return p == PhaseNone || slices.Contains(phases, p) }

// Order returns the position of p in the phase order: 0 for PhaseNone, 1 for
// PhaseConnecting up to 9 for PhaseVerifying, and -1 for an unknown phase.
func (p Phase) Order() int {
	if p == PhaseNone {
		return 0
	}
	i := slices.Index(phases, p)
	if i < 0 {
		return -1
	}
	return i + 1
}

// AfterPointOfNoReturn reports whether p is PhaseFlashing or a later phase.
// An operation in such a phase may have modified the device's flash.
func (p Phase) AfterPointOfNoReturn() bool {
	return p.Order() >= PhaseFlashing.Order()
}

// ParsePhase converts a persisted string into a Phase.
func ParsePhase(s string) (Phase, error) {
	p := Phase(s)
	if !p.Valid() {
		return "", fmt.Errorf("status: unknown phase %q (want one of %v)", s, phases)
	}
	return p, nil
}

// Cancellable reports whether an operation in state s and phase p may still
// be cancelled: pending operations always, in-progress ones only before
// PhaseFlashing, terminal ones never.
func Cancellable(s State, p Phase) bool {
	switch s {
	case Pending:
		return true
	case InProgress:
		return p.Valid() && !p.AfterPointOfNoReturn()
	}
	return false
}
