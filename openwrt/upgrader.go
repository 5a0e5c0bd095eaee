package openwrt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Connection is the store.Device.Connection value, and the registry name,
// of devices this package upgrades: register an Upgrader under it
// (reg.Register(openwrt.Connection, u)) and give OpenWrt devices this
// Connection.
const Connection = "openwrt-ssh"

// Paths and files on the device.
const (
	// ChecksumFile holds the SHA-256 of the last image flashed by an
	// openwisp-compatible upgrader; it is written after a proven upgrade and
	// read to skip an image already installed.
	ChecksumFile = "/etc/openwisp/firmware_checksum"
	// ConfigChecksumFile is openwisp-config's checksum of the last
	// configuration applied; it is removed before flashing so the device
	// downloads its configuration again after the upgrade.
	ConfigChecksumFile = "/etc/openwisp/checksum"
	checksumDir        = "/etc/openwisp"
	bootIDFile         = "/proc/sys/kernel/random/boot_id"
	releaseFile        = "/etc/openwrt_release"
	meminfoFile        = "/proc/meminfo"
	opkgListsDir       = "/tmp/opkg-lists"
	dropCachesFile     = "/proc/sys/vm/drop_caches"
	uuidOption         = "openwisp.http.uuid"
)

// progressEvery is the minimum interval between two upload progress reports.
const progressEvery = 250 * time.Millisecond

// Upgrader upgrades OpenWrt devices over SSH. It implements
// upgrader.Upgrader and upgrader.Verifier and is safe for concurrent use by
// many operations.
type Upgrader struct {
	cfg Config

	mu      sync.Mutex
	methods map[string]UploadMethod // upload method that worked, per address
}

var (
	_ upgrader.Upgrader         = (*Upgrader)(nil)
	_ upgrader.Verifier         = (*Upgrader)(nil)
	_ upgrader.OptionsValidator = (*Upgrader)(nil)
)

// ValidateOptions checks an operation's sysupgrade options (see
// ParseOptions) before the operation is created: the engine refuses an
// upgrade whose options are invalid, so nothing reaches the device.
func (u *Upgrader) ValidateOptions(raw json.RawMessage) error {
	_, err := ParseOptions(raw)
	return err
}

// New returns an Upgrader. cfg.CredentialsFunc is required; the other
// fields have defaults. New starts no goroutine.
func New(cfg *Config) (*Upgrader, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Upgrader{cfg: c, methods: map[string]UploadMethod{}}, nil
}

// attempt is the state of one Upgrade or Verify call.
type attempt struct {
	u          *Upgrader
	cfg        *Config
	job        *upgrader.Job
	opts       Options
	log        *slog.Logger
	c          *conn
	remotePath string

	// What the device runs and supports, learnt after the identity check.
	beforeDesc string             // DISTRIB_DESCRIPTION before the flash
	before     Release            // parsed
	caps       Capabilities       // of before
	board      string             // the device's board name
	meta       *imagemap.Metadata // the image's fwtool metadata, when it has some

	stopped   []string // services this attempt stopped
	wifiDown  bool     // this attempt ran "wifi down"
	uploaded  bool     // the image may be on the device at remotePath
	flashing  bool     // the flash was decided: never clean up after it
	quiet     bool     // a repeated reconnection: its lines are held back in held
	held      []string // lines held back while quiet, logged if the connection decides
	verifying bool     // the verifying phase was reported
	proof     string   // what proveRelease or Verify proved, for the success line

	secretsMu sync.Mutex
	secrets   []string // the passwords of the credentials: never logged

	cancelUpload context.CancelCauseFunc // stops the upload in progress
}

func (u *Upgrader) newAttempt(job *upgrader.Job) (*attempt, error) {
	a := &attempt{u: u, cfg: &u.cfg, job: job}
	a.log = u.cfg.Logger.With(
		slog.String("operation", job.Operation.ID),
		slog.String("device", job.Device.ID),
		slog.String("image", job.Image.ID),
	)
	if job.Report == nil {
		return nil, upgrader.Aborted(status.ReasonUpgraderError, errors.New("openwrt: the job has no reporter"))
	}
	if !isSHA256(job.Image.SHA256) {
		return nil, upgrader.Aborted(status.ReasonUpgraderError,
			fmt.Errorf("openwrt: image %s has no valid SHA-256 (%q)", job.Image.ID, job.Image.SHA256))
	}
	return a, nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// defaultRemotePath is DefaultRemoteDir + "/" + the base name of the image.
func defaultRemotePath(im upgrader.Image) string {
	name := im.Name
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || name == "." || name == ".." {
		name = strings.ToLower(im.SHA256) + ".bin"
	}
	return DefaultRemoteDir + "/" + name
}

// logf appends a line to the operation's log and to the slog logger, with
// every secret hidden (see redact).
func (a *attempt) logf(ctx context.Context, format string, args ...any) {
	line := a.redact(fmt.Sprintf(format, args...))
	a.log.Debug(line)
	if a.quiet {
		a.held = append(a.held, line)
		return
	}
	if err := a.job.Report.Log(context.WithoutCancel(ctx), line); err != nil {
		a.log.Warn("openwrt: cannot append to the operation log", slog.Any("error", err))
	}
}

// redactedMark replaces a secret in a log line.
const redactedMark = "[redacted]"

// redact hides in s the passwords the attempt was given: device output
// (a file name, a command line echoed back) may contain one.
func (a *attempt) redact(s string) string {
	a.secretsMu.Lock()
	defer a.secretsMu.Unlock()
	for _, p := range a.secrets {
		s = strings.ReplaceAll(s, p, redactedMark)
	}
	return s
}

// addSecret makes redact hide p.
func (a *attempt) addSecret(p string) {
	if p == "" {
		return
	}
	a.secretsMu.Lock()
	defer a.secretsMu.Unlock()
	if !slices.Contains(a.secrets, p) {
		a.secrets = append(a.secrets, p)
	}
}

// result is the error an Upgrade, Verify or Check ends with, its message
// tidied for the operation's log (see tidy).
func (a *attempt) result(err error) error { return tidy(err, a.redact) }

// succeeded says what the attempt proved (the device runs the image): to
// the engine, which ends the operation with it as its one success line
// (upgrader.Prover), or, to another Reporter, as a log line of its own.
func (a *attempt) succeeded(ctx context.Context, proof string) {
	a.progress(ctx, status.ProgressDone)
	proof = a.redact(proof)
	a.log.Info("openwrt: success", "proof", proof)
	if p, ok := a.job.Report.(upgrader.Prover); ok {
		p.Proved(proof)
		return
	}
	a.logf(ctx, "success: %s", proof)
}

func (a *attempt) progress(ctx context.Context, pct int) {
	if err := a.job.Report.Progress(context.WithoutCancel(ctx), pct); err != nil {
		a.log.Warn("openwrt: cannot report progress", slog.Int("progress", pct), slog.Any("error", err))
	}
}

// step enters phase p: a cancel checkpoint, then the compare-and-set move.
func (a *attempt) step(ctx context.Context, p status.Phase) error {
	if err := a.job.Report.Cancelled(ctx); err != nil {
		return err
	}
	return a.job.Report.Phase(ctx, p)
}

// credentials asks the host for the device's credentials.
func (a *attempt) credentials(ctx context.Context) (Credentials, error) {
	creds, err := a.cfg.CredentialsFunc(ctx, a.job.Device)
	a.addSecret(creds.Password)
	if err != nil {
		var ue *upgrader.Error
		if errors.As(err, &ue) || errors.Is(err, upgrader.ErrCancelled) || ctx.Err() != nil {
			return creds, err
		}
		return creds, upgrader.Recoverable(status.ReasonConnectionFailed,
			fmt.Errorf("openwrt: credentials of device %s: %w", a.job.Device.ID, err))
	}
	return creds, nil
}

func (a *attempt) connect(ctx context.Context) (*conn, error) {
	return a.connectWith(ctx, a.cfg.ConnectTimeout)
}

// connectWith connects with a TCP connection timeout of tcpTimeout.
func (a *attempt) connectWith(ctx context.Context, tcpTimeout time.Duration) (*conn, error) {
	creds, err := a.credentials(ctx)
	if err != nil {
		return nil, err
	}
	c, err := dialWith(ctx, creds, a.cfg.ConnectTimeout, tcpTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return c, nil
}

// exec runs a command with CommandTimeout on the attempt's connection.
func (a *attempt) exec(ctx context.Context, cmd string) (string, error) {
	return a.c.run(ctx, a.cfg.CommandTimeout, cmd)
}

// transportError classifies an error of a command that did not run to an
// exit status (before flashing): ctx's own error passes through, anything
// else is a recoverable connection failure.
func transportError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ue *upgrader.Error
	if errors.As(err, &ue) {
		return err
	}
	return upgrader.Recoverable(status.ReasonConnectionFailed, fmt.Errorf("openwrt: %s: %w", what, err))
}

func (a *attempt) close() {
	if a.c != nil {
		a.c.Close()
		a.c = nil
	}
}

// Upgrade runs one attempt of the operation: connect, identity, checksum,
// memory, upload, image test, flash, reconnect and verify. See the package
// documentation for each step and its failures.
func (u *Upgrader) Upgrade(ctx context.Context, job *upgrader.Job) error {
	a, err := u.newAttempt(job)
	if err != nil {
		return err
	}
	defer a.close()
	defer a.cleanup(ctx)
	return a.result(a.upgrade(ctx))
}

// prepare reads the operation's options and where the image goes on the
// device, before anything reaches the device.
func (a *attempt) prepare() error {
	opts, err := ParseOptions(a.job.Operation.Options)
	if err != nil {
		return upgrader.Aborted(status.ReasonInvalidOptions, err)
	}
	a.opts = opts
	a.remotePath = defaultRemotePath(a.job.Image)
	if a.cfg.RemotePathFunc != nil {
		a.remotePath = a.cfg.RemotePathFunc(a.job.Image)
	}
	if !strings.HasPrefix(a.remotePath, "/") {
		return upgrader.Aborted(status.ReasonUpgraderError,
			fmt.Errorf("openwrt: the remote path %q is not absolute", a.remotePath))
	}
	return nil
}

func (a *attempt) upgrade(ctx context.Context) error {
	if err := a.prepare(); err != nil {
		return err
	}

	// 1. Connect.
	if err := a.step(ctx, status.PhaseConnecting); err != nil {
		return err
	}
	c, err := a.connect(ctx)
	if err != nil {
		return err // the engine logs it, with what it does next
	}
	a.c = c
	a.logf(ctx, "Connected to %s", c.addr)
	a.progress(ctx, status.ProgressConnected)

	// 2. Identity.
	if err := a.step(ctx, status.PhaseIdentity); err != nil {
		return err
	}
	if err := a.checkIdentity(ctx); err != nil {
		return err
	}
	// What the device's release supports, and whether the image's own
	// metadata accepts this device: refused here, before any upload.
	if err := a.learn(ctx); err != nil {
		return err
	}
	if err := a.checkCapabilities(ctx); err != nil {
		return err
	}
	if err := a.checkImageFits(ctx); err != nil {
		return err
	}
	a.progress(ctx, status.ProgressIdentity)

	// 3. Checksum.
	if err := a.step(ctx, status.PhaseChecksum); err != nil {
		return err
	}
	if err := a.checkChecksum(ctx); err != nil {
		return err
	}
	a.progress(ctx, status.ProgressChecksum)

	// 4. Memory.
	if err := a.step(ctx, status.PhaseMemory); err != nil {
		return err
	}
	if err := a.checkMemory(ctx); err != nil {
		return err
	}

	// 5. Upload.
	if err := a.step(ctx, status.PhaseUpload); err != nil {
		return err
	}
	if err := a.upload(ctx); err != nil {
		return err
	}
	a.progress(ctx, status.ProgressUploaded)

	// 6. Image test.
	if err := a.step(ctx, status.PhaseImageTest); err != nil {
		return err
	}
	if err := a.testImage(ctx); err != nil {
		return err
	}

	// 7. Flash.
	bootID, err := a.readBootID(ctx)
	if err != nil {
		return transportError(ctx, "read the boot id", err)
	}
	if err := a.job.Report.Cancelled(ctx); err != nil {
		return err
	}
	if err := a.job.Report.Phase(ctx, status.PhaseFlashing); err != nil {
		// A cancel won the compare-and-set (or the store failed): never
		// flash after a failed Phase call.
		return err
	}
	a.flashing = true
	// Only now that the flash is decided: a cancel that won leaves the
	// device untouched. From here the commands run even if ctx ends.
	if _, err := a.exec(context.WithoutCancel(ctx), command("rm", "-f", ConfigChecksumFile)); err != nil {
		a.logf(ctx, "Could not remove %s: %v", ConfigChecksumFile, plain(err))
	}
	if err := a.flash(ctx); err != nil {
		return err
	}

	// 8. Reboot, reconnect, verify.
	return a.afterFlash(ctx, bootID)
}

func normalizeUUID(s string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), "-", ""))
}

// readUUID returns the device's openwisp UUID.
func (a *attempt) readUUID(ctx context.Context) (string, error) {
	out, err := a.exec(ctx, command("uci", "get", uuidOption))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

func (a *attempt) checkIdentity(ctx context.Context) error {
	if a.cfg.SkipIdentityCheck {
		a.logf(ctx, "Identity check skipped")
		return nil
	}
	got, err := a.readUUID(ctx)
	var ce *CommandError
	switch {
	case errors.As(err, &ce):
		a.logf(ctx, "Cannot read the device's identity (%s): %s", uuidOption, ce.Output)
		return upgrader.Aborted(status.ReasonIdentityMismatch,
			fmt.Errorf("openwrt: cannot read %s on the device: %w", uuidOption, err))
	case err != nil:
		return transportError(ctx, "read the device's identity", err)
	case got == "":
		a.logf(ctx, "The device has an empty %s", uuidOption)
		return upgrader.Aborted(status.ReasonIdentityMismatch, fmt.Errorf("openwrt: %s is empty on the device", uuidOption))
	case normalizeUUID(got) != normalizeUUID(a.job.Device.ID):
		a.logf(ctx, "Identity mismatch: the device reports %s %q, the operation is for %q", uuidOption, got, a.job.Device.ID)
		return upgrader.Aborted(status.ReasonIdentityMismatch,
			fmt.Errorf("openwrt: the device at %s reports UUID %q, expected %q", a.c.addr, got, a.job.Device.ID))
	}
	a.logf(ctx, "Identity verified: %s", got)
	return nil
}

// readChecksumFile returns the content of ChecksumFile, "" when missing.
func (a *attempt) readChecksumFile(ctx context.Context) (string, bool, error) {
	out, err := a.exec(ctx, command("cat", ChecksumFile))
	var ce *CommandError
	if errors.As(err, &ce) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return strings.ToLower(strings.TrimSpace(out)), true, nil
}

func (a *attempt) checkChecksum(ctx context.Context) error {
	sum, found, err := a.readChecksumFile(ctx)
	if err != nil {
		return transportError(ctx, "read "+ChecksumFile, err)
	}
	want := strings.ToLower(a.job.Image.SHA256)
	switch {
	case !found:
		a.logf(ctx, "Image checksum file not found, proceeding with the upload of the new image")
	case sum == want:
		// The operation's last line says it (see alreadyInstalled).
		return alreadyInstalled(want)
	default:
		a.logf(ctx, "Checksum different, proceeding with the upload of the new image")
	}
	return nil
}

// alreadyInstalled is the verdict on a device whose ChecksumFile holds
// the image's SHA-256.
func alreadyInstalled(sum string) error {
	return upgrader.NotNeeded(status.ReasonAlreadyInstalled,
		fmt.Errorf("openwrt: image sha256 %s matches %s", sum, ChecksumFile))
}

func (a *attempt) readBootID(ctx context.Context) (string, error) {
	out, err := a.exec(ctx, command("cat", bootIDFile))
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(out)
	if id == "" {
		return "", fmt.Errorf("openwrt: %s is empty", bootIDFile)
	}
	return id, nil
}

// readRelease returns DISTRIB_DESCRIPTION of /etc/openwrt_release, trimmed
// and unquoted.
func (a *attempt) readRelease(ctx context.Context) (string, error) {
	out, err := a.exec(ctx, command("cat", releaseFile))
	if err != nil {
		return "", err
	}
	rel, ok := parseRelease(out)
	if !ok {
		return "", fmt.Errorf("openwrt: no DISTRIB_DESCRIPTION in %s", releaseFile)
	}
	return rel, nil
}

func parseRelease(s string) (string, bool) {
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		v, ok := strings.CutPrefix(line, "DISTRIB_DESCRIPTION=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		return strings.TrimSpace(v), true
	}
	return "", false
}

// testImage runs "sysupgrade --test" with the operation's own flags, so
// that what the flash would refuse (compat_version, a missing overlay for
// -c, /rom for -u, the board) is refused now, with the device untouched.
// Releases before 14.07 have no --test: the metadata checks made before the
// upload stand in for it.
func (a *attempt) testImage(ctx context.Context) error {
	if !a.caps.Test {
		a.logf(ctx, "sysupgrade --test is not available on %s: relying on the image's metadata checks", a.beforeDesc)
		return nil
	}
	args := append([]string{a.cfg.UpgradeCommand, "--test"}, a.opts.Flags()...)
	args = append(args, a.remotePath)
	_, _, err := a.runLogged(ctx, a.cfg.CommandTimeout, command(args...))
	var ce *CommandError
	switch {
	case errors.As(err, &ce):
		a.logf(ctx, "sysupgrade --test refused the image (exit status %d)", ce.ExitStatus)
		return upgrader.Aborted(status.ReasonImageInvalid, describe(err,
			"openwrt: the device refused the image: sysupgrade --test exited with status %d: %s", ce.ExitStatus, lastLine(ce.Output)))
	case err != nil:
		return transportError(ctx, "test the image", err)
	}
	a.logf(ctx, "sysupgrade --test accepted the image, proceeding with the upgrade")
	return nil
}

// writeChecksum records the image's SHA-256 in ChecksumFile.
func (a *attempt) writeChecksum(ctx context.Context) error {
	if _, err := a.exec(ctx, command("mkdir", "-p", checksumDir)); err != nil {
		return err
	}
	sum := strings.ToLower(a.job.Image.SHA256)
	if _, err := a.exec(ctx, redirect(command("echo", sum), ChecksumFile)); err != nil {
		return err
	}
	a.logf(ctx, "Checksum written to %s", ChecksumFile)
	return nil
}

// inner returns the cause of a classified error, to re-classify it.
func inner(err error) error {
	var ue *upgrader.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// deviceLabel names the device in messages.
func deviceLabel(d store.Device) string {
	if d.Name != "" {
		return d.Name + " (" + d.ID + ")"
	}
	return d.ID
}
