package upgradertest_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
	"go.uber.org/goleak"
)

// TestMain fails the run when a test leaves a goroutine running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// verifiedFake is a Fake whose Verify tells the truth: a device whose
// operation never got past PhaseFlashing does not run the image. (The
// Fake's own Verify returns what it is scripted to return, VerifyResult.)
type verifiedFake struct {
	*upgradertest.Fake
}

func (f verifiedFake) Verify(ctx context.Context, job *upgrader.Job) error {
	if err := f.Fake.Verify(ctx, job); err != nil {
		return err
	}
	if f.Flashed(job.Operation.ID) == 0 {
		return upgrader.Failed(status.ReasonOldFirmwareAfterReboot, errors.New("fake: the device was never flashed"))
	}
	return nil
}

func fakeHarness(t *testing.T) upgradertest.Harness {
	fake := &upgradertest.Fake{ReadImage: true}
	return upgradertest.Harness{
		Upgrader: verifiedFake{fake},
		NewJob: func(t *testing.T) *upgrader.Job {
			return &upgrader.Job{
				Operation: store.Operation{ID: store.NewID(), DeviceID: "d", Attempt: 1},
				Image: upgrader.Image{Image: store.Image{ID: "img", Size: 5}, OpenFunc: func(context.Context) (io.ReadCloser, error) {
					return io.NopCloser(strings.NewReader("hello")), nil
				}},
			}
		},
		Flashed:        func(t *testing.T, job *upgrader.Job) bool { return fake.Flashed(job.Operation.ID) > 0 },
		FlashCountFunc: func(t *testing.T, job *upgrader.Job) int { return fake.Flashed(job.Operation.ID) },
		// The Fake has no device to unplug: script its attempt to fail to
		// connect, as an upgrader that classifies its errors does.
		UnreachableFunc: func(t *testing.T, job *upgrader.Job) {
			fake.Results = []error{upgrader.Recoverable(status.ReasonConnectionFailed, errors.New("fake: device unreachable"))}
		},
	}
}

// TestFakePassesSuite runs the conformance suite on the Fake, so the suite
// itself is exercised.
func TestFakePassesSuite(t *testing.T) {
	upgradertest.Run(t, fakeHarness)
}
