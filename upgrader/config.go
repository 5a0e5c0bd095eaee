package upgrader

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/fwupgrader/fwupgrader/imagemap"
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
	// (0.5 = 50%). Defaults to DefaultRetryRandomization; a negative value
	// means no randomisation.
	RandomizationFactor float64
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
// drawn from a cenkalti/backoff ExponentialBackOff configured by p.
func (p RetryPolicy) Delay(n int) time.Duration {
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
	if out.Retry.Multiplier < 0 || (out.Retry.Multiplier > 0 && out.Retry.Multiplier < 1) {
		return out, fmt.Errorf("upgrader: config: Retry.Multiplier %v must be >= 1", out.Retry.Multiplier)
	}
	if out.Retry.RandomizationFactor > 1 {
		return out, fmt.Errorf("upgrader: config: Retry.RandomizationFactor %v must be <= 1", out.Retry.RandomizationFactor)
	}
	out.Retry = out.Retry.withDefaults()
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
	if out.Now == nil {
		out.Now = time.Now
	}
	return out, nil
}
