package openwrt

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
)

// Once the move into flashing is recorded the flash command is sent, even
// if the attempt's context ends in between: the decision was made, and a
// device left with stopped services and no flash is the worst outcome.
func TestFlashSentAfterDecisionEvenIfContextEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b.rep.onProgress = func(pct int) {
		if pct == status.ProgressFlashing {
			cancel() // right after the decision, before the command is sent
		}
	}
	err := b.u.Upgrade(ctx, b.job)
	require.ErrorIs(t, err, context.Canceled, "the wait for the reboot ends with ctx; the engine verifies")
	require.Len(t, flashCommands(b.dev), 1, "the flash command was sent")
	require.NoError(t, b.dev.WaitReboots(context.Background(), 1))
	require.Equal(t, 1, b.dev.Flashed())
}
