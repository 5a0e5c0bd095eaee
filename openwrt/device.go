package openwrt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const boardNameFile = "/tmp/sysinfo/board_name"

// learn reads, once per attempt, what the device runs and what its release
// supports: its release (/etc/openwrt_release), its board name (from
// /tmp/sysinfo, else ubus, else the host's record) and, on releases that
// check it, its compat_version (/etc/board.json).
func (a *attempt) learn(ctx context.Context) error {
	desc, err := a.readRelease(ctx)
	var ce *CommandError
	switch {
	case errors.As(err, &ce):
		a.logf(ctx, "Cannot read %s: %s", releaseFile, ce.Output)
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		a.logf(ctx, "Cannot read the device's release: %v", plain(err))
	}
	a.beforeDesc = desc
	a.before, _ = ParseRelease(desc)
	a.caps = CapabilitiesOf(a.before)
	if desc != "" {
		a.logf(ctx, "The device runs %s", desc)
	}
	a.board = a.readBoardName(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// readBoardName returns the device's board name, or the host's record of
// it when the device cannot tell.
func (a *attempt) readBoardName(ctx context.Context) string {
	if out, err := a.exec(ctx, command("cat", boardNameFile)); err == nil && strings.TrimSpace(out) != "" {
		return strings.TrimSpace(out)
	}
	if out, err := a.exec(ctx, command("ubus", "call", "system", "board")); err == nil {
		var b struct {
			BoardName string `json:"board_name"`
		}
		if json.Unmarshal([]byte(out), &b) == nil && strings.TrimSpace(b.BoardName) != "" {
			return strings.TrimSpace(b.BoardName)
		}
	}
	return strings.TrimSpace(a.job.Device.BoardName)
}

// readCompatVersion returns the device's compat_version as sysupgrade's
// fwtool check reads it: the uci option system.@system[0].compat_version
// (first boot copies it from /etc/board.json; an upgrade that keeps the
// configuration keeps the old value), "1.0" when it is not set.
func (a *attempt) readCompatVersion(ctx context.Context) string {
	out, err := a.exec(ctx, command("uci", "-q", "get", "system.@system[0].compat_version"))
	if v := strings.TrimSpace(out); err == nil && v != "" {
		return v
	}
	return "1.0"
}

// checkCapabilities refuses, before anything is uploaded, an option the
// device's release does not have.
func (a *attempt) checkCapabilities(ctx context.Context) error {
	if !a.before.known() {
		return nil // a snapshot or custom build: taken to have everything
	}
	var missing []string
	for _, f := range a.opts.Flags() {
		if strings.HasPrefix(f, "--") {
			if f == flagIgnoreMinorCompat && !a.caps.IgnoreMinorCompat {
				missing = append(missing, f)
			}
			continue
		}
		if !strings.Contains(a.caps.Options, f[1:]) {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	a.logf(ctx, "The device's release (%s) has no sysupgrade %s", a.beforeDesc, strings.Join(missing, " "))
	return upgrader.Aborted(status.ReasonInvalidOptions,
		fmt.Errorf("openwrt: %s has no sysupgrade option %s", a.beforeDesc, strings.Join(missing, " ")))
}

// imageMetadata reads the fwtool metadata of the job's image (nil when it
// has none).
func (a *attempt) imageMetadata(ctx context.Context) (*imagemap.Metadata, error) {
	rc, err := a.job.Image.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	size := a.job.Image.Size
	ra, ok := rc.(io.ReaderAt)
	if !ok {
		// Keep the image's end in memory: the metadata is at most
		// imagemap.MaxMetadataSize (and a few trailers) from the end.
		const keep = imagemap.MaxMetadataSize + 4096
		tail, n, err := lastBytes(rc, keep)
		if err != nil {
			return nil, err
		}
		size = n
		ra = &tailReaderAt{tail: tail, base: n - int64(len(tail))}
	}
	md, err := imagemap.ReadMetadata(ra, size)
	if errors.Is(err, imagemap.ErrNoMetadata) {
		return nil, nil
	}
	return md, err
}

// lastBytes reads r to its end and returns its last keep bytes and its
// length.
func lastBytes(r io.Reader, keep int) ([]byte, int64, error) {
	buf := make([]byte, 0, 2*keep)
	var n int64
	chunk := make([]byte, 64<<10)
	for {
		k, err := r.Read(chunk)
		n += int64(k)
		buf = append(buf, chunk[:k]...)
		if len(buf) > 2*keep {
			buf = append(buf[:0], buf[len(buf)-keep:]...)
		}
		if err == io.EOF {
			if len(buf) > keep {
				buf = buf[len(buf)-keep:]
			}
			return buf, n, nil
		}
		if err != nil {
			return nil, 0, err
		}
	}
}

// tailReaderAt reads the end of a file held in memory.
type tailReaderAt struct {
	tail []byte
	base int64 // offset of tail[0] in the file
}

func (t *tailReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < t.base {
		return 0, errors.New("openwrt: read before the kept end of the image")
	}
	i := off - t.base
	if i >= int64(len(t.tail)) {
		return 0, io.EOF
	}
	n := copy(p, t.tail[i:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// checkImageFits holds the image's own metadata as the authority, before
// anything is uploaded: a device whose board name it does not list is
// refused even with -F (a file named like one board's image that carries
// another's metadata must never be flashed), and its compat_version must
// suit the device's as sysupgrade would judge it on 21.02 and later.
func (a *attempt) checkImageFits(ctx context.Context) error {
	if err := a.checkImageBoard(ctx); err != nil {
		return err
	}
	_, _, err := a.checkImageCompat(ctx)
	return err
}

// checkReportedBoard refuses, for an image whose metadata names no board, a
// device that reports a board name other than its record's when the engine
// chose the image by the record's (upgrader.Job.WrongBoard).
func (a *attempt) checkReportedBoard(ctx context.Context) error {
	if a.job.WrongBoard == nil || !a.job.WrongBoard(a.board) {
		return nil
	}
	a.logf(ctx, "The device reports board %q, its record says %q: the image was chosen for the record's board and does not fit the device's",
		a.board, a.job.Device.BoardName)
	return upgrader.Aborted(status.ReasonNoImageForBoard,
		fmt.Errorf("openwrt: the device's board is %q, not %q as its record says, and image type %q is not for it",
			a.board, a.job.Device.BoardName, a.job.Image.Type))
}

// checkImageBoard reads the image's fwtool metadata into a.meta and
// refuses a device whose board name it does not list (see checkImageFits);
// for an image without boards in its metadata, it asks the engine
// (checkReportedBoard).
func (a *attempt) checkImageBoard(ctx context.Context) error {
	md, err := a.imageMetadata(ctx)
	switch {
	case errors.Is(err, imagemap.ErrCorruptMetadata):
		a.logf(ctx, "The image's metadata is corrupt: %v", plain(err))
		return upgrader.Aborted(status.ReasonImageInvalid, fmt.Errorf("openwrt: %w", err))
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return upgrader.Recoverable(status.ReasonUploadFailed, fmt.Errorf("openwrt: read the image: %w", err))
	case md == nil:
		return a.checkReportedBoard(ctx)
	}
	a.meta = md
	boards := md.Boards()
	if len(boards) == 0 {
		return a.checkReportedBoard(ctx)
	}
	if !md.Supports(a.board) {
		a.logf(ctx, "The image is for %s, the device's board is %q: refused (even with -F)", strings.Join(boards, ", "), a.board)
		return upgrader.Aborted(status.ReasonNoImageForBoard,
			fmt.Errorf("openwrt: the image's metadata lists %s, not the device's board %q", strings.Join(boards, ", "), a.board))
	}
	return nil
}

// checkImageCompat compares the compat_version of the image's metadata
// (a.meta, read by checkImageBoard) with the device's, on releases that
// check it (see checkImageFits). It returns both values when it compared
// them, "" when it did not (no metadata, or a release without the check).
func (a *attempt) checkImageCompat(ctx context.Context) (device, image string, err error) {
	md := a.meta
	if md == nil || !a.caps.CompatCheck {
		return "", "", nil
	}
	device = a.readCompatVersion(ctx)
	if ctx.Err() != nil {
		return "", "", ctx.Err()
	}
	image = strings.TrimSpace(md.CompatVersion)
	if image == "" {
		image = "1.0"
	}
	if device == image {
		return device, image, nil
	}
	dMajor, dMinor, _ := strings.Cut(device, ".")
	iMajor, iMinor, _ := strings.Cut(image, ".")
	switch {
	case dMajor != iMajor:
		a.logf(ctx, "The image's compat_version %s is incompatible with the device's %s: sysupgrade refuses it", image, device)
		return device, image, upgrader.Aborted(status.ReasonImageInvalid,
			fmt.Errorf("openwrt: compat_version %s of the image is incompatible with %s of the device (major version)", image, device))
	case dMinor != iMinor && !a.opts.NoConfig && !a.opts.IgnoreMinorCompat:
		allow := "-n (do not keep the configuration)"
		if a.caps.IgnoreMinorCompat {
			allow += " or " + flagIgnoreMinorCompat
		}
		a.logf(ctx, "The image's compat_version %s differs from the device's %s: the configuration cannot be kept; %s would allow it", image, device, allow)
		return device, image, upgrader.Aborted(status.ReasonImageInvalid,
			fmt.Errorf("openwrt: compat_version %s of the image, %s of the device: the configuration cannot be kept (%s would allow it)", image, device, allow))
	}
	return device, image, nil
}

// expectedRelease is the release the device must run after the flash: the
// build's OS identifier, else the version in the image's metadata. ok is
// false when neither says.
func (a *attempt) expectedRelease() (Release, string, bool) {
	if want := strings.TrimSpace(a.job.Image.Build.OSIdentifier); want != "" {
		if r, ok := ParseRelease(want); ok {
			return r, want, true
		}
		return Release{}, want, true // compared as a whole
	}
	if a.meta != nil && a.meta.Version.Version != "" {
		v := a.meta.Version
		r := Release{Dist: v.Dist, Version: v.Version, Revision: v.Revision}
		r.Major, r.Minor = versionNumbers(v.Version)
		return r, r.String(), true
	}
	return Release{}, "", false
}

// runsExpected reports whether the device's release desc is the expected
// one (see expectedRelease).
func runsExpected(desc string, want Release, wantDesc string) bool {
	if want.Version == "" {
		return strings.TrimSpace(desc) == strings.TrimSpace(wantDesc)
	}
	got, ok := ParseRelease(desc)
	return ok && got.Same(want)
}
