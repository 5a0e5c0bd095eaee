// Command fwupgrade upgrades the firmware of one real OpenWrt device over
// SSH, with the fwupgrader engine and its openwrt upgrader.
//
//	fwupgrade upgrade --host H [--port 22] [--user root]
//	    (--identity KEYFILE | --password-env VAR) --known-hosts FILE
//	    --image FILE [--uuid UUID | --no-identity-check] [--option c,F,...]
//	    [--reconnect-delay D --reconnect-retry-delay D --reconnect-max-retries N]
//	    [--upgrade-timeout D] [--retries N] [--expect-release STR] [--json]
//
// D is a Go duration such as 2s. The device's host key must be in the
// known_hosts file: there is no way to skip the check. The device's model and
// board are read first and the image must fit them (by its OpenWrt file
// name, or its own fwtool metadata). --option takes sysupgrade's letters
// (default c: keep the configuration).
//
// On a terminal it draws a progress bar and the phases; otherwise it prints
// plain lines. With --json it prints the final operation as one JSON object
// on standard output (and the progress on standard error). Ctrl-C cancels
// the upgrade cleanly before flashing; once flashing has started it says it
// is too late and waits for the device.
//
// Exit codes: 0 success (or already installed), 1 failed, 2 aborted (device
// untouched: wrong board, wrong UUID, host key mismatch, ...), 3 cancelled,
// 64 bad usage (bad flags, missing or unreadable files).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, sig))
}
