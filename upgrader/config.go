package upgrader

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/store"
)

// Defaults of Config and RetryPolicy.
const (
	DefaultWorkers          = 8
	DefaultOperationTimeout = 25 * time.Minute
	DefaultVerifyTimeout    = 10 * time.Minute
	DefaultMaxImageSize     = 30 << 20 // 30 MiB
	DefaultEventBuffer      = 256

	DefaultMaxRetries               = 4
	DefaultRetryInitial             = 60 * time.Second
	DefaultRetryMax                 = 600 * time.Second
	DefaultRetryMultiplier          = 2.0
	DefaultRetryRandomization       = 0.5
	NoImageSizeLimit          int64 = -1
	// NoRetryRandomization as RetryPolicy.RandomizationFactor makes the
	// retry waits exact.
	NoRetryRandomization = -1.0

	DefaultLeaseDuration       = 30 * time.Second
	DefaultPollInterval        = time.Second
	DefaultMaintenanceInterval = time.Second
	// MinLeaseDuration is the shortest Config.LeaseDuration accepted.
	MinLeaseDuration = 30 * time.Millisecond
	// MaxEventBuffer is the largest event channel buffer accepted, in
	// Config.EventBuffer and Subscribe.
	MaxEventBuffer = 1 << 20
)

// RetryPolicy says how recoverable failures before flashing are retried.
// Nothing is retried once an operation reached status.PhaseFlashing.
type RetryPolicy struct {
	// MaxRetries is the number of retries after the first attempt.
	// Defaults to DefaultMaxRetries (4); a negative value means no retries.
	MaxRetries int
	// InitialInterval is the wait before the first retry. Defaults to
	// DefaultRetryInitial (60 s).
	InitialInterval time.Duration
	// MaxInterval caps the wait between retries. Defaults to
	// DefaultRetryMax (600 s).
	MaxInterval time.Duration
	// Multiplier grows the wait after each retry. Defaults to
	// DefaultRetryMultiplier (2).
	Multiplier float64
	// RandomizationFactor spreads the waits randomly by ± this fraction
	// (0.5 = 50%), at most 1. Defaults to DefaultRetryRandomization;
	// NoRetryRandomization means exact waits.
	RandomizationFactor float64
}

// Validate refuses values that make no sense: a NaN, infinite, negative or
// below-1 Multiplier, a NaN or infinite RandomizationFactor, one over 1 or
// negative (other than NoRetryRandomization), negative intervals.
func (p RetryPolicy) Validate() error {
	m, r := p.Multiplier, p.RandomizationFactor
	switch {
	case math.IsNaN(m) || math.IsInf(m, 0) || m < 0 || (m > 0 && m < 1):
		return fmt.Errorf("upgrader: retry policy: Multiplier %v must be a number >= 1 (0 = default)", m)
	case math.IsNaN(r) || math.IsInf(r, 0) || r > 1 || (r < 0 && r != NoRetryRandomization):
		return fmt.Errorf("upgrader: retry policy: RandomizationFactor %v must be within 0-1 (0 = default, NoRetryRandomization = none)", r)
	case p.InitialInterval < 0 || p.MaxInterval < 0:
		return errors.New("upgrader: retry policy: intervals must not be negative")
	}
	return nil
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxRetries == 0 {
		p.MaxRetries = DefaultMaxRetries
	} else if p.MaxRetries < 0 {
		p.MaxRetries = 0
	}
	if p.InitialInterval <= 0 {
		p.InitialInterval = DefaultRetryInitial
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = DefaultRetryMax
	}
	if p.MaxInterval < p.InitialInterval {
		p.MaxInterval = p.InitialInterval
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultRetryMultiplier
	}
	if p.RandomizationFactor == 0 {
		p.RandomizationFactor = DefaultRetryRandomization
	} else if p.RandomizationFactor < 0 {
		p.RandomizationFactor = 0
	}
	return p
}

// Delay returns the wait before retry number n (1 for the first retry),
// drawn from a cenkalti/backoff ExponentialBackOff configured by p. A
// policy that does not pass Validate gets the default policy's delays:
// never a negative or NaN wait.
func (p RetryPolicy) Delay(n int) time.Duration {
	if p.Validate() != nil {
		p = RetryPolicy{}
	}
	p = p.withDefaults()
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.InitialInterval),
		backoff.WithMaxInterval(p.MaxInterval),
		backoff.WithMultiplier(p.Multiplier),
		backoff.WithRandomizationFactor(p.RandomizationFactor),
		backoff.WithMaxElapsedTime(0),
	)
	d := p.InitialInterval
	for i := 0; i < n; i++ {
		d = b.NextBackOff()
	}
	if d < 0 { // an interval of centuries overflowed in the randomization
		d = math.MaxInt64
	}
	return d
}

// Defaults of OfflinePolicy.
const (
	DefaultOfflineInitial       = 10 * time.Minute
	DefaultOfflineMax           = 12 * time.Hour
	DefaultOfflineRandomization = 0.25
)

// OfflinePolicy says how an operation of a batch waits for a device that
// could not be reached before flashing (openwisp's persistent upgrades):
// it goes back to pending, without counting as a retry, and is tried again
// later, until the device answers, the batch is cancelled, or MaxWait
// passes. Its deadline (Config.OperationTimeout) bounds each attempt, not
// the wait. Operations outside a batch retry with Config.Retry.
type OfflinePolicy struct {
	// InitialInterval is the shortest wait. Defaults to
	// DefaultOfflineInitial (10 min).
	InitialInterval time.Duration
	// MaxInterval is the longest wait. Defaults to DefaultOfflineMax (12 h).
	MaxInterval time.Duration
	// RandomizationFactor spreads each wait by ± this fraction. Defaults
	// to DefaultOfflineRandomization (25 %); NoRetryRandomization means
	// exact waits.
	RandomizationFactor float64
	// MaxWait, when positive, ends the operation failed
	// (status.ReasonConnectionFailed) once its device has been unreachable
	// this long since the operation first started. 0: wait as long as the
	// batch lasts.
	MaxWait time.Duration
	// Disabled makes a batch's unreachable devices retry with Config.Retry
	// like any recoverable failure (and fail when the retries run out).
	Disabled bool
}

// Validate refuses negative durations and a randomization factor outside
// 0-1 (other than NoRetryRandomization).
func (p OfflinePolicy) Validate() error {
	r := p.RandomizationFactor
	switch {
	case p.InitialInterval < 0 || p.MaxInterval < 0 || p.MaxWait < 0:
		return errors.New("upgrader: offline policy: durations must not be negative")
	case math.IsNaN(r) || math.IsInf(r, 0) || r > 1 || (r < 0 && r != NoRetryRandomization):
		return fmt.Errorf("upgrader: offline policy: RandomizationFactor %v must be within 0-1 (0 = default, NoRetryRandomization = none)", r)
	}
	return nil
}

func (p OfflinePolicy) withDefaults() OfflinePolicy {
	if p.InitialInterval == 0 {
		p.InitialInterval = DefaultOfflineInitial
	}
	if p.MaxInterval == 0 {
		p.MaxInterval = DefaultOfflineMax
	}
	p.MaxInterval = max(p.MaxInterval, p.InitialInterval)
	if p.RandomizationFactor == 0 {
		p.RandomizationFactor = DefaultOfflineRandomization
	} else if p.RandomizationFactor < 0 {
		p.RandomizationFactor = 0
	}
	return p
}

// Delay returns the wait before the next try of a device that has been
// unreachable for offline so far: as long again (so the waits double), at
// least InitialInterval and at most MaxInterval, spread by the
// randomization factor.
func (p OfflinePolicy) Delay(offline time.Duration) time.Duration {
	if p.Validate() != nil {
		p = OfflinePolicy{}
	}
	p = p.withDefaults()
	d := min(max(offline, p.InitialInterval), p.MaxInterval)
	if f := p.RandomizationFactor; f > 0 {
		x := float64(d) * (1 - f + 2*f*rand.Float64())
		if x >= math.MaxInt64 { // an interval of centuries: no overflow into a negative wait
			return math.MaxInt64
		}
		d = time.Duration(x)
	}
	return d
}

// Config configures an Engine. The zero value (or nil) uses the defaults.
type Config struct {
	// Logger receives the engine's own log records. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// Workers is how many queued operations run at once. Defaults to
	// DefaultWorkers.
	Workers int
	// Retry is the retry policy for recoverable failures before flashing.
	Retry RetryPolicy
	// OperationTimeout bounds a whole operation, counted from its first
	// attempt, retries and their waits included (openwisp's task timeout).
	// Defaults to DefaultOperationTimeout (25 min).
	OperationTimeout time.Duration
	// VerifyTimeout bounds the verification of an operation that timed out
	// or was interrupted after it started flashing. Defaults to
	// DefaultVerifyTimeout (10 min).
	VerifyTimeout time.Duration
	// ImageMap decides which image types fit which boards. Defaults to
	// imagemap.OpenWrt().
	ImageMap *imagemap.Map
	// Compatibility lets the host decide which images fit which devices,
	// and which image types UploadImage accepts, before the devices'
	// upgraders (ImageMatcher) and ImageMap do. Defaults to deciding
	// nothing: the upgraders and ImageMap decide. See Compatibility for the
	// precedence.
	Compatibility Compatibility
	// Files holds the images' bytes. Defaults to a new MemFiles.
	Files Files
	// MaxImageSize refuses larger images in CreateImage. Defaults to
	// DefaultMaxImageSize (30 MiB); NoImageSizeLimit means unlimited.
	MaxImageSize int64
	// EventBuffer is the default channel buffer of Subscribe. Defaults to
	// DefaultEventBuffer.
	EventBuffer int
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
	// Owner names this engine in the leases it takes
	// (store.Operation.LeaseOwner); every engine sharing a store needs its
	// own. Defaults to host name, process ID and a random suffix.
	Owner string
	// LeaseDuration is how long a claim on an operation lasts without being
	// renewed; the engine renews its leases every third of it. An engine
	// that stops renewing (a crash, a partition) loses its operations to
	// other engines after at most this long, and a cancel reaches an attempt
	// running in another engine within a third of it. Defaults to
	// DefaultLeaseDuration (30 s); at least MinLeaseDuration.
	LeaseDuration time.Duration
	// PollInterval is how often an idle engine asks the store for work that
	// other engines enqueued or released (±20 % jitter). Work enqueued
	// through this engine starts at once, and so does work announced by a
	// store that implements store.Notifier (then a cancel made elsewhere
	// also reaches this engine's attempt at once). Defaults to
	// DefaultPollInterval.
	PollInterval time.Duration
	// MaintenanceInterval is how often the engine ends operations whose
	// deadline passed while nobody held them and moves batches to their
	// next wave (±20 % jitter). Defaults to DefaultMaintenanceInterval.
	MaintenanceInterval time.Duration
	// Offline says how a batch's operation waits for a device that could
	// not be reached before flashing.
	Offline OfflinePolicy
}

func (c *Config) withDefaults() (Config, error) {
	var out Config
	if c != nil {
		out = *c
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.Workers < 0 {
		return out, fmt.Errorf("upgrader: config: Workers is negative (%d)", out.Workers)
	}
	if out.Workers == 0 {
		out.Workers = DefaultWorkers
	}
	if out.OperationTimeout < 0 || out.VerifyTimeout < 0 {
		return out, errors.New("upgrader: config: timeouts must not be negative")
	}
	if out.OperationTimeout == 0 {
		out.OperationTimeout = DefaultOperationTimeout
	}
	if out.VerifyTimeout == 0 {
		out.VerifyTimeout = DefaultVerifyTimeout
	}
	if err := out.Retry.Validate(); err != nil {
		return out, fmt.Errorf("upgrader: config: %w", err)
	}
	out.Retry = out.Retry.withDefaults()
	if err := out.Offline.Validate(); err != nil {
		return out, fmt.Errorf("upgrader: config: %w", err)
	}
	out.Offline = out.Offline.withDefaults()
	if out.ImageMap == nil {
		out.ImageMap = imagemap.OpenWrt()
	}
	if out.Files == nil {
		out.Files = NewMemFiles()
	}
	switch {
	case out.MaxImageSize == 0:
		out.MaxImageSize = DefaultMaxImageSize
	case out.MaxImageSize < 0 && out.MaxImageSize != NoImageSizeLimit:
		return out, fmt.Errorf("upgrader: config: MaxImageSize %d is negative (use NoImageSizeLimit)", out.MaxImageSize)
	}
	if out.EventBuffer < 0 {
		return out, fmt.Errorf("upgrader: config: EventBuffer is negative (%d)", out.EventBuffer)
	}
	if out.EventBuffer == 0 {
		out.EventBuffer = DefaultEventBuffer
	}
	if out.EventBuffer > MaxEventBuffer {
		return out, fmt.Errorf("upgrader: config: EventBuffer %d is over MaxEventBuffer (%d)", out.EventBuffer, MaxEventBuffer)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"LeaseDuration", &out.LeaseDuration, DefaultLeaseDuration},
		{"PollInterval", &out.PollInterval, DefaultPollInterval},
		{"MaintenanceInterval", &out.MaintenanceInterval, DefaultMaintenanceInterval},
	} {
		if *d.v < 0 {
			return out, fmt.Errorf("upgrader: config: %s is negative (%s)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if out.LeaseDuration < MinLeaseDuration {
		return out, fmt.Errorf("upgrader: config: LeaseDuration %s is under MinLeaseDuration (%s)", out.LeaseDuration, MinLeaseDuration)
	}
	if out.Owner == "" {
		host, _ := os.Hostname()
		if len(host) > 32 {
			host = host[:32]
		}
		out.Owner = fmt.Sprintf("%s-%d-%08x", host, os.Getpid(), rand.Uint32())
	}
	if err := store.ValidateClaim(out.Owner, 1, out.LeaseDuration); err != nil {
		return out, fmt.Errorf("upgrader: config: Owner: %w", err)
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	return out, nil
}
