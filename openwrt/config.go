package openwrt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Defaults of Config's fields.
const (
	// DefaultPort is the SSH port used when Credentials.Address has none.
	DefaultPort = "22"
	// DefaultConnectTimeout bounds the TCP connection and SSH handshake.
	DefaultConnectTimeout = 15 * time.Second
	// DefaultCommandTimeout bounds each ordinary command on the device.
	DefaultCommandTimeout = 30 * time.Second
	// DefaultUpgradeTimeout bounds the sysupgrade command. Reaching it is
	// expected: the device drops the session while it flashes.
	DefaultUpgradeTimeout = 5 * time.Minute
	// DefaultReconnectDelay is the wait after the flash before the first
	// reconnection attempt: the device keeps answering on its old firmware
	// for a few seconds while sysupgrade prepares the flash.
	DefaultReconnectDelay = 5 * time.Second
	// DefaultReconnectRetryDelay is the wait between reconnection attempts.
	// Attempts are frequent and cheap (see DefaultReconnectDialTimeout), so
	// a device's SSH is reached well within a second of answering.
	DefaultReconnectRetryDelay = 250 * time.Millisecond
	// DefaultReconnectDialTimeout bounds the TCP connection of each
	// reconnection attempt (the SSH handshake that follows still has
	// ConnectTimeout): an address that is silent while the device reboots
	// costs little, and every attempt sends a fresh SYN instead of waiting
	// for the kernel's retransmission.
	DefaultReconnectDialTimeout = 750 * time.Millisecond
	// DefaultReconnectWindow is how long after the flash the device has to
	// come back on its new firmware (openwisp allows about 15 minutes):
	// enough for routers that take several minutes to flash and boot.
	DefaultReconnectWindow = 15 * time.Minute
	// DefaultReconnectMaxRetries is 0: the number of reconnection attempts
	// is bounded by ReconnectWindow only.
	DefaultReconnectMaxRetries = 0
	// DefaultMemoryMargin is added to the image size when checking the
	// device's free memory: the image lives in /tmp (RAM) and sysupgrade
	// needs some room of its own to run.
	DefaultMemoryMargin = 2 << 20
	// DefaultUpgradeCommand is the flash command.
	DefaultUpgradeCommand = "sysupgrade"
	// DefaultRemoteDir is the directory of the default RemotePath.
	DefaultRemoteDir = "/tmp"
)

// DefaultServices are the init.d services stopped, when the image does not
// fit in the device's free memory, to make room (openwisp's list). The
// wireless is also brought down with "wifi down". Services that are not
// installed are skipped.
var DefaultServices = []string{
	"uhttpd", "dnsmasq", "openwisp_config", "openwisp-config",
	"openwisp-monitoring", "cron", "rpcd", "rssileds", "odhcpd", "log",
}

// UploadMethod is a way to send the image to the device.
type UploadMethod string

// Upload methods.
const (
	// UploadSFTP uses the SFTP subsystem (pkg/sftp), when the device offers
	// it (openssh-sftp-server installed).
	UploadSFTP UploadMethod = "sftp"
	// UploadSCP uses the legacy SCP protocol against "scp -t" (dropbear's
	// scp).
	UploadSCP UploadMethod = "scp"
	// UploadCat streams the image into "cat > PATH", which every device
	// has.
	UploadCat UploadMethod = "cat"
)

// DefaultUploadMethods is the order in which upload methods are tried.
var DefaultUploadMethods = []UploadMethod{UploadSFTP, UploadSCP, UploadCat}

// Credentials are what the host gives to reach one device on one attempt.
// Their String and LogValue methods hide the secrets.
type Credentials struct {
	// Address is "host:port" or "host" (port DefaultPort).
	Address string
	// User is the SSH user, usually "root".
	User string
	// Password, if not empty, is tried with the password and
	// keyboard-interactive methods.
	Password string
	// Signers are private keys tried with the public-key method.
	Signers []ssh.Signer
	// HostKeyCallback checks the device's host key. It is required: an
	// attempt whose credentials have none is aborted. Build it with
	// KnownHosts or PinnedKey (or any ssh.HostKeyCallback).
	HostKeyCallback ssh.HostKeyCallback
	// HostKeyAlgorithms, if not empty, are the host key algorithms the
	// client offers, in order of preference (ssh.ClientConfig's field).
	// When it is empty and HostKeyCallback was made by KnownHosts or
	// PinnedKey, the algorithms of the keys it knows for the device are
	// offered first (ed25519, then ECDSA, then RSA), before the others of
	// x/crypto/ssh: the device then presents a key that can match. This
	// matters for dropbear: 2022.83, with only an ed25519 host key,
	// agrees to the RSA algorithm x/crypto/ssh prefers by default and
	// drops the connection. With a host key check of your own, set it to
	// the algorithms of the key you expect: its Type(), or for an RSA key
	// rsa-sha2-512, rsa-sha2-256, ssh-rsa.
	HostKeyAlgorithms []string
}

// String describes the credentials without their secrets.
func (c Credentials) String() string {
	return fmt.Sprintf("%s@%s (password: %t, keys: %d, host key check: %t)",
		c.User, c.Address, c.Password != "", len(c.Signers), c.HostKeyCallback != nil)
}

// GoString is String, so that %#v does not print the password either.
func (c Credentials) GoString() string { return "openwrt.Credentials{" + c.String() + "}" }

// LogValue makes slog log the credentials without their secrets.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user", c.User),
		slog.String("address", c.Address),
		slog.Bool("password", c.Password != ""),
		slog.Int("keys", len(c.Signers)),
	)
}

// CredentialsFunc returns the credentials and the current address of a
// device. It is called on every attempt and on every reconnection after
// the flash, since the address can change over a reboot. An error
// classified with the upgrader package's helpers keeps its class; other
// errors make the attempt recoverable (connection failed).
type CredentialsFunc func(ctx context.Context, d store.Device) (Credentials, error)

// KnownHosts returns a host key check that accepts the keys of the given
// OpenSSH known_hosts files (x/crypto/ssh/knownhosts). A device missing from
// the files, or presenting another key, is refused. Unless the credentials
// set HostKeyAlgorithms, the connection asks the device first for the types
// of key the files list for its address (ed25519 first for an address
// they list no key for; x/crypto/ssh's default order, certificates first,
// for an address a @cert-authority line matches).
func KnownHosts(files ...string) (ssh.HostKeyCallback, error) {
	if len(files) == 0 {
		return nil, errors.New("openwrt: KnownHosts: no file given")
	}
	cb, err := knownhosts.New(files...)
	if err != nil {
		return nil, fmt.Errorf("openwrt: KnownHosts: %w", err)
	}
	ca, err := certAuthorities(files)
	if err != nil {
		return nil, fmt.Errorf("openwrt: KnownHosts: %w", err)
	}
	return (&knownHostsCheck{cb: cb, authorities: ca}).check, nil
}

// PinnedKey returns a host key check that accepts only key (no key at all
// when key is nil). Unless the credentials set HostKeyAlgorithms, the
// connection asks the device first for a key of key's type.
func PinnedKey(key ssh.PublicKey) ssh.HostKeyCallback {
	return (&pinnedKeyCheck{key: key}).check
}

// Config configures an Upgrader. Only CredentialsFunc is required.
type Config struct {
	// CredentialsFunc returns the credentials of a device. Required.
	CredentialsFunc CredentialsFunc
	// SkipIdentityCheck turns off the identity check. By default the
	// upgrader reads "uci get openwisp.http.uuid" and aborts the attempt
	// unless it equals the device's ID (UUIDs compared without dashes,
	// ignoring case), as openwisp does.
	SkipIdentityCheck bool
	// ConnectTimeout bounds the TCP connection and the SSH handshake.
	// Defaults to DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each command on the device except the upload
	// and the flash. Defaults to DefaultCommandTimeout.
	CommandTimeout time.Duration
	// UploadTimeout bounds the upload. Defaults to 0: no bound but ctx.
	UploadTimeout time.Duration
	// UpgradeTimeout bounds the flash command; when it passes the session
	// is closed and the upgrader goes on to reconnect, as the device
	// normally drops the session while it flashes. Defaults to
	// DefaultUpgradeTimeout.
	UpgradeTimeout time.Duration
	// ReconnectDelay is the wait after the flash before the first
	// reconnection attempt. Defaults to DefaultReconnectDelay.
	ReconnectDelay time.Duration
	// ReconnectRetryDelay is the wait between reconnection attempts.
	// Defaults to DefaultReconnectRetryDelay.
	ReconnectRetryDelay time.Duration
	// ReconnectDialTimeout bounds the TCP connection of each reconnection
	// attempt. Defaults to DefaultReconnectDialTimeout.
	ReconnectDialTimeout time.Duration
	// ReconnectWindow is how long after the flash (or, for Verify, after
	// it starts) the device has to come back. Defaults to
	// DefaultReconnectWindow.
	ReconnectWindow time.Duration
	// ReconnectMaxRetries, when positive, also caps the number of
	// reconnection attempts. Defaults to 0: the window alone decides.
	ReconnectMaxRetries int
	// MemoryMargin is added to the image size when checking free memory.
	// Defaults to DefaultMemoryMargin; a negative value means no margin.
	MemoryMargin int64
	// RemotePathFunc returns where the image is uploaded on the device.
	// Defaults to DefaultRemoteDir + "/" + the base name of the image's
	// Name (or its SHA-256 when it has no usable name).
	RemotePathFunc func(im upgrader.Image) string
	// UpgradeCommand is the flash command. Defaults to
	// DefaultUpgradeCommand.
	UpgradeCommand string
	// Services are the init.d services stopped when memory is short.
	// Defaults to DefaultServices; an empty non-nil slice stops none.
	Services []string
	// KeepWireless keeps the wireless up when memory is short (by default
	// it is brought down with "wifi down", as openwisp does). Set it for
	// devices managed over their wireless uplink: they must never lose it.
	KeepWireless bool
	// UploadMethods is the order in which upload methods are tried.
	// Defaults to DefaultUploadMethods.
	UploadMethods []UploadMethod
	// Logger receives the upgrader's own log records. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

func (c *Config) withDefaults() (Config, error) {
	var cfg Config
	if c != nil {
		cfg = *c
	}
	if cfg.CredentialsFunc == nil {
		return cfg, errors.New("openwrt: Config.CredentialsFunc is required")
	}
	set := func(d *time.Duration, def time.Duration, name string) error {
		if *d < 0 {
			return fmt.Errorf("openwrt: Config.%s is negative", name)
		}
		if *d == 0 {
			*d = def
		}
		return nil
	}
	for _, f := range []struct {
		d    *time.Duration
		def  time.Duration
		name string
	}{
		{&cfg.ConnectTimeout, DefaultConnectTimeout, "ConnectTimeout"},
		{&cfg.CommandTimeout, DefaultCommandTimeout, "CommandTimeout"},
		{&cfg.UpgradeTimeout, DefaultUpgradeTimeout, "UpgradeTimeout"},
		{&cfg.ReconnectDelay, DefaultReconnectDelay, "ReconnectDelay"},
		{&cfg.ReconnectRetryDelay, DefaultReconnectRetryDelay, "ReconnectRetryDelay"},
		{&cfg.ReconnectDialTimeout, DefaultReconnectDialTimeout, "ReconnectDialTimeout"},
		{&cfg.ReconnectWindow, DefaultReconnectWindow, "ReconnectWindow"},
	} {
		if err := set(f.d, f.def, f.name); err != nil {
			return cfg, err
		}
	}
	if cfg.UploadTimeout < 0 {
		return cfg, errors.New("openwrt: Config.UploadTimeout is negative")
	}
	if cfg.ReconnectMaxRetries < 0 {
		return cfg, errors.New("openwrt: Config.ReconnectMaxRetries is negative")
	}
	switch {
	case cfg.MemoryMargin < 0:
		cfg.MemoryMargin = 0
	case cfg.MemoryMargin == 0:
		cfg.MemoryMargin = DefaultMemoryMargin
	}
	if cfg.UpgradeCommand == "" {
		cfg.UpgradeCommand = DefaultUpgradeCommand
	}
	if cfg.Services == nil {
		cfg.Services = DefaultServices
	}
	for _, s := range cfg.Services {
		if s == "" || strings.ContainsAny(s, "/\x00\n") || s == "." || s == ".." {
			return cfg, fmt.Errorf("openwrt: Config.Services: bad service name %q", s)
		}
	}
	cfg.Services = append([]string(nil), cfg.Services...)
	if len(cfg.UploadMethods) == 0 {
		cfg.UploadMethods = DefaultUploadMethods
	}
	seen := map[UploadMethod]bool{}
	for _, m := range cfg.UploadMethods {
		switch m {
		case UploadSFTP, UploadSCP, UploadCat:
		default:
			return cfg, fmt.Errorf("openwrt: Config.UploadMethods: unknown method %q", m)
		}
		if seen[m] {
			return cfg, fmt.Errorf("openwrt: Config.UploadMethods: %q listed twice", m)
		}
		seen[m] = true
	}
	cfg.UploadMethods = append([]UploadMethod(nil), cfg.UploadMethods...)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}
