// Package badinput is the bad-input table: every kind of bad input the
// project knows of, on each of its three surfaces, written down with the
// outcome promised for it and proven. It holds no code of its own, only
// tests.
//
// TestBadInput is one table of rows. A row names its surface, the input,
// the expected outcome and what it proves, and runs the input through the
// real thing:
//
//   - the public Go API: an engine (upgrader.NewEngine) over the memory
//     store with its image bytes in a directory (upgrader.DirFiles), the
//     openwrt upgrader over real SSH, and simulated devices
//     (openwrt/openwrttest) of two boards, several releases and two
//     organizations, each row in a world of its own;
//   - the operator CLI, examples/fwupgrade, built by TestMain and run as a
//     process against simulated devices reached with a key the row
//     generates and authorises, verified with a known_hosts file the row
//     writes;
//   - the NMS example's REST API, examples/nms, built by TestMain and
//     started once (memory store, one simulated device of each of two
//     organizations) for all REST rows, which take turns.
//
// Each row asserts three things:
//
//  1. a clear error: the sentinel or type of the Go API (errors.Is,
//     errors.As: store.ErrNotFound, *store.ValidationError and its field,
//     upgrader.ErrImageInvalid, *upgrader.RefusedError and its
//     status.Reason, ...) with a message naming the problem; for the CLI
//     its documented exit code, and for exit 64 one line on standard error
//     naming the problem and nothing on standard output; for REST the HTTP
//     status with a JSON body whose "detail" names the problem;
//  2. nothing persisted half-way: a snapshot of the store (categories,
//     builds, images, devices and their firmware, operations and their
//     logs, batches, through the List calls) and of the image files is the
//     same before and after; the CLI leaves nothing in its TMPDIR; over
//     REST the snapshot is read through the list endpoints;
//  3. no device command sent: the simulated devices received no command
//     (Commands) and were never flashed (Flashed), or, where a row says so,
//     were only read (identity, release, board) and got no file. The NMS's
//     simulated devices live in its process: there, that no operation
//     exists is the proof.
//
// Inputs that are accepted on purpose are in the table too, with what
// proves them harmless: a file name with shell syntax (";", "$(...)",
// backticks, quotes, spaces, a newline, "*", a leading "-") is upgraded on a
// simulated device, whose interpreter parses commands as busybox ash does,
// and the row checks that the device ran the path as one word in every
// command and ran no other command; a zero duration or rate period, and a
// negative RetryPolicy.MaxRetries, mean what the documentation says.
//
// A row that shows a defect of the code under test keeps its expectations
// (what the code must do) and fails until the defect is fixed: its field
// defect says what is wrong, and a failing row logs it ("KNOWN DEFECT").
//
// The rows run in parallel (the REST rows one at a time, as they compare
// one store before and after). Run them with
//
//	go test -race ./internal/badinput
//
// and print the table as Markdown (for docs/RELIABILITY.md) with
//
//	go test -v ./internal/badinput -args -table
package badinput
