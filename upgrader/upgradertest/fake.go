package upgradertest

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Fake is a scriptable Upgrader and Verifier. The zero value succeeds at
// once after going through every phase. It is safe for concurrent use.
type Fake struct {
	// Results holds what attempt n (1-based, per operation) returns:
	// Results[n-1]; attempts beyond its length return nil (success). An
	// error is returned after the phases up to FailAt were reported.
	Results []error
	// FailAt is the phase at which an error of Results is returned (the
	// phase is entered first). Defaults to status.PhaseConnecting.
	FailAt status.Phase
	// StepDelay is slept (honouring ctx) in every phase.
	StepDelay time.Duration
	// Hold, when set, blocks every attempt in phase HoldAt until the
	// channel is closed or ctx ends.
	Hold   chan struct{}
	HoldAt status.Phase
	// ReadImage makes Upgrade read the whole image in the upload phase and
	// report progress by bytes.
	ReadImage bool
	// VerifyResult is what Verify returns.
	VerifyResult error
	// SkipFlashCheck makes Upgrade go on after a refused PhaseFlashing
	// (a broken upgrader, for tests of the engine's safety nets).
	SkipFlashCheck bool

	mu       sync.Mutex
	attempts map[string]int
	flashed  map[string]int
	verified map[string]int
}

var (
	_ upgrader.Upgrader = (*Fake)(nil)
	_ upgrader.Verifier = (*Fake)(nil)
)

// Attempts returns how many attempts Upgrade ran for an operation.
func (f *Fake) Attempts(opID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[opID]
}

// Flashed returns how many times an operation got past PhaseFlashing.
func (f *Fake) Flashed(opID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flashed[opID]
}

// Verified returns how many times Verify ran for an operation.
func (f *Fake) Verified(opID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.verified[opID]
}

// Upgrade implements upgrader.Upgrader.
func (f *Fake) Upgrade(ctx context.Context, job *upgrader.Job) error {
	f.mu.Lock()
	if f.attempts == nil {
		f.attempts, f.flashed, f.verified = map[string]int{}, map[string]int{}, map[string]int{}
	}
	f.attempts[job.Operation.ID]++
	n := f.attempts[job.Operation.ID]
	var result error
	if n <= len(f.Results) {
		result = f.Results[n-1]
	}
	f.mu.Unlock()
	failAt := f.FailAt
	if failAt == status.PhaseNone {
		failAt = status.PhaseConnecting
	}
	for _, p := range status.Phases() {
		if err := job.Report.Phase(ctx, p); err != nil && !(f.SkipFlashCheck && p == status.PhaseFlashing) {
			return err
		}
		if p == status.PhaseFlashing {
			f.mu.Lock()
			f.flashed[job.Operation.ID]++
			f.mu.Unlock()
		}
		if err := sleep(ctx, f.StepDelay); err != nil {
			return err
		}
		if f.Hold != nil && p == f.HoldAt {
			select {
			case <-f.Hold:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if p == status.PhaseUpload && f.ReadImage {
			if err := readImage(ctx, job); err != nil {
				return upgrader.Recoverable(status.ReasonUploadFailed, err)
			}
		}
		if result != nil && p == failAt {
			return result
		}
		if err := job.Report.Cancelled(ctx); err != nil && !p.AfterPointOfNoReturn() {
			return err
		}
	}
	return job.Report.Progress(ctx, status.ProgressDone)
}

// Verify implements upgrader.Verifier.
func (f *Fake) Verify(ctx context.Context, job *upgrader.Job) error {
	f.mu.Lock()
	if f.verified == nil {
		f.attempts, f.flashed, f.verified = map[string]int{}, map[string]int{}, map[string]int{}
	}
	f.verified[job.Operation.ID]++
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.VerifyResult
}

func readImage(ctx context.Context, job *upgrader.Job) error {
	rc, err := job.Image.Open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, err := rc.Read(buf)
		sent += int64(n)
		if err == io.EOF {
			return job.Report.Progress(ctx, status.UploadProgress(sent, job.Image.Size))
		}
		if err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
