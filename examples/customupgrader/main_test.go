package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// TestMain fails the run when a test leaves a goroutine running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun runs the example: every camera of the fleet ends the batch in
// success, running the new firmware by its own account.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	results, err := run(t.Context(), &out)
	require.NoError(t, err, out.String())
	require.Len(t, results, len(fleet))
	for _, r := range results {
		assert.Equal(t, status.Success, r.State, "%s: %s", r.Name, r.Reason)
		assert.Equal(t, newFirmware, r.Firmware, r.Name)
	}
	for _, want := range []string{"refused, as it should be", "phase upload", "phase flashing", "phase verifying",
		`runs "AcmeOS 2.4.0" (boot id`, "batch success: 3 of 3 done"} {
		assert.Contains(t, out.String(), want)
	}
}

// testCamera starts an X200 camera running the old firmware.
func testCamera(t *testing.T, token string) *camera {
	t.Helper()
	cam, err := startCamera(cameraConfig{Serial: "ACME-" + store.NewID(), Model: "X200", Firmware: oldFirmware, Token: token,
		RebootDelay: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(cam.Close)
	return cam
}

// testUpgrader is an ACME upgrader for the cameras cams returns.
func testUpgrader(token string, cam func(id string) *camera) *acmeUpgrader {
	return &acmeUpgrader{
		credentialsFunc: func(ctx context.Context, d store.Device) (credentials, error) {
			c := cam(d.ID)
			if c == nil {
				return credentials{}, fmt.Errorf("no camera %s", d.ID)
			}
			return credentials{URL: c.URL(), Token: token, Certificate: c.Certificate()}, nil
		},
		rebootTimeout: 10 * time.Second,
		pollInterval:  20 * time.Millisecond,
	}
}

// testJob is a job upgrading cam to the new firmware built for models.
func testJob(cam *camera, models ...string) *upgrader.Job {
	fw := buildFirmware(newFirmware, models, 256<<10)
	sum := sha256.Sum256(fw)
	return &upgrader.Job{
		Operation: store.Operation{ID: store.NewID(), DeviceID: cam.cfg.Serial, State: status.InProgress, Attempt: 1},
		Device:    store.Device{ID: cam.cfg.Serial, Model: cam.cfg.Model, Connection: connection, Active: true},
		Image: upgrader.Image{
			Image: store.Image{ID: "img", Type: imageType(models[0]), Name: "acmeos-2.4.0.fw", Size: int64(len(fw)), SHA256: hex.EncodeToString(sum[:])},
			Build: store.Build{OSIdentifier: newFirmware},
			OpenFunc: func(context.Context) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(fw)), nil
			},
		},
	}
}

// TestUpgraderPassesSuite runs upgradertest.Run, the suite every custom
// upgrader passes, on the ACME upgrader and simulated cameras.
func TestUpgraderPassesSuite(t *testing.T) {
	upgradertest.Run(t, func(t *testing.T) upgradertest.Harness {
		const token = "suite-token"
		var cam *camera
		return upgradertest.Harness{
			Upgrader: testUpgrader(token, func(string) *camera { return cam }),
			NewJob: func(t *testing.T) *upgrader.Job {
				cam = testCamera(t, token)
				return testJob(cam, "X200")
			},
			FlashCountFunc:  func(t *testing.T, job *upgrader.Job) int { return cam.Flashes() },
			UnreachableFunc: func(t *testing.T, job *upgrader.Job) { cam.PowerOff() },
			Timeout:         30 * time.Second,
		}
	})
}

// TestCancelBeforeFlashingDiscardsTheUpload: a cancel that wins as the
// upgrader asks to flash leaves the camera on its firmware, unflashed, with
// the uploaded file discarded.
func TestCancelBeforeFlashingDiscardsTheUpload(t *testing.T) {
	t.Parallel()
	cam := testCamera(t, "t0k3n")
	u := testUpgrader("t0k3n", func(string) *camera { return cam })
	job := testJob(cam, "X200")
	rep := &upgradertest.Reporter{CancelAt: status.PhaseFlashing}
	job.Report = rep
	err := u.Upgrade(t.Context(), job)
	require.ErrorIs(t, err, upgrader.ErrCancelled)
	assert.Contains(t, rep.Phases(), status.PhaseImageTest, "the image was uploaded and checked")
	assert.Equal(t, 0, cam.Flashes())
	assert.False(t, cam.Staged(), "the uploaded file was discarded")
	assert.Equal(t, oldFirmware, cam.Firmware())
	assert.Contains(t, rep.Lines(), "discarded the staged image")
}

// TestImagesForAnotherModelAreRefused: the engine never gives an X300
// image to an X200 camera (FitsImage), and an image whose own header names
// another model is refused before anything reaches the camera, whatever its
// type says.
func TestImagesForAnotherModelAreRefused(t *testing.T) {
	t.Parallel()
	cam := testCamera(t, "t0k3n")
	u := testUpgrader("t0k3n", func(string) *camera { return cam })
	job := testJob(cam, "X300")
	assert.False(t, u.FitsImage(job.Image.Image, job.Device))
	assert.True(t, u.FitsImage(testJob(cam, "X200").Image.Image, job.Device))

	job.Image.Type = imageType("X200") // mislabelled
	rep := &upgradertest.Reporter{}
	job.Report = rep
	err := u.Upgrade(t.Context(), job)
	kind, reason := upgrader.Classify(err)
	assert.Equal(t, upgrader.KindAborted, kind, "%v", err)
	assert.Equal(t, status.ReasonNoImageForBoard, reason)
	assert.NotContains(t, rep.Phases(), status.PhaseUpload)
	assert.Equal(t, 0, cam.Flashes())
	assert.Equal(t, oldFirmware, cam.Firmware())
}

// TestPinnedCertificateIsChecked: a camera that shows another certificate
// than the pinned one is not talked to: aborted with host-key-mismatch,
// nothing uploaded.
func TestPinnedCertificateIsChecked(t *testing.T) {
	t.Parallel()
	cam := testCamera(t, "t0k3n")
	impostor := testCamera(t, "t0k3n")
	u := &acmeUpgrader{credentialsFunc: func(ctx context.Context, d store.Device) (credentials, error) {
		return credentials{URL: impostor.URL(), Token: "t0k3n", Certificate: cam.Certificate()}, nil
	}}
	job := testJob(cam, "X200")
	job.Report = &upgradertest.Reporter{}
	err := u.Upgrade(t.Context(), job)
	kind, reason := upgrader.Classify(err)
	assert.Equal(t, upgrader.KindAborted, kind, "%v", err)
	assert.Equal(t, status.ReasonHostKeyMismatch, reason)
	assert.False(t, impostor.Staged())
	assert.Equal(t, 0, impostor.Flashes())
}

// cutAfterFlash is a Reporter whose attempt is cut short right after the
// flash, as when its engine crashes: Phase(rebooting) fails.
type cutAfterFlash struct{ *upgradertest.Reporter }

var errCut = errors.New("test: the engine went away")

func (r cutAfterFlash) Phase(ctx context.Context, p status.Phase) error {
	if p == status.PhaseRebooting {
		return errCut
	}
	return r.Reporter.Phase(ctx, p)
}

// TestVerifyProvesAnInterruptedUpgrade: an attempt cut short after the
// flash, before the reboot, is finished by Verify without a second flash:
// it reboots the camera into the flashed firmware and proves it runs it.
// Neither run logs the camera's token.
func TestVerifyProvesAnInterruptedUpgrade(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-t0k3n-never-logged"
	cam := testCamera(t, token)
	u := testUpgrader(token, func(string) *camera { return cam })
	job := testJob(cam, "X200")
	up := &upgradertest.Reporter{}
	job.Report = cutAfterFlash{up}
	require.ErrorIs(t, u.Upgrade(t.Context(), job), errCut)
	require.Equal(t, 1, cam.Flashes())
	require.Equal(t, oldFirmware, cam.Firmware(), "not rebooted yet")

	vrep := &upgradertest.Reporter{}
	job.Report = vrep
	require.NoError(t, u.Verify(t.Context(), job))
	assert.Equal(t, newFirmware, cam.Firmware())
	assert.Equal(t, 1, cam.Flashes(), "Verify never flashes")
	assert.NotContains(t, vrep.Phases(), status.PhaseFlashing)
	assert.Contains(t, strings.Join(vrep.Lines(), "\n"), `runs "AcmeOS 2.4.0"`, "the proof is logged")
	for _, l := range append(up.Lines(), vrep.Lines()...) {
		assert.NotContains(t, l, token)
	}
}
