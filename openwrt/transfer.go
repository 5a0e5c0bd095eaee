package openwrt

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// methodOrder returns the upload methods to try for addr: the one that
// worked last time first, then the configured order.
func (u *Upgrader) methodOrder(addr string) []UploadMethod {
	u.mu.Lock()
	last, ok := u.methods[addr]
	u.mu.Unlock()
	if !ok {
		return u.cfg.UploadMethods
	}
	out := []UploadMethod{last}
	for _, m := range u.cfg.UploadMethods {
		if m != last {
			out = append(out, m)
		}
	}
	return out
}

func (u *Upgrader) rememberMethod(addr string, m UploadMethod) {
	u.mu.Lock()
	u.methods[addr] = m
	u.mu.Unlock()
}

// upload sends the image to remotePath with the first method the device
// offers, then checks its SHA-256 on the device.
func (a *attempt) upload(ctx context.Context) error {
	// The upload stops when ctx ends, after UploadTimeout, or when the
	// operation is cancelled (checked with each progress report).
	uctx, cancelUpload := context.WithCancelCause(ctx)
	defer cancelUpload(nil)
	if a.cfg.UploadTimeout > 0 {
		var cancel context.CancelFunc
		uctx, cancel = context.WithTimeoutCause(uctx, a.cfg.UploadTimeout,
			fmt.Errorf("openwrt: upload timed out after %s", a.cfg.UploadTimeout))
		defer cancel()
	}
	a.cancelUpload = cancelUpload
	size := a.job.Image.Size
	start := time.Now()
	var tried []string
	for _, m := range a.u.methodOrder(a.c.addr) {
		sent, err := a.uploadWith(uctx, m, size)
		if errors.Is(err, errUnavailable) {
			a.logf(ctx, "Upload method %s not available on the device", m)
			tried = append(tried, string(m))
			continue
		}
		if err != nil {
			a.uploaded = true // a partial file may be there: cleanup removes it
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if cause := context.Cause(uctx); errors.Is(cause, upgrader.ErrCancelled) {
				a.logf(ctx, "Upload stopped: the operation was cancelled")
				return cause
			} else if cause != nil {
				err = cause
			}
			a.logf(ctx, "Upload via %s failed after %d bytes: %v", m, sent, plain(err))
			return upgrader.Recoverable(status.ReasonUploadFailed, fmt.Errorf("openwrt: upload via %s to %s: %w", m, a.c.addr, err))
		}
		a.uploaded = true
		a.u.rememberMethod(a.c.addr, m)
		d := time.Since(start)
		a.logf(ctx, "Image uploaded to %s via %s: %d bytes in %s (%.1f MiB/s)", a.remotePath, m, sent, d.Round(time.Millisecond),
			float64(sent)/(1<<20)/max(d.Seconds(), 1e-9))
		a.log.Info("openwrt: image uploaded", "method", string(m), "bytes", sent, "duration", d)
		return a.verifyUpload(ctx)
	}
	return upgrader.Recoverable(status.ReasonUploadFailed,
		fmt.Errorf("openwrt: no upload method available on %s (tried %s)", a.c.addr, strings.Join(tried, ", ")))
}

func (a *attempt) uploadWith(ctx context.Context, m UploadMethod, size int64) (int64, error) {
	rc, err := a.job.Image.Open(ctx)
	if err != nil {
		return 0, fmt.Errorf("openwrt: open the image: %w", err)
	}
	defer rc.Close()
	th := &throttle{every: progressEvery, pct: status.ProgressChecksum, fn: func(pct int) {
		a.progress(ctx, pct)
		if err := a.job.Report.Cancelled(ctx); errors.Is(err, upgrader.ErrCancelled) {
			a.cancelUpload(err)
		}
	}}
	pr := &progressReader{r: rc, report: func(sent int64) {
		th.update(status.UploadProgress(sent, size), sent >= size)
	}}
	if err := a.c.uploadVia(ctx, m, pr, size, a.remotePath); err != nil {
		return pr.n, err
	}
	if pr.n != size {
		return pr.n, fmt.Errorf("openwrt: sent %d bytes, the image has %d", pr.n, size)
	}
	return pr.n, nil
}

// verifyUpload compares the checksum of the uploaded file with the
// image's: SHA-256 with sha256sum, or MD5 with md5sum on releases whose
// busybox has no sha256sum (before 17.01), or when the applet is missing.
func (a *attempt) verifyUpload(ctx context.Context) error {
	if a.caps.SHA256 {
		err := a.verifyUploadWith(ctx, "sha256sum", "SHA-256", strings.ToLower(a.job.Image.SHA256))
		var ce *CommandError
		if !errors.As(err, &ce) || ce.ExitStatus != 127 {
			return err
		}
		a.logf(ctx, "sha256sum is not available on the device: checking with md5sum")
	}
	want, err := a.imageMD5(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return upgrader.Recoverable(status.ReasonUploadFailed, fmt.Errorf("openwrt: read the image: %w", err))
	}
	return a.verifyUploadWith(ctx, "md5sum", "MD5", want)
}

// imageMD5 computes the MD5 of the job's image by streaming it once.
func (a *attempt) imageMD5(ctx context.Context) (string, error) {
	rc, err := a.job.Image.Open(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := md5.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// verifyUploadWith runs tool (sha256sum or md5sum) on the uploaded file and
// compares its sum with want. A tool that is missing (exit 127) is returned
// as its *CommandError.
func (a *attempt) verifyUploadWith(ctx context.Context, tool, name, want string) error {
	out, err := a.exec(ctx, command(tool, a.remotePath))
	var ce *CommandError
	switch {
	case errors.As(err, &ce) && ce.ExitStatus == 127:
		return err
	case errors.As(err, &ce):
		a.logf(ctx, "Cannot checksum the uploaded file: %s", ce.Output)
		return upgrader.Recoverable(status.ReasonUploadFailed, fmt.Errorf("openwrt: checksum the uploaded file: %w", err))
	case err != nil:
		return transportError(ctx, "checksum the uploaded file", err)
	}
	got := ""
	if f := strings.Fields(out); len(f) > 0 {
		got = strings.ToLower(strings.TrimPrefix(f[0], `\`))
	}
	if got != want {
		a.logf(ctx, "Uploaded file is corrupt: %s %s on the device, %s expected", name, got, want)
		return upgrader.Recoverable(status.ReasonUploadCorrupt,
			fmt.Errorf("openwrt: the uploaded file's %s is %q, expected %s", name, got, want))
	}
	a.logf(ctx, "Uploaded file verified (%s %s)", name, want)
	return nil
}
