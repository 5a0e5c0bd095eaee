// Command fwupgrade upgrades the firmware of OpenWrt devices over SSH with
// the fwupgrader engine and its openwrt upgrader: one device, or the
// devices of an inventory in a rollout, and controls rollouts kept in
// PostgreSQL from any machine.
//
//	fwupgrade upgrade --host H [--port 22] [--user root]
//	    (--identity KEYFILE | --password-env VAR) --known-hosts FILE
//	    --image FILE (--uuid UUID | --no-identity-check) [--option c,F,...]
//	    [--reconnect-delay D] [--reconnect-retry-delay D] [--reconnect-max-retries N]
//	    [--upgrade-timeout D] [--retries N] [--retry-delay D]
//	    [--expect-release STRING] [--json]
//
//	fwupgrade batch --inventory FILE.json --image FILE [--image FILE ...]
//	    [--image-map FILE.json] [--name NAME] [--option c,F,...] [--no-identity-check]
//	    [--concurrency N] [--rate N/min] [--waves 1,10%,100%] [--wave-wait D]
//	    [--failure-threshold 20%] [--window "01:00-05:00 Europe/Rome" ...]
//	    [--group-limit N --group-by location|group] [--offline-max-wait D]
//	    [--dry-run [--check]] [--hold] [--wait-paused]
//	    [--store postgres://... [--schema NAME]] [--json] [device flags of upgrade]
//
//	fwupgrade status|pause|cancel --store postgres://... [--schema NAME] --batch ID [--json]
//	fwupgrade resume --store postgres://... [--schema NAME] --batch ID [--json]
//	    [--inventory FILE.json [batch's engine and device flags]]
//
//	fwupgrade help [COMMAND]    (or COMMAND --help: every flag, its default and an example)
//
// D is a Go duration such as 2s. Host keys are always verified against
// OpenSSH known_hosts files: there is no way to skip the check.
//
// # upgrade
//
// The device's model and board are read first and the image must fit them
// (by its OpenWrt file name, or its own fwtool metadata); then the identity
// check (the OpenWISP UUID), memory, upload, sysupgrade --test, the flash
// and the reconnection that proves the device runs the new firmware.
// --option takes sysupgrade's letters (default c: keep the configuration).
// On a terminal it draws a progress bar; otherwise plain lines. With --json
// it prints the final operation as one JSON object on standard output (the
// progress on standard error). Ctrl-C cancels the upgrade cleanly before
// flashing; once flashing has started it says it is too late and waits for
// the device.
//
// # batch
//
// Each device of the inventory gets the image that fits its model and board
// name: by the image's OpenWrt file name in the built-in map merged with
// --image-map (imagemap.ParseJSON's format), or by the boards the image's
// fwtool metadata names. Devices no image fits are skipped, with the reason.
// The rollout (store.Rollout) comes from --concurrency (MaxConcurrent),
// --rate (StartRate), --waves (store.ParseWaves), --wave-wait,
// --failure-threshold, --window (store.ParseWindow) and --group-limit.
// --dry-run prints the plan and changes nothing; --check also runs the
// read-only checks on every device (upgrader.Engine.DryRunBatch).
//
// The inventory is one JSON object:
//
//	{
//	  "defaults": {"user": "root", "identity_file": "keys/fleet_ed25519",
//	               "known_hosts": "known_hosts"},
//	  "devices": [
//	    {"id": "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e", "name": "ap-lobby",
//	     "host": "192.0.2.10", "port": 22, "model": "TP-Link Archer C7 v2",
//	     "board_name": "tplink,archer-c7-v2", "group": "floor-1", "location": "rome"},
//	    {"id": "0b9f3a52-6c1d-4e8f-a7b2-3c4d5e6f7a8b", "name": "ap-roof",
//	     "host": "192.0.2.11", "board_name": "glinet,gl-ar300m",
//	     "password_env": "ROOF_PASSWORD"}
//	  ]
//	}
//
// id and host are required; id is the OpenWISP UUID unless
// --no-identity-check; model or board_name is required (they choose the
// image); exactly one of identity_file and password_env (the name of an
// environment variable), and known_hosts, here or in "defaults" (which may
// hold port, user, identity_file, password_env and known_hosts). Relative
// file names are relative to the inventory's directory. Unknown fields,
// duplicate ids, two devices at one address, unreadable keys and devices
// whose host key is not in their known_hosts file are refused before
// anything starts.
//
// On a terminal a table shows each device's wave, state, phase and
// progress; otherwise one line per change. Then a summary; with --json one
// JSON object on standard output: batch_id, name, state, summary, wave,
// waves, store, counts (total, pending, in_progress, success, failed,
// aborted, cancelled, skipped), operations (id, device, name, image, wave,
// state, reason, phase, progress, attempts, last_log) and skipped (device,
// name, reason, detail).
//
// Ctrl-C pauses the batch (no new device starts; running devices finish),
// prints how to resume or cancel it and exits 3; a second Ctrl-C cancels
// it. With the memory store (the default) the batch lives only in this
// process. With --store postgres://... it is kept in PostgreSQL (the
// storeadapters/postgres store, image bytes included), where status,
// pause, resume and cancel reach it from any machine, several processes
// (batch, or resume --inventory) can run it together, and --hold creates it
// without starting it.
//
// # Exit codes
//
//	0   success: every device runs the image (or already did); a control
//	    command did what was asked; a dry run found every device ready
//	1   failed: at least one device failed (after flashing, or retries exhausted)
//	2   aborted or skipped: at least one device left untouched on purpose
//	    (wrong board, wrong UUID, host key mismatch, memory, image refused,
//	    no image for its board, busy in another batch); a dry run found one
//	    that would not be upgraded
//	3   cancelled or paused (the batch can be resumed)
//	4   the command could not run: store unreachable, no such batch, or a
//	    state that does not allow the command (pausing an ended batch)
//	64  bad usage: bad flags, missing or unreadable files, a malformed
//	    inventory; nothing was started
//
// When several apply, the first of 1, 3, 2 wins.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, sig))
}
