// Package openwrt upgrades OpenWrt devices over SSH. Its [Upgrader]
// implements upgrader.Upgrader and upgrader.Verifier; register it in an
// upgrader.Registry for the devices whose connection kind is OpenWrt over
// SSH. It follows openwisp-firmware-upgrader's OpenWrt upgrader and fixes its
// known failures.
//
// # Credentials and host keys
//
// The host gives the device's address, user, password and/or keys, and a
// host key check through [Config.CredentialsFunc], asked on every attempt
// and on every reconnection after the flash (the address can change over a
// reboot). Host keys are always verified: build the check with [KnownHosts]
// or [PinnedKey]; credentials without one are refused. Secrets never reach a
// log line or an error message.
//
// # Steps of an attempt
//
// [Upgrader.Upgrade] reports each phase to the job's reporter before the
// step, checks for a cancel between steps, and reports progress at the
// milestones of the status package:
//
//  1. connecting: TCP and SSH login (progress 10). A refused or unknown host
//     key aborts the operation (host-key-mismatch); other failures are
//     recoverable (connection-failed).
//  2. identity: "uci get openwisp.http.uuid" must equal the device's ID
//     (UUIDs compared without dashes, ignoring case), or the operation is
//     aborted (identity-mismatch) (progress 15). [Config.SkipIdentityCheck]
//     turns it off.
//  3. checksum: when /etc/openwisp/firmware_checksum holds the image's
//     SHA-256 the device already runs it: not needed (already-installed),
//     nothing uploaded (progress 20).
//  4. memory: /tmp/opkg-lists is removed and the caches dropped; if the
//     image plus [Config.MemoryMargin] does not fit in MemAvailable (MemFree
//     on old kernels), [Config.Services] are stopped and the wireless brought
//     down; still short → aborted (insufficient-memory).
//  5. upload: the image is streamed to [Config.RemotePathFunc]'s path by the
//     first method the device offers (SFTP, SCP, "cat >"; the one that
//     worked is remembered per address), progress 20→60 by bytes, then
//     checked with sha256sum: a broken transfer is recoverable
//     (upload-failed), a different checksum too (upload-corrupt).
//  6. image-test: "sysupgrade --test [-F] PATH"; refused → aborted
//     (image-invalid) with the device's output in the log.
//  7. flashing: the boot id is read, /etc/openwisp/checksum removed, and
//     only if the reporter accepts the move into status.PhaseFlashing (the
//     compare-and-set against a cancel) "sysupgrade -v FLAGS PATH" runs
//     (progress 65). The session dropping or timing out
//     ([Config.UpgradeTimeout]) is expected, and so is the false
//     "Command failed: ubus call system sysupgrade … do_stage2 …" error of
//     OpenWrt >= 21.02. Any other non-zero exit is failed (flash-failed):
//     the device did not start flashing, so the services are started again
//     and no reboot is waited for.
//  8. rebooting, verifying: after [Config.ReconnectDelay], up to
//     [Config.ReconnectMaxRetries] reconnections every
//     [Config.ReconnectRetryDelay] (progress 90 at the first). The upgrade is
//     proven when the boot id changed and, if the build has an OS
//     identifier, DISTRIB_DESCRIPTION of /etc/openwrt_release equals it (both
//     trimmed, compared exactly). The image's SHA-256 is then written to
//     /etc/openwisp/firmware_checksum (progress 100). Never reachable → failed
//     (unreachable-after-flash); same boot id until the end or another
//     release → failed (old-firmware-after-reboot).
//
// Whenever an attempt ends before flashing (abort, cancel, failure, ctx
// ending) the services it stopped are started again and the uploaded file
// is removed, on a new connection with a fresh short context if needed.
//
// [Upgrader.Verify] proves the outcome of a flash found after a crash
// without flashing again: the firmware checksum file, or the release.
//
// # Options and commands
//
// sysupgrade's flags come from the operation's options ([ParseOptions],
// [Options]). Every command sent to the device is made of single-quoted
// words, so file names such as "x;reboot;.bin" reach the device literally.
// Commands that exit non-zero are reported as *[CommandError].
package openwrt
