// Package openwrttest provides simulated OpenWrt devices that speak real
// SSH, so that a host embedding fwupgrader can test its own embedding (its
// CredentialsFunc, store, rollouts, UI) end to end without a router: the
// engine, the openwrt upgrader and x/crypto/ssh run unchanged against a
// Device in the same process. The project's own tests, examples and
// benchmarks use it the same way.
//
// A Device listens on a loopback address, accepts SSH connections
// (x/crypto/ssh server side, password and public-key login, its own host
// key, SFTP through pkg/sftp, legacy SCP, or "cat > FILE"), and runs the
// shell commands it receives through a small, safe interpreter: nothing is
// ever executed on the host. It behaves as the OpenWrt release it runs,
// from 12.09 to 25.12: its sysupgrade checks an uploaded image's board and
// fwtool metadata, flashes it, drops the connections and comes back after a
// reboot running the image's release, with a new boot id. Faults make it
// misbehave in the ways real devices do.
//
// # Lifecycle
//
// New(Config) validates a Config (every field optional, see Config for the
// defaults) and returns a device that is not listening; Start makes it
// listen; Close stops it and every goroutine it started, pending reboots
// included (use t.Cleanup). While it runs, a client needs:
//
//   - Addr: where to connect, "127.x.y.z:port". Ask for it on every
//     connection: with Faults.ComeBackOnNewAddress it changes after a reboot.
//   - the login: Config.User ("root") with Config.Password (DefaultPassword
//     by default), or a key of the host's own in Config.AuthorizedKeys;
//     Config.UUID is what the openwrt upgrader's identity check reads and
//     must be the device's ID in the store.
//   - the host key, always verified: HostKeyCallback (for
//     openwrt.Credentials.HostKeyCallback or an ssh.ClientConfig),
//     KnownHosts (a known_hosts line, for openwrt.KnownHosts) or HostKey
//     (for openwrt.PinnedKey). ClientConfig bundles the password login and
//     the host key check for ssh.Dial.
//
// WaitUp, WaitDown and WaitReboots wait for the device's state changes
// without sleeping.
//
// # A host's test
//
// The host wires the engine as in production (openwrt.New with its
// CredentialsFunc, upgrader.NewRegistry, upgrader.NewEngine with its store;
// short ReconnectDelay/ReconnectRetryDelay and engine Retry intervals keep
// the test fast) and points the credentials at the device:
//
//	dev, err := openwrttest.New(openwrttest.Config{UUID: id, RebootDelay: 100 * time.Millisecond})
//	require.NoError(t, err)
//	require.NoError(t, dev.Start())
//	t.Cleanup(func() { dev.Close() })
//	eng := newEngine(t, func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
//		return openwrt.Credentials{Address: dev.Addr(), User: "root",
//			Password: openwrttest.DefaultPassword, HostKeyCallback: dev.HostKeyCallback()}, nil
//	}) // the host's own wiring
//	sim := openwrttest.NewImage("23.05", dev.Config().BoardName, 1<<20)
//	cat, err := eng.CreateCategory(ctx, store.Category{Name: "routers"})
//	require.NoError(t, err)
//	build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05", OSIdentifier: sim.Release})
//	require.NoError(t, err)
//	img, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Name: sim.FileName()}, sim.Reader())
//	require.NoError(t, err)
//	_, err = eng.RegisterDevice(ctx, store.Device{ID: id, BoardName: dev.Config().BoardName,
//		OSIdentifier: dev.Release(), Connection: openwrt.Connection, Active: true})
//	require.NoError(t, err)
//	op, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: id, ImageID: img.ID})
//	require.NoError(t, err)
//	require.Equal(t, status.Success, op.State)
//	require.Equal(t, sim.Release, dev.Release()) // the device runs the new release
//	require.Len(t, dev.Flashes(), 1)
//
// The package's Example runs the same with a public-key login.
//
// # Releases and profiles
//
// Config.Release is the DISTRIB_DESCRIPTION the device starts with;
// ReleaseDescription gives a real one for a series
// (Config{Release: ReleaseDescription("17.01")}), Releases lists the series.
// The release chooses the device's Profile (ProfileFor): the sysupgrade
// options it accepts, its messages and exit statuses, how a flash ends
// (FlashOutcome), whether it checks fwtool metadata and compat versions,
// which busybox applets and /proc files exist. Each flash switches the
// device to the profile of the image's release. The differences are listed
// under Release differences below.
//
// # Images
//
// NewImage(release, board, size) is the sysupgrade image an OpenWrt build of
// release makes for board: a header line the simulated
// platform_check_image reads, a deterministic payload and, for 17.01 and
// later, the fwtool metadata that release's build appends (read by
// sysupgrade on the device, and by Engine.UploadImage for the image's
// boards). Image.Release is the description to use as the build's OS
// identifier, Image.FileName the file name to store it under (its type
// follows from it), Image.Reader or Image.Open streams it, of any size,
// without holding it in memory. Set Image's fields for unusual images:
// compat versions and messages, other targets, hand-made or corrupt
// metadata, a bad CRC.
//
// # Faults
//
// Config.Faults (or SetFaults, at any time) makes a device misbehave. What
// the openwrt upgrader and the engine make of each:
//
//   - RefuseConnections: the first N TCP connections are closed before the
//     SSH handshake: connection-failed, retried.
//   - DropUploadAfter: the connection is cut once during the upload:
//     upload-failed, retried.
//   - CorruptUploads: the next N uploaded files differ from what was sent:
//     upload-corrupt, retried.
//   - LowMemoryUntilServicesStopped: MemAvailable stays low until the
//     services are stopped: the upgrader stops them and goes on.
//   - FlashError: sysupgrade fails for real, nothing is flashed: failed,
//     flash-failed.
//   - ProcdRefusal: procd refuses the image (18.06 on), nothing is flashed:
//     failed, flash-failed.
//   - FlashHang: the flash session stays silent for a while: the upgrader's
//     UpgradeTimeout closes it and it reconnects as usual.
//   - FlashFalseError (and FalseErrorProvisioning): a release before 22.03
//     ends its flash with the exit 246 of 22.03 and later: success.
//   - NeverComeBack: flashed, never up again: failed,
//     unreachable-after-flash. Never success.
//   - OldFirmwareAfterReboot: reboots on the old release: failed,
//     old-firmware-after-reboot.
//   - NoReboot: drops the sessions but never reboots: failed,
//     old-firmware-after-reboot.
//   - SilentReboot: the address does not answer (no RST) while the device
//     reboots, as on a real network: success.
//   - ComeBackOnNewAddress: a new port after each reboot: success when
//     CredentialsFunc returns the new Addr.
//   - NewHostKeysAfterReset: a new host key after a flash with -n: the
//     device is reached only if CredentialsFunc trusts its new HostKey.
//
// "Retried" follows the engine's Config.Retry (a minute between attempts by
// default: shorten it in tests). A failed or aborted operation before the
// point of no return leaves Flashes empty.
//
// # What is recorded
//
// A test asserts on the device's side of the story:
//
//   - Commands: every exec command line received, in order and across
//     reboots, plus "subsystem:NAME" and "sftp:OP PATH" entries.
//   - Executed: the argument vector of every simple command the
//     interpreter ran (quoting resolved: a quoted "x;reboot" stays one
//     argument), to check exactly what ran.
//   - Flashes (and Flashed, their number): every sysupgrade that reached
//     the point of no return, with its options, path, image SHA-256 and
//     release. Empty means the device was never flashed.
//   - Release, Profile, BootID and Reboots: what runs now and how often the
//     device came back.
//   - File and Files: the files on the device (uploads keep their size and
//     digests, and their content when small); UCI, Services and
//     MemAvailable: its configuration and state.
//   - A Meter shared by many devices (Config.Meter) measures a fleet from
//     the devices' side: how many were busy at once, in all and per group,
//     and how fast they started, for tests of rollout limits.
//
// # The shell
//
// The interpreter understands single and double quotes, backslash escapes,
// the separators ";", "&&" and "||", and the redirections ">", ">>", "<",
// "2>" and "2>&1". A command the device does not have prints busybox ash's
// "ash: NAME: not found" and exits 127.
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
// # Release differences
//
// The facts were read from each release tag's sources (base-files
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
// its FWSIM header, else its fwtool metadata). With -n it comes back with
// factory settings (Config.Files and Config.UCI without openwisp's, see
// Config.Files).
//
// A Device costs one goroutine while it is up and idle; Close stops every
// goroutine it started, including pending reboots.
package openwrttest
