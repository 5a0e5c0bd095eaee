package upgrader

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/fwupgrader/fwupgrader/status"
)

func TestMessageLeavesOutTheClassification(t *testing.T) {
	t.Parallel()
	inner := errors.New("openwrt: image sha256 abc matches /etc/openwisp/firmware_checksum")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{NotNeeded(status.ReasonAlreadyInstalled, inner), inner.Error()},
		{NotNeeded(status.ReasonAlreadyInstalled, nil), ""},
		{Aborted(status.ReasonIdentityMismatch, errors.New("x")), "x"},
		{fmt.Errorf("step: %w", Recoverable(status.ReasonConnectionFailed, errors.New("refused"))), "step: refused"},
		{Failed(status.ReasonFlashFailed, Recoverable(status.ReasonConnectionFailed, errors.New("lost"))), "lost"},
		{errors.Join(Aborted(status.ReasonImageInvalid, errors.New("a")), errors.New("b")), "a; b"},
		{fmt.Errorf("%w (%v)", ErrCancelled, errors.New("why")), ErrCancelled.Error() + " (why)"},
		{errors.New("plain"), "plain"},
	} {
		assert.Equal(t, tc.want, message(tc.err), "%v", tc.err)
	}
	assert.Empty(t, message(nil))
}

func TestEndLineLabels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		to     status.State
		reason status.Reason
		detail string
		want   string
	}{
		{status.Success, status.ReasonNone, "the device runs X", "success: the device runs X"},
		{status.Success, status.ReasonAlreadyInstalled, "openwrt: image sha256 abc matches f", "already installed: openwrt: image sha256 abc matches f"},
		{status.Success, status.ReasonAlreadyInstalled, "", "already installed"},
		{status.Success, status.Reason("newer-installed"), "x", "not needed (newer-installed): x"},
		{status.Cancelled, status.ReasonCancelledByUser, "", "cancelled"},
		{status.Cancelled, status.ReasonCancelledByUser, "the caller's context ended", "cancelled: the caller's context ended"},
		{status.Aborted, status.ReasonIdentityMismatch, " x ", "aborted (identity-mismatch): x"},
		{status.Failed, status.ReasonNone, "x", "failed: x"},
		{status.Failed, status.ReasonTimeout, "operation timed out", "failed (timeout): operation timed out"},
	} {
		assert.Equal(t, tc.want, endLine(tc.to, tc.reason, tc.detail))
	}
}
