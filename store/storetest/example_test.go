package storetest_test

import (
	"testing"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/store/storetest"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
)

// A host that writes its own store (for its own database) proves it with the
// suite, from an ordinary test in its adapter's package. The factory is
// called once per subtest and must return a fresh, empty store: subtests run
// in parallel.
//
// The suite needs a *testing.T, so this example is only compiled, not run:
// TestConformance below is what goes into the adapter's _test.go file, with
// the adapter's own constructor where memory.New stands.
func ExampleRun() {
	TestConformance := func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, func(t *testing.T) store.Store {
			s := memory.New() // e.g. mystore.Open(t.Context(), dsn) in a fresh schema
			// t.Cleanup(func() { s.Close() }) for stores that hold resources
			return s
		}, nil)
	}

	// While developing, a quick run without the concurrency group (a store
	// that skips it does not conform):
	TestConformanceQuick := func(t *testing.T) {
		storetest.Run(t, func(*testing.T) store.Store { return memory.New() },
			&storetest.Options{SkipConcurrency: true})
	}
	// Run one group or one contract line alone with, e.g.,
	//   go test -run 'TestConformance/Transition/'

	_, _ = TestConformance, TestConformanceQuick
}
