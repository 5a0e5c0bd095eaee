package upgrader

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/fwupgrader/fwupgrader/store"
)

// ImageMatcher is implemented by upgraders that decide for themselves which
// images their devices take: devices that are not OpenWrt (a camera, a
// switch) and whose images are in no OpenWrt image map.
//
// The engine asks the upgrader registered for a device's connection kind
// (store.Device.Connection). When that upgrader implements ImageMatcher,
// FitsImage alone decides whether an image fits the device: neither
// Config.ImageMap nor the boards an image declares in its own metadata
// are consulted for it, and a device without model or board name may fit.
// An upgrader that does not implement it gets the OpenWrt rule (see
// Engine.Fits). Config.Compatibility, when it decides, comes before both.
//
// The answer is used everywhere an image meets a device: Create, Enqueue and
// Upgrade refuse an image that does not fit (status.ReasonNoImageForBoard),
// every attempt checks it again, batch plans and dry runs pick each
// device's image with it (SkipNoImageForBoard when none fits), and
// RegisterDevice detects a device's running firmware with it.
//
// Both methods are called often (once per image and device while a batch is
// planned) and from many goroutines: they must be fast, safe for concurrent
// use and do no I/O. A panic counts as "no".
type ImageMatcher interface {
	// FitsImage reports whether image im may be installed on device d, a
	// device of a connection kind the upgrader is registered for. The
	// organization and the device's Active flag are checked by the engine.
	FitsImage(im store.Image, d store.Device) bool
	// KnowsImage reports whether the upgrader installs images like up.
	// Engine.UploadImage accepts an image whose type is not in
	// Config.ImageMap and whose metadata names no boards when a registered
	// upgrader knows it; it has no device to ask FitsImage about yet.
	KnowsImage(up ImageUpload) bool
}

// ImageUpload is what Engine.UploadImage knows of an image when it asks
// whether anybody knows images of its kind: the image (Type, Name, Size,
// SHA256, Organization and the Boards its fwtool metadata names are set;
// its ID is not, as it is not stored yet), its build and its build's
// category (whose name often says which kind of device it is for).
type ImageUpload struct {
	Image    store.Image
	Build    store.Build
	Category store.Category
}

// Decision is a host's answer in Config.Compatibility.
type Decision int

// Decisions of Config.Compatibility's functions.
const (
	// Defer leaves the decision to the next rule: the device's upgrader
	// when it is an ImageMatcher, else the OpenWrt rule.
	Defer Decision = iota
	// Allow: the image fits the device (FitsFunc), or is accepted at upload
	// (KnowsFunc).
	Allow
	// Deny: the image does not fit the device (FitsFunc), or is refused at
	// upload with ErrUnknownImageType (KnowsFunc).
	Deny
)

func (d Decision) String() string {
	switch d {
	case Defer:
		return "defer"
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// Compatibility is how a host decides, before anybody else, which images
// fit which devices (Config.Compatibility): an NMS that keeps its own
// hardware database, say. Each function is optional; a nil function, a
// Defer answer (or an unknown Decision value) leaves the decision to the
// rules below it.
//
// Precedence, for an image and a device:
//
//  1. Compatibility.FitsFunc, when it answers Allow or Deny;
//  2. else the upgrader registered for the device's connection kind, when
//     it implements ImageMatcher: its FitsImage;
//  3. else the OpenWrt rule (Engine.Fits): the boards the image's own
//     metadata names, when it names some and the device has a board name;
//     else the image's type in Config.ImageMap for the device's model or
//     board name.
//
// For an image being uploaded (Engine.UploadImage):
//
//  1. Compatibility.KnowsFunc, when it answers Allow or Deny;
//  2. else the image is accepted when its type is in Config.ImageMap, its
//     metadata names boards, or a registered ImageMatcher knows it
//     (KnowsImage); refused with ErrUnknownImageType otherwise.
//
// The organization, a deactivated device and the rest of Create's checks
// are not the host's to override. Like ImageMatcher's methods, the
// functions must be fast, safe for concurrent use and do no I/O; a panic
// counts as Deny.
type Compatibility struct {
	// FitsFunc decides whether image im fits device d.
	FitsFunc func(im store.Image, d store.Device) Decision
	// KnowsFunc decides whether UploadImage accepts the image up.
	KnowsFunc func(up ImageUpload) Decision
}

// fitRule names who decided whether an image fits a device, for messages.
type fitRule struct {
	host bool   // Config.Compatibility.FitsFunc
	kind string // the device's connection kind, when its upgrader decided
}

func (r fitRule) String() string {
	switch {
	case r.host:
		return "Config.Compatibility.FitsFunc"
	case r.kind != "":
		return fmt.Sprintf("the upgrader of connection kind %q", r.kind)
	}
	return "the image map and the image's metadata"
}

// Fits reports whether image im may be installed on device d, as far as
// their hardware goes (Create also checks the organization and that the
// device is active). The first of these that decides answers (see
// Compatibility for the whole precedence):
//
//  1. Config.Compatibility.FitsFunc, when set and not Defer;
//  2. the upgrader registered for d.Connection, when it implements
//     ImageMatcher;
//  3. the OpenWrt rule: when im declares boards itself (Image.Boards, from
//     its fwtool metadata) and d has a board name, they decide alone, as
//     sysupgrade holds them; otherwise im's type is in Config.ImageMap for
//     d's model or board name, or one of im's boards is d's model. Under
//     this rule a device that reports neither model nor board name fits
//     nothing.
func (e *Engine) Fits(im store.Image, d store.Device) bool {
	ok, _ := e.fit(im, d)
	return ok
}

// wrongBoard returns Job.WrongBoard for im on d: true for a reported board
// name the image does not fit when the image fits d's recorded board name
// alone (by any rule). Whether the image fits by d's model is left out on
// both sides: the record's model is as suspect as its board name.
func (e *Engine) wrongBoard(im store.Image, d store.Device) func(board string) bool {
	return func(board string) bool {
		board = strings.TrimSpace(board)
		if board == "" || strings.EqualFold(board, strings.TrimSpace(d.BoardName)) {
			return false
		}
		byRecord, reported := d, d
		byRecord.Model, reported.Model, reported.BoardName = "", "", board
		return e.Fits(im, byRecord) && !e.Fits(im, reported)
	}
}

// fit is Fits, with who decided.
func (e *Engine) fit(im store.Image, d store.Device) (bool, fitRule) {
	if f := e.cfg.Compatibility.FitsFunc; f != nil {
		switch e.hostFits(f, im, d) {
		case Allow:
			return true, fitRule{host: true}
		case Deny:
			return false, fitRule{host: true}
		}
	}
	if u, ok := e.reg.Lookup(d.Connection); ok {
		if m, ok := u.(ImageMatcher); ok {
			return e.matcherFits(m, im, d), fitRule{kind: d.Connection}
		}
	}
	return e.openWrtFits(im, d), fitRule{}
}

// openWrtFits is the OpenWrt rule (see Fits).
func (e *Engine) openWrtFits(im store.Image, d store.Device) bool {
	board := strings.TrimSpace(d.BoardName)
	if strings.TrimSpace(d.Model) == "" && board == "" {
		return false
	}
	var declared []string
	for _, b := range im.Boards {
		if b = strings.TrimSpace(b); b != "" {
			declared = append(declared, b)
		}
	}
	if len(declared) > 0 && board != "" {
		// The boards the image declares decide alone, as sysupgrade holds
		// them (even with -F): a file named for one board that carries
		// another's metadata fits only the other.
		return slices.ContainsFunc(declared, func(b string) bool { return strings.EqualFold(b, board) })
	}
	if e.cfg.ImageMap.Fits(im.Type, d.Model, d.BoardName) {
		return true
	}
	return slices.ContainsFunc(declared, func(b string) bool { return strings.EqualFold(b, strings.TrimSpace(d.Model)) })
}

// fitDeciders says who decides which images fit device d, for messages
// that are not about one image (a batch's skipped device).
func (e *Engine) fitDeciders(d store.Device) string {
	rule := fitRule{}
	if u, ok := e.reg.Lookup(d.Connection); ok {
		if _, ok := u.(ImageMatcher); ok {
			rule = fitRule{kind: d.Connection}
		}
	}
	if e.cfg.Compatibility.FitsFunc != nil {
		return "Config.Compatibility.FitsFunc, then " + rule.String()
	}
	return rule.String()
}

func (e *Engine) hostFits(f func(store.Image, store.Device) Decision, im store.Image, d store.Device) (dec Decision) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("Config.Compatibility.FitsFunc panicked: the image does not fit",
				slog.String("image", im.ID), slog.String("device", d.ID), slog.Any("panic", r))
			dec = Deny
		}
	}()
	return f(im, d)
}

func (e *Engine) matcherFits(m ImageMatcher, im store.Image, d store.Device) (fits bool) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("an ImageMatcher's FitsImage panicked: the image does not fit",
				slog.String("connection", d.Connection), slog.String("image", im.ID), slog.String("device", d.ID), slog.Any("panic", r))
			fits = false
		}
	}()
	return m.FitsImage(im, d)
}

// checkImageKnown is UploadImage's last check of an image before it is
// stored (see Compatibility for the rules): nil when the image is accepted,
// an error matching ErrUnknownImageType when nobody knows its type.
func (e *Engine) checkImageKnown(ctx context.Context, im store.Image, b store.Build) error {
	var up *ImageUpload
	upload := func() (ImageUpload, error) {
		if up == nil {
			c, err := e.store.Category(ctx, b.CategoryID)
			if err != nil {
				return ImageUpload{}, fmt.Errorf("upgrader: category %q of build %s: %w", b.CategoryID, b.ID, err)
			}
			up = &ImageUpload{Image: im, Build: b, Category: c}
			up.Image.ID, up.Image.Organization = "", b.Organization
		}
		return *up, nil
	}
	if f := e.cfg.Compatibility.KnowsFunc; f != nil {
		u, err := upload()
		if err != nil {
			return err
		}
		switch e.hostKnows(f, u) {
		case Allow:
			return nil
		case Deny:
			return fmt.Errorf("%w: Config.Compatibility.KnowsFunc refused image type %q (build %s, category %q)",
				ErrUnknownImageType, im.Type, b.Version, u.Category.Name)
		}
	}
	if _, ok := e.cfg.ImageMap.Entry(im.Type); ok || len(im.Boards) > 0 {
		return nil
	}
	matchers := e.reg.matchers()
	if len(matchers) == 0 {
		return fmt.Errorf("%w: %q is not in the image map, the image's metadata names no boards, and no registered upgrader decides image compatibility itself (upgrader.ImageMatcher)",
			ErrUnknownImageType, im.Type)
	}
	u, err := upload()
	if err != nil {
		return err
	}
	kinds := make([]string, len(matchers))
	for i, m := range matchers {
		if e.matcherKnows(m, u) {
			return nil
		}
		kinds[i] = fmt.Sprintf("%q", m.kind)
	}
	return fmt.Errorf("%w: %q is not in the image map, the image's metadata names no boards, and no registered upgrader knows it (asked the upgraders of %s)",
		ErrUnknownImageType, im.Type, strings.Join(kinds, ", "))
}

func (e *Engine) hostKnows(f func(ImageUpload) Decision, up ImageUpload) (dec Decision) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("Config.Compatibility.KnowsFunc panicked: the image is refused",
				slog.String("type", up.Image.Type), slog.Any("panic", r))
			dec = Deny
		}
	}()
	return f(up)
}

func (e *Engine) matcherKnows(m kindMatcher, up ImageUpload) (known bool) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("an ImageMatcher's KnowsImage panicked: it does not know the image",
				slog.String("connection", m.kind), slog.String("type", up.Image.Type), slog.Any("panic", r))
			known = false
		}
	}()
	return m.KnowsImage(up)
}
