package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// params are the validated settings of the upgrade command.
type params struct {
	host, port, user string
	password         string
	signer           ssh.Signer
	hostKeys         ssh.HostKeyCallback
	imagePath        string
	deviceID         string
	identity         bool
	options          openwrt.Options
	reconnectDelay   time.Duration
	reconnectRetry   time.Duration
	reconnectMax     int
	upgradeTimeout   time.Duration
	retries          int
	retryDelay       time.Duration
	expectRelease    string
	json             bool
}

// upgradeFlags are the upgrade command's raw flags.
type upgradeFlags struct {
	p                                    params
	port                                 int
	identityFile, passwordEnv, knownHost string
	uuidFlag, optionFlag                 string
	noIdentity                           bool
}

// deviceFlags registers the flags that tune how a device is upgraded,
// shared by upgrade, batch and resume.
func deviceFlags(f *flagSet, p *params) {
	f.Duration(&p.reconnectDelay, "reconnect-delay", openwrt.DefaultReconnectDelay, "--reconnect-delay 10s",
		"How long to wait after the flash before the first reconnection attempt.")
	f.Duration(&p.reconnectRetry, "reconnect-retry-delay", openwrt.DefaultReconnectRetryDelay, "--reconnect-retry-delay 1s",
		"How long to wait between reconnection attempts after the flash.")
	f.Int(&p.reconnectMax, "reconnect-max-retries", "N", openwrt.DefaultReconnectMaxRetries, "--reconnect-max-retries 60",
		"Cap on reconnection attempts after the flash; 0: as many as the 15-minute reconnection window allows.")
	f.Duration(&p.upgradeTimeout, "upgrade-timeout", openwrt.DefaultUpgradeTimeout, "--upgrade-timeout 10m",
		"Bound of the sysupgrade command (the device normally drops the session while it flashes).")
	f.Int(&p.retries, "retries", "N", upgrader.DefaultMaxRetries, "--retries 2",
		"Retries of a recoverable failure before flashing (connection lost, upload broken); 0: none. Nothing is retried once flashing started.")
	f.Duration(&p.retryDelay, "retry-delay", upgrader.DefaultRetryInitial, "--retry-delay 30s",
		"Wait before the first retry; each next wait doubles, up to 10 minutes.")
}

// checkDeviceFlags validates what deviceFlags registered.
func checkDeviceFlags(p *params) error {
	switch {
	case p.reconnectDelay < 0 || p.reconnectRetry < 0 || p.upgradeTimeout < 0 || p.retryDelay < 0:
		return usagef("durations must not be negative")
	case p.reconnectMax < 0:
		return usagef("--reconnect-max-retries must not be negative")
	case p.retries < 0:
		return usagef("--retries must not be negative")
	}
	return nil
}

// optionFlag registers --option.
func optionFlag(f *flagSet, v *string) {
	f.String(v, "option", "LETTERS", "c", "--option c,F",
		"sysupgrade's options, letters separated by commas: c keep the configuration, o keep the changed files of /, n do not keep the configuration (factory settings, new host key), u skip unchanged files, p do not restore the partition table, k keep the package list, F force (dangerous).")
}

// parseOptions turns --option into the upgrader's options.
func parseOptions(letters string) (openwrt.Options, error) {
	raw, _ := json.Marshal(map[string]string{"sysupgrade": letters})
	o, err := openwrt.ParseOptions(raw)
	if err != nil {
		return o, usagef("--option %q: %v", letters, err)
	}
	return o, nil
}

func upgradeCommand() *command {
	return &command{
		name:    "upgrade",
		summary: "upgrade one device",
		synopsis: `fwupgrade upgrade --host HOST [--port 22] [--user root]
      (--identity KEYFILE | --password-env VAR) --known-hosts FILE
      --image FILE (--uuid UUID | --no-identity-check) [--option c,F,...]
      [--reconnect-delay D] [--reconnect-retry-delay D] [--reconnect-max-retries N]
      [--upgrade-timeout D] [--retries N] [--retry-delay D]
      [--expect-release STRING] [--json]`,
		details: `Reads the device's model and board first; the image must fit them (by its
OpenWrt file name, or by its own fwtool metadata). Then: identity check,
memory check, upload, sysupgrade --test, the flash, and the reconnection
that proves the device runs the new firmware.

D is a duration such as 500ms, 10s or 5m. The device's host key must be in
the known_hosts file. On a terminal a progress bar and the phases are drawn;
otherwise plain lines. With --json the final operation is printed on
standard output as one JSON object (progress goes to standard error):
  {"operation_id": "...", "device": "...", "image": "...", "state": "success",
   "reason": "", "phase": "verifying", "progress": 100, "attempts": 1,
   "log": ["..."]}
Ctrl-C cancels the upgrade cleanly before flashing (stopped services are
started again); once flashing started it is too late: the command says so
and waits for the device.
`,
		example: `  FW_PASSWORD=secret fwupgrade upgrade --host 192.0.2.10 --password-env FW_PASSWORD \
      --known-hosts ~/.ssh/known_hosts \
      --image openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin \
      --uuid 5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e
`,
		define: func(f *flagSet) func(context.Context, *streams) int {
			u := &upgradeFlags{}
			f.String(&u.p.host, "host", "HOST", "", "--host 192.0.2.10", "The device's address: an IP address or a host name. Required.")
			f.Int(&u.port, "port", "N", 22, "--port 2222", "The device's SSH port.")
			f.String(&u.p.user, "user", "USER", "root", "--user admin", "The SSH user.")
			f.String(&u.identityFile, "identity", "KEYFILE", "", "--identity ~/.ssh/id_ed25519",
				"Private key file for SSH (not protected by a passphrase). Give this or --password-env.")
			f.String(&u.passwordEnv, "password-env", "VAR", "", "--password-env FW_PASSWORD",
				"Name of the environment variable that holds the SSH password (the password itself never goes on the command line). Give this or --identity.")
			f.String(&u.knownHost, "known-hosts", "FILE", "", "--known-hosts ~/.ssh/known_hosts",
				"OpenSSH known_hosts file holding the device's host key. Required: the host key is always verified.")
			f.String(&u.p.imagePath, "image", "FILE", "", "--image openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
				"The sysupgrade image to install. Required.")
			f.String(&u.uuidFlag, "uuid", "UUID", "", "--uuid 5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e",
				"The device's OpenWISP UUID, checked against 'uci get openwisp.http.uuid' before anything is changed. Give this or --no-identity-check.")
			f.Bool(&u.noIdentity, "no-identity-check", "--no-identity-check", "Do not check the device's UUID. Give this or --uuid.")
			optionFlag(f, &u.optionFlag)
			deviceFlags(f, &u.p)
			f.String(&u.p.expectRelease, "expect-release", "STRING", "", `--expect-release "OpenWrt 23.05.3 r23809-234f1a2efa"`,
				"The release (DISTRIB_DESCRIPTION) the device must report after the upgrade.")
			f.showDefault("expect-release", "the release in the image's fwtool metadata, else any release other than the one before")
			f.Bool(&u.p.json, "json", "--json", "Print the final operation as one JSON object on standard output; progress goes to standard error.")
			return func(ctx context.Context, s *streams) int {
				p, err := u.check()
				if err != nil {
					return usage(s, "upgrade", err)
				}
				return runUpgrade(ctx, s, p)
			}
		},
	}
}

// check validates the flags and reads the files they name.
func (u *upgradeFlags) check() (*params, error) {
	p := &u.p
	switch {
	case p.host == "":
		return nil, usagef("--host is required")
	case u.port < 1 || u.port > 65535:
		return nil, usagef("--port %d is not a TCP port", u.port)
	case p.user == "":
		return nil, usagef("--user must not be empty")
	case (u.identityFile == "") == (u.passwordEnv == ""):
		return nil, usagef("give exactly one of --identity and --password-env")
	case u.knownHost == "":
		return nil, usagef("--known-hosts is required: the device's host key is always verified")
	case p.imagePath == "":
		return nil, usagef("--image is required")
	case (u.uuidFlag == "") == !u.noIdentity:
		return nil, usagef("give exactly one of --uuid and --no-identity-check")
	}
	if err := checkDeviceFlags(p); err != nil {
		return nil, err
	}
	p.port = strconv.Itoa(u.port)
	var err error
	if u.identityFile != "" {
		if p.signer, err = readKey("--identity", u.identityFile); err != nil {
			return nil, err
		}
	} else {
		p.password = os.Getenv(u.passwordEnv)
		if p.password == "" {
			return nil, usagef("--password-env: the environment variable %s is empty or not set", u.passwordEnv)
		}
	}
	if p.hostKeys, err = openwrt.KnownHosts(u.knownHost); err != nil {
		return nil, usagef("--known-hosts: %v", err)
	}
	if err := checkImageFile("--image", p.imagePath); err != nil {
		return nil, err
	}
	if u.noIdentity {
		p.deviceID = p.host
	} else {
		id, err := uuid.Parse(u.uuidFlag)
		if err != nil {
			return nil, usagef("--uuid %q is not a UUID", u.uuidFlag)
		}
		p.deviceID, p.identity = id.String(), true
	}
	if p.options, err = parseOptions(u.optionFlag); err != nil {
		return nil, err
	}
	return p, nil
}

// readKey reads an unprotected SSH private key; what names where it came
// from in errors (a flag, or an inventory field).
func readKey(what, path string) (ssh.Signer, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("%s: %v", what, err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, usagef("%s %s is protected by a passphrase; use an unprotected copy of the key", what, path)
	}
	if err != nil {
		return nil, usagef("%s %s: not a private key: %v", what, path, err)
	}
	return signer, nil
}

// checkImageFile checks that path is a regular file this process can read.
func checkImageFile(what, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return usagef("%s: %v", what, err)
	}
	if !st.Mode().IsRegular() {
		return usagef("%s %s is not a regular file", what, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return usagef("%s: %v", what, err)
	}
	f.Close()
	return nil
}

// result is what upgrade --json prints.
type result struct {
	OperationID string   `json:"operation_id,omitempty"`
	Device      string   `json:"device"`
	Image       string   `json:"image"`
	State       string   `json:"state"`
	Reason      string   `json:"reason,omitempty"`
	Phase       string   `json:"phase,omitempty"`
	Progress    int      `json:"progress"`
	Attempts    int      `json:"attempts"`
	Error       string   `json:"error,omitempty"`
	Log         []string `json:"log"`
}

func exitCode(s status.State) int {
	switch s {
	case status.Success:
		return exitSuccess
	case status.Aborted:
		return exitAborted
	case status.Cancelled:
		return exitCancelled
	}
	return exitFailed
}

// retryPolicy maps --retries and --retry-delay to the engine's policy.
func retryPolicy(p *params) upgrader.RetryPolicy {
	maxRetries := p.retries
	if maxRetries == 0 {
		maxRetries = -1 // RetryPolicy: 0 means the default, negative means none
	}
	return upgrader.RetryPolicy{MaxRetries: maxRetries, InitialInterval: p.retryDelay}
}

func runUpgrade(ctx context.Context, s *streams, p *params) int {
	stdout, stderr := s.stdout, s.stderr
	human := stdout
	if p.json {
		human = stderr
	}
	res := result{Device: p.deviceID, Image: filepath.Base(p.imagePath), Log: []string{}}
	finish := func(code int) int {
		if p.json {
			writeJSON(stdout, res)
		} else {
			fmt.Fprintf(human, "result: %s", res.State)
			if res.Reason != "" {
				fmt.Fprintf(human, " (%s)", res.Reason)
			}
			if res.Error != "" {
				fmt.Fprintf(human, ": %s", res.Error)
			}
			fmt.Fprintln(human)
		}
		return code
	}
	// An error before any operation exists: aborted when the device is
	// untouched on purpose, failed otherwise.
	early := func(err error) int {
		res.Error = err.Error()
		var re *upgrader.RefusedError
		switch {
		case errors.As(err, &re):
			res.State, res.Reason = string(status.Aborted), string(re.Reason)
			return finish(exitAborted)
		case errors.Is(err, upgrader.ErrUnknownImageType):
			res.State, res.Reason = string(status.Aborted), string(status.ReasonNoImageForBoard)
			return finish(exitAborted)
		}
		kind, reason := upgrader.Classify(err)
		res.Reason = string(reason)
		if kind == upgrader.KindAborted {
			res.State = string(status.Aborted)
			return finish(exitAborted)
		}
		res.State = string(status.Failed)
		return finish(exitFailed)
	}

	addr := net.JoinHostPort(p.host, p.port)
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(context.Context, store.Device) (openwrt.Credentials, error) {
			c := openwrt.Credentials{Address: addr, User: p.user, Password: p.password, HostKeyCallback: p.hostKeys}
			if p.signer != nil {
				c.Signers = []ssh.Signer{p.signer}
			}
			return c, nil
		},
		SkipIdentityCheck:   !p.identity,
		ReconnectDelay:      p.reconnectDelay,
		ReconnectRetryDelay: p.reconnectRetry,
		ReconnectMaxRetries: p.reconnectMax,
		UpgradeTimeout:      p.upgradeTimeout,
		Logger:              quietLogger(),
	})
	if err != nil {
		return usage(s, "upgrade", err)
	}
	dir, err := os.MkdirTemp("", "fwupgrade-")
	if err != nil {
		return early(err)
	}
	defer os.RemoveAll(dir)
	files, err := upgrader.NewDirFiles(dir)
	if err != nil {
		return early(err)
	}
	reg := upgrader.NewRegistry()
	_ = reg.Register(openwrt.Connection, ow)
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{
		Logger: quietLogger(), Files: files, MaxImageSize: upgrader.NoImageSizeLimit, Retry: retryPolicy(p),
	})
	if err != nil {
		return usage(s, "upgrade", err)
	}

	// The image first: a file that can never be an image is bad usage, and
	// no device is contacted for it.
	img, err := createImage(ctx, eng, p)
	switch {
	case errors.Is(err, upgrader.ErrImageInvalid), errors.Is(err, store.ErrInvalid):
		return usage(s, "upgrade", usagef("--image %s: %v", p.imagePath, err))
	case err != nil:
		return early(err)
	}
	res.Image = img.Name

	fmt.Fprintf(human, "connecting to %s to read the device's board\n", addr)
	pctx, cancel := context.WithTimeout(ctx, openwrt.DefaultConnectTimeout+openwrt.DefaultCommandTimeout)
	dev := store.Device{ID: p.deviceID, Connection: openwrt.Connection, Address: addr, Active: true}
	info, err := ow.Probe(pctx, dev)
	cancel()
	if err != nil {
		return early(err)
	}
	fmt.Fprintf(human, "device: %s (%s), running %q\n", info.Model, info.BoardName, info.Release)
	dev.Model, dev.BoardName, dev.OSIdentifier = info.Model, info.BoardName, info.Release

	if _, err := eng.RegisterDevice(ctx, dev); err != nil {
		return early(err)
	}
	op, err := eng.Create(ctx, upgrader.Request{DeviceID: dev.ID, ImageID: img.ID, Options: p.options.JSON()})
	if err != nil {
		return early(err)
	}
	res.OperationID = op.ID

	events, unsubscribe := eng.Subscribe(1024)
	shown := make(chan struct{})
	go func() {
		defer close(shown)
		newDisplay(human).show(events)
	}()
	// A Ctrl-C that came while probing and preparing cancels the operation
	// before it starts.
	select {
	case <-s.sig:
		if _, err := eng.Cancel(ctx, op.ID); err == nil {
			fmt.Fprintln(stderr, "fwupgrade: cancelled before the upgrade started")
		}
	default:
	}
	done := make(chan store.Operation, 1)
	var runErr error
	go func() {
		end, err := eng.Run(context.WithoutCancel(ctx), op.ID)
		runErr = err // read after done
		done <- end
	}()
	var end store.Operation
wait:
	for {
		select {
		case end = <-done:
			break wait
		case <-s.sig:
			if _, err := eng.Cancel(ctx, op.ID); err != nil {
				if errors.Is(err, upgrader.ErrNotCancellable) {
					fmt.Fprintln(stderr, "fwupgrade: too late to cancel: the device is flashing; waiting for it to come back")
				} else {
					fmt.Fprintln(stderr, "fwupgrade: cancel:", err)
				}
			} else {
				fmt.Fprintln(stderr, "fwupgrade: cancelling: stopped services are restarted, nothing is flashed")
			}
		}
	}
	unsubscribe()
	<-shown

	if runErr != nil {
		fmt.Fprintln(stderr, "fwupgrade:", runErr)
		res.Error = runErr.Error()
		if end.State == "" {
			end.State = status.Failed // unknown: never report success
		}
	}
	res.State, res.Reason, res.Phase = string(end.State), string(end.Reason), string(end.Phase)
	res.Progress, res.Attempts = end.Progress, end.Attempt
	if logs, err := eng.Store().Logs(context.WithoutCancel(ctx), op.ID, 0, 0); err == nil {
		for _, l := range logs {
			res.Log = append(res.Log, l.Line)
		}
	}
	return finish(exitCode(end.State))
}

// createImage stores the image file in the engine's catalog.
func createImage(ctx context.Context, eng *upgrader.Engine, p *params) (store.Image, error) {
	name := filepath.Base(p.imagePath)
	f, err := os.Open(p.imagePath)
	if err != nil {
		return store.Image{}, err
	}
	defer f.Close()
	release := p.expectRelease
	if release == "" {
		if st, err := f.Stat(); err == nil {
			if md, err := imagemap.ReadMetadata(f, st.Size()); err == nil && md.Version.Dist != "" {
				release = strings.TrimSpace(md.Version.Dist + " " + md.Version.Version + " " + md.Version.Revision)
			}
		}
	}
	cat, err := eng.CreateCategory(ctx, store.Category{Name: "fwupgrade"})
	if err != nil {
		return store.Image{}, err
	}
	build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "cli", OSIdentifier: release})
	if err != nil {
		return store.Image{}, err
	}
	return eng.UploadImage(ctx, store.Image{BuildID: build.ID, Name: name, Type: imagemap.TypeFromFileName(name)}, f)
}
