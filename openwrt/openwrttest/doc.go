// Package openwrttest is an in-process OpenWrt-like device that speaks real SSH.
//
// A Device listens on 127.0.0.1, accepts SSH connections (x/crypto/ssh server
// side, password and public-key authentication, a fixed host key), and runs
// the shell commands the project's OpenWrt upgrader sends through a small,
// safe interpreter: nothing is ever executed on the host. It understands
// single and double quotes, backslash escapes, the separators ";", "&&" and
// "||", and the redirections ">", ">>", "<", "2>" and "2>&1". A command the
// device does not have prints busybox ash's "ash: NAME: not found" and
// exits 127.
//
// Files live in an in-memory store. Uploads (SFTP through pkg/sftp's request
// server, the sink side of legacy SCP, or "cat > FILE") are streamed: only the
// first 4 KiB, the last 34 KiB (where fwtool metadata lives), the size, a
// SHA-256, an MD5 and a CRC-32 are kept for large files, so thousands of
// devices can receive 32 MiB images in one process. /tmp is a tmpfs of half
// the RAM: files there count against MemAvailable, and a write that does not
// fit fails with "No space left on device". Stopping services, removing
// /tmp/opkg-lists and dropping caches free memory.
//
// # Releases
//
// A device behaves as the OpenWrt release it runs: Config.Release (a
// DISTRIB_DESCRIPTION; ReleaseDescription gives a real one per series)
// chooses its Profile, and each flash switches to the profile of the image's
// release. The facts were read from each release tag's sources (base-files
// sbin/sysupgrade and lib/upgrade/*.sh, busybox Config-defaults.in, procd
// system.c, the ubus CLI, include/image-commands.mk):
//
//	         sha256sum  --test  -p  -o -u -k  --ignore-minor  --help  fwtool  compat  flash ends       MemAvail  sysinfo  ubus board
//	12.09    -          -       -   -         -               1       -       -       kill (drop)      -         ar71xx*  -
//	14.07    -          yes     -   -         -               1       -       -       kill (drop)      -         yes      model
//	15.05    -          yes     -   -         -               1       -       -       kill (drop)      yes       yes      model
//	17.01    yes        yes     yes -         -               1       yes     -       kill (drop)      yes       yes      board_name
//	18.06    yes        yes     yes -         -               1       yes     -       drop             yes       yes      board_name
//	19.07    yes        yes     yes yes       -               1       yes     -       drop             yes       yes      board_name
//	21.02    yes        yes     yes yes       -               1       yes     yes     drop             yes       yes      board_name
//	22.03    yes        yes     yes yes       yes             1       yes     yes     exit 246         yes       yes      + rootfs_type
//	23.05    yes        yes     yes yes       yes             1       yes     yes     exit 246         yes       yes      + rootfs_type
//	24.10    yes        yes     yes yes       yes             0       yes     yes     exit 246         yes       yes      + rootfs_type
//	25.12    yes        yes     yes yes       yes             0       yes     yes     exit 246 (+prov) yes       yes      + rootfs_type
//
// (*: on 12.09 /tmp/sysinfo exists only on the ar71xx, mcs814x and mpc83xx
// targets; the model is then in the "machine" line of /proc/cpuinfo.) md5sum
// and free exist in every release, timeout, nohup and stat in none; df is
// always there. -d exists up to 17.01, -l from 14.07, -s from 24.10, -P in
// 25.12. What else differs:
//
//   - Messages. "Invalid option: X" (exit 1), "Image check failed." and the
//     output of the image checks go to stdout before 19.07 and to stderr from
//     19.07; up to 18.06 a failed check reads "Image check
//     'fwtool_check_image' failed." (or 'platform_check_image'), and -F
//     skips the checks after it. From 21.02 the script's v() messages
//     ("Saving config files...", "Commencing upgrade. Closing all shell
//     sessions.", the fwtool messages) are dated, "<date> upgrade: ...", on
//     stderr; before, plain on stdout. Usage goes to stdout.
//   - The flash. Up to 17.01 sysupgrade prints "Sending TERM to remaining
//     processes ... " and its session drops (no exit status); 18.06 to 21.02
//     print "Commencing upgrade..." and drop. From 22.03 procd stops every
//     service before answering, so the device stops listening at once, the
//     ubus client prints "Command failed: ubus call system sysupgrade {
//     "prefix": "\/tmp\/root", "path": ..., ["force": true,] ["backup":
//     "\/tmp\/sysupgrade.tgz",] "command": "\/lib\/upgrade\/do_stage2",
//     "options": { "save_partitions": 1|0[, "add_provisioning": 0] } }
//     (Connection failed)" on stderr and sysupgrade exits 246 while the flash
//     goes on; the session is cut right after. -F adds "force", -n removes
//     "backup", -p makes save_partitions 0, 25.12 adds add_provisioning, -s
//     (24.10 on) use_curr_part.
//   - The checks. The simulated platform_check_image reads the FWSIM header
//     of Image and compares its boards with the device's board_name, never
//     its model; a file without header passes when it carries fwtool
//     metadata (17.01 on), else it is "Invalid image type.". fwtool metadata
//     is read from the end of the uploaded file as "fwtool -i" does (CRC
//     included): missing metadata is "Image metadata not found" (up to
//     19.07) / "Image metadata not present" and passes unless
//     Config.RequireImageMetadata; JSON that does not parse is "Failed to
//     parse message data" and "Invalid image metadata"; a board_name not in
//     supported_devices is "Device X not supported by this image" and
//     "Supported devices: ...". From 21.02 an image whose compat_version is
//     not 1.0 lists its boards in new_supported_devices (older releases see
//     the message in supported_devices and refuse it unless -F), a major
//     compat mismatch with the device's is refused, a minor one unless -n
//     or (22.03 on) --ignore-minor-compat-version. -F forces past any
//     failed check, except on 25.12 where a file that is no image at all is
//     marked broken and cannot be forced, even with --test.
//   - Overlay. From 18.06, -c (and -o) on a device without
//     /overlay/upper/etc (Config.RootFS ext4 or initramfs) is refused:
//     "Cannot find '/overlay/upper/etc', required for '-c'" (24.10 on: "...
//     required for '-c' or '-o'"); before, -c quietly saves the usual files.
//     From 19.07 -u without /rom is "'/rom/' is required by '-u'" (stdout).
//   - With -v (two levels of verbosity) sysupgrade lists every file it saves
//     before flashing, without the leading "/": on stdout, on stderr from
//     24.10. Config.BackupFiles makes the list as long as wanted.
//   - /etc/openwrt_release: double-quoted with DISTRIB_CODENAME on 12.09
//     and 14.07 (DISTRIB_DESCRIPTION="OpenWrt Attitude Adjustment 12.09"),
//     single-quoted from 15.05 ('OpenWrt Chaos Calmer 15.05.1'), 'LEDE
//     Reboot 17.01.7 r4030-6028f00df0' with DISTRIB_ID='LEDE' on 17.01, 'OpenWrt
//     23.05.6 r24232-539228933c' from 18.06; DISTRIB_ARCH from 17.01,
//     DISTRIB_TAINTS from 14.07. /etc/board.json exists from 15.05 and
//     carries system.compat_version from 21.02.
//   - "ubus call system board" fails with "Command failed: Not found" (exit
//     4) on 12.09, which has no procd.
//
// # Flash and reboot
//
// "sysupgrade PATH" checks the image, prints what OpenWrt prints, records a
// Flash, drops every SSH connection, closes the listener and comes back
// after Config.RebootDelay with a new boot id and the image's release (from
// its FWSIM header, else its fwtool metadata). Faults (refused or silent
// connections, dropped or corrupted uploads, devices that never come back or
// come back on the old firmware, procd refusing the image, new host keys
// after -n, ...) are set in Config.Faults.
//
// A Device costs one goroutine while it is up and idle; Close stops every
// goroutine it started, including pending reboots.
package openwrttest
