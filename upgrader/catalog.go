package upgrader

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/store"
)

// ErrImageTooLarge is returned by UploadImage for an image over
// Config.MaxImageSize.
var ErrImageTooLarge = errors.New("upgrader: image too large")

// ErrUnknownImageType is returned by UploadImage for an image whose type
// nobody knows: not in the image map, no boards in its own metadata, and no
// registered ImageMatcher knows it; or one Config.Compatibility.KnowsFunc
// refused.
var ErrUnknownImageType = errors.New("upgrader: unknown image type")

// CreateCategory stores a new category (see store.Categories).
func (e *Engine) CreateCategory(ctx context.Context, c store.Category) (store.Category, error) {
	return e.store.CreateCategory(ctx, c)
}

// CreateBuild stores a new build (see store.Builds).
func (e *Engine) CreateBuild(ctx context.Context, b store.Build) (store.Build, error) {
	return e.store.CreateBuild(ctx, b)
}

// CreateImage is UploadImage.
//
// Deprecated: use UploadImage. It is the one call that stores an image's
// bytes (the store's CreateImage records metadata only).
func (e *Engine) CreateImage(ctx context.Context, im store.Image, r io.Reader) (store.Image, error) {
	return e.UploadImage(ctx, im, r)
}

// UploadImage stores the bytes r yields with Config.Files and then the image
// record, filling Size and SHA256 (computed once, while streaming; a SHA256
// set by the caller must match) and Boards (from the image's fwtool
// metadata, when it has some). im.Name defaults to im.Type; im.Type may be
// left empty when im.Name is an OpenWrt file name (it is derived with
// imagemap.TypeFromFileName).
//
// It refuses, storing nothing: an image larger than Config.MaxImageSize
// (ErrImageTooLarge), an empty image or one whose fwtool metadata is corrupt
// or fails its CRC (ErrImageInvalid), an image type that nobody knows
// (ErrUnknownImageType: not in Config.ImageMap, no boards in the image's own
// metadata, and no registered upgrader's ImageMatcher.KnowsImage accepts it;
// Config.Compatibility.KnowsFunc, when it decides, overrides all of these),
// and whatever the store refuses. Metadata is read
// as sysupgrade reads it (imagemap.Metadata.Boards): new_supported_devices
// when present, and no boards from the message an image with a
// compat_version other than 1.0 carries in supported_devices.
func (e *Engine) UploadImage(ctx context.Context, im store.Image, r io.Reader) (store.Image, error) {
	if r == nil {
		return store.Image{}, errors.New("upgrader: UploadImage: nil reader")
	}
	if im.Type == "" && im.Name != "" {
		// The name is checked first, so that an error names what is wrong
		// with it rather than the type derived from it.
		if err := store.CheckImageName(im.Name); err != nil {
			return store.Image{}, err
		}
		im.Type = imagemap.TypeFromFileName(im.Name)
	}
	if im.Name == "" {
		im.Name = im.Type
	}
	want := strings.ToLower(im.SHA256)
	im.ID = store.NewID()
	im.SHA256 = strings.Repeat("0", 64) // placeholder for validation only
	if err := im.Validate(); err != nil {
		return store.Image{}, err
	}
	build, err := e.store.Build(ctx, im.BuildID)
	if err != nil {
		return store.Image{}, fmt.Errorf("upgrader: build %q: %w", im.BuildID, err)
	}

	h := sha256.New()
	src := io.TeeReader(r, h)
	limit := e.cfg.MaxImageSize
	if limit != NoImageSizeLimit {
		src = io.LimitReader(src, limit+1)
	}
	n, err := e.cfg.Files.Put(ctx, im.ID, src)
	if err != nil {
		return store.Image{}, fmt.Errorf("upgrader: storing image: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			if err := e.cfg.Files.Remove(context.WithoutCancel(ctx), im.ID); err != nil {
				e.log.Warn("removing a refused image file failed", slog.String("image", im.ID), slog.Any("error", err))
			}
		}
	}()
	if limit != NoImageSizeLimit && n > limit {
		return store.Image{}, fmt.Errorf("%w: over the limit of %d bytes", ErrImageTooLarge, limit)
	}
	im.Size = n
	im.SHA256 = hex.EncodeToString(h.Sum(nil))
	if want != "" && want != im.SHA256 {
		return store.Image{}, &store.ValidationError{Record: "image", Field: "SHA256",
			Problem: fmt.Sprintf("the file's SHA-256 is %s, not %s", im.SHA256, want)}
	}
	if n == 0 {
		return store.Image{}, fmt.Errorf("%w: the image is empty", ErrImageInvalid)
	}
	md, err := e.readMetadata(ctx, im.ID, n)
	switch {
	case errors.Is(err, imagemap.ErrNoMetadata), errors.Is(err, errNoRandomAccess):
		// Many valid images carry none (x86 combined, older builds).
	case err != nil:
		return store.Image{}, fmt.Errorf("%w: %w", ErrImageInvalid, err)
	default:
		if err := e.verifyCRC(ctx, im.ID, n); err != nil {
			return store.Image{}, fmt.Errorf("%w: %w", ErrImageInvalid, err)
		}
		// The metadata is accepted whole: its boards are new_supported_devices
		// when present, and a compat_version other than 1.0 makes
		// supported_devices a message, not boards (imagemap.Metadata.Boards).
		for _, b := range md.Boards() {
			if !slices.Contains(im.Boards, b) {
				im.Boards = append(im.Boards, b)
			}
		}
	}
	if err := e.checkImageKnown(ctx, im, build); err != nil {
		return store.Image{}, err
	}
	created, err := e.store.CreateImage(ctx, im)
	if err != nil {
		return store.Image{}, err
	}
	keep = true
	return created, nil
}

// ErrImageInvalid is returned by UploadImage for an image that cannot be
// right: empty, or with fwtool metadata that is corrupt or fails its CRC.
var ErrImageInvalid = errors.New("upgrader: invalid image")

var errNoRandomAccess = errors.New("upgrader: image reader has no random access")

// readMetadata reads the fwtool metadata of a stored image when its reader
// allows random access.
func (e *Engine) readMetadata(ctx context.Context, key string, size int64) (*imagemap.Metadata, error) {
	rc, err := e.cfg.Files.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	ra, ok := rc.(io.ReaderAt)
	if !ok {
		return nil, errNoRandomAccess
	}
	return imagemap.ReadMetadata(ra, size)
}

// verifyCRC checks the fwtool CRC of a stored image (it reads it once).
func (e *Engine) verifyCRC(ctx context.Context, key string, size int64) error {
	rc, err := e.cfg.Files.Open(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	ra, ok := rc.(io.ReaderAt)
	if !ok {
		return nil
	}
	return imagemap.VerifyCRC(ctx, ra, size)
}

// RegisterDevice creates or updates a device (see store.Devices.PutDevice).
// When the device is new or its OS identifier changed, and a build with that
// OS identifier (of the device's organization or shared) has an image that
// fits the device, the device's firmware record is set to that image, as
// installed: openwisp's automatic detection of the running firmware.
func (e *Engine) RegisterDevice(ctx context.Context, d store.Device) (store.Device, error) {
	prev, err := e.store.Device(ctx, d.ID)
	isNew := errors.Is(err, store.ErrNotFound)
	if err != nil && !isNew {
		return store.Device{}, err
	}
	saved, err := e.store.PutDevice(ctx, d)
	if err != nil {
		return saved, err
	}
	if saved.OSIdentifier == "" || (!isNew && prev.OSIdentifier == saved.OSIdentifier) {
		return saved, nil
	}
	if err := e.detectFirmware(ctx, saved); err != nil {
		e.log.Warn("detecting the device firmware failed", slog.String("device", d.ID), slog.Any("error", err))
	}
	return saved, nil
}

func (e *Engine) detectFirmware(ctx context.Context, d store.Device) error {
	builds, err := e.store.ListBuilds(ctx, store.BuildFilter{
		Organization: d.Organization, IncludeShared: true, OSIdentifier: d.OSIdentifier,
	})
	if err != nil {
		return err
	}
	for _, b := range builds {
		ims, err := e.store.ListImages(ctx, store.ImageFilter{BuildID: b.ID})
		if err != nil {
			return err
		}
		for _, im := range ims {
			if store.ImageFitsOrganization(im.Organization, d.Organization) && e.Fits(im, d) {
				_, err := e.store.PutDeviceFirmware(ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: im.ID, Installed: true})
				return err
			}
		}
	}
	return nil
}

// installed records, after a successful operation, that the device runs
// the operation's image, and the build's OS identifier as the device's.
func (e *Engine) installed(ctx context.Context, op store.Operation) error {
	if _, err := e.store.PutDeviceFirmware(ctx, store.DeviceFirmware{DeviceID: op.DeviceID, ImageID: op.ImageID, Installed: true}); err != nil {
		return err
	}
	im, err := e.store.Image(ctx, op.ImageID)
	if err != nil {
		return err
	}
	b, err := e.store.Build(ctx, im.BuildID)
	if err != nil || b.OSIdentifier == "" {
		return err
	}
	d, err := e.store.Device(ctx, op.DeviceID)
	if err != nil || d.OSIdentifier == b.OSIdentifier {
		return err
	}
	d.OSIdentifier = b.OSIdentifier
	_, err = e.store.PutDevice(ctx, d)
	return err
}
