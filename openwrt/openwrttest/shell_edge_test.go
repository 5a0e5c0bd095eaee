package openwrttest

import "testing"

// TestEmptyPathAndLineContinuation: an empty argument names no file (as on
// a real system, "rm -rf" of it removes nothing), and a backslash-newline is
// nothing, not an empty word.
func TestEmptyPathAndLineContinuation(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	c := dial(t, d)
	if out := run(t, c, "echo a \\\n b", nil).stdout; out != "a b\n" {
		t.Fatalf("line continuation: got %q, want %q", out, "a b\n")
	}
	run(t, c, "echo keep > /tmp/keep", nil)
	run(t, c, "rm -rf ''", nil)
	run(t, c, "rm -rf \\\n", nil)
	if _, ok := d.File("/tmp/keep"); !ok {
		t.Fatal("rm -rf '' removed files")
	}
	if out := run(t, c, "[ -e '' ] && echo EXISTS || echo MISSING", nil).stdout; out != "MISSING\n" {
		t.Fatalf("[ -e '' ]: got %q", out)
	}
}
