package upgradertest_test

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

var seq atomic.Int64

func fakeHarness(t *testing.T) upgradertest.Harness {
	fake := &upgradertest.Fake{ReadImage: true}
	return upgradertest.Harness{
		Upgrader: fake,
		NewJob: func(t *testing.T) *upgrader.Job {
			id := store.NewID()
			seq.Add(1)
			return &upgrader.Job{
				Operation: store.Operation{ID: id, DeviceID: "d", Attempt: 1},
				Image: upgrader.Image{Image: store.Image{ID: "img", Size: 5}, OpenFunc: func(context.Context) (io.ReadCloser, error) {
					return io.NopCloser(strings.NewReader("hello")), nil
				}},
			}
		},
		Flashed: func(t *testing.T, job *upgrader.Job) bool { return fake.Flashed(job.Operation.ID) > 0 },
	}
}

// TestFakePassesSuite runs the conformance suite on the Fake, so the suite
// itself is exercised.
func TestFakePassesSuite(t *testing.T) {
	upgradertest.Run(t, fakeHarness)
}
