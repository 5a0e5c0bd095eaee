// Package devicesim is an in-process OpenWrt-like device that speaks real SSH.
//
// A Device listens on 127.0.0.1, accepts SSH connections (x/crypto/ssh server
// side, password and public-key authentication, a fixed host key), and runs
// the shell commands the project's OpenWrt upgrader sends through a small,
// safe interpreter: nothing is ever executed on the host. It understands
// single and double quotes, backslash escapes, the separators ";", "&&" and
// "||", and the redirections ">", ">>", "<", "2>" and "2>&1".
//
// Files live in an in-memory store. Uploads (SFTP through pkg/sftp's request
// server, the sink side of legacy SCP, or "cat > FILE") are streamed: only the
// first 4 KiB, the size and a SHA-256 are kept for large files, so thousands
// of devices can receive 32 MiB images in one process. /tmp is a tmpfs: files
// there count against MemAvailable, and a write that does not fit fails with
// "No space left on device". Stopping services, removing /tmp/opkg-lists and
// dropping caches free memory.
//
// "sysupgrade PATH" validates a simulated image (see Image), prints what
// OpenWrt prints, drops every SSH connection, closes the listener and comes
// back after Config.RebootDelay with a new boot id and the image's release.
// Faults (refused connections, dropped or corrupted uploads, devices that
// never come back or come back on the old firmware, the false "Command
// failed" message of OpenWrt >= 21.02, ...) are set in Config.Faults.
//
// A Device costs one goroutine while it is up and idle; Close stops every
// goroutine it started, including pending reboots.
package devicesim
