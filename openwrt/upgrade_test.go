package openwrt

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
)

func TestUpgradeSuccess(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	oldBoot := b.dev.BootID()
	start := time.Now()
	require.NoError(t, b.upgrade(t))
	require.Less(t, time.Since(start), 10*time.Second)

	require.Equal(t, []status.Phase{
		status.PhaseConnecting, status.PhaseIdentity, status.PhaseChecksum, status.PhaseMemory,
		status.PhaseUpload, status.PhaseImageTest, status.PhaseFlashing, status.PhaseRebooting, status.PhaseVerifying,
	}, b.rep.Phases())
	p := b.rep.Progresses()
	require.Equal(t, status.ProgressDone, p[len(p)-1])
	for _, m := range []int{status.ProgressConnected, status.ProgressIdentity, status.ProgressChecksum,
		status.ProgressUploaded, status.ProgressFlashing, status.ProgressReconnected} {
		require.Contains(t, p, m)
	}
	require.NotEqual(t, oldBoot, b.dev.BootID())
	require.Equal(t, newRelease, b.dev.Release())
	require.Equal(t, 1, b.dev.Flashed())
	sum, ok := b.dev.File(ChecksumFile)
	require.True(t, ok)
	require.Equal(t, b.img.SHA256()+"\n", string(sum.Content))
	f := b.dev.Flashes()[0]
	require.Equal(t, []string{"-v", "-c", "/tmp/" + b.job.Image.Name}, f.Args)
	require.True(t, ran(b.dev, "rm", "-f", ConfigChecksumFile))
	require.True(t, ran(b.dev, "sysupgrade", "--test", "-c", "/tmp/"+b.job.Image.Name))
	t.Log(b.rep.Logs())
	_ = openwrttest.DefaultUser
}
