package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Exit codes.
const (
	exitSuccess   = 0
	exitFailed    = 1
	exitAborted   = 2
	exitCancelled = 3
	exitUsage     = 64
)

const usageLine = "usage: fwupgrade upgrade --host H [--port 22] [--user root] (--identity KEYFILE | --password-env VAR) " +
	"--known-hosts FILE --image FILE [--uuid UUID | --no-identity-check] [--option c,F,...] " +
	"[--reconnect-delay D --reconnect-retry-delay D --reconnect-max-retries N] [--upgrade-timeout D] [--json]"

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// params are the validated command-line settings.
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

func parse(args []string) (*params, error) {
	if len(args) == 0 || args[0] != "upgrade" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil, usagef("%s", usageLine)
		}
		return nil, usagef("fwupgrade: the only command is \"upgrade\"; %s", usageLine)
	}
	fs := flag.NewFlagSet("fwupgrade upgrade", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		p                                    params
		port                                 int
		identityFile, passwordEnv, knownHost string
		uuidFlag, optionFlag                 string
		noIdentity                           bool
	)
	fs.StringVar(&p.host, "host", "", "device address")
	fs.IntVar(&port, "port", 22, "SSH port")
	fs.StringVar(&p.user, "user", "root", "SSH user")
	fs.StringVar(&identityFile, "identity", "", "private key file")
	fs.StringVar(&passwordEnv, "password-env", "", "environment variable holding the password")
	fs.StringVar(&knownHost, "known-hosts", "", "known_hosts file with the device's host key")
	fs.StringVar(&p.imagePath, "image", "", "sysupgrade image file")
	fs.StringVar(&uuidFlag, "uuid", "", "the device's OpenWISP UUID (checked before flashing)")
	fs.BoolVar(&noIdentity, "no-identity-check", false, "do not check the device's UUID")
	fs.StringVar(&optionFlag, "option", "c", "sysupgrade options, letters separated by commas")
	fs.DurationVar(&p.reconnectDelay, "reconnect-delay", openwrt.DefaultReconnectDelay, "wait after flashing before reconnecting")
	fs.DurationVar(&p.reconnectRetry, "reconnect-retry-delay", openwrt.DefaultReconnectRetryDelay, "wait between reconnection attempts")
	fs.IntVar(&p.reconnectMax, "reconnect-max-retries", openwrt.DefaultReconnectMaxRetries, "cap on reconnection attempts (0: as many as the reconnection window allows)")
	fs.DurationVar(&p.upgradeTimeout, "upgrade-timeout", openwrt.DefaultUpgradeTimeout, "bound of the sysupgrade command")
	fs.IntVar(&p.retries, "retries", upgrader.DefaultMaxRetries, "retries of recoverable failures before flashing")
	fs.DurationVar(&p.retryDelay, "retry-delay", upgrader.DefaultRetryInitial, "wait before the first retry")
	fs.StringVar(&p.expectRelease, "expect-release", "", "DISTRIB_DESCRIPTION the device must report after the upgrade")
	fs.BoolVar(&p.json, "json", false, "print the final operation as JSON on stdout")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, usagef("fwupgrade: %v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("fwupgrade: unexpected argument %q", fs.Arg(0))
	}
	switch {
	case p.host == "":
		return nil, usagef("fwupgrade: --host is required")
	case port < 1 || port > 65535:
		return nil, usagef("fwupgrade: --port %d is not a TCP port", port)
	case p.user == "":
		return nil, usagef("fwupgrade: --user must not be empty")
	case (identityFile == "") == (passwordEnv == ""):
		return nil, usagef("fwupgrade: give exactly one of --identity and --password-env")
	case knownHost == "":
		return nil, usagef("fwupgrade: --known-hosts is required: the device's host key is always verified")
	case p.imagePath == "":
		return nil, usagef("fwupgrade: --image is required")
	case (uuidFlag == "") == !noIdentity:
		return nil, usagef("fwupgrade: give exactly one of --uuid and --no-identity-check")
	case p.reconnectDelay < 0 || p.reconnectRetry < 0 || p.upgradeTimeout < 0 || p.retryDelay < 0:
		return nil, usagef("fwupgrade: durations must not be negative")
	case p.reconnectMax < 0:
		return nil, usagef("fwupgrade: --reconnect-max-retries must not be negative")
	case p.retries < 0:
		return nil, usagef("fwupgrade: --retries must not be negative")
	}
	p.port = strconv.Itoa(port)

	if identityFile != "" {
		pem, err := os.ReadFile(identityFile)
		if err != nil {
			return nil, usagef("fwupgrade: --identity: %v", err)
		}
		p.signer, err = ssh.ParsePrivateKey(pem)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, usagef("fwupgrade: --identity %s is protected by a passphrase; use an unprotected key or an agent-less copy", identityFile)
		}
		if err != nil {
			return nil, usagef("fwupgrade: --identity %s: not a private key: %v", identityFile, err)
		}
	} else {
		p.password = os.Getenv(passwordEnv)
		if p.password == "" {
			return nil, usagef("fwupgrade: --password-env: the environment variable %s is empty or not set", passwordEnv)
		}
	}
	var err error
	if p.hostKeys, err = openwrt.KnownHosts(knownHost); err != nil {
		return nil, usagef("fwupgrade: --known-hosts: %v", err)
	}
	st, err := os.Stat(p.imagePath)
	if err != nil {
		return nil, usagef("fwupgrade: --image: %v", err)
	}
	if !st.Mode().IsRegular() {
		return nil, usagef("fwupgrade: --image %s is not a regular file", p.imagePath)
	}
	if f, err := os.Open(p.imagePath); err != nil {
		return nil, usagef("fwupgrade: --image: %v", err)
	} else {
		f.Close()
	}
	if noIdentity {
		p.deviceID = p.host
	} else {
		u, err := uuid.Parse(uuidFlag)
		if err != nil {
			return nil, usagef("fwupgrade: --uuid %q is not a UUID", uuidFlag)
		}
		p.deviceID, p.identity = u.String(), true
	}
	raw, _ := json.Marshal(map[string]string{"sysupgrade": optionFlag})
	if p.options, err = openwrt.ParseOptions(raw); err != nil {
		return nil, usagef("fwupgrade: --option %q: %v", optionFlag, err)
	}
	return &p, nil
}

// result is what --json prints.
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

// run is the whole command; main only wires the process to it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, sig <-chan os.Signal) int {
	p, err := parse(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	// The display goroutine and this one both write: serialise them.
	var mu sync.Mutex
	stdout, stderr = &syncWriter{mu: &mu, w: stdout}, &syncWriter{mu: &mu, w: stderr}
	human := stdout
	if p.json {
		human = stderr
	}
	res := result{Device: p.deviceID, Image: filepath.Base(p.imagePath), Log: []string{}}
	finish := func(code int) int {
		if p.json {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(res)
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

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
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
		Logger:              quiet,
	})
	if err != nil {
		fmt.Fprintln(stderr, "fwupgrade:", err)
		return exitUsage
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
	maxRetries := p.retries
	if maxRetries == 0 {
		maxRetries = -1 // RetryPolicy: 0 means the default, negative means none
	}
	eng, err := upgrader.NewEngine(memory.New(), reg, &upgrader.Config{
		Logger: quiet, Files: files, MaxImageSize: upgrader.NoImageSizeLimit,
		Retry: upgrader.RetryPolicy{MaxRetries: maxRetries, InitialInterval: p.retryDelay},
	})
	if err != nil {
		fmt.Fprintln(stderr, "fwupgrade:", err)
		return exitUsage
	}

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

	img, err := createImage(ctx, eng, p)
	if err != nil {
		return early(err)
	}
	res.Image = img.Name
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
	case <-sig:
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
		case <-sig:
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

// syncWriter serialises writes to w with a mutex shared with other writers.
type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
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

// display prints the engine's events for a person.
type display struct {
	w        io.Writer
	tty      bool
	lastBar  int
	barShown bool
}

func newDisplay(w io.Writer) *display {
	d := &display{w: w, lastBar: -1}
	f, ok := w.(*os.File)
	if sw, isSync := w.(*syncWriter); isSync {
		f, ok = sw.w.(*os.File)
	}
	if ok {
		d.tty = term.IsTerminal(int(f.Fd()))
	}
	return d
}

func (d *display) show(events <-chan upgrader.Event) {
	for ev := range events {
		switch ev.Kind {
		case upgrader.EventOperationPhase:
			d.endBar()
			fmt.Fprintf(d.w, "phase: %s\n", ev.Phase)
		case upgrader.EventOperationProgress:
			d.progress(ev.Progress)
		case upgrader.EventOperationLog:
			d.endBar()
			fmt.Fprintf(d.w, "  %s\n", strings.ReplaceAll(ev.Line, "\n", "\n  "))
		}
	}
	d.endBar()
}

func (d *display) progress(pct int) {
	if d.tty {
		const width = 40
		n := pct * width / 100
		fmt.Fprintf(d.w, "\r[%s%s] %3d%%", strings.Repeat("=", n), strings.Repeat(" ", width-n), pct)
		d.barShown = true
		return
	}
	if pct/10 != d.lastBar/10 {
		d.lastBar = pct
		fmt.Fprintf(d.w, "progress: %d%%\n", pct)
	}
}

func (d *display) endBar() {
	if d.barShown {
		fmt.Fprintln(d.w)
		d.barShown = false
	}
}
