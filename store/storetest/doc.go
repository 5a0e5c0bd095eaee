// Package storetest is the conformance suite of fwupgrader stores: every
// contract point of package store (its doc comment and the comments of the
// interface methods) is a named subtest here. A behaviour with no subtest is
// not part of the contract.
//
// Every adapter runs it, the ones in storeadapters and the ones hosts write
// for their own databases. A host runs it from an ordinary test of its
// adapter package, giving a factory that returns a fresh, empty store for
// each subtest (subtests run in parallel, so stores must not share state the
// suite could observe):
//
//	func TestConformance(t *testing.T) {
//		t.Parallel()
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := mystore.Open(t.Context(), testDSN(t)) // e.g. a fresh schema
//			require.NoError(t, err)
//			t.Cleanup(func() { s.Close() })
//			return s
//		}, nil)
//	}
//
// Subtests are grouped by topic (Category, Build, Image, Device,
// DeviceFirmware, Operation, Transition, Progress, Log, Batch, Organization,
// List, Copy, Invalid, Claims, Rollout, Concurrency), so one group or one point can be
// run alone, e.g. go test -run 'TestConformance/Transition/'.
//
// Lease times come from the store's clock, which the suite does not control:
// the Claims group uses short real leases (150 ms) and sleeps past them, so it
// takes about a second; a store whose clock is far from the test machine's
// still passes, as the suite derives every time it sets (NextAttemptAt,
// Deadline) from times the store stamped.
package storetest
