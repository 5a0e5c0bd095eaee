package upgrader_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// TestEndLines: the line an operation ends with names the outcome once,
// then the attempt's error in its own words, without the classification
// text of *upgrader.Error ("upgrader: aborted (identity-mismatch): ...").
func TestEndLines(t *testing.T) {
	t.Parallel()
	refused := errors.New("acme: connect to h: refused")
	for _, tc := range []struct {
		name    string
		results []error
		at      status.Phase
		state   status.State
		want    string
		retries []string // retry lines, in order
	}{
		{"aborted", []error{upgrader.Aborted(status.ReasonIdentityMismatch, errors.New(`acme: the device reports UUID "x"`))}, status.PhaseIdentity,
			status.Aborted, `aborted (identity-mismatch): acme: the device reports UUID "x"`, nil},
		{"aborted, wrapped", []error{fmt.Errorf("acme: identity: %w", upgrader.Aborted(status.ReasonIdentityMismatch, errors.New("no UUID")))}, status.PhaseIdentity,
			status.Aborted, "aborted (identity-mismatch): acme: identity: no UUID", nil},
		{"already installed", []error{upgrader.NotNeeded(status.ReasonAlreadyInstalled, errors.New("acme: image sha256 abc matches the record"))}, status.PhaseChecksum,
			status.Success, "already installed: acme: image sha256 abc matches the record", nil},
		{"already installed, no detail", []error{upgrader.NotNeeded(status.ReasonAlreadyInstalled, nil)}, status.PhaseChecksum,
			status.Success, "already installed", nil},
		{"failed", []error{upgrader.Failed(status.ReasonFlashFailed, fmt.Errorf("acme: flash: %w", errors.New("I/O error")))}, status.PhaseFlashing,
			status.Failed, "failed (flash-failed): acme: flash: I/O error", nil},
		{"plain error", []error{errors.New("acme: plain")}, status.PhaseUpload,
			status.Failed, "failed (upgrader-error): acme: plain", nil},
		{"recoverable after flashing", []error{upgrader.Recoverable(status.ReasonConnectionFailed, refused)}, status.PhaseRebooting,
			status.Failed, "failed (flash-failed): acme: connect to h: refused (connection-failed after flashing started)", nil},
		{"aborted after flashing", []error{upgrader.Aborted(status.ReasonIdentityMismatch, errors.New("acme: another device"))}, status.PhaseVerifying,
			status.Failed, "failed (flash-failed): acme: another device (identity-mismatch after flashing started)", nil},
		{"cancelled", []error{upgrader.ErrCancelled}, status.PhaseUpload, status.Cancelled, "cancelled", nil},
		{"retries exhausted", []error{
			upgrader.Recoverable(status.ReasonConnectionFailed, refused), upgrader.Recoverable(status.ReasonConnectionFailed, refused),
			upgrader.Recoverable(status.ReasonConnectionFailed, refused)}, status.PhaseConnecting,
			status.Failed, "failed (max-retries-exceeded): 3 attempts, the last one connection-failed: acme: connect to h: refused",
			[]string{"recoverable failure (connection-failed): acme: connect to h: refused; retrying in ", "recoverable failure (connection-failed): acme: connect to h: refused; retrying in "}},
		{"retries exhausted, aborted", []error{
			upgrader.Recoverable(status.ReasonUploadCorrupt, errors.New("acme: corrupt")), upgrader.Recoverable(status.ReasonUploadCorrupt, errors.New("acme: corrupt")),
			upgrader.Recoverable(status.ReasonUploadCorrupt, errors.New("acme: corrupt"))}, status.PhaseUpload,
			status.Aborted, "aborted (upload-corrupt): gave up after 3 attempts: acme: corrupt",
			[]string{"recoverable failure (upload-corrupt): acme: corrupt; retrying in ", "recoverable failure (upload-corrupt): acme: corrupt; retrying in "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, &upgradertest.Fake{Results: tc.results, FailAt: tc.at}, func(c *upgrader.Config) { c.Retry.MaxRetries = 2 })
			op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
			require.NoError(t, err)
			require.Equal(t, tc.state, op.State, "reason %s", op.Reason)
			lines := logLines(t, b.st, op.ID)
			assert.Equal(t, tc.want, lines[len(lines)-1])
			var retries []string
			for _, l := range lines {
				assert.NotContains(t, l, "upgrader: ", "no classification text in the log")
				if strings.HasPrefix(l, "recoverable failure") {
					retries = append(retries, l)
				}
			}
			require.Len(t, retries, len(tc.retries))
			for i, r := range retries {
				assert.True(t, strings.HasPrefix(r, tc.retries[i]), "%q starts with %q", r, tc.retries[i])
			}
		})
	}
}

// provingUpgrader says what it proved through upgrader.Prover, and logs
// nothing about success itself.
type provingUpgrader struct {
	upgradertest.Fake
	proof string
}

func (u *provingUpgrader) Upgrade(ctx context.Context, job *upgrader.Job) error {
	if err := u.Fake.Upgrade(ctx, job); err != nil {
		return err
	}
	p, ok := job.Report.(upgrader.Prover)
	if !ok {
		return errors.New("the engine's reporter is no upgrader.Prover")
	}
	p.Proved(u.proof)
	return nil
}

func (u *provingUpgrader) Verify(ctx context.Context, job *upgrader.Job) error {
	if err := u.Fake.Verify(ctx, job); err != nil {
		return err
	}
	if p, ok := job.Report.(upgrader.Prover); ok {
		p.Proved("verified: " + u.proof)
	}
	return nil
}

// TestSuccessLineSaysWhatWasProven: the operation of an upgrader that
// proved something ends with one success line saying it; the engine adds
// no success line of its own.
func TestSuccessLineSaysWhatWasProven(t *testing.T) {
	t.Parallel()
	const proof = `the device runs "TestOS 2.0 r1" (boot id changed)`
	u := &provingUpgrader{proof: proof}
	b := setup(t, &upgradertest.Fake{}, nil)
	require.NoError(t, b.reg.Register("proving", u))
	d := b.device
	d.ID, d.Connection = "dev-proving", "proving"
	_, err := b.eng.RegisterDevice(context.Background(), d)
	require.NoError(t, err)
	op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	require.Equal(t, status.Success, op.State)
	lines := logLines(t, b.st, op.ID)
	var success []string
	for _, l := range lines {
		if strings.Contains(strings.ToLower(l), "success") {
			success = append(success, l)
		}
	}
	assert.Equal(t, []string{"success: " + proof}, success)
	assert.Equal(t, "success: "+proof, lines[len(lines)-1])
}

// TestVerifiedSuccessSaysWhatWasProven: an operation whose deadline passed
// after flashing is verified; its log says so, then ends with the
// verifier's proof.
func TestVerifiedSuccessSaysWhatWasProven(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	u := &provingUpgrader{proof: "the device runs TestOS 2.0", Fake: upgradertest.Fake{Hold: hold, HoldAt: status.PhaseRebooting}}
	b := setup(t, &upgradertest.Fake{}, func(c *upgrader.Config) { c.OperationTimeout = 300 * time.Millisecond })
	require.NoError(t, b.reg.Register("proving", u))
	d := b.device
	d.ID, d.Connection = "dev-proving", "proving"
	_, err := b.eng.RegisterDevice(context.Background(), d)
	require.NoError(t, err)
	op, err := b.eng.Upgrade(context.Background(), upgrader.Request{DeviceID: d.ID, ImageID: b.image.ID})
	close(hold)
	require.NoError(t, err)
	require.Equal(t, status.Success, op.State, "reason %s", op.Reason)
	lines := logLines(t, b.st, op.ID)
	require.GreaterOrEqual(t, len(lines), 2)
	assert.Equal(t, "deadline passed after flashing: verifying the outcome", lines[len(lines)-2])
	assert.Equal(t, "success: verified: the device runs TestOS 2.0", lines[len(lines)-1])
	assert.Equal(t, 1, u.Verified(op.ID))
}

// TestAttemptChecksEndLine: an operation refused at the start of its
// attempt (its device's board changed after it was created) ends with the
// refusal's own words under the outcome label.
func TestAttemptChecksEndLine(t *testing.T) {
	t.Parallel()
	b := setup(t, &upgradertest.Fake{}, nil)
	ctx := context.Background()
	op, err := b.eng.Create(ctx, upgrader.Request{DeviceID: b.device.ID, ImageID: b.image.ID})
	require.NoError(t, err)
	d := b.device
	d.BoardName, d.Model = "other,board", "Other Board"
	_, err = b.st.PutDevice(ctx, d)
	require.NoError(t, err)
	end, err := b.eng.Run(ctx, op.ID)
	require.NoError(t, err)
	require.Equal(t, status.Aborted, end.State)
	lines := logLines(t, b.st, op.ID)
	last := lines[len(lines)-1]
	assert.True(t, strings.HasPrefix(last, fmt.Sprintf("aborted (%s): ", end.Reason)), last)
	assert.NotContains(t, last, "upgrader: ")
}
