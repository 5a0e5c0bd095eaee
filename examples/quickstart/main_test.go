package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestQuickstart runs the whole example: a simulated device upgraded end to
// end, with its live output.
func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out); err != nil {
		t.Fatalf("quickstart failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"phase connecting", "phase upload", "phase flashing", "phase verifying", ": success, progress 100%", newRelease} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
