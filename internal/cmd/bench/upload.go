package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// The upload section.
//
// The openwrt package's upload functions are unexported, so the library's
// methods are measured through the exported Upgrader.Upgrade (what the
// engine calls), with UploadMethods set to the one method and a reporter
// that refuses the phase after the upload (image-test): the attempt stops
// there, before anything is flashed, and removes the file. The time of the
// upload is from the attempt entering the upload phase to its "Image
// uploaded" log line: the SFTP or SSH session is opened in it, the
// connection is not (the attempt made it before). The checksum the
// library runs on the device afterwards is outside; its "Uploaded file
// verified" line is required.
//
// OpenSSH's clients reuse one connection of a master started beforehand
// (ControlMaster), so they too are timed from the session's opening: their
// time includes starting the scp or sftp process, not the handshake. The
// raw "cat >" contender is a session of an x/crypto/ssh connection made
// beforehand, copying the file into "cat > PATH".
//
// Every contender reads the same file from disk and writes to the same
// server, one after the other, their order rotating from round to round
// after an untimed warm-up round.

// contender is one way of uploading the file.
type contender struct {
	name string
	// run uploads the file to remote and returns how long the upload took.
	run func(ctx context.Context, remote string) (time.Duration, error)
	// leaves says whether the file stays on the server afterwards, to be
	// checked (the library removes its own, after checking it itself).
	leaves bool
}

// uploadTarget is an SSH server to upload to.
type uploadTarget struct {
	name    string // "simulator" or "dropbear"
	addr    string // host:port
	user    string
	hostKey ssh.PublicKey
	device  store.Device // the device record the library's attempt works on
	// skipIdentity turns the library's identity check off (a server that is
	// no OpenWrt device has no openwisp UUID).
	skipIdentity bool
	// check verifies an uploaded file left on the server.
	check func(remote string) error
	// remove removes a file from the server (outside the timing).
	remove func(remote string)
	// before runs before each timed upload (outside the timing).
	before    func()
	remoteDir string
}

// uploadFile is the file every contender sends.
type uploadFile struct {
	path    string
	size    int64
	sha256  string
	image   openwrttest.Image
	imageID string
}

func uploadSection(ctx context.Context, r *run) error {
	dir, err := os.MkdirTemp("", "fwbench-upload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The file: a sysupgrade image of the simulated board, with fwtool
	// metadata (the library's attempt checks it before the upload).
	img := openwrttest.NewImage("23.05", openwrttest.DefaultBoardName, r.set.uploadSize)
	file := uploadFile{path: filepath.Join(dir, img.FileName()), size: img.Len(), sha256: img.SHA256(), image: img,
		imageID: store.NewID()}
	if err := writeImage(file.path, img); err != nil {
		return err
	}

	signer, keyFile, err := newClientKey(dir)
	if err != nil {
		return err
	}
	openssh, whyNoOpenSSH := findOpenSSH()
	if openssh == nil {
		r.note("OpenSSH contenders skipped: %s", whyNoOpenSSH)
	} else {
		r.note("OpenSSH clients: %s, over one master connection per server (ControlMaster)", openssh.version)
	}

	// (a) The simulator.
	sim, closeSim, err := simulatorTarget(signer, file)
	if err != nil {
		return fmt.Errorf("start the simulated device: %w", err)
	}
	err = measureTarget(ctx, r, sim, file, signer, keyFile, openssh, whyNoOpenSSH, dir)
	closeSim()
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// (b) Debian's dropbear on loopback.
	db, why, err := startDropbear(ctx, filepath.Join(dir, "dropbear"), signer.PublicKey())
	if err != nil || why != "" {
		if err != nil {
			why = err.Error()
		}
		for _, name := range contenderNames() {
			r.skip("dropbear: "+name, "MiB/s", nil, why)
		}
		r.skip("dropbear: library SCP / OpenSSH scp -O", "×", scpGoal(), why)
		r.skip("dropbear: library best / raw cat >", "×", bestGoal(), why)
		return nil
	}
	defer db.stop()
	r.note("dropbear: %s", db.version)
	t := db.target()
	t.check = localCheck(file)
	return measureTarget(ctx, r, t, file, signer, keyFile, openssh, whyNoOpenSSH, dir)
}

func scpGoal() *goal  { return atLeast(1.0, "≥ 1.0×") }
func bestGoal() *goal { return atLeast(0.9, "≥ 0.9×") }

// The contenders, in their first round's order.
const (
	cLibSFTP  = "library SFTP"
	cLibSCP   = "library SCP"
	cLibCat   = "library cat"
	cSSHSCP   = "OpenSSH scp -O"
	cSSHSFTP  = "OpenSSH sftp"
	cRawCat   = "raw cat > (x/crypto)"
	libPrefix = "library "
)

func contenderNames() []string {
	return []string{cLibSFTP, cLibSCP, cLibCat, cSSHSCP, cSSHSFTP, cRawCat}
}

// measureTarget runs every contender against t and records the figures.
func measureTarget(ctx context.Context, r *run, t *uploadTarget, file uploadFile, signer ssh.Signer, keyFile string,
	openssh *opensshTools, whyNoOpenSSH, dir string) error {
	var cs []contender
	skipped := map[string]string{}
	for _, m := range []openwrt.UploadMethod{openwrt.UploadSFTP, openwrt.UploadSCP, openwrt.UploadCat} {
		c, err := libraryContender(t, file, signer, m)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	if openssh != nil {
		client, err := openssh.connect(ctx, filepath.Join(dir, "openssh-"+t.name), t, keyFile)
		if err != nil {
			skipped[cSSHSCP] = err.Error()
			skipped[cSSHSFTP] = err.Error()
		} else {
			defer client.close()
			cs = append(cs, client.scpContender(file), client.sftpContender(file))
			if client.cipher != "" {
				r.note("%s: OpenSSH negotiated %s; x/crypto/ssh (the library, raw cat) %s", t.name, client.cipher,
					xcryptoCipher(client.serverCiphers))
			}
		}
	} else {
		skipped[cSSHSCP] = whyNoOpenSSH
		skipped[cSSHSFTP] = whyNoOpenSSH
	}
	raw, closeRaw, err := rawCatContender(ctx, t, file, signer)
	if err != nil {
		skipped[cRawCat] = err.Error()
	} else {
		defer closeRaw()
		cs = append(cs, raw)
	}

	remote := func(c contender) string {
		return fmt.Sprintf("%s/fwbench-%d-%s.bin", t.remoteDir, os.Getpid(),
			strings.NewReplacer(" ", "-", "/", "", ">", "", "(", "", ")", "").Replace(c.name))
	}
	defer func() {
		for _, c := range cs {
			t.remove(remote(c))
		}
	}()
	// times[name][round]; a contender that fails is dropped from the
	// rounds that follow.
	times := map[string][]time.Duration{}
	failed := map[string]error{}
	attempts, failures := map[string]int{}, map[string][]error{}
	for round := 0; round <= r.set.rounds; round++ { // round 0: warm-up
		order := slices.Clone(cs)
		if round > 0 {
			k := (round - 1) % len(cs)
			order = append(order[k:], order[:k]...)
		}
		for _, c := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if failed[c.name] != nil {
				continue
			}
			// A failed upload is tried again, twice at most, and counted:
			// the failures are reported with the figure.
			path := remote(c)
			var d time.Duration
			var err error
			for try := 0; try < 3; try++ {
				t.remove(path)
				t.before()
				attempts[c.name]++
				if d, err = c.run(ctx, path); err == nil && c.leaves {
					err = t.check(path)
				}
				if err == nil || ctx.Err() != nil {
					break
				}
				failures[c.name] = append(failures[c.name], err)
				r.logf("%s: %s failed: %v", t.name, c.name, err)
			}
			if err != nil {
				failed[c.name] = err
				continue
			}
			if round > 0 {
				times[c.name] = append(times[c.name], d)
			}
		}
		if round == 0 {
			r.logf("%s: warm-up round done", t.name)
		} else {
			r.logf("%s: round %d of %d done", t.name, round, r.set.rounds)
		}
	}

	rate := func(name string) []float64 {
		if len(times[name]) != r.set.rounds {
			return nil
		}
		out := make([]float64, len(times[name]))
		for i, d := range times[name] {
			out[i] = mibPerSecond(file.size, d)
		}
		return out
	}
	for _, name := range contenderNames() {
		label := t.name + ": " + name
		switch {
		case skipped[name] != "":
			r.skip(label, "MiB/s", nil, skipped[name])
		case failed[name] != nil:
			r.skip(label, "MiB/s", nil, fmt.Sprintf("failed (%d of %d attempts): %v", len(failures[name]), attempts[name], failed[name]))
		default:
			rates := rate(name)
			note := fmt.Sprintf("median of %d; min %.1f, max %.1f", len(rates), slices.Min(rates), slices.Max(rates))
			if f := failures[name]; len(f) > 0 {
				note += fmt.Sprintf("; %d of %d attempts failed and were tried again, the first: %v", len(f), attempts[name], f[0])
			}
			r.add(label, median(rates), "MiB/s", nil, note)
		}
	}
	// ratio is the median over the rounds of a's rate over b's, measured in
	// the same round.
	ratio := func(a, b string) (float64, bool) {
		ra, rb := rate(a), rate(b)
		if ra == nil || rb == nil {
			return 0, false
		}
		v := make([]float64, len(ra))
		for i := range ra {
			v[i] = ra[i] / rb[i]
		}
		return median(v), true
	}
	if v, ok := ratio(cLibSCP, cSSHSCP); ok {
		r.add(t.name+": library SCP / OpenSSH scp -O", v, "×", scpGoal(), "median of the per-round ratios")
	} else {
		r.skip(t.name+": library SCP / OpenSSH scp -O", "×", scpGoal(), "a contender is missing")
	}
	best, bestRate := "", 0.0
	for _, name := range []string{cLibSFTP, cLibSCP, cLibCat} {
		if rates := rate(name); rates != nil && median(rates) > bestRate {
			best, bestRate = name, median(rates)
		}
	}
	if v, ok := ratio(best, cRawCat); ok {
		r.add(fmt.Sprintf("%s: library best (%s) / raw cat >", t.name, strings.TrimPrefix(best, libPrefix)), v, "×", bestGoal(),
			"median of the per-round ratios")
	} else {
		r.skip(t.name+": library best / raw cat >", "×", bestGoal(), "a contender is missing")
	}
	return nil
}

// writeImage writes img to path.
func writeImage(path string, img openwrttest.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, img.Reader()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// newClientKey makes an ed25519 client key: its signer, and the private
// key in OpenSSH's format in dir (for OpenSSH's clients).
func newClientKey(dir string) (ssh.Signer, string, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "fwupgrader bench")
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, "client_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, "", err
	}
	return signer, path, nil
}

// simulatorTarget starts a simulated device that offers SFTP and SCP and
// accepts the client key.
func simulatorTarget(signer ssh.Signer, file uploadFile) (*uploadTarget, func(), error) {
	id := uuid.NewString()
	dev, err := openwrttest.New(openwrttest.Config{UUID: id, SFTP: true, SCP: true,
		MemTotal: 1 << 30, MemAvailable: 768 << 20, AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	if err != nil {
		return nil, nil, err
	}
	if err := dev.Start(); err != nil {
		dev.Close()
		return nil, nil, err
	}
	t := &uploadTarget{
		name: "simulator", addr: dev.Addr(), user: openwrttest.DefaultUser, hostKey: dev.HostKey(),
		device: store.Device{ID: id, Model: dev.Config().Model, BoardName: dev.Config().BoardName,
			OSIdentifier: dev.Release(), Connection: openwrt.Connection, Active: true},
		remoteDir: "/tmp",
		before:    func() {},
		remove:    func(string) {}, // each upload replaces the file
		check:     simCheck(dev, file),
	}
	return t, func() { dev.Close() }, nil
}

// simCheck returns the check of files uploaded to dev.
func simCheck(dev *openwrttest.Device, file uploadFile) func(string) error {
	return func(remote string) error {
		f, ok := dev.File(remote)
		switch {
		case !ok:
			return fmt.Errorf("%s is not on the device", remote)
		case f.Size != file.size || f.SHA256 != file.sha256:
			return fmt.Errorf("%s on the device has %d bytes, SHA-256 %s; sent %d bytes, %s", remote, f.Size, f.SHA256, file.size, file.sha256)
		}
		return nil
	}
}

// localCheck verifies a file uploaded to a server on this machine.
func localCheck(file uploadFile) func(string) error {
	return func(remote string) error {
		f, err := os.Open(remote)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		if sum := hex.EncodeToString(h.Sum(nil)); n != file.size || sum != file.sha256 {
			return fmt.Errorf("%s has %d bytes, SHA-256 %s; sent %d bytes, %s", remote, n, sum, file.size, file.sha256)
		}
		return nil
	}
}

// libraryContender uploads with the openwrt upgrader's method m, through
// Upgrader.Upgrade stopped after the upload (see the section's comment).
func libraryContender(t *uploadTarget, file uploadFile, signer ssh.Signer, m openwrt.UploadMethod) (contender, error) {
	var remote string // set by run before each attempt
	u, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(context.Context, store.Device) (openwrt.Credentials, error) {
			return openwrt.Credentials{Address: t.addr, User: t.user, Signers: []ssh.Signer{signer},
				HostKeyCallback: openwrt.PinnedKey(t.hostKey), HostKeyAlgorithms: hostKeyAlgorithms(t.hostKey)}, nil
		},
		SkipIdentityCheck: t.skipIdentity,
		UploadMethods:     []openwrt.UploadMethod{m},
		RemotePathFunc:    func(upgrader.Image) string { return remote },
		Services:          []string{}, // never stop a service, even on a server short of memory
		KeepWireless:      true,
		Logger:            slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return contender{}, err
	}
	name := map[openwrt.UploadMethod]string{openwrt.UploadSFTP: cLibSFTP, openwrt.UploadSCP: cLibSCP, openwrt.UploadCat: cLibCat}[m]
	return contender{name: name, run: func(ctx context.Context, path string) (time.Duration, error) {
		remote = path
		rep := &uploadReporter{}
		job := &upgrader.Job{
			Operation: store.Operation{ID: store.NewID(), DeviceID: t.device.ID, ImageID: file.imageID,
				State: status.InProgress, Attempt: 1},
			Device: t.device,
			Image: upgrader.Image{
				Image: store.Image{ID: file.imageID, Name: file.image.FileName(), Size: file.size, SHA256: file.sha256},
				Build: store.Build{OSIdentifier: file.image.Release},
				OpenFunc: func(context.Context) (io.ReadCloser, error) {
					return os.Open(file.path)
				},
			},
			Report: rep,
		}
		err := u.Upgrade(ctx, job)
		return rep.result(err)
	}}, nil
}

// uploadReporter is the Reporter of the library's timed attempts: it notes
// when the upload phase starts and when the upload is logged done, and
// refuses the image-test phase, which ends the attempt before any flash.
type uploadReporter struct {
	mu         sync.Mutex
	start, end time.Time
	verified   bool
	lines      []string
}

func (u *uploadReporter) Phase(ctx context.Context, p status.Phase) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch p {
	case status.PhaseUpload:
		u.start = time.Now()
	case status.PhaseImageTest, status.PhaseFlashing:
		return upgrader.ErrCancelled
	}
	return ctx.Err()
}

func (u *uploadReporter) Progress(context.Context, int) error { return nil }

func (u *uploadReporter) Log(_ context.Context, line string) error {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case strings.HasPrefix(line, "Image uploaded"):
		u.end = now
	case strings.HasPrefix(line, "Uploaded file verified"):
		u.verified = true
	}
	if len(u.lines) < 100 {
		u.lines = append(u.lines, line)
	}
	return nil
}

func (u *uploadReporter) Cancelled(ctx context.Context) error { return ctx.Err() }

// result is the upload's duration, or why the attempt did not upload and
// verify the file (err is what Upgrade returned).
func (u *uploadReporter) result(err error) (time.Duration, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err == nil {
		return 0, errors.New("the attempt did not stop at the image test")
	}
	if u.start.IsZero() || u.end.IsZero() || !u.verified {
		last := u.lines[max(0, len(u.lines)-4):]
		return 0, fmt.Errorf("the attempt did not upload and verify the image: %v (log: %s)", err, strings.Join(last, " | "))
	}
	return u.end.Sub(u.start), nil
}

// rawCatContender streams the file into "cat > PATH" over a session of an
// x/crypto/ssh connection of its own, made here.
func rawCatContender(ctx context.Context, t *uploadTarget, file uploadFile, signer ssh.Signer) (contender, func(), error) {
	cfg := &ssh.ClientConfig{User: t.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(t.hostKey), HostKeyAlgorithms: hostKeyAlgorithms(t.hostKey), Timeout: 15 * time.Second}
	client, err := ssh.Dial("tcp", t.addr, cfg)
	if err != nil {
		return contender{}, nil, fmt.Errorf("connect: %w", err)
	}
	run := func(ctx context.Context, remote string) (time.Duration, error) {
		f, err := os.Open(file.path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		start := time.Now()
		s, err := client.NewSession()
		if err != nil {
			return 0, err
		}
		defer s.Close()
		stop := context.AfterFunc(ctx, func() { s.Close() })
		defer stop()
		stdin, err := s.StdinPipe()
		if err != nil {
			return 0, err
		}
		var stderr strings.Builder
		s.Stderr = &stderr
		if err := s.Start("cat > '" + remote + "'"); err != nil {
			return 0, err
		}
		if _, err := io.Copy(stdin, f); err != nil {
			return 0, err
		}
		if err := stdin.Close(); err != nil {
			return 0, err
		}
		if err := s.Wait(); err != nil {
			return 0, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return time.Since(start), nil
	}
	return contender{name: cRawCat, run: run, leaves: true}, func() { client.Close() }, nil
}

// hostKeyAlgorithms restricts an x/crypto/ssh client to the algorithms of
// the pinned host key. Without it, dropbear 2022.83 (Debian 12) started with
// only an ed25519 host key still agrees to an RSA host key algorithm, which
// x/crypto/ssh prefers, and drops the connection on a failed assertion
// ("rsa.c:164: key != NULL"). OpenSSH's clients are not affected: they
// prefer the type of the key their known_hosts holds.
func hostKeyAlgorithms(key ssh.PublicKey) []string {
	if key.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{key.Type()}
}

// syncDisks flushes the page cache's dirty pages, so that an upload to a
// server on this machine does not pay for the one before it.
func syncDisks() { syscall.Sync() }
