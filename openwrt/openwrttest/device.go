package openwrttest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Defaults applied by New to the zero fields of a Config.
const (
	// DefaultModel is /tmp/sysinfo/model when Config.Model is "".
	DefaultModel = "TP-Link Archer C7 v2"
	// DefaultBoardName is /tmp/sysinfo/board_name when Config.BoardName is
	// "", and the board of NewImage when its board is "".
	DefaultBoardName = "tplink,archer-c7-v2"
	// DefaultRelease is the DISTRIB_DESCRIPTION a device runs when
	// Config.Release is "": the last 22.03 point release.
	DefaultRelease = "OpenWrt 22.03.5 r20134-5f15225c1e"
	// DefaultTarget is DISTRIB_TARGET when Config.Target is "", and the
	// version.target of an image's fwtool metadata when Image.Target is "".
	DefaultTarget = "ath79/generic"
	// DefaultArch is DISTRIB_ARCH when Config.Arch is "".
	DefaultArch = "mips_24kc"
	// DefaultUser is the only user accepted when Config.User is "".
	DefaultUser = "root"
	// DefaultPassword is the password accepted when Config.Password is ""
	// and Config.AuthorizedKeys is empty. It is distinctive on purpose, so
	// that a test can check it never reaches a log.
	DefaultPassword = "sim-Pa55w0rd"
	// DefaultMemTotal is MemTotal, in bytes, when Config.MemTotal is 0.
	DefaultMemTotal = 128 << 20
	// DefaultMemAvailable is MemAvailable at boot, in bytes, when
	// Config.MemAvailable is 0.
	DefaultMemAvailable = 64 << 20
	// DefaultServiceMemory is the memory, in bytes, a stopped service frees
	// when Config.ServiceMemory is 0.
	DefaultServiceMemory = 1 << 20
	// DefaultOpkgListsMemory is the memory, in bytes, removing
	// /tmp/opkg-lists frees when Config.OpkgListsMemory is 0.
	DefaultOpkgListsMemory = 2 << 20
	// DefaultDropCachesMemory is the memory, in bytes, dropping the caches
	// frees when Config.DropCachesMemory is 0.
	DefaultDropCachesMemory = 1 << 20
	// DefaultLowMemory is the MemAvailable, in bytes, reported under
	// Faults.LowMemoryUntilServicesStopped.
	DefaultLowMemory = 1 << 20
	// DefaultRebootDelay is how long a device is down after a flash or a
	// reboot when Config.RebootDelay is 0. Tests usually want less
	// (100 ms is plenty).
	DefaultRebootDelay = 2 * time.Second
	// DefaultCompatVersion is the compat_version of a device whose
	// Config.CompatVersion is "" (21.02 and later; older releases have none).
	DefaultCompatVersion = "1.0"
)

// Root file systems, for Config.RootFS.
const (
	// RootFSSquashfs is a squashfs root with a jffs2/ubifs overlay: /rom and
	// /overlay/upper/etc exist. The default.
	RootFSSquashfs = "squashfs"
	// RootFSExt4 is a writable ext4 root (x86 combined-ext4 images): no
	// overlay and no /rom, so "sysupgrade -c" and "-u" are refused (18.06
	// and 19.07 on).
	RootFSExt4 = "ext4"
	// RootFSInitramfs is a system running from RAM: no overlay, no /rom, and
	// the configuration cannot be saved.
	RootFSInitramfs = "initramfs"
)

// DefaultBackupFiles are the files a fresh device saves across a flash
// (sysupgrade -l), besides those of Config.Files under /etc.
var DefaultBackupFiles = []string{
	"/etc/config/dhcp", "/etc/config/dropbear", "/etc/config/firewall", "/etc/config/luci",
	"/etc/config/network", "/etc/config/openwisp", "/etc/config/rpcd", "/etc/config/system",
	"/etc/config/ucitrack", "/etc/config/uhttpd", "/etc/config/wireless",
	"/etc/dropbear/dropbear_ed25519_host_key", "/etc/dropbear/dropbear_rsa_host_key",
	"/etc/group", "/etc/hosts", "/etc/inittab", "/etc/passwd", "/etc/profile", "/etc/rc.local",
	"/etc/shadow", "/etc/shells", "/etc/shinit", "/etc/sysctl.conf", "/etc/sysupgrade.conf",
}

// DefaultServices are the init.d services of a device whose Config.Services
// is nil. All of them run at boot.
var DefaultServices = []string{
	"dropbear", "network", "firewall", "openwisp-config", "uhttpd", "dnsmasq",
	"cron", "rpcd", "log", "odhcpd", "sysntpd",
}

// DefaultCriticalServices are the services Faults.LowMemoryUntilServicesStopped
// does not wait for when Config.CriticalServices is nil.
var DefaultCriticalServices = []string{
	"dropbear", "network", "firewall", "openwisp-config", "openwisp_config",
	"boot", "system", "sysntpd", "sysfixtime", "urandom_seed", "done", "umount",
}

// Errors returned by the package.
var (
	// ErrClosed is returned by Start and the Wait methods once Close was called.
	ErrClosed = errors.New("openwrttest: device closed")
	// ErrStarted is returned by Start when the device was already started.
	ErrStarted = errors.New("openwrttest: device already started")
	// ErrInvalidConfig wraps every validation error returned by New.
	ErrInvalidConfig = errors.New("openwrttest: invalid config")
)

// Config describes a simulated device. Every field is optional: the zero
// Config is a TP-Link Archer C7 v2 (board tplink,archer-c7-v2) on OpenWrt
// 22.03.5 with squashfs, 128 MiB of RAM, a fresh ed25519 host key, user
// "root" with password DefaultPassword, uploads through "cat > FILE" (no
// SFTP, no SCP) and a 2 s reboot, on a loopback address of its own.
//
// The device behaves as the release it runs: its Profile is chosen from
// Release (ProfileFor), and after a flash from the release of the image.
// Use ReleaseDescription to get a real description for a series, e.g.
// Config{Release: ReleaseDescription("17.01")}.
//
// New keeps the Config it was given (with its defaults applied); the
// slices and maps in it must not be changed afterwards.
type Config struct {
	// Model is the content of /tmp/sysinfo/model. Defaults to DefaultModel.
	Model string
	// BoardName is the content of /tmp/sysinfo/board_name: the name an
	// image's boards and fwtool metadata must list. Defaults to
	// DefaultBoardName.
	BoardName string
	// UUID is what `uci get openwisp.http.uuid` prints, which the openwrt
	// upgrader's identity check compares with the device's ID: set it to
	// the ID the device has in the store. "" means the option does not
	// exist ("uci: Entry not found", exit 1).
	UUID string
	// UCI holds more uci options, keyed "config.section.option". Defaults
	// to none.
	UCI map[string]string
	// Release is DISTRIB_DESCRIPTION, e.g. "OpenWrt 22.03.5 r20134-5f15225c1e"
	// or "LEDE Reboot 17.01.7 r4030-6028f00df0"; /etc/openwrt_release is
	// generated from it in the format of its release, and it chooses the
	// device's Profile. Defaults to DefaultRelease.
	Release string
	// Target is DISTRIB_TARGET. Defaults to DefaultTarget.
	Target string
	// Arch is DISTRIB_ARCH. Defaults to DefaultArch.
	Arch string
	// MemTotal in bytes, reported in /proc/meminfo. Defaults to DefaultMemTotal.
	MemTotal int64
	// MemAvailable in bytes, reported in /proc/meminfo as kB before any
	// memory is freed or used by files in /tmp. Defaults to DefaultMemAvailable.
	MemAvailable int64
	// NoMemAvailable simulates an old kernel: /proc/meminfo has MemFree,
	// Buffers and Cached but no MemAvailable line. Releases before 15.05
	// never have it (Profile.MemAvailable).
	NoMemAvailable bool
	// CompatVersion is the device's compat_version: system.compat_version
	// of /etc/board.json, which the first boot copies to the uci option
	// system.@system[0].compat_version that sysupgrade compares with the
	// image's (21.02 and later). Defaults to DefaultCompatVersion. After a
	// flash without -n the uci option keeps its value; after one with -n it
	// takes the image's.
	CompatVersion string
	// RootFS is the root file system: RootFSSquashfs (the default),
	// RootFSExt4 or RootFSInitramfs.
	RootFS string
	// BackupFiles, when larger than the number of files the device saves
	// across a flash (DefaultBackupFiles plus Config.Files under /etc), adds
	// generated files up to that number. "sysupgrade -v" lists every saved
	// file, one a line, before flashing: 3,000 files make more than 64 KiB.
	// Defaults to 0: no generated files.
	BackupFiles int
	// RequireImageMetadata makes sysupgrade refuse images without fwtool
	// metadata, as targets that set REQUIRE_IMAGE_METADATA=1 do (17.01 and
	// later). Defaults to false: such images pass with a message.
	RequireImageMetadata bool
	// ServiceMemory is the memory, in bytes, each stopped service frees.
	// Defaults to DefaultServiceMemory.
	ServiceMemory int64
	// OpkgListsMemory is the memory freed by removing /tmp/opkg-lists.
	// Defaults to DefaultOpkgListsMemory.
	OpkgListsMemory int64
	// DropCachesMemory is the memory freed by `echo 3 > /proc/sys/vm/drop_caches`.
	// Defaults to DefaultDropCachesMemory.
	DropCachesMemory int64
	// Services are the init.d services present, all running at boot.
	// Defaults to DefaultServices.
	Services []string
	// CriticalServices are never waited for by
	// Faults.LowMemoryUntilServicesStopped. Defaults to DefaultCriticalServices.
	CriticalServices []string
	// HostKey is the SSH host key. nil generates an ed25519 key in New.
	// Device.HostKeyCallback and Device.KnownHosts give a client what it
	// needs to verify it.
	HostKey ssh.Signer
	// User is the only accepted user name. Defaults to DefaultUser.
	User string
	// Password is accepted for User. When Password is "" and AuthorizedKeys
	// is empty, Password defaults to DefaultPassword; when Password is ""
	// and AuthorizedKeys is not, no password is accepted.
	Password string
	// AuthorizedKeys are the public keys accepted for User. Defaults to
	// none.
	AuthorizedKeys []ssh.PublicKey
	// SFTP offers the sftp subsystem (real OpenWrt usually does not).
	// Defaults to false.
	SFTP bool
	// SCP makes `scp` exist (dropbear's scp, sink side `scp -t`). Defaults
	// to false. Without SFTP and SCP, files can still be written with
	// "cat > FILE".
	SCP bool
	// RebootDelay is how long the device is down after a flash or a reboot.
	// Defaults to DefaultRebootDelay.
	RebootDelay time.Duration
	// Files are extra initial files, keyed by absolute path. Files under /tmp
	// are lost at the first reboot; the others survive reboots. A flash with
	// -n (do not keep the configuration) resets every file outside /tmp to
	// these, without those under /etc/openwisp/, and removes every openwisp.*
	// uci option, UUID included: the device is back to factory settings.
	// Defaults to none.
	Files map[string][]byte
	// Faults injects failures. Defaults to none; Device.SetFaults changes
	// them later.
	Faults Faults
	// Addr is the first listen address. Defaults to a loopback address of
	// the device's own (127.x.y.z:0, where the system routes all of 127/8 to
	// the loopback, as Linux does; else 127.0.0.1:0), so that the port a
	// rebooting device frees cannot be taken by another listener meanwhile:
	// a real device keeps its address over a reboot.
	Addr string

	// Meter, when set, measures this device's SSH connections together
	// with the other devices sharing it (see Meter). Defaults to nil: not
	// measured.
	Meter *Meter
	// MeterGroup is the device's group for Meter.MaxBusyIn (for example
	// its location).
	MeterGroup string
	// NoMD5 skips the MD5 of files written to the device (md5sum then
	// fails on them), for benchmarks at scale: hashing every uploaded byte
	// twice is the simulator's largest cost, not the library's. Defaults
	// to false. Releases before 17.01 have no sha256sum, so the openwrt
	// upgrader needs md5sum there.
	NoMD5 bool
}

// Faults injects failures into a Device. The zero value injects none, and
// each field's zero value turns its fault off. Counted faults
// (RefuseConnections, CorruptUploads, DropUploadAfter) are consumed as they
// fire; SetFaults replaces the faults and resets the counts. The package
// documentation lists what the openwrt upgrader makes of each.
type Faults struct {
	// RefuseConnections closes the first N TCP connections before the SSH
	// handshake.
	RefuseConnections int
	// DropUploadAfter, when > 0, cuts the connection once, after that many
	// bytes of an upload (SFTP, SCP or cat) were received.
	DropUploadAfter int64
	// CorruptUploads flips one byte in each of the next N uploaded files, so
	// their sha256sum differs from the sent data.
	CorruptUploads int
	// NeverComeBack keeps the device down forever after a flash.
	NeverComeBack bool
	// OldFirmwareAfterReboot reboots after a flash (new boot id) but keeps
	// the old release.
	OldFirmwareAfterReboot bool
	// NoReboot makes sysupgrade print its messages and drop the SSH
	// connections, but the device does not reboot: same boot id, same release.
	NoReboot bool
	// FlashHang makes the sysupgrade session send nothing for this long
	// before the flash proceeds.
	FlashHang time.Duration
	// FlashFalseError makes a release before 22.03 end its flash as 22.03
	// and later always do (Profile.Flash is FlashUbusError): sysupgrade
	// prints "Command failed: ubus call system sysupgrade {...} (Connection
	// failed)" on stderr and exits 246, and the device reboots on the new
	// image. On 22.03 and later it changes nothing.
	FlashFalseError bool
	// FalseErrorProvisioning adds the "add_provisioning" option of 25.12 to
	// the ubus message on any release.
	FalseErrorProvisioning bool
	// FlashError makes sysupgrade fail for real: a message, exit 1, no reboot.
	FlashError bool
	// LowMemoryUntilServicesStopped reports DefaultLowMemory as MemAvailable
	// until every non-critical service is stopped.
	LowMemoryUntilServicesStopped bool
	// ComeBackOnNewAddress makes the device listen on a new port after each
	// reboot (Addr returns the new one).
	ComeBackOnNewAddress bool
	// ProcdRefusal makes procd refuse "ubus call system sysupgrade" (18.06
	// and later): on 22.03 and later the ubus client prints "Command failed:
	// ubus call system sysupgrade {...} (Not supported)" and sysupgrade exits
	// 248 (before: "Command failed: Not supported", exit 8). Nothing is
	// flashed, no service is stopped and the device stays up.
	ProcdRefusal bool
	// SilentReboot makes the address silent while the device reboots:
	// connection attempts time out (the SYNs get no answer) instead of
	// being refused, as on a real network. A connect that is still waiting
	// when the device comes back succeeds at its next SYN retransmission.
	// (On Linux. Elsewhere the TCP connection is accepted but the SSH
	// handshake never starts.)
	SilentReboot bool
	// NewHostKeysAfterReset gives the device a new host key after each flash
	// with -n, as dropbear generates one when /etc/dropbear is not kept.
	NewHostKeysAfterReset bool
}

// Flash records one sysupgrade that reached the point of no return.
type Flash struct {
	// Args are sysupgrade's arguments, options and path.
	Args []string
	// Path is the image path given to sysupgrade, cleaned. (From 18.06,
	// sysupgrade first copies an image outside /tmp to /tmp/sysupgrade.img
	// and flashes that.)
	Path string
	// KeepConfig is false when -n was given.
	KeepConfig bool
	// Force is true when -F was given.
	Force bool
	// Release is the release read from the image header, or else from its
	// fwtool metadata ("" if neither is readable).
	Release string
	// SHA256 is the hex digest of the flashed file.
	SHA256 string
}

// Device is a simulated OpenWrt device. Its methods are safe for concurrent
// use.
type Device struct {
	cfg    Config
	signer ssh.Signer
	sshCfg *ssh.ServerConfig
	done   chan struct{} // closed by Close

	mu      sync.Mutex
	wg      sync.WaitGroup
	started bool
	closed  bool
	up      bool
	ln      net.Listener
	ownAddr bool // cfg.Addr is a loopback address of the device's own
	addr    string
	conns   map[*sconn]struct{}
	timer   *time.Timer
	changed chan struct{} // closed and replaced on every up/down change
	faults  Faults
	refused int
	dropped bool
	silent  *silentListener // listening on addr, accepting nothing, while down

	// operating system state
	prof       Profile // the profile of release
	compat     string  // system.compat_version of /etc/board.json
	bootID     string
	bootTime   time.Time
	release    string
	files      map[string]*file
	dirs       map[string]bool
	uci        map[string]string
	stopped    map[string]bool
	opkgGone   bool
	dropCaches bool
	wifiDown   bool
	pending    *pendingBoot
	commands   []string
	executed   [][]string
	flashes    []Flash
	reboots    int
}

type pendingBoot struct {
	release    string
	compat     string // the image's compat_version, or ""
	keepConfig bool
}

// New validates cfg, applies the defaults documented on Config and returns a
// device that is not listening yet: Start makes it listen, Close stops it.
// It starts no goroutine. An invalid cfg gives an error wrapping
// ErrInvalidConfig.
func New(cfg Config) (*Device, error) {
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if cfg.BoardName == "" {
		cfg.BoardName = DefaultBoardName
	}
	if cfg.Release == "" {
		cfg.Release = DefaultRelease
	}
	if cfg.Target == "" {
		cfg.Target = DefaultTarget
	}
	if cfg.Arch == "" {
		cfg.Arch = DefaultArch
	}
	if cfg.MemTotal == 0 {
		cfg.MemTotal = DefaultMemTotal
	}
	if cfg.MemAvailable == 0 {
		cfg.MemAvailable = DefaultMemAvailable
	}
	if cfg.ServiceMemory == 0 {
		cfg.ServiceMemory = DefaultServiceMemory
	}
	if cfg.OpkgListsMemory == 0 {
		cfg.OpkgListsMemory = DefaultOpkgListsMemory
	}
	if cfg.DropCachesMemory == 0 {
		cfg.DropCachesMemory = DefaultDropCachesMemory
	}
	if cfg.Services == nil {
		cfg.Services = DefaultServices
	}
	if cfg.CriticalServices == nil {
		cfg.CriticalServices = DefaultCriticalServices
	}
	if cfg.User == "" {
		cfg.User = DefaultUser
	}
	if cfg.Password == "" && len(cfg.AuthorizedKeys) == 0 {
		cfg.Password = DefaultPassword
	}
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = DefaultRebootDelay
	}
	ownAddr := false
	if cfg.Addr == "" {
		cfg.Addr, ownAddr = nextLoopback(), true
	}
	if cfg.CompatVersion == "" {
		cfg.CompatVersion = DefaultCompatVersion
	}
	if cfg.RootFS == "" {
		cfg.RootFS = RootFSSquashfs
	}
	switch {
	case cfg.MemTotal < 0 || cfg.MemAvailable < 0 || cfg.ServiceMemory < 0 ||
		cfg.OpkgListsMemory < 0 || cfg.DropCachesMemory < 0:
		return nil, fmt.Errorf("%w: negative memory size", ErrInvalidConfig)
	case cfg.MemAvailable > cfg.MemTotal:
		return nil, fmt.Errorf("%w: MemAvailable %d > MemTotal %d", ErrInvalidConfig, cfg.MemAvailable, cfg.MemTotal)
	case cfg.RebootDelay < 0:
		return nil, fmt.Errorf("%w: negative RebootDelay", ErrInvalidConfig)
	case strings.ContainsAny(cfg.Model+cfg.BoardName+cfg.Release+cfg.CompatVersion, "\n\x00'\""):
		return nil, fmt.Errorf("%w: Model, BoardName, Release and CompatVersion must not contain newlines or quotes", ErrInvalidConfig)
	case cfg.RootFS != RootFSSquashfs && cfg.RootFS != RootFSExt4 && cfg.RootFS != RootFSInitramfs:
		return nil, fmt.Errorf("%w: unknown RootFS %q", ErrInvalidConfig, cfg.RootFS)
	case cfg.BackupFiles < 0:
		return nil, fmt.Errorf("%w: negative BackupFiles", ErrInvalidConfig)
	}
	for _, s := range cfg.Services {
		if s == "" || strings.ContainsAny(s, "/ \n\x00") {
			return nil, fmt.Errorf("%w: bad service name %q", ErrInvalidConfig, s)
		}
	}
	for p := range cfg.Files {
		if !strings.HasPrefix(p, "/") || cleanPath(p) != p {
			return nil, fmt.Errorf("%w: file path %q is not clean and absolute", ErrInvalidConfig, p)
		}
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("%w: Addr: %v", ErrInvalidConfig, err)
	}
	signer := cfg.HostKey
	if signer == nil {
		var err error
		if signer, err = newHostKey(); err != nil {
			return nil, err
		}
	}
	d := &Device{
		cfg:     cfg,
		signer:  signer,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		faults:  cfg.Faults,
		compat:  cfg.CompatVersion,
		ownAddr: ownAddr,
	}
	d.setReleaseLocked(cfg.Release)
	d.sshCfg = d.serverConfig()
	return d, nil
}

func (d *Device) serverConfig() *ssh.ServerConfig {
	c := &ssh.ServerConfig{ServerVersion: "SSH-2.0-dropbear_2022.82"}
	if d.cfg.Password != "" {
		c.PasswordCallback = func(meta ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if meta.User() == d.cfg.User && string(pw) == d.cfg.Password {
				return nil, nil
			}
			return nil, errors.New("openwrttest: bad password")
		}
	}
	if len(d.cfg.AuthorizedKeys) > 0 {
		c.PublicKeyCallback = func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if meta.User() == d.cfg.User {
				b := key.Marshal()
				for _, k := range d.cfg.AuthorizedKeys {
					if string(k.Marshal()) == string(b) {
						return nil, nil
					}
				}
			}
			return nil, errors.New("openwrttest: key not authorized")
		}
	}
	c.AddHostKey(d.signer)
	return c
}

// Start listens on Config.Addr and serves SSH in one goroutine; the device
// is up (Addr, Up) when Start returns. It returns ErrStarted the second
// time and ErrClosed after Close. A started device must be closed.
func (d *Device) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.started {
		return ErrStarted
	}
	ln, err := net.Listen("tcp", d.cfg.Addr)
	if err != nil && d.ownAddr {
		// This system does not route all of 127/8 to the loopback.
		d.cfg.Addr, d.ownAddr = "127.0.0.1:0", false
		ln, err = net.Listen("tcp", d.cfg.Addr)
	}
	if err != nil {
		return fmt.Errorf("openwrttest: listen: %w", err)
	}
	d.started = true
	d.bootLocked()
	d.serveLocked(ln)
	return nil
}

// Close stops the device: the listener, every connection, every command in
// progress and any pending reboot. It waits for all goroutines to end and
// is idempotent.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.wg.Wait()
		return nil
	}
	d.closed = true
	close(d.done)
	if d.timer != nil && d.timer.Stop() {
		d.wg.Done()
	}
	d.timer = nil
	ln, conns := d.ln, d.takeConnsLocked()
	d.ln = nil
	d.up = false
	if d.silent != nil {
		d.silent.Close()
		d.silent = nil
	}
	d.notifyLocked()
	d.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, c := range conns {
		c.kill()
	}
	d.wg.Wait()
	return nil
}

// Addr returns the current listen address, "host:port": where a client
// connects. It is "" before Start, and stays the same over reboots unless
// Faults.ComeBackOnNewAddress is set, so a host should ask for it on every
// connection (as openwrt.Config.CredentialsFunc is asked).
func (d *Device) Addr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addr
}

// HostKey returns the device's current public host key. It changes after a
// flash with -n when Faults.NewHostKeysAfterReset is set.
func (d *Device) HostKey() ssh.PublicKey { return d.Signer().PublicKey() }

// Signer returns the device's current host key signer, to share it with
// other devices.
func (d *Device) Signer() ssh.Signer {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.signer
}

// KnownHosts returns a known_hosts line for the current address and host
// key, in the "[127.0.0.1]:port" form, ending with a newline: write it to a
// file for a host that verifies host keys with known_hosts files
// (openwrt.KnownHosts, knownhosts.New).
func (d *Device) KnownHosts() []byte {
	return []byte(knownhosts.Line([]string{knownhosts.Normalize(d.Addr())}, d.HostKey()) + "\n")
}

// HostKeyCallback returns an ssh.HostKeyCallback that accepts only the
// host key the device has now (HostKey), for openwrt.Credentials or an
// ssh.ClientConfig. It keeps that key: after a flash that gave the device a
// new one (Faults.NewHostKeysAfterReset) it refuses the device, as a real
// client's known_hosts would; call it again to trust the new key.
func (d *Device) HostKeyCallback() ssh.HostKeyCallback { return ssh.FixedHostKey(d.HostKey()) }

// ClientConfig returns an ssh.ClientConfig for ssh.Dial("tcp", d.Addr(),
// ...) that logs in as Config.User with Config.Password, verifies the host
// key with HostKeyCallback and times out after 10 s. A device that accepts
// only keys (Config.AuthorizedKeys, no Password) needs a config of the
// host's own.
func (d *Device) ClientConfig() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            d.cfg.User,
		Auth:            []ssh.AuthMethod{ssh.Password(d.cfg.Password)},
		HostKeyCallback: d.HostKeyCallback(),
		Timeout:         10 * time.Second,
	}
}

// Config returns the device's configuration after defaults were applied.
// Its slices and maps are the device's own: do not change them.
func (d *Device) Config() Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// SetFaults replaces the faults injected from now on (Config.Faults at
// first) and resets the counted ones.
func (d *Device) SetFaults(f Faults) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = f
	d.refused = 0
	d.dropped = false
}

// Up reports whether the device is listening: false before Start, while it
// reboots, after a flash with Faults.NeverComeBack, and after Close.
func (d *Device) Up() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.up
}

// WaitUp waits until the device is listening. Like WaitDown and
// WaitReboots, it returns ctx.Err() when ctx ends first and ErrClosed once
// the device is closed (WaitDown: nil, a closed device is down).
func (d *Device) WaitUp(ctx context.Context) error {
	return d.wait(ctx, func() bool { return d.up })
}

// WaitDown waits until the device is not listening (rebooting or closed).
func (d *Device) WaitDown(ctx context.Context) error {
	return d.wait(ctx, func() bool { return !d.up })
}

// WaitReboots waits until the device has rebooted at least n times since
// Start (Reboots) and is listening again.
func (d *Device) WaitReboots(ctx context.Context, n int) error {
	return d.wait(ctx, func() bool { return d.reboots >= n && d.up })
}

func (d *Device) wait(ctx context.Context, cond func() bool) error {
	for {
		d.mu.Lock()
		ok, closed, ch := cond(), d.closed, d.changed
		d.mu.Unlock()
		if ok {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Commands returns every exec command received since Start, in order and
// across reboots, plus "subsystem:NAME" for subsystem requests and
// "sftp:OP PATH" entries (put, get, remove, mkdir, rmdir, rename, setstat)
// for SFTP operations.
func (d *Device) Commands() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.commands)
}

// Executed returns the argument vector of every simple command the
// interpreter ran, in order. A quoted "x;reboot" stays one argument.
func (d *Device) Executed() [][]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([][]string, len(d.executed))
	for i, a := range d.executed {
		out[i] = slices.Clone(a)
	}
	return out
}

// BootID returns the current /proc/sys/kernel/random/boot_id, new at every
// boot: what the openwrt upgrader compares to prove a reboot.
func (d *Device) BootID() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bootID
}

// Release returns the running release (DISTRIB_DESCRIPTION): Config.Release
// until a flash, then the release of the flashed image. After a successful
// upgrade it is the Image.Release that was flashed.
func (d *Device) Release() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.release
}

// Profile returns the profile of the running release.
func (d *Device) Profile() Profile {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.prof
	p.Options = slices.Clone(p.Options)
	return p
}

// CompatVersion returns the compat_version sysupgrade compares images with:
// the uci option system.@system[0].compat_version, or "1.0" when it is not
// set (releases before 21.02 have none).
func (d *Device) CompatVersion() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deviceCompatLocked()
}

func (d *Device) deviceCompatLocked() string {
	if v := d.uci[compatOption]; v != "" {
		return v
	}
	return DefaultCompatVersion
}

// compatOption is the uci option sysupgrade reads the device's
// compat_version from.
const compatOption = "system.@system[0].compat_version"

// setReleaseLocked makes rel the running release and its profile the
// device's.
func (d *Device) setReleaseLocked(rel string) {
	d.release = rel
	d.prof = ProfileFor(rel)
}

// SysInfo reports whether /tmp/sysinfo exists: from 14.07 on, and on 12.09
// only on the ar71xx, mcs814x and mpc83xx targets (whose board detection
// writes it).
func (d *Device) SysInfo() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sysInfoLocked()
}

func (d *Device) sysInfoLocked() bool {
	if d.prof.SysInfo {
		return true
	}
	board, _, _ := strings.Cut(d.cfg.Target, "/")
	return board == "ar71xx" || board == "mcs814x" || board == "mpc83xx"
}

// Flashed returns how many sysupgrades reached the point of no return:
// len(Flashes()).
func (d *Device) Flashed() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.flashes)
}

// Flashes returns every sysupgrade that reached the point of no return
// (the image was checked and handed over to be written), in order and
// across reboots: what a host's test asserts to prove a device was, or was
// never, flashed. A sysupgrade --test, or one refused by its checks, by
// ProcdRefusal or FlashError, is not a flash.
func (d *Device) Flashes() []Flash {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Flash, len(d.flashes))
	for i, f := range d.flashes {
		f.Args = slices.Clone(f.Args)
		out[i] = f
	}
	return out
}

// Reboots returns how many times the device came back up after a reboot
// (a flash or the reboot command).
func (d *Device) Reboots() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reboots
}

// Services reports, for each configured service, whether it is running.
func (d *Device) Services() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]bool, len(d.cfg.Services))
	for _, s := range d.cfg.Services {
		m[s] = !d.stopped[s]
	}
	return m
}

// MemAvailable returns the MemAvailable the device reports now, in bytes.
func (d *Device) MemAvailable() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.memAvailableLocked()
}

// UCI returns the value of a uci option and whether it exists.
func (d *Device) UCI(key string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.uci[key]
	return v, ok
}

func (d *Device) record(cmd string) {
	d.mu.Lock()
	d.commands = append(d.commands, cmd)
	d.mu.Unlock()
}

func (d *Device) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Device) takeConnsLocked() []*sconn {
	out := make([]*sconn, 0, len(d.conns))
	for c := range d.conns {
		out = append(out, c)
	}
	return out
}

// serveLocked makes ln the listener and starts the accept goroutine.
func (d *Device) serveLocked(ln net.Listener) {
	d.ln = ln
	d.addr = ln.Addr().String()
	d.up = true
	d.notifyLocked()
	d.wg.Add(1)
	go d.acceptLoop(ln)
}

// bootLocked sets the state of a fresh boot.
func (d *Device) bootLocked() {
	d.bootID = newBootID()
	d.bootTime = time.Now()
	if d.files == nil {
		d.resetPersistentLocked(true)
	}
	d.stopped = nil
	d.opkgGone = false
	d.dropCaches = false
	d.wifiDown = false
}

// resetPersistentLocked restores files and uci to the initial state; when
// initial is false (a flash with -n) the openwisp registration is dropped.
func (d *Device) resetPersistentLocked(initial bool) {
	d.files = make(map[string]*file, len(d.cfg.Files))
	d.dirs = nil
	for p, b := range d.cfg.Files {
		if !initial && strings.HasPrefix(p, "/etc/openwisp/") {
			continue
		}
		d.files[p] = newFileFromBytes(b)
		for dir := pathDir(p); dir != "/"; dir = pathDir(dir) {
			d.mkdirLocked(dir)
		}
	}
	d.uci = make(map[string]string, len(d.cfg.UCI)+2)
	for k, v := range d.cfg.UCI {
		if !initial && strings.HasPrefix(k, "openwisp.") {
			continue
		}
		d.uci[k] = v
	}
	if initial && d.cfg.UUID != "" {
		d.uci["openwisp.http.uuid"] = d.cfg.UUID
	}
	// config_generate copies board.json's compat_version into the fresh
	// system configuration (21.02 and later).
	if _, set := d.uci[compatOption]; !set && d.prof.Compat {
		d.uci[compatOption] = d.compat
	}
}

// goDown takes the device down for a reboot: the listener and every
// connection are closed, and the device comes back after RebootDelay
// unless comeBack is false.
//
// keep, when not nil, is a connection left open: the one whose session
// still has to report how sysupgrade ended (22.03 and later). The caller
// kills it; at the latest, the device kills it when it comes back.
func (d *Device) goDown(p *pendingBoot, comeBack bool, keep *sconn) {
	d.mu.Lock()
	if d.closed || !d.up {
		d.mu.Unlock()
		return
	}
	ln, conns := d.ln, d.takeConnsLocked()
	conns = slices.DeleteFunc(conns, func(c *sconn) bool { return c == keep })
	d.ln = nil
	d.up = false
	d.pending = p
	d.notifyLocked()
	ln.Close()
	if d.faults.SilentReboot {
		if s, err := listenSilent(d.addr); err == nil {
			d.silent = s
		}
	}
	if comeBack {
		d.scheduleUpLocked(d.cfg.RebootDelay)
	}
	d.mu.Unlock()
	for _, c := range conns {
		c.kill()
	}
}

// dropConns closes every connection without a reboot.
func (d *Device) dropConns() {
	d.mu.Lock()
	conns := d.takeConnsLocked()
	d.mu.Unlock()
	for _, c := range conns {
		c.kill()
	}
}

func (d *Device) scheduleUpLocked(after time.Duration) {
	d.wg.Add(1)
	d.timer = time.AfterFunc(after, d.comeUp)
}

func (d *Device) comeUp() {
	defer d.wg.Done()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timer = nil
	if d.closed || d.up {
		return
	}
	addr := d.addr
	if d.faults.ComeBackOnNewAddress {
		host, _, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(host, "0")
	}
	if d.silent != nil {
		d.silent.Close()
		d.silent = nil
	}
	// A connection of the last boot still open (see goDown) ends now.
	for c := range d.conns {
		c.kill()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		// The port is still busy: try again shortly, as a slow boot would.
		d.scheduleUpLocked(20 * time.Millisecond)
		return
	}
	if p := d.pending; p != nil {
		if p.release != "" {
			d.setReleaseLocked(p.release)
		}
		if p.compat != "" {
			d.compat = p.compat
		}
		if !p.keepConfig {
			d.resetPersistentLocked(false)
			if d.faults.NewHostKeysAfterReset {
				if signer, err := newHostKey(); err == nil {
					d.signer = signer
					d.sshCfg = d.serverConfig()
				}
			}
		}
	}
	d.pending = nil
	// /tmp is a tmpfs: a reboot empties it.
	for p := range d.files {
		if strings.HasPrefix(p, "/tmp/") {
			delete(d.files, p)
		}
	}
	for p := range d.dirs {
		if strings.HasPrefix(p, "/tmp/") {
			delete(d.dirs, p)
		}
	}
	d.bootLocked()
	d.reboots++
	d.serveLocked(ln)
}

// newHostKey generates an ed25519 host key.
func newHostKey() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("openwrttest: generate host key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("openwrttest: host key: %w", err)
	}
	return signer, nil
}

func newBootID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// loopbackSeq numbers the loopback addresses given to devices.
var loopbackSeq atomic.Uint32

// nextLoopback returns a loopback address no other device uses:
// 127.1.0.1, 127.1.0.2, ... (16 million of them).
func nextLoopback() string {
	n := loopbackSeq.Add(1)%(1<<24-2) + 1
	return net.JoinHostPort(fmt.Sprintf("127.%d.%d.%d", 1+(n>>16)%254, (n>>8)&0xff, n&0xff), "0")
}
