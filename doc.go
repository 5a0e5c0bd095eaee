// Package fwupgrader upgrades the firmware of fleets of network devices —
// OpenWrt over SSH first — from Go services that embed it.
//
// The library is a set of small packages with one direction of imports:
//
//   - status: operation and batch states, phases, progress milestones and the
//     typed reasons of every outcome;
//   - imagemap: which image type fits which board (a built-in OpenWrt map,
//     custom entries, OpenWrt's profiles.json, fwtool metadata read from an
//     image);
//   - store: the records and the small interfaces a storage backend
//     implements, with store/storetest as the conformance suite;
//   - storeadapters/memory: the in-process store;
//   - upgrader: the engine (operations that always end, retries, deadlines,
//     cancellation before flashing, events) and the Upgrader seam, with
//     upgrader/upgradertest for people who write their own upgraders;
//   - openwrt: the OpenWrt upgrader over SSH.
//
// Start with this package's Example (a whole program on the memory store) and the upgrader package's examples, then examples/quickstart.
package fwupgrader
