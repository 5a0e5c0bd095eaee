package memory_test

import (
	"testing"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/store/storetest"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"go.uber.org/goleak"
)

// TestMain fails the run when a test leaves a goroutine running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return memory.New() }, nil)
}
