package status_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
)

func TestCanTransition(t *testing.T) {
	t.Parallel()
	const (
		P = status.Pending
		I = status.InProgress
		S = status.Success
		F = status.Failed
		A = status.Aborted
		C = status.Cancelled
	)
	allowed := map[[2]status.State]bool{
		{P, I}: true, {P, C}: true, {P, A}: true, {P, F}: true,
		{I, S}: true, {I, F}: true, {I, A}: true, {I, C}: true, {I, P}: true,
	}
	all := append(status.States(), "", "bogus")
	for _, from := range all {
		for _, to := range all {
			t.Run(fmt.Sprintf("%s_to_%s", from, to), func(t *testing.T) {
				t.Parallel()
				assert.Equal(t, allowed[[2]status.State{from, to}], status.CanTransition(from, to))
			})
		}
	}
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	for s, want := range map[status.State]bool{
		status.Pending: false, status.InProgress: false,
		status.Success: true, status.Failed: true, status.Aborted: true, status.Cancelled: true,
		"": false, "bogus": false,
	} {
		assert.Equal(t, want, s.Terminal(), "%q", s)
		assert.Equal(t, want, status.Terminal(s), "%q", s)
	}
	for b, want := range map[status.BatchState]bool{
		status.BatchIdle: false, status.BatchInProgress: false, status.BatchPaused: false,
		status.BatchSuccess: true, status.BatchFailed: true, status.BatchCancelled: true,
	} {
		assert.Equal(t, want, b.Terminal(), "%q", b)
	}
}

func TestStatesAreCopies(t *testing.T) {
	t.Parallel()
	s := status.States()
	s[0] = "bogus"
	assert.Equal(t, status.Pending, status.States()[0])
	p := status.Phases()
	p[0] = "bogus"
	assert.Equal(t, status.PhaseConnecting, status.Phases()[0])
	b := status.BatchStates()
	b[0] = "bogus"
	assert.Equal(t, status.BatchIdle, status.BatchStates()[0])
	r := status.Reasons()
	r[0] = "bogus"
	assert.NotEqual(t, status.Reason("bogus"), status.Reasons()[0])
}

func TestPhaseOrder(t *testing.T) {
	t.Parallel()
	want := []status.Phase{
		status.PhaseConnecting, status.PhaseIdentity, status.PhaseChecksum, status.PhaseMemory, status.PhaseUpload,
		status.PhaseImageTest, status.PhaseFlashing, status.PhaseRebooting, status.PhaseVerifying,
	}
	require.Equal(t, want, status.Phases())
	assert.Equal(t, 0, status.PhaseNone.Order())
	assert.Equal(t, -1, status.Phase("bogus").Order())
	for i, p := range want {
		assert.Equal(t, i+1, p.Order(), "%s", p)
		assert.True(t, p.Valid())
		assert.Equal(t, i >= 6, p.AfterPointOfNoReturn(), "%s", p)
	}
	assert.False(t, status.PhaseNone.AfterPointOfNoReturn())
	assert.False(t, status.Phase("bogus").AfterPointOfNoReturn())
	assert.True(t, status.PhaseNone.Valid())
}

func TestCancellable(t *testing.T) {
	t.Parallel()
	phases := append(status.Phases(), status.PhaseNone, "bogus")
	for _, s := range append(status.States(), "bogus") {
		for _, p := range phases {
			var want bool
			switch s {
			case status.Pending:
				want = true
			case status.InProgress:
				// before flashing only; an unknown phase is not cancellable
				want = p != "bogus" && p.Order() < status.PhaseFlashing.Order()
			}
			assert.Equal(t, want, status.Cancellable(s, p), "%s in %q", s, p)
		}
	}
	assert.True(t, status.Cancellable(status.InProgress, status.PhaseImageTest))
	assert.False(t, status.Cancellable(status.InProgress, status.PhaseFlashing))
	assert.True(t, status.Cancellable(status.InProgress, status.PhaseNone), "waiting for a retry")
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, s := range status.States() {
		got, err := status.ParseState(string(s))
		require.NoError(t, err)
		assert.Equal(t, s, got)
	}
	for _, p := range append(status.Phases(), status.PhaseNone) {
		got, err := status.ParsePhase(string(p))
		require.NoError(t, err)
		assert.Equal(t, p, got)
	}
	for _, r := range append(status.Reasons(), status.ReasonNone) {
		got, err := status.ParseReason(string(r))
		require.NoError(t, err)
		assert.Equal(t, r, got)
	}
	for _, b := range status.BatchStates() {
		got, err := status.ParseBatchState(string(b))
		require.NoError(t, err)
		assert.Equal(t, b, got)
	}
	for _, bad := range []string{"bogus", "Pending", "in_progress", " pending", "paused"} {
		_, err := status.ParseState(bad)
		assert.ErrorContains(t, err, fmt.Sprintf("%q", bad), "ParseState")
	}
	_, err := status.ParseState("")
	assert.Error(t, err, "the empty string is no state")
	for _, bad := range []string{"bogus", "Flashing", "flash"} {
		_, err := status.ParsePhase(bad)
		assert.ErrorContains(t, err, fmt.Sprintf("%q", bad), "ParsePhase")
	}
	for _, bad := range []string{"bogus", "timeout "} {
		_, err := status.ParseReason(bad)
		assert.ErrorContains(t, err, fmt.Sprintf("%q", bad), "ParseReason")
	}
	for _, bad := range []string{"", "bogus", "pending", "aborted"} {
		_, err := status.ParseBatchState(bad)
		assert.ErrorContains(t, err, fmt.Sprintf("%q", bad), "ParseBatchState")
	}
}

func TestValidateProgress(t *testing.T) {
	t.Parallel()
	for _, p := range []int{0, 1, 50, 99, 100} {
		assert.NoError(t, status.ValidateProgress(p), "%d", p)
	}
	for _, p := range []int{-1, 101, -100, 1000} {
		assert.ErrorContains(t, status.ValidateProgress(p), fmt.Sprint(p), "%d", p)
	}
}

func TestMilestonesAscend(t *testing.T) {
	t.Parallel()
	m := []int{status.ProgressStart, status.ProgressConnected, status.ProgressIdentity, status.ProgressChecksum,
		status.ProgressUploaded, status.ProgressFlashing, status.ProgressReconnected, status.ProgressDone}
	for i := 1; i < len(m); i++ {
		assert.Less(t, m[i-1], m[i])
	}
	assert.Equal(t, 100, status.ProgressDone)
}

func TestUploadProgress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sent, total int64
		want        int
	}{
		{0, 1000, status.ProgressChecksum},
		{-5, 1000, status.ProgressChecksum},
		{500, 1000, 40},
		{250, 1000, 30},
		{999, 1000, 59},
		{1000, 1000, status.ProgressUploaded},
		{2000, 1000, status.ProgressUploaded},
		{0, 0, status.ProgressUploaded},
		{10, -1, status.ProgressUploaded},
		{1 << 40, 1 << 41, 40}, // no overflow on large images
	} {
		assert.Equal(t, tc.want, status.UploadProgress(tc.sent, tc.total), "%d/%d", tc.sent, tc.total)
	}
	prev := 0
	for sent := int64(0); sent <= 1000; sent += 7 {
		p := status.UploadProgress(sent, 1000)
		assert.GreaterOrEqual(t, p, prev, "monotonic")
		assert.GreaterOrEqual(t, p, status.ProgressChecksum)
		assert.LessOrEqual(t, p, status.ProgressUploaded)
		prev = p
	}
}

func TestDeriveBatchState(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		c    status.Counts
		want status.BatchState
	}{
		{"empty", status.Counts{}, status.BatchIdle},
		{"nil", nil, status.BatchIdle},
		{"zero counts", status.Counts{status.Pending: 0}, status.BatchIdle},
		{"all pending", status.Counts{status.Pending: 3}, status.BatchInProgress},
		{"one running", status.Counts{status.InProgress: 1, status.Success: 5}, status.BatchInProgress},
		{"pending beats failed", status.Counts{status.Pending: 1, status.Failed: 5}, status.BatchInProgress},
		{"failed + success", status.Counts{status.Failed: 1, status.Success: 9}, status.BatchFailed},
		{"aborted + success", status.Counts{status.Aborted: 1, status.Success: 9}, status.BatchFailed},
		{"failed beats cancelled", status.Counts{status.Failed: 1, status.Cancelled: 9}, status.BatchFailed},
		{"cancelled + success", status.Counts{status.Cancelled: 1, status.Success: 9}, status.BatchCancelled},
		{"all cancelled", status.Counts{status.Cancelled: 2}, status.BatchCancelled},
		{"all success", status.Counts{status.Success: 4}, status.BatchSuccess},
		{"success with zero others", status.Counts{status.Success: 4, status.Failed: 0, status.Pending: 0}, status.BatchSuccess},
	} {
		assert.Equal(t, tc.want, status.DeriveBatchState(tc.c), tc.name)
	}
	assert.Equal(t, 7, status.Counts{status.Pending: 3, status.Success: 4}.Total())
	assert.False(t, status.DeriveBatchState(status.Counts{status.Success: 1}) == status.BatchPaused, "paused is never derived")
}

func TestReasons(t *testing.T) {
	t.Parallel()
	rs := status.Reasons()
	require.NotEmpty(t, rs)
	assert.IsIncreasing(t, rs)
	assert.NotContains(t, rs, status.ReasonNone)
	for _, r := range rs {
		assert.True(t, r.Valid(), "%s", r)
		out := r.Outcome()
		assert.True(t, out.Terminal(), "%s: Outcome %q is terminal", r, out)
	}
	assert.Equal(t, status.Success, status.ReasonNone.Outcome())
	assert.False(t, status.ReasonNone.Retryable())
	assert.Equal(t, status.Failed, status.Reason("bogus").Outcome())
	assert.False(t, status.Reason("bogus").Retryable())
	assert.False(t, status.Reason("bogus").Valid())

	table := []struct {
		r         status.Reason
		retryable bool
		outcome   status.State
	}{
		{status.ReasonConnectionFailed, true, status.Failed},
		{status.ReasonUploadFailed, true, status.Failed},
		{status.ReasonUploadCorrupt, true, status.Aborted},
		{status.ReasonIdentityMismatch, false, status.Aborted},
		{status.ReasonHostKeyMismatch, false, status.Aborted},
		{status.ReasonAuthFailed, false, status.Aborted},
		{status.ReasonInsufficientMemory, false, status.Aborted},
		{status.ReasonImageInvalid, false, status.Aborted},
		{status.ReasonAlreadyInstalled, false, status.Success},
		{status.ReasonFlashFailed, false, status.Failed},
		{status.ReasonUnreachableAfterFlash, false, status.Failed},
		{status.ReasonOldFirmwareAfterReboot, false, status.Failed},
		{status.ReasonTimeout, false, status.Failed},
		{status.ReasonCancelledByUser, false, status.Cancelled},
		{status.ReasonNoImageForBoard, false, status.Aborted},
		{status.ReasonAnotherUpgradeInProgress, false, status.Aborted},
		{status.ReasonDeviceDeactivated, false, status.Aborted},
		{status.ReasonMaxRetriesExceeded, false, status.Failed},
		{status.ReasonUnknownConnection, false, status.Aborted},
		{status.ReasonOrganizationMismatch, false, status.Aborted},
		{status.ReasonInvalidOptions, false, status.Aborted},
		{status.ReasonUpgraderError, false, status.Failed},
		{status.ReasonWorkerLost, false, status.Failed},
		{status.ReasonImageMissing, false, status.Aborted},
	}
	require.Len(t, table, len(rs), "every reason has a row")
	for _, tc := range table {
		assert.Equal(t, tc.retryable, tc.r.Retryable(), "%s Retryable", tc.r)
		assert.Equal(t, tc.outcome, tc.r.Outcome(), "%s Outcome", tc.r)
	}
}
