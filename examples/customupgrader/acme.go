package main

// The ACME camera upgrader: the host side of the example, what a host
// writes for its own kind of device. It implements upgrader.Upgrader,
// upgrader.Verifier (to prove, after a crash, whether a flash already
// started succeeded) and upgrader.ImageMatcher (it decides which images fit
// its cameras: they are in no OpenWrt image map).

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// connection is the connection kind of ACME cameras
// (store.Device.Connection), under which the upgrader is registered.
const connection = "acme-http"

// Image types of ACME firmware files: "acme-cam-<model>.fw".
const (
	imageTypePrefix = "acme-cam-"
	imageTypeSuffix = ".fw"
)

// imageType is the image type of the firmware files for camera model.
func imageType(model string) string {
	return imageTypePrefix + strings.ToLower(strings.TrimSpace(model)) + imageTypeSuffix
}

// credentials say how to reach one camera. The host hands them out on
// every attempt: a camera's address may change.
type credentials struct {
	// URL is the base URL of the camera's API ("https://192.0.2.7").
	URL string
	// Token is the bearer token the camera's API asks for. It never
	// reaches a log.
	Token string
	// Certificate is the camera's own TLS certificate: it is pinned, and
	// a camera that shows another one is not talked to.
	Certificate *x509.Certificate
}

// Defaults of acmeUpgrader.
const (
	defaultRebootTimeout = 2 * time.Minute
	defaultPollInterval  = time.Second
	requestTimeout       = 10 * time.Second // one status request or command
)

// acmeUpgrader upgrades ACME cameras over their HTTPS API.
type acmeUpgrader struct {
	// credentialsFunc returns the credentials of d's camera.
	credentialsFunc func(ctx context.Context, d store.Device) (credentials, error)
	// rebootTimeout bounds the wait for a camera to come back after a
	// reboot. Defaults to defaultRebootTimeout.
	rebootTimeout time.Duration
	// pollInterval is the wait between two status requests while a
	// camera reboots. Defaults to defaultPollInterval.
	pollInterval time.Duration
}

var (
	_ upgrader.Upgrader     = (*acmeUpgrader)(nil)
	_ upgrader.Verifier     = (*acmeUpgrader)(nil)
	_ upgrader.ImageMatcher = (*acmeUpgrader)(nil)
)

// FitsImage implements upgrader.ImageMatcher: the image of a camera model
// has that model's image type. The engine asks it, not the OpenWrt image
// map, for every device of the "acme-http" kind. The camera checks the
// image's own header again before it flashes it.
func (u *acmeUpgrader) FitsImage(im store.Image, d store.Device) bool {
	return strings.TrimSpace(d.Model) != "" && im.Type == imageType(d.Model)
}

// KnowsImage implements upgrader.ImageMatcher: UploadImage accepts the
// image types of ACME firmware files.
func (u *acmeUpgrader) KnowsImage(up upgrader.ImageUpload) bool {
	t := up.Image.Type
	return len(t) > len(imageTypePrefix)+len(imageTypeSuffix) &&
		strings.HasPrefix(t, imageTypePrefix) && strings.HasSuffix(t, imageTypeSuffix)
}

// Upgrade implements upgrader.Upgrader: connect, check the camera's
// identity, the image and the room for it, upload it, have the camera
// check it, then (once the engine let the flash happen) flash, reboot and
// prove that the camera came back, with a new boot ID, running the image's
// firmware.
func (u *acmeUpgrader) Upgrade(ctx context.Context, job *upgrader.Job) (err error) {
	a := &attempt{u: u, job: job}
	defer func() {
		if err != nil && a.staged && !a.flashCalled {
			a.discard(ctx)
		}
		if a.api != nil {
			a.api.close()
		}
	}()
	return a.upgrade(ctx)
}

// Verify implements upgrader.Verifier. It never flashes: it waits for the
// camera to answer and checks that it runs the image's firmware. A camera
// whose flash was written but that never rebooted (the attempt was cut
// short) is rebooted into it, which writes nothing to its flash.
func (u *acmeUpgrader) Verify(ctx context.Context, job *upgrader.Job) error {
	a := &attempt{u: u, job: job}
	defer func() {
		if a.api != nil {
			a.api.close()
		}
	}()
	return a.verify(ctx)
}

// attempt is one Upgrade or Verify call.
type attempt struct {
	u           *acmeUpgrader
	job         *upgrader.Job
	api         *api
	staged      bool // a file may be staged on the camera
	flashCalled bool // the flash request was sent
}

func (a *attempt) logf(ctx context.Context, format string, args ...any) {
	_ = a.job.Report.Log(ctx, fmt.Sprintf(format, args...))
}

func (a *attempt) progress(ctx context.Context, p int) {
	_ = a.job.Report.Progress(ctx, p)
}

func (a *attempt) upgrade(ctx context.Context) error {
	job, rep := a.job, a.job.Report
	if err := rep.Phase(ctx, status.PhaseConnecting); err != nil {
		return err
	}
	st, err := a.connect(ctx)
	if err != nil {
		return err
	}
	a.logf(ctx, "connected to %s: camera %s, model %s, running %q", a.api.base, st.Serial, st.Model, st.Firmware)
	a.progress(ctx, status.ProgressConnected)

	if err := rep.Phase(ctx, status.PhaseIdentity); err != nil {
		return err
	}
	if err := a.checkIdentity(st); err != nil {
		a.logf(ctx, "%v", err)
		return upgrader.Aborted(status.ReasonIdentityMismatch, err)
	}
	a.progress(ctx, status.ProgressIdentity)

	if err := rep.Phase(ctx, status.PhaseChecksum); err != nil {
		return err
	}
	hdr, err := a.imageHeader(ctx, st.Model)
	if err != nil {
		return err
	}
	if st.Firmware == hdr.Firmware {
		a.logf(ctx, "the camera already runs %q", hdr.Firmware)
		return upgrader.NotNeeded(status.ReasonAlreadyInstalled, fmt.Errorf("acme: the camera already runs %q", hdr.Firmware))
	}
	a.progress(ctx, status.ProgressChecksum)

	if err := rep.Phase(ctx, status.PhaseMemory); err != nil {
		return err
	}
	if st.FreeBytes < job.Image.Size {
		err := fmt.Errorf("acme: the image takes %d bytes, the camera has room for %d", job.Image.Size, st.FreeBytes)
		a.logf(ctx, "%v", err)
		return upgrader.Aborted(status.ReasonInsufficientMemory, err)
	}

	if err := rep.Phase(ctx, status.PhaseUpload); err != nil {
		return err
	}
	sum, err := a.upload(ctx)
	if err != nil {
		return err
	}
	a.progress(ctx, status.ProgressUploaded)

	if err := rep.Phase(ctx, status.PhaseImageTest); err != nil {
		return err
	}
	if err := a.api.do(ctx, http.MethodPost, "/api/v1/firmware/check", nil, nil); err != nil {
		if se := (*statusError)(nil); errors.As(err, &se) && se.Code == http.StatusUnprocessableEntity {
			a.logf(ctx, "the camera refused the image: %s", se.Msg)
			return upgrader.Aborted(status.ReasonImageInvalid, err)
		}
		return a.reachErr(ctx, "check the image", err)
	}
	a.logf(ctx, "the camera accepts the image (%s)", hdr.Firmware)

	// The point of no return: this Phase call is the engine's
	// compare-and-set between a cancel and the flash.
	if err := rep.Phase(ctx, status.PhaseFlashing); err != nil {
		return err
	}
	a.progress(ctx, status.ProgressFlashing)
	a.flashCalled = true
	body, _ := json.Marshal(map[string]string{"sha256": sum})
	if err := a.api.do(ctx, http.MethodPost, "/api/v1/firmware/flash", body, nil); err != nil {
		a.logf(ctx, "flash failed: %v", err)
		return upgrader.Failed(status.ReasonFlashFailed, fmt.Errorf("acme: flash: %w", err))
	}
	a.logf(ctx, "flashed %s", hdr.Firmware)

	if err := rep.Phase(ctx, status.PhaseRebooting); err != nil {
		return err
	}
	back, err := a.reboot(ctx, st.BootID)
	if err != nil {
		return err
	}
	a.progress(ctx, status.ProgressReconnected)

	if err := rep.Phase(ctx, status.PhaseVerifying); err != nil {
		return err
	}
	return a.proveRuns(ctx, back, st.BootID, hdr.Firmware)
}

func (a *attempt) verify(ctx context.Context) error {
	st, err := a.connectWaiting(ctx)
	if err != nil {
		return err
	}
	if err := a.checkIdentity(st); err != nil {
		return upgrader.Failed(status.ReasonIdentityMismatch, err)
	}
	hdr, err := a.imageHeader(ctx, st.Model)
	if err != nil {
		return err
	}
	if st.Firmware != hdr.Firmware && st.Pending == hdr.Firmware {
		a.logf(ctx, "the camera has %q flashed but never rebooted into it: rebooting it", hdr.Firmware)
		if st, err = a.reboot(ctx, st.BootID); err != nil {
			return err
		}
	}
	return a.proveRuns(ctx, st, "", hdr.Firmware)
}

// proveRuns succeeds when the camera, as it answers now (st), runs
// firmware, after a reboot when oldBoot is set.
func (a *attempt) proveRuns(ctx context.Context, st cameraStatus, oldBoot, firmware string) error {
	if st.Firmware != firmware {
		err := fmt.Errorf("acme: the camera came back running %q, not %q", st.Firmware, firmware)
		a.logf(ctx, "%v", err)
		return upgrader.Failed(status.ReasonOldFirmwareAfterReboot, err)
	}
	proof := fmt.Sprintf("camera %s runs %q (boot id %s)", st.Serial, st.Firmware, st.BootID)
	if oldBoot != "" {
		proof = fmt.Sprintf("camera %s runs %q (boot id %s, was %s)", st.Serial, st.Firmware, st.BootID, oldBoot)
	}
	a.progress(ctx, status.ProgressDone)
	if p, ok := a.job.Report.(upgrader.Prover); ok {
		p.Proved(proof)
	} else {
		a.logf(ctx, "%s", proof)
	}
	return nil
}

func (a *attempt) checkIdentity(st cameraStatus) error {
	d := a.job.Device
	switch {
	case st.Serial != d.ID:
		return fmt.Errorf("acme: the camera at this address is %q, not %q", st.Serial, d.ID)
	case d.Model != "" && !strings.EqualFold(st.Model, d.Model):
		return fmt.Errorf("acme: camera %s is a %s, the inventory says %s", st.Serial, st.Model, d.Model)
	}
	return nil
}

// imageHeader reads the header of the job's image and checks it against
// the camera's model and the build.
func (a *attempt) imageHeader(ctx context.Context, model string) (fwHeader, error) {
	rc, err := a.job.Image.Open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fwHeader{}, a.ended(ctx)
		}
		return fwHeader{}, upgrader.Recoverable(status.ReasonUploadFailed, fmt.Errorf("acme: open the image: %w", err))
	}
	defer rc.Close()
	hdr, err := readHeader(rc)
	switch {
	case err != nil:
		return hdr, upgrader.Aborted(status.ReasonImageInvalid, err)
	case !hdr.supports(model):
		return hdr, upgrader.Aborted(status.ReasonNoImageForBoard, fmt.Errorf("acme: the image is for %s, the camera is a %s", strings.Join(hdr.Models, ", "), model))
	case a.job.Image.Build.OSIdentifier != "" && a.job.Image.Build.OSIdentifier != hdr.Firmware:
		return hdr, upgrader.Aborted(status.ReasonImageInvalid, fmt.Errorf("acme: the image holds %q, its build says %q", hdr.Firmware, a.job.Image.Build.OSIdentifier))
	}
	return hdr, nil
}

// upload stages the image on the camera and checks the SHA-256 the camera
// computed. It returns that SHA-256.
func (a *attempt) upload(ctx context.Context) (string, error) {
	rc, err := a.job.Image.Open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return "", a.ended(ctx)
		}
		return "", upgrader.Recoverable(status.ReasonUploadFailed, fmt.Errorf("acme: open the image: %w", err))
	}
	defer rc.Close()
	pr := &progressReader{r: rc, ctx: ctx, rep: a.job.Report, total: a.job.Image.Size}
	a.staged = true
	var res struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
	err = a.api.send(ctx, http.MethodPut, "/api/v1/firmware", pr, a.job.Image.Size, &res)
	switch {
	case pr.err != nil: // cancelled while uploading
		return "", pr.err
	case err != nil:
		if se := (*statusError)(nil); errors.As(err, &se) && se.Code == http.StatusRequestEntityTooLarge {
			return "", upgrader.Aborted(status.ReasonInsufficientMemory, err)
		}
		return "", a.reachErr(ctx, "upload", err)
	case a.job.Image.SHA256 != "" && res.SHA256 != a.job.Image.SHA256:
		a.logf(ctx, "the uploaded file is corrupt: SHA-256 %s, want %s", res.SHA256, a.job.Image.SHA256)
		return "", upgrader.Recoverable(status.ReasonUploadCorrupt, fmt.Errorf("acme: the camera got SHA-256 %s, not %s", res.SHA256, a.job.Image.SHA256))
	}
	a.logf(ctx, "uploaded %d bytes, SHA-256 %s", res.Size, res.SHA256)
	return res.SHA256, nil
}

// reboot reboots the camera and waits until it answers with a boot ID
// other than oldBoot.
func (a *attempt) reboot(ctx context.Context, oldBoot string) (cameraStatus, error) {
	err := a.api.do(ctx, http.MethodPost, "/api/v1/reboot", nil, nil)
	if se := (*statusError)(nil); errors.As(err, &se) {
		return cameraStatus{}, upgrader.Failed(status.ReasonFlashFailed, fmt.Errorf("acme: reboot: %w", err))
	}
	if err != nil && ctx.Err() != nil {
		return cameraStatus{}, a.ended(ctx)
	}
	// A reboot may cut the answer off: the new boot ID is the proof.
	a.logf(ctx, "rebooting; waiting up to %s for the camera", a.u.rebootWait())
	st, err := a.waitFor(ctx, func(st cameraStatus) bool { return st.BootID != oldBoot })
	if err != nil {
		a.logf(ctx, "the camera did not come back: %v", err)
		return st, upgrader.Failed(status.ReasonUnreachableAfterFlash, err)
	}
	a.logf(ctx, "the camera is back (boot id %s)", st.BootID)
	return st, nil
}

// connect builds the client from the host's credentials and reads the
// camera's status.
func (a *attempt) connect(ctx context.Context) (cameraStatus, error) {
	if err := a.dial(ctx); err != nil {
		return cameraStatus{}, err
	}
	var st cameraStatus
	if err := a.api.get(ctx, &st); err != nil {
		return st, a.reachErr(ctx, "connect", err)
	}
	return st, nil
}

// connectWaiting is connect for Verify: the camera may be rebooting, so it
// waits for it to answer.
func (a *attempt) connectWaiting(ctx context.Context) (cameraStatus, error) {
	if err := a.dial(ctx); err != nil {
		return cameraStatus{}, err
	}
	st, err := a.waitFor(ctx, func(cameraStatus) bool { return true })
	if err != nil {
		if ctx.Err() != nil {
			return st, a.ended(ctx)
		}
		return st, upgrader.Failed(status.ReasonUnreachableAfterFlash, err)
	}
	return st, nil
}

func (a *attempt) dial(ctx context.Context) error {
	cr, err := a.u.credentialsFunc(ctx, a.job.Device)
	switch {
	case err != nil && ctx.Err() != nil:
		return a.ended(ctx)
	case err != nil:
		return upgrader.Recoverable(status.ReasonConnectionFailed, fmt.Errorf("acme: credentials: %w", err))
	case cr.Certificate == nil:
		return upgrader.Aborted(status.ReasonHostKeyMismatch, errors.New("acme: no certificate to pin for the camera (cameras are always verified)"))
	}
	pool := x509.NewCertPool()
	pool.AddCert(cr.Certificate)
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: requestTimeout,
		DisableCompression:  true,
	}
	a.api = &api{base: strings.TrimRight(cr.URL, "/"), token: cr.Token, tr: tr, client: &http.Client{Transport: tr}}
	return nil
}

// waitFor polls the camera's status until ok accepts it, within the
// reboot timeout.
func (a *attempt) waitFor(ctx context.Context, ok func(cameraStatus) bool) (cameraStatus, error) {
	wctx, cancel := context.WithTimeout(ctx, a.u.rebootWait())
	defer cancel()
	poll := a.u.pollInterval
	if poll <= 0 {
		poll = defaultPollInterval
	}
	var last error
	for {
		var st cameraStatus
		err := a.api.get(wctx, &st)
		if err == nil && ok(st) {
			return st, nil
		}
		if err != nil {
			last = err
		}
		t := time.NewTimer(poll)
		select {
		case <-wctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return st, a.ended(ctx)
			}
			if last == nil {
				last = errors.New("it kept its old boot id")
			}
			return st, fmt.Errorf("acme: the camera was not back within %s: %w", a.u.rebootWait(), last)
		case <-t.C:
		}
	}
}

func (u *acmeUpgrader) rebootWait() time.Duration {
	if u.rebootTimeout <= 0 {
		return defaultRebootTimeout
	}
	return u.rebootTimeout
}

// discard removes a staged file after a failed or cancelled attempt
// before flashing; not when the engine lost the operation (another engine
// may be working on the camera now).
func (a *attempt) discard(ctx context.Context) {
	if a.api == nil || errors.Is(context.Cause(ctx), upgrader.ErrLeaseLost) {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	if err := a.api.do(dctx, http.MethodDelete, "/api/v1/firmware", nil, nil); err == nil {
		a.logf(dctx, "discarded the staged image")
	}
}

// reachErr classifies a failed request before flashing.
func (a *attempt) reachErr(ctx context.Context, what string, err error) error {
	var cve *tls.CertificateVerificationError
	var se *statusError
	switch {
	case ctx.Err() != nil:
		return a.ended(ctx)
	case errors.As(err, &cve):
		a.logf(ctx, "the camera's TLS certificate is not the pinned one: refused")
		return upgrader.Aborted(status.ReasonHostKeyMismatch, fmt.Errorf("acme: %s: %w", what, err))
	case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
		a.logf(ctx, "the camera refused the token")
		return upgrader.Recoverable(status.ReasonConnectionFailed, fmt.Errorf("acme: %s: %w", what, err))
	case what == "upload":
		a.logf(ctx, "upload failed: %v", err)
		return upgrader.Recoverable(status.ReasonUploadFailed, fmt.Errorf("acme: %s: %w", what, err))
	}
	a.logf(ctx, "cannot reach the camera: %v", err)
	return upgrader.Recoverable(status.ReasonConnectionFailed, fmt.Errorf("acme: %s: %w", what, err))
}

// ended is the error of an attempt whose context ended: its cause, which
// matches upgrader.ErrCancelled when the operation was cancelled.
func (a *attempt) ended(ctx context.Context) error {
	return fmt.Errorf("acme: stopped: %w", context.Cause(ctx))
}

// progressReader reports the upload's progress and stops it when the
// operation is cancelled.
type progressReader struct {
	r     io.Reader
	ctx   context.Context
	rep   upgrader.Reporter
	total int64
	sent  int64
	last  int
	err   error // the cancel that stopped the upload
}

func (p *progressReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.r.Read(b)
	p.sent += int64(n)
	if pc := status.UploadProgress(p.sent, p.total); pc != p.last {
		p.last = pc
		if cerr := p.rep.Cancelled(p.ctx); cerr != nil {
			p.err = cerr
			return n, cerr
		}
		_ = p.rep.Progress(p.ctx, pc)
	}
	return n, err
}

// api is a client of one camera's API.
type api struct {
	base, token string
	tr          *http.Transport
	client      *http.Client
}

func (c *api) close() { c.tr.CloseIdleConnections() }

// get reads the camera's status, within requestTimeout.
func (c *api) get(ctx context.Context, st *cameraStatus) error {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return c.send(rctx, http.MethodGet, "/api/v1/status", nil, 0, st)
}

// do sends a command with an optional JSON body, within requestTimeout.
func (c *api) do(ctx context.Context, method, path string, body []byte, out any) error {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	return c.send(rctx, method, path, r, int64(len(body)), out)
}

// statusError is an answer of the camera other than 2xx.
type statusError struct {
	Code int
	Msg  string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("acme: the camera answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Msg)
}

func (c *api) send(ctx context.Context, method, path string, body io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e apiError
		_ = json.Unmarshal(raw, &e)
		return &statusError{Code: resp.StatusCode, Msg: e.Error}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("acme: bad answer from the camera: %w", err)
		}
	}
	return nil
}
