// Package faultmatrix is the fault matrix: every fault an OpenWrt upgrade can
// meet, written down with the outcome the library promises for it, and
// proven end to end. It holds no code of its own, only tests.
//
// TestFaultMatrix is one table. Each row names a fault, sets it up on
// simulated devices (openwrt/openwrttest: real SSH, per-release profiles,
// Faults), runs a real scenario through the real engine (upgrader.NewEngine
// with openwrt.New, on the memory store, or on PostgreSQL through
// storeadapters/postgres where the row is about storage or processes) and
// states what must come of it in an expect value, checked by one shared
// checker:
//
//   - the operation's terminal state and reason, exactly;
//   - what the device received: nothing, commands but no image, or the
//     image in /tmp by the expected method, tested with sysupgrade --test,
//     flashed with the expected options;
//   - how many times it was flashed (never more than once);
//   - that its services run again when it was not flashed (the upgrader
//     stops services to free memory, and must start them again);
//   - that every operation of the store ended and holds no lease.
//
// On top of each row's expectations the checker asserts what must hold
// whatever the fault: no second flash or flash command, no flash without an
// upload checked on the device and an image test before it, no image left
// in the device's RAM when it was not flashed, no success without the
// device running the build's release, and no record of the image on the
// device (the firmware checksum file, the store's device firmware) without
// a proven success.
//
// Rows that concern processes kill an engine process (this test binary run
// again, see TestFaultMatrixProcess) with SIGKILL while it holds an
// operation, and let an engine in the test process take over once the lease
// expired; one row restarts PostgreSQL (a crash) in the middle of a batch.
//
// A row whose outcome shows a defect of the library keeps its expectations
// (what the library must do) and fails until the defect is fixed: its field
// defect says what is wrong, and a failing row logs it ("KNOWN DEFECT").
//
// The rows run in parallel. Run them with
//
//	go test -race ./internal/faultmatrix
package faultmatrix
