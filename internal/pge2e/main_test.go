// Package pge2e_test holds the multi-process end-to-end tests: engines in
// separate processes (this test binary run again, see TestEngineProcess)
// share one PostgreSQL store (storeadapters/postgres) and upgrade simulated
// OpenWrt devices (openwrt/openwrttest) over real SSH.
//
// The test process (the parent) runs the devices, so that they outlive the
// engine processes it kills and record every flash, and the database (the
// throwaway cluster of pgtest, or one of its own for the restart test). It
// creates the catalog, the devices and the batches through an engine of its
// own that it never starts; the engine processes claim and run the
// operations. What the tests check is read from the store and from the
// devices, never from timing.
//
//   - TestKilledEngineProcesses: three engine processes share a 300-device
//     batch under a cap and a per-location limit; one is killed (SIGKILL)
//     while some of its devices upload and others reboot, another later.
//     The last one finishes everything: a new attempt before flashing, a
//     verification (never a second flash) after.
//   - TestPostgresRestart: the database is restarted (fast shutdown, and a
//     crash) in the middle of a batch; the engines reconnect, the batch
//     completes, and nothing recorded before the restart is lost.
//   - TestCancelAcrossProcesses: an attempt uploading in one process is
//     cancelled from another; it stops before flashing, the device is never
//     flashed and its services run again.
package pge2e_test

import (
	"testing"

	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
