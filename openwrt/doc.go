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
//     aborted (identity-mismatch). [Config.SkipIdentityCheck] turns it off.
//     Then the attempt learns the device's release (/etc/openwrt_release),
//     board name (/tmp/sysinfo, else "ubus call system board", else the
//     host's record) and compat_version (/etc/board.json), and refuses,
//     before anything is uploaded: an option the release lacks
//     (invalid-options); an image whose own fwtool metadata does not list
//     the device's board name, even with -F (no-image-for-board); a
//     compat_version major mismatch, and a minor one unless -n or
//     --ignore-minor-compat-version allows it (image-invalid) (progress 15).
//  3. checksum: when /etc/openwisp/firmware_checksum holds the image's
//     SHA-256 the device already runs it: not needed (already-installed),
//     nothing uploaded (progress 20).
//  4. memory: /tmp/opkg-lists is removed and the caches dropped; the upload
//     directory's free space must hold the image; if the image plus
//     [Config.MemoryMargin] does not fit in MemAvailable (on 12.09 and
//     14.07: MemFree + Buffers + Cached - Shmem), [Config.Services] are
//     stopped, the wireless brought down (unless [Config.KeepWireless]) and
//     the caches dropped again; still short → aborted (insufficient-memory).
//  5. upload: the image is streamed to [Config.RemotePathFunc]'s path by the
//     first method the device offers (SFTP, SCP, "cat >"; the one that
//     worked is remembered per address), progress 20→60 by bytes, then
//     checked with sha256sum (md5sum before 17.01): a broken transfer is
//     recoverable (upload-failed), a different checksum too
//     (upload-corrupt).
//  6. image-test: "sysupgrade --test FLAGS PATH", with the operation's own
//     flags, so that what the flash would refuse is refused now; refused →
//     aborted (image-invalid), the device's output in the log. 12.09 has
//     no --test: the metadata checks of step 2 stand in for it.
//  7. flashing: the boot id is read, /etc/openwisp/checksum removed, and
//     only if the reporter accepts the move into status.PhaseFlashing (the
//     compare-and-set against a cancel) "sysupgrade -v FLAGS PATH" runs
//     (progress 65); from then on it is sent even if ctx ends. The session
//     dropping or timing out ([Config.UpgradeTimeout]) is expected, and so is
//     the exit 246 "Command failed: ubus call system sysupgrade … do_stage2
//     … (Connection failed)" of 22.03 and later. procd's "(Not supported)",
//     any other non-zero exit, or a command that could not be started (after
//     3 tries) is failed (flash-failed): the device was not flashed, so the
//     services are started again, the image removed, and no reboot waited
//     for. Its output reaches the operation's log line by line while it
//     runs (see Operation log); the verdict is judged on the whole output
//     and on standard error alone.
//  8. rebooting, verifying: after [Config.ReconnectDelay], reconnections
//     every [Config.ReconnectRetryDelay] with a short TCP connect timeout
//     ([Config.ReconnectDialTimeout]) for [Config.ReconnectWindow] (15
//     minutes; [Config.ReconnectMaxRetries] may cap the attempts), so a
//     device whose address is silent while it reboots is reached well
//     within a second of its SSH answering (progress 90 at the first). The
//     upgrade is proven when the boot id changed and the device runs the
//     expected release: the build's OS identifier, else the release in the
//     image's metadata, compared by version and revision ([Release.Same]:
//     17.01's "LEDE Reboot" codename is not part of it); when neither names
//     one, the release must differ from the one before the flash. Only then
//     is the image's SHA-256 written to /etc/openwisp/firmware_checksum
//     (progress 100). Never reachable → failed (unreachable-after-flash);
//     same boot id until the end or another release → failed
//     (old-firmware-after-reboot).
//
// # Releases
//
// What differs from release to release, as read from OpenWrt's sources at
// each tag ([CapabilitiesOf]):
//
//	release  checksum   --test  options       compat check  flash ends with
//	12.09    md5sum     no      -c -n -F      no            session drop
//	14.07    md5sum     yes     -c -n -F      no            session drop
//	15.05    md5sum     yes     -c -n -F      no            session drop
//	17.01    sha256sum  yes     + -p          no            session drop
//	18.06    sha256sum  yes     + -p          no            session drop
//	19.07    sha256sum  yes     + -o -u -k    no            session drop
//	21.02    sha256sum  yes     + -o -u -k    yes (-n)      session drop
//	22.03+   sha256sum  yes     + --ignore-minor-compat-version
//	                                          yes           exit 246 through ubus
//
// 12.09 and 14.07 kernels have no MemAvailable; most 12.09 targets have no
// /tmp/sysinfo. DISTRIB_DESCRIPTION carries a codename up to 17.01 ("OpenWrt
// Attitude Adjustment 12.09", "LEDE Reboot 17.01.7 r4030-…"). With no flag
// sysupgrade still keeps the configuration files it lists (conffiles);
// -n is what drops the configuration, and the device then comes back with
// new host keys. -F makes sysupgrade skip its image checks, but not the
// upgrader's metadata check, and on 25.12 it does not make --test accept
// everything. During a reboot a device's address usually goes silent
// (connections time out rather than being refused).
//
// Whenever an attempt ends before flashing (abort, cancel, failure, ctx
// ending) the services it stopped are started again and the uploaded file
// is removed, on a new connection with a fresh short context if needed.
//
// [Upgrader.Verify] proves the outcome of a flash found after a crash
// without flashing again: the firmware checksum file, or the release.
//
// # Operation log
//
// Each step logs what it did, for people (upgrader.Reporter.Log). The
// output of sysupgrade --test and of the flash reaches the log one line at
// a time, as the device prints it: up to [MaxOutputLines] lines of
// standard output and as many of standard error, then, when the command
// ends, a line counting those left out and the last [OutputTailLines] of
// each stream (with -v sysupgrade lists every file it keeps; its verdict
// comes last). A line is cut at 1 KiB, and the password of the
// credentials is replaced by "[redacted]" wherever a line holds it. The
// lines go to the log from a goroutine of their own: a slow store never
// holds up sysupgrade's output.
//
// The error an attempt ends with says what happened once, "openwrt: "
// written once, with the last line of the device's output rather than all
// of it: "openwrt: sysupgrade exited with status 1, the device was not
// flashed: sysupgrade: failed to write image: Input/output error". When the
// upgrade is proven, the upgrader tells the engine what it proved
// (upgrader.Prover), and the operation ends with that one success line:
// `success: the device runs "OpenWrt 23.05.3 r23809-234f1a2efa" (boot id
// changed)`. Given a Reporter that is no Prover, it logs that line itself.
//
// # Options and commands
//
// sysupgrade's flags come from the operation's options ([ParseOptions],
// [Options]). Every command sent to the device is made of single-quoted
// words, so file names such as "x;reboot;.bin" reach the device literally.
// Commands that exit non-zero are reported as *[CommandError].
package openwrt
