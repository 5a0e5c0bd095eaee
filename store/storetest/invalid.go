package storetest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// world is a small populated store for the Invalid group.
type world struct {
	catA, catA2              store.Category
	buildA                   store.Build
	imA, imA2, imB, imS      store.Image
	devA, devA2, devB        store.Device
	running, flashing, done  store.Operation
	batch                    store.Batch
	batchRunning, batchIdle  store.Operation
	imOtherBuildSameOrgAndID store.Image
	// claimed is in progress (upload), claimed by "engine-1" for an hour,
	// its second claim (token 2); overdue is pending, its deadline an hour
	// gone.
	claimed, overdue store.Operation
}

func (f *fixture) world() *world {
	f.t.Helper()
	w := &world{}
	w.catA, w.catA2 = f.category("org-a"), f.category("org-a")
	b, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: w.catA.ID, Version: "1.0", OSIdentifier: "OpenWrt 1.0"})
	require.NoError(f.t, err)
	w.buildA = b
	w.imA = f.image(b.ID)
	w.imA2 = f.image(b.ID)
	w.imOtherBuildSameOrgAndID = f.image(f.build(w.catA.ID).ID)
	w.imB, w.imS = f.imageOf("org-b"), f.imageOf("")
	w.devA, w.devA2, w.devB = f.device("org-a"), f.device("org-a"), f.device("org-b")
	w.running = f.drive(f.op(f.device("org-a").ID, w.imA.ID).ID, status.InProgress, status.PhaseUpload)
	w.flashing = f.drive(f.op(f.device("org-a").ID, w.imA.ID).ID, status.InProgress, status.PhaseFlashing)
	w.done = f.drive(f.op(f.device("org-a").ID, w.imA.ID).ID, status.Success, status.PhaseVerifying)
	require.NoError(f.t, f.s.AppendLog(f.ctx, w.running.ID, 0, "uploading"))
	bt, ops, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: b.ID, Name: "wave"},
		[]store.Operation{{DeviceID: f.device("org-a").ID, ImageID: w.imA.ID}, {DeviceID: f.device("org-a").ID, ImageID: w.imA.ID}})
	require.NoError(f.t, err)
	w.batch = bt
	w.batchRunning = f.start(ops[0].ID, status.PhaseConnecting)
	w.batchIdle = ops[1]
	_, err = f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: w.devA2.ID, ImageID: w.imA.ID, Installed: true})
	require.NoError(f.t, err)
	first := f.claimedRunning("engine-1", time.Hour, status.PhaseUpload)
	require.NoError(f.t, f.s.ReleaseOperation(f.ctx, first.ID, first.Token))
	w.claimed = f.claimOne(first.ID, "engine-1", time.Hour)
	require.NoError(f.t, f.s.AppendLog(f.ctx, w.claimed.ID, w.claimed.Token, "uploading"))
	w.overdue = f.op(f.device("org-a").ID, w.imA.ID)
	past := w.overdue.CreatedAt.Add(-time.Hour)
	w.overdue = f.update(w.overdue.ID, store.OperationUpdate{From: status.Pending, Deadline: &past})
	return w
}

type invalidCase struct {
	name  string
	call  func(f *fixture, w *world) error
	want  error
	field string // for ErrInvalid: the ValidationError's Field
}

func ignore[T any](_ T, err error) error { return err }

func ignore2[A, B any](_ A, _ B, err error) error { return err }

func invalidCases() []invalidCase {
	long := func(n int) string { return strings.Repeat("x", n) }
	upd := func(op func(w *world) store.Operation, u store.OperationUpdate) func(f *fixture, w *world) error {
		return func(f *fixture, w *world) error { return ignore(f.s.UpdateOperation(f.ctx, op(w).ID, u)) }
	}
	running := func(w *world) store.Operation { return w.running }
	flashing := func(w *world) store.Operation { return w.flashing }
	done := func(w *world) store.Operation { return w.done }
	batchRunning := func(w *world) store.Operation { return w.batchRunning }
	batchIdle := func(w *world) store.Operation { return w.batchIdle }
	claimed := func(w *world) store.Operation { return w.claimed }
	claim := func(owner string, limit int, lease time.Duration) func(f *fixture, w *world) error {
		return func(f *fixture, w *world) error { return ignore(f.s.ClaimOperations(f.ctx, owner, limit, lease)) }
	}
	claimOne := func(op func(w *world) store.Operation, owner string) func(f *fixture, w *world) error {
		return func(f *fixture, w *world) error {
			return ignore(f.s.ClaimOperation(f.ctx, op(w).ID, owner, time.Minute))
		}
	}
	renew := func(owner string, lease time.Duration) func(f *fixture, w *world) error {
		return func(f *fixture, w *world) error {
			return ignore(f.s.RenewLeases(f.ctx, owner, lease, []store.Lease{leaseOf(w.claimed)}))
		}
	}
	// fenced calls with tokens of w.claimed that are not its own: the one
	// before (asserted here) and one after (returned).
	fenced := func(call func(f *fixture, w *world, tok int64) error) func(f *fixture, w *world) error {
		return func(f *fixture, w *world) error {
			require.Greater(f.t, w.claimed.Token, int64(1))
			require.ErrorIs(f.t, call(f, w, w.claimed.Token-1), store.ErrStaleToken, "the previous claim's token")
			return call(f, w, w.claimed.Token+1)
		}
	}
	newOp := func(mod func(w *world, op *store.Operation)) func(f *fixture, w *world) error {
		return func(f *fixture, w *world) error {
			op := store.Operation{DeviceID: w.devA.ID, ImageID: w.imA.ID}
			mod(w, &op)
			return ignore(f.s.CreateOperation(f.ctx, op))
		}
	}
	newBatch := func(mod func(w *world, b *store.Batch, ops *[]store.Operation)) func(f *fixture, w *world) error {
		return func(f *fixture, w *world) error {
			b := store.Batch{Organization: "org-a", BuildID: w.buildA.ID}
			ops := []store.Operation{{DeviceID: w.devA.ID, ImageID: w.imA.ID}, {DeviceID: w.devA2.ID, ImageID: w.imA2.ID}}
			mod(w, &b, &ops)
			return ignore2(f.s.CreateBatch(f.ctx, b, ops))
		}
	}
	newImage := func(mod func(im *store.Image)) func(f *fixture, w *world) error {
		return func(f *fixture, w *world) error {
			im := store.Image{BuildID: w.buildA.ID, Type: "new-type", Name: "new.bin", SHA256: sha("new")}
			mod(&im)
			return ignore(f.s.CreateImage(f.ctx, im))
		}
	}
	return []invalidCase{
		// categories
		{"CategoryEmptyName", func(f *fixture, w *world) error {
			return ignore(f.s.CreateCategory(f.ctx, store.Category{Organization: "org-a", Name: "  "}))
		}, store.ErrInvalid, "Name"},
		{"CategoryNameTooLong", func(f *fixture, w *world) error {
			return ignore(f.s.CreateCategory(f.ctx, store.Category{Name: long(store.MaxNameLen + 1)}))
		}, store.ErrInvalid, "Name"},
		{"CategoryNameInvalidUTF8", func(f *fixture, w *world) error {
			return ignore(f.s.CreateCategory(f.ctx, store.Category{Name: "bad\xff"}))
		}, store.ErrInvalid, "Name"},
		{"CategoryDuplicateName", func(f *fixture, w *world) error {
			return ignore(f.s.CreateCategory(f.ctx, store.Category{Organization: "org-a", Name: w.catA.Name}))
		}, store.ErrConflict, ""},
		// builds
		{"BuildEmptyVersion", func(f *fixture, w *world) error {
			return ignore(f.s.CreateBuild(f.ctx, store.Build{CategoryID: w.catA.ID}))
		}, store.ErrInvalid, "Version"},
		{"BuildVersionTooLong", func(f *fixture, w *world) error {
			return ignore(f.s.CreateBuild(f.ctx, store.Build{CategoryID: w.catA.ID, Version: long(store.MaxVersionLen + 1)}))
		}, store.ErrInvalid, "Version"},
		{"BuildEmptyCategory", func(f *fixture, w *world) error {
			return ignore(f.s.CreateBuild(f.ctx, store.Build{Version: "2"}))
		}, store.ErrInvalid, "CategoryID"},
		{"BuildUnknownCategory", func(f *fixture, w *world) error {
			return ignore(f.s.CreateBuild(f.ctx, store.Build{CategoryID: store.NewID(), Version: "2"}))
		}, store.ErrNotFound, ""},
		{"BuildDuplicateVersion", func(f *fixture, w *world) error {
			return ignore(f.s.CreateBuild(f.ctx, store.Build{CategoryID: w.catA.ID, Version: "1.0"}))
		}, store.ErrConflict, ""},
		{"BuildDuplicateOSIdentifier", func(f *fixture, w *world) error {
			return ignore(f.s.CreateBuild(f.ctx, store.Build{CategoryID: w.catA2.ID, Version: "9", OSIdentifier: "OpenWrt 1.0"}))
		}, store.ErrConflict, ""},
		// images
		{"ImageSHA256Uppercase", newImage(func(im *store.Image) { im.SHA256 = strings.ToUpper(im.SHA256) }), store.ErrInvalid, "SHA256"},
		{"ImageSHA256Short", newImage(func(im *store.Image) { im.SHA256 = im.SHA256[:63] }), store.ErrInvalid, "SHA256"},
		{"ImageSHA256NotHex", newImage(func(im *store.Image) { im.SHA256 = "g" + im.SHA256[1:] }), store.ErrInvalid, "SHA256"},
		{"ImageNameWithSlash", newImage(func(im *store.Image) { im.Name = "../etc/passwd" }), store.ErrInvalid, "Name"},
		{"ImageNameWithBackslash", newImage(func(im *store.Image) { im.Name = `a\b.bin` }), store.ErrInvalid, "Name"},
		{"ImageEmptyType", newImage(func(im *store.Image) { im.Type = "" }), store.ErrInvalid, "Type"},
		{"ImageNegativeSize", newImage(func(im *store.Image) { im.Size = -1 }), store.ErrInvalid, "Size"},
		{"ImageEmptyBoard", newImage(func(im *store.Image) { im.Boards = []string{"ok", ""} }), store.ErrInvalid, "Boards"},
		{"ImageDuplicateType", func(f *fixture, w *world) error {
			return ignore(f.s.CreateImage(f.ctx, store.Image{BuildID: w.buildA.ID, Type: w.imA.Type, Name: "x.bin", SHA256: sha("x")}))
		}, store.ErrConflict, ""},
		{"ImageUnknownBuild", newImage(func(im *store.Image) { im.BuildID = store.NewID() }), store.ErrNotFound, ""},
		// devices
		{"DeviceEmptyID", func(f *fixture, w *world) error {
			return ignore(f.s.PutDevice(f.ctx, store.Device{Organization: "org-a"}))
		}, store.ErrInvalid, "ID"},
		{"DeviceIDSurroundingSpace", func(f *fixture, w *world) error {
			return ignore(f.s.PutDevice(f.ctx, store.Device{ID: " dev-1", Organization: "org-a"}))
		}, store.ErrInvalid, "ID"},
		{"DeviceIDControlCharacter", func(f *fixture, w *world) error {
			return ignore(f.s.PutDevice(f.ctx, store.Device{ID: "dev\x1b[31m1", Organization: "org-a"}))
		}, store.ErrInvalid, "ID"},
		{"CategoryOrganizationTrailingNewline", func(f *fixture, w *world) error {
			return ignore(f.s.CreateCategory(f.ctx, store.Category{Organization: "org-a\n", Name: "x"}))
		}, store.ErrInvalid, "Organization"},
		{"DeviceNameTooLong", func(f *fixture, w *world) error {
			return ignore(f.s.PutDevice(f.ctx, store.Device{ID: "new", Name: long(store.MaxNameLen + 1)}))
		}, store.ErrInvalid, "Name"},
		{"DeviceMoveOrganizationWhileBusy", func(f *fixture, w *world) error {
			d, err := f.s.Device(f.ctx, w.running.DeviceID)
			require.NoError(f.t, err)
			d.Organization, d.Name = "org-b", "moved"
			return ignore(f.s.PutDevice(f.ctx, d))
		}, store.ErrOrganizationMismatch, ""},
		// device firmware
		{"DeviceFirmwareOtherOrganization", func(f *fixture, w *world) error {
			return ignore(f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: w.devB.ID, ImageID: w.imA.ID}))
		}, store.ErrOrganizationMismatch, ""},
		{"DeviceFirmwareEmptyImage", func(f *fixture, w *world) error {
			return ignore(f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: w.devA.ID}))
		}, store.ErrInvalid, "ImageID"},
		// operations
		{"OperationOtherOrganization", newOp(func(w *world, op *store.Operation) { op.ImageID = w.imB.ID }), store.ErrOrganizationMismatch, ""},
		{"OperationBadOptions", newOp(func(w *world, op *store.Operation) { op.Options = json.RawMessage(`[1,2]`) }), store.ErrInvalid, "Options"},
		{"OperationBrokenOptions", newOp(func(w *world, op *store.Operation) { op.Options = json.RawMessage(`{"a":`) }), store.ErrInvalid, "Options"},
		{"OperationOptionsTooLong", newOp(func(w *world, op *store.Operation) {
			op.Options = json.RawMessage(`{"a":"` + long(store.MaxOptionsLen) + `"}`)
		}), store.ErrInvalid, "Options"},
		{"OperationNotPending", newOp(func(w *world, op *store.Operation) { op.State = status.InProgress }), store.ErrInvalid, "State"},
		{"OperationUnknownState", newOp(func(w *world, op *store.Operation) { op.State = "bogus" }), store.ErrInvalid, "State"},
		{"OperationWithPhase", newOp(func(w *world, op *store.Operation) { op.Phase = status.PhaseUpload }), store.ErrInvalid, "Phase"},
		{"OperationWithProgress", newOp(func(w *world, op *store.Operation) { op.Progress = 101 }), store.ErrInvalid, "Progress"},
		{"OperationNegativeAttempt", newOp(func(w *world, op *store.Operation) { op.Attempt = -1 }), store.ErrInvalid, "Attempt"},
		{"OperationEmptyDevice", newOp(func(w *world, op *store.Operation) { op.DeviceID = "" }), store.ErrInvalid, "DeviceID"},
		{"OperationDeviceBusy", newOp(func(w *world, op *store.Operation) { op.DeviceID = w.running.DeviceID }), store.ErrDeviceBusy, ""},
		{"OperationUnknownImage", newOp(func(w *world, op *store.Operation) { op.ImageID = store.NewID() }), store.ErrNotFound, ""},
		// updates
		{"UpdateUnknownState", upd(running, store.OperationUpdate{From: status.InProgress, State: "bogus"}), store.ErrInvalid, "State"},
		{"UpdateUnknownFrom", upd(running, store.OperationUpdate{From: "bogus", State: status.Failed}), store.ErrInvalid, "From"},
		{"UpdateUnknownReason", upd(running, store.OperationUpdate{From: status.InProgress, State: status.Failed, Reason: "bogus"}), store.ErrInvalid, "Reason"},
		{"UpdateUnknownPhase", upd(running, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.Phase("bogus"))}), store.ErrInvalid, "Phase"},
		{"UpdateProgress101", upd(running, store.OperationUpdate{From: status.InProgress, Progress: store.Ptr(101)}), store.ErrInvalid, "Progress"},
		{"UpdateProgressNegative", upd(running, store.OperationUpdate{From: status.InProgress, Progress: store.Ptr(-1)}), store.ErrInvalid, "Progress"},
		{"UpdateNegativeAttempt", upd(running, store.OperationUpdate{From: status.InProgress, Attempt: store.Ptr(-1)}), store.ErrInvalid, "Attempt"},
		{"UpdateWrongFrom", upd(running, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Log: []string{"x"}}), store.ErrInvalidTransition, ""},
		{"UpdateFromTerminal", upd(done, store.OperationUpdate{From: status.Success, State: status.Failed, Log: []string{"x"}}), store.ErrInvalidTransition, ""},
		{"UpdateCancelAtFlashing", upd(flashing, store.OperationUpdate{From: status.InProgress, State: status.Cancelled, Log: []string{"x"}}), store.ErrInvalidTransition, ""},
		{"UpdateAbortAtFlashing", upd(flashing, store.OperationUpdate{From: status.InProgress, State: status.Aborted}), store.ErrInvalidTransition, ""},
		{"UpdatePhaseBackFromFlashing", upd(flashing, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseUpload), Progress: store.Ptr(30)}), store.ErrInvalidTransition, ""},
		{"UpdateBatchOperationWrongFrom", upd(batchRunning, store.OperationUpdate{From: status.Pending, State: status.InProgress}), store.ErrInvalidTransition, ""},
		{"UpdateUnknownOperation", func(f *fixture, w *world) error {
			return ignore(f.s.UpdateOperation(f.ctx, store.NewID(), store.OperationUpdate{From: status.Pending, State: status.Cancelled}))
		}, store.ErrNotFound, ""},
		{"SetProgress101", func(f *fixture, w *world) error { return f.s.SetProgress(f.ctx, w.running.ID, 0, 101) }, store.ErrInvalid, "Progress"},
		{"SetProgressNegative", func(f *fixture, w *world) error { return f.s.SetProgress(f.ctx, w.running.ID, 0, -1) }, store.ErrInvalid, "Progress"},
		{"SetProgressTerminal", func(f *fixture, w *world) error { return f.s.SetProgress(f.ctx, w.done.ID, 0, 50) }, store.ErrInvalidTransition, ""},
		{"SetProgressPending", func(f *fixture, w *world) error { return f.s.SetProgress(f.ctx, w.batchIdle.ID, 0, 50) }, store.ErrInvalidTransition, ""},
		{"AppendLogUnknownOperation", func(f *fixture, w *world) error { return f.s.AppendLog(f.ctx, store.NewID(), 0, "x") }, store.ErrNotFound, ""},
		// claims
		{"ClaimEmptyOwner", claim("", 10, time.Minute), store.ErrInvalid, "Owner"},
		{"ClaimBlankOwner", claim("   ", 10, time.Minute), store.ErrInvalid, "Owner"},
		{"ClaimOwnerSurroundingSpace", claim("engine-2 ", 10, time.Minute), store.ErrInvalid, "Owner"},
		{"ClaimOwnerTooLong", claim(long(store.MaxIDLen+1), 10, time.Minute), store.ErrInvalid, "Owner"},
		{"ClaimOwnerControlCharacter", claim("engine\n2", 10, time.Minute), store.ErrInvalid, "Owner"},
		{"ClaimOwnerInvalidUTF8", claim("engine\xff", 10, time.Minute), store.ErrInvalid, "Owner"},
		{"ClaimZeroLimit", claim("engine-2", 0, time.Minute), store.ErrInvalid, "Limit"},
		{"ClaimNegativeLimit", claim("engine-2", -1, time.Minute), store.ErrInvalid, "Limit"},
		{"ClaimZeroLease", claim("engine-2", 10, 0), store.ErrInvalid, "Lease"},
		{"ClaimNegativeLease", claim("engine-2", 10, -time.Minute), store.ErrInvalid, "Lease"},
		{"ClaimOneEmptyOwner", claimOne(batchIdle, ""), store.ErrInvalid, "Owner"},
		{"ClaimOneBlankOwner", claimOne(batchIdle, " "), store.ErrInvalid, "Owner"},
		{"ClaimOneOwnerTooLong", claimOne(batchIdle, long(store.MaxIDLen+1)), store.ErrInvalid, "Owner"},
		{"ClaimOneZeroLease", func(f *fixture, w *world) error {
			return ignore(f.s.ClaimOperation(f.ctx, w.batchIdle.ID, "engine-2", 0))
		}, store.ErrInvalid, "Lease"},
		{"ClaimOneNegativeLease", func(f *fixture, w *world) error {
			return ignore(f.s.ClaimOperation(f.ctx, w.batchIdle.ID, "engine-2", -time.Second))
		}, store.ErrInvalid, "Lease"},
		{"ClaimOneUnknownOperation", func(f *fixture, w *world) error {
			return ignore(f.s.ClaimOperation(f.ctx, store.NewID(), "engine-2", time.Minute))
		}, store.ErrNotFound, ""},
		{"ClaimOneTerminal", claimOne(done, "engine-2"), store.ErrInvalidTransition, ""},
		{"ClaimOneLeased", claimOne(claimed, "engine-2"), store.ErrLeased, ""},
		{"ClaimOneLeasedSameOwner", claimOne(claimed, "engine-1"), store.ErrLeased, ""},
		{"RenewEmptyOwner", renew("", time.Minute), store.ErrInvalid, "Owner"},
		{"RenewOwnerTooLong", renew(long(store.MaxIDLen+1), time.Minute), store.ErrInvalid, "Owner"},
		{"RenewZeroLease", renew("engine-1", 0), store.ErrInvalid, "Lease"},
		{"RenewNegativeLease", renew("engine-1", -time.Minute), store.ErrInvalid, "Lease"},
		{"ReleaseUnknownOperation", func(f *fixture, w *world) error {
			return f.s.ReleaseOperation(f.ctx, store.NewID(), 1)
		}, store.ErrNotFound, ""},
		{"ReleaseStaleToken", fenced(func(f *fixture, w *world, tok int64) error {
			return f.s.ReleaseOperation(f.ctx, w.claimed.ID, tok)
		}), store.ErrStaleToken, ""},
		{"ReleaseWithoutToken", func(f *fixture, w *world) error {
			return f.s.ReleaseOperation(f.ctx, w.claimed.ID, 0)
		}, store.ErrStaleToken, ""},
		{"ExpireDeadlinesZeroLimit", func(f *fixture, w *world) error {
			return ignore(f.s.ExpireDeadlines(f.ctx, 0))
		}, store.ErrInvalid, "Limit"},
		{"ExpireDeadlinesNegativeLimit", func(f *fixture, w *world) error {
			return ignore(f.s.ExpireDeadlines(f.ctx, -1))
		}, store.ErrInvalid, "Limit"},
		{"UpdateStaleToken", fenced(func(f *fixture, w *world, tok int64) error {
			return ignore(f.s.UpdateOperation(f.ctx, w.claimed.ID, store.OperationUpdate{From: status.InProgress,
				Phase: store.Ptr(status.PhaseChecksum), Progress: store.Ptr(50), Log: []string{"x"}, Token: tok}))
		}), store.ErrStaleToken, ""},
		{"UpdateStaleTokenFlashing", fenced(func(f *fixture, w *world, tok int64) error {
			return ignore(f.s.UpdateOperation(f.ctx, w.claimed.ID, store.OperationUpdate{From: status.InProgress,
				Phase: store.Ptr(status.PhaseFlashing), Token: tok}))
		}), store.ErrStaleToken, ""},
		{"UpdateStaleTokenTerminal", fenced(func(f *fixture, w *world, tok int64) error {
			return ignore(f.s.UpdateOperation(f.ctx, w.claimed.ID, store.OperationUpdate{From: status.InProgress,
				State: status.Failed, Reason: status.ReasonConnectionFailed, Token: tok}))
		}), store.ErrStaleToken, ""},
		{"UpdateStaleTokenRetry", fenced(func(f *fixture, w *world, tok int64) error {
			next := w.claimed.CreatedAt.Add(time.Hour)
			return ignore(f.s.UpdateOperation(f.ctx, w.claimed.ID, store.OperationUpdate{From: status.InProgress,
				Attempt: store.Ptr(2), NextAttemptAt: &next, Token: tok}))
		}), store.ErrStaleToken, ""},
		{"SetProgressStaleToken", fenced(func(f *fixture, w *world, tok int64) error {
			return f.s.SetProgress(f.ctx, w.claimed.ID, tok, 50)
		}), store.ErrStaleToken, ""},
		{"AppendLogStaleToken", fenced(func(f *fixture, w *world, tok int64) error {
			return f.s.AppendLog(f.ctx, w.claimed.ID, tok, "late")
		}), store.ErrStaleToken, ""},
		{"UpdateFlashingTwice", upd(flashing, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing), Log: []string{"x"}}),
			store.ErrInvalidTransition, ""},
		// batches
		{"BatchNoOperations", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { *ops = nil }), store.ErrInvalid, "Operations"},
		{"BatchBadOptions", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { b.Options = json.RawMessage(`"x"`) }), store.ErrInvalid, "Options"},
		{"BatchNullOptions", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { b.Options = json.RawMessage(`null`) }), store.ErrInvalid, "Options"},
		{"BatchStartsPaused", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { b.State = status.BatchPaused }), store.ErrInvalid, "State"},
		{"BatchEmptyBuild", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { b.BuildID = "" }), store.ErrInvalid, "BuildID"},
		{"BatchUnknownBuild", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { b.BuildID = store.NewID() }), store.ErrNotFound, ""},
		{"BatchImageOfOtherBuild", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) {
			(*ops)[1].ImageID = w.imOtherBuildSameOrgAndID.ID
		}), store.ErrInvalid, "ImageID"},
		{"BatchImageOfOtherOrganization", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) {
			b.Organization, b.BuildID = "org-b", w.imB.BuildID
			*ops = []store.Operation{{DeviceID: w.devB.ID, ImageID: w.imB.ID}, {DeviceID: w.devA.ID, ImageID: w.imB.ID}}
		}), store.ErrOrganizationMismatch, ""},
		{"BatchBuildOfOtherOrganization", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { b.Organization = "org-b" }), store.ErrOrganizationMismatch, ""},
		{"BatchBusyDevice", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { (*ops)[1].DeviceID = w.running.DeviceID }), store.ErrDeviceBusy, ""},
		{"BatchDeviceTwice", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { (*ops)[1].DeviceID = w.devA.ID }), store.ErrDeviceBusy, ""},
		{"BatchOperationInvalid", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) {
			(*ops)[1].Options = json.RawMessage(`1`)
		}), store.ErrInvalid, "Options"},
		{"BatchDuplicateID", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { b.ID = w.batch.ID }), store.ErrConflict, ""},
		{"BatchDuplicateOperationID", newBatch(func(w *world, b *store.Batch, ops *[]store.Operation) { (*ops)[1].ID = w.done.ID }), store.ErrConflict, ""},
		{"SetBatchStateRefused", func(f *fixture, w *world) error {
			return ignore(f.s.SetBatchState(f.ctx, w.batch.ID, status.BatchInProgress, status.BatchCancelled))
		}, store.ErrInvalidTransition, ""},
		{"SetBatchStateWrongFrom", func(f *fixture, w *world) error {
			return ignore(f.s.SetBatchState(f.ctx, w.batch.ID, status.BatchPaused, status.BatchInProgress))
		}, store.ErrInvalidTransition, ""},
		{"SetBatchStateUnknownState", func(f *fixture, w *world) error {
			return ignore(f.s.SetBatchState(f.ctx, w.batch.ID, status.BatchInProgress, "bogus"))
		}, store.ErrInvalid, "State"},
	}
}

func invalidTests() []test {
	var tests []test
	for _, tc := range invalidCases() {
		tests = append(tests, test{tc.name, func(t *testing.T, f *fixture) {
			w := f.world()
			before := f.snapshot()
			err := tc.call(f, w)
			require.ErrorIs(t, err, tc.want)
			if tc.want == store.ErrInvalid {
				requireInvalid(t, err, tc.field)
			}
			f.requireUnchanged(before)
		}})
	}
	return tests
}
