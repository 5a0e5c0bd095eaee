package memory_test

import (
	"testing"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/store/storetest"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return memory.New() }, nil)
}
