package status_test

import (
	"math"
	"slices"
	"testing"

	"github.com/fwupgrader/fwupgrader/status"
)

// FuzzParseState feeds persisted strings (what a store gives back, whatever
// happened to it) to every parser of the package: each accepts exactly its
// documented values, gives back the same string, and what the other
// functions say of the parsed value is consistent.
func FuzzParseState(f *testing.F) {
	for _, s := range status.States() {
		f.Add(string(s), "")
	}
	for _, p := range status.Phases() {
		f.Add("in-progress", string(p))
	}
	for _, b := range status.BatchStates() {
		f.Add(string(b), "operator")
	}
	for _, r := range status.Reasons() {
		f.Add(string(r), string(r))
	}
	f.Add("Pending", " flashing")
	f.Add("success\x00", "verifying\n")
	f.Fuzz(func(t *testing.T, s, p string) {
		if len(s)+len(p) > 4096 {
			return
		}
		st, err := status.ParseState(s)
		if ok := slices.Contains(status.States(), status.State(s)); ok != (err == nil) || (ok && string(st) != s) || (!ok && st != "") {
			t.Fatalf("ParseState(%q) = %q, %v", s, st, err)
		}
		ph, err := status.ParsePhase(p)
		if ok := p == "" || slices.Contains(status.Phases(), status.Phase(p)); ok != (err == nil) || (ok && string(ph) != p) || (!ok && ph != "") {
			t.Fatalf("ParsePhase(%q) = %q, %v", p, ph, err)
		}
		order := status.Phase(p).Order()
		if (err == nil) != (order >= 0) || order > len(status.Phases()) {
			t.Fatalf("phase %q: order %d", p, order)
		}
		if status.Phase(p).AfterPointOfNoReturn() != (err == nil && order >= status.PhaseFlashing.Order()) {
			t.Fatalf("phase %q: AfterPointOfNoReturn = %v", p, status.Phase(p).AfterPointOfNoReturn())
		}
		// Cancellable: pending always, in progress before flashing only,
		// never an unknown phase or a terminal state.
		cancellable := status.Cancellable(status.State(s), status.Phase(p))
		want := status.State(s) == status.Pending ||
			(status.State(s) == status.InProgress && err == nil && !status.Phase(p).AfterPointOfNoReturn())
		if cancellable != want {
			t.Fatalf("Cancellable(%q, %q) = %v", s, p, cancellable)
		}

		bs, err := status.ParseBatchState(s)
		if ok := slices.Contains(status.BatchStates(), status.BatchState(s)); ok != (err == nil) || (ok && string(bs) != s) {
			t.Fatalf("ParseBatchState(%q) = %q, %v", s, bs, err)
		}
		r, err := status.ParseReason(s)
		if ok := s == "" || slices.Contains(status.Reasons(), status.Reason(s)); ok != (err == nil) || (ok && string(r) != s) {
			t.Fatalf("ParseReason(%q) = %q, %v", s, r, err)
		}
		if err == nil && !r.Outcome().Terminal() {
			t.Fatalf("reason %q ends in %q, not a terminal state", s, r.Outcome())
		}
		if pr := status.PauseReason(p); pr.Valid() != (p == "" || p == "operator" || p == "failure-threshold" || p == "success-threshold") {
			t.Fatalf("PauseReason(%q).Valid() = %v", p, pr.Valid())
		}

		// Transitions: none out of an unknown or terminal state, none to
		// an unknown one or to the same state.
		for _, to := range append(status.States(), status.State(p)) {
			can := status.CanTransition(status.State(s), to)
			from := status.State(s)
			if can && (!from.Valid() || !to.Valid() || from.Terminal() || from == to) {
				t.Fatalf("CanTransition(%q, %q) = true", s, to)
			}
		}
	})
}

// FuzzUploadProgress: the progress of an upload stays within the upload's
// range (ProgressChecksum to ProgressUploaded) and never goes back as bytes
// are sent, whatever sizes the host and the image give. The fuzzer moves
// integers in small steps: shift scales the sizes up to reach large ones.
func FuzzUploadProgress(f *testing.F) {
	f.Add(int64(0), int64(0), int64(1), uint8(0))
	f.Add(int64(512), int64(1024), int64(1), uint8(10))
	f.Add(int64(32<<20), int64(30<<20), int64(4096), uint8(0))
	f.Add(int64(-1), int64(1)<<40, int64(1)<<39, uint8(0))
	f.Add(int64(99), int64(100), int64(1), uint8(40))
	f.Fuzz(func(t *testing.T, sent, total, more int64, shift uint8) {
		fzCheckProgress(t, sent, total, more)
		s := shift % 64
		if sent<<s>>s == sent && total<<s>>s == total && more<<s>>s == more {
			fzCheckProgress(t, sent<<s, total<<s, more<<s)
		}
	})
}

func fzCheckProgress(t *testing.T, sent, total, more int64) {
	t.Helper()
	p := status.UploadProgress(sent, total)
	if p < status.ProgressChecksum || p > status.ProgressUploaded || status.ValidateProgress(p) != nil {
		t.Fatalf("UploadProgress(%d, %d) = %d, outside %d-%d", sent, total, p, status.ProgressChecksum, status.ProgressUploaded)
	}
	if total > 0 && sent >= total && p != status.ProgressUploaded {
		t.Fatalf("UploadProgress(%d, %d) = %d: a finished upload is not at %d", sent, total, p, status.ProgressUploaded)
	}
	if more < 0 || sent > math.MaxInt64-more {
		return
	}
	if later := status.UploadProgress(sent+more, total); later < p {
		t.Fatalf("UploadProgress(%d, %d) = %d, but after %d more bytes %d", sent, total, p, more, later)
	}
}
