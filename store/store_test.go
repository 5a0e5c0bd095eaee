package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

const sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func requireField(t *testing.T, err error, field string) {
	t.Helper()
	require.ErrorIs(t, err, store.ErrInvalid)
	var ve *store.ValidationError
	require.True(t, errors.As(err, &ve), "%v is not a *ValidationError", err)
	assert.Equal(t, field, ve.Field, "%v", err)
	assert.Contains(t, err.Error(), field)
}

type validator interface{ Validate() error }

func TestValidate(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("é", n) } // runes, not bytes
	okImage := store.Image{BuildID: "b", Type: "t", Name: "n.bin", SHA256: sum}
	okOp := store.Operation{DeviceID: "d", ImageID: "i"}
	okBatch := store.Batch{BuildID: "b"}
	img := func(mod func(*store.Image)) store.Image { im := okImage; mod(&im); return im }
	op := func(mod func(*store.Operation)) store.Operation { o := okOp; mod(&o); return o }
	batch := func(mod func(*store.Batch)) store.Batch { b := okBatch; mod(&b); return b }

	valid := []validator{
		store.Category{Name: "c"},
		store.Category{Name: long(store.MaxNameLen), Organization: long(store.MaxIDLen)},
		store.Build{CategoryID: "c", Version: long(store.MaxVersionLen)},
		okImage,
		img(func(im *store.Image) { im.Boards = []string{"a", "b"}; im.Size = 0 }),
		store.Device{ID: "d"},
		store.DeviceFirmware{DeviceID: "d", ImageID: "i"},
		okBatch,
		batch(func(b *store.Batch) { b.State = status.BatchInProgress; b.Options = json.RawMessage(`{}`) }),
		batch(func(b *store.Batch) { b.State = status.BatchIdle }),
		okOp,
		op(func(o *store.Operation) {
			o.State = status.Pending
			o.Options = json.RawMessage(` {"a": [1]} `)
			o.Attempt = 2
		}),
	}
	for i, v := range valid {
		assert.NoError(t, v.Validate(), "valid[%d] %T", i, v)
	}

	for _, tc := range []struct {
		name  string
		v     validator
		field string
	}{
		{"category empty name", store.Category{Name: " \t"}, "Name"},
		{"category long name", store.Category{Name: long(store.MaxNameLen + 1)}, "Name"},
		{"category bad UTF-8", store.Category{Name: "a\xffb"}, "Name"},
		{"category NUL", store.Category{Name: "a\x00b"}, "Name"},
		{"category long ID", store.Category{ID: long(store.MaxIDLen + 1), Name: "c"}, "ID"},
		{"category long organization", store.Category{Organization: long(store.MaxIDLen + 1), Name: "c"}, "Organization"},
		{"category long description", store.Category{Name: "c", Description: long(store.MaxTextLen + 1)}, "Description"},
		{"build no category", store.Build{Version: "1"}, "CategoryID"},
		{"build empty version", store.Build{CategoryID: "c"}, "Version"},
		{"build long version", store.Build{CategoryID: "c", Version: long(store.MaxVersionLen + 1)}, "Version"},
		{"build long OS identifier", store.Build{CategoryID: "c", Version: "1", OSIdentifier: long(store.MaxOSIdentifierLen + 1)}, "OSIdentifier"},
		{"build long changelog", store.Build{CategoryID: "c", Version: "1", Changelog: long(store.MaxTextLen + 1)}, "Changelog"},
		{"image no build", img(func(im *store.Image) { im.BuildID = "" }), "BuildID"},
		{"image no type", img(func(im *store.Image) { im.Type = "" }), "Type"},
		{"image long type", img(func(im *store.Image) { im.Type = long(store.MaxImageTypeLen + 1) }), "Type"},
		{"image no name", img(func(im *store.Image) { im.Name = "" }), "Name"},
		{"image name with slash", img(func(im *store.Image) { im.Name = "a/b" }), "Name"},
		{"image name with backslash", img(func(im *store.Image) { im.Name = `a\b` }), "Name"},
		{"image name dot", img(func(im *store.Image) { im.Name = "." }), "Name"},
		{"image name dotdot", img(func(im *store.Image) { im.Name = ".." }), "Name"},
		{"image negative size", img(func(im *store.Image) { im.Size = -1 }), "Size"},
		{"image SHA256 empty", img(func(im *store.Image) { im.SHA256 = "" }), "SHA256"},
		{"image SHA256 upper", img(func(im *store.Image) { im.SHA256 = strings.ToUpper(sum) }), "SHA256"},
		{"image SHA256 short", img(func(im *store.Image) { im.SHA256 = sum[:62] }), "SHA256"},
		{"image SHA256 long", img(func(im *store.Image) { im.SHA256 = sum + "00" }), "SHA256"},
		{"image SHA256 not hex", img(func(im *store.Image) { im.SHA256 = "zz" + sum[2:] }), "SHA256"},
		{"image empty board", img(func(im *store.Image) { im.Boards = []string{""} }), "Boards"},
		{"device no ID", store.Device{Name: "x"}, "ID"},
		{"device long address", store.Device{ID: "d", Address: long(store.MaxNameLen + 1)}, "Address"},
		{"device long OS identifier", store.Device{ID: "d", OSIdentifier: long(store.MaxOSIdentifierLen + 1)}, "OSIdentifier"},
		{"device bad UTF-8 board", store.Device{ID: "d", BoardName: "\xff"}, "BoardName"},
		{"firmware no device", store.DeviceFirmware{ImageID: "i"}, "DeviceID"},
		{"firmware no image", store.DeviceFirmware{DeviceID: "d"}, "ImageID"},
		{"batch no build", store.Batch{}, "BuildID"},
		{"batch long name", batch(func(b *store.Batch) { b.Name = long(store.MaxNameLen + 1) }), "Name"},
		{"batch starts paused", batch(func(b *store.Batch) { b.State = status.BatchPaused }), "State"},
		{"batch starts success", batch(func(b *store.Batch) { b.State = status.BatchSuccess }), "State"},
		{"batch options array", batch(func(b *store.Batch) { b.Options = json.RawMessage(`[]`) }), "Options"},
		{"batch options null", batch(func(b *store.Batch) { b.Options = json.RawMessage(`null`) }), "Options"},
		{"batch options broken", batch(func(b *store.Batch) { b.Options = json.RawMessage(`{`) }), "Options"},
		{"operation no device", op(func(o *store.Operation) { o.DeviceID = "" }), "DeviceID"},
		{"operation no image", op(func(o *store.Operation) { o.ImageID = "" }), "ImageID"},
		{"operation long batch", op(func(o *store.Operation) { o.BatchID = long(store.MaxIDLen + 1) }), "BatchID"},
		{"operation in progress", op(func(o *store.Operation) { o.State = status.InProgress }), "State"},
		{"operation unknown state", op(func(o *store.Operation) { o.State = "bogus" }), "State"},
		{"operation phase", op(func(o *store.Operation) { o.Phase = status.PhaseConnecting }), "Phase"},
		{"operation progress", op(func(o *store.Operation) { o.Progress = 1 }), "Progress"},
		{"operation reason", op(func(o *store.Operation) { o.Reason = status.ReasonTimeout }), "Reason"},
		{"operation negative attempt", op(func(o *store.Operation) { o.Attempt = -1 }), "Attempt"},
		{"operation options string", op(func(o *store.Operation) { o.Options = json.RawMessage(`"x"`) }), "Options"},
		{"operation options too long", op(func(o *store.Operation) {
			o.Options = json.RawMessage(`{"a":"` + strings.Repeat("x", store.MaxOptionsLen) + `"}`)
		}), "Options"},
	} {
		requireField(t, tc.v.Validate(), tc.field)
	}
}

func TestPageValidate(t *testing.T) {
	t.Parallel()
	assert.NoError(t, store.Page{}.Validate())
	assert.NoError(t, store.Page{After: "x", Limit: 10}.Validate())
	requireField(t, store.Page{Limit: -1}.Validate(), "Limit")
}

func TestValidationError(t *testing.T) {
	t.Parallel()
	var err error = &store.ValidationError{Record: "build", Field: "Version", Problem: "too long"}
	assert.ErrorIs(t, err, store.ErrInvalid)
	assert.NotErrorIs(t, err, store.ErrConflict)
	wrapped := fmt.Errorf("creating: %w", err)
	assert.ErrorIs(t, wrapped, store.ErrInvalid)
	assert.Equal(t, "store: invalid build Version: too long", err.Error())
	for _, s := range []error{store.ErrNotFound, store.ErrConflict, store.ErrInvalid, store.ErrInvalidTransition,
		store.ErrDeviceBusy, store.ErrOrganizationMismatch} {
		assert.True(t, strings.HasPrefix(s.Error(), "store: "), "%v names its package", s)
	}
}

func TestTruncateLogLine(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "short", store.TruncateLogLine("short"))
	assert.Equal(t, "", store.TruncateLogLine(""))
	exact := strings.Repeat("é", store.MaxLogLineLen)
	assert.Equal(t, exact, store.TruncateLogLine(exact), "a line at the limit is whole")
	long := strings.Repeat("é", store.MaxLogLineLen+1)
	got := store.TruncateLogLine(long)
	assert.Equal(t, store.MaxLogLineLen, utf8.RuneCountInString(got), "cut to the limit, in characters")
	assert.True(t, strings.HasSuffix(got, "[truncated]"), "the cut is marked")
	assert.True(t, strings.HasPrefix(got, strings.Repeat("é", 100)))
	assert.True(t, utf8.ValidString(got))
	assert.Equal(t, "ab", store.TruncateLogLine("a\x00b"), "NUL removed")
	bad := store.TruncateLogLine("a\xffb")
	assert.True(t, utf8.ValidString(bad))
	assert.Equal(t, "a\uFFFDb", bad)
}

func TestNewID(t *testing.T) {
	t.Parallel()
	prev := ""
	seen := map[string]bool{}
	for range 1000 {
		id := store.NewID()
		require.Len(t, id, 36)
		require.Greater(t, id, prev, "IDs sort in creation order")
		require.False(t, seen[id])
		seen[id] = true
		prev = id
	}
}

func TestApplyUpdate(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	base := store.Operation{ID: "op", State: status.Pending, Version: 1}
	running := base
	running.State, running.Phase, running.StartedAt, running.Version = status.InProgress, status.PhaseUpload, now.Add(-time.Hour), 2
	flashing := running
	flashing.Phase = status.PhaseFlashing

	got, err := store.ApplyUpdate(base, store.OperationUpdate{From: status.Pending, State: status.InProgress,
		Phase: store.Ptr(status.PhaseConnecting), Progress: store.Ptr(10), Attempt: store.Ptr(1), Reason: status.ReasonConnectionFailed}, now)
	require.NoError(t, err)
	want := base
	want.State, want.Phase, want.Progress, want.Attempt, want.Reason = status.InProgress, status.PhaseConnecting, 10, 1, status.ReasonConnectionFailed
	want.StartedAt, want.UpdatedAt, want.Version = now, now, 2
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("start (-want +got):\n%s", d)
	}

	got, err = store.ApplyUpdate(running, store.OperationUpdate{From: status.InProgress, State: status.Success}, now)
	require.NoError(t, err)
	assert.Equal(t, now, got.FinishedAt)
	assert.Equal(t, running.StartedAt, got.StartedAt, "StartedAt kept")
	assert.Equal(t, int64(3), got.Version)

	for _, tc := range []struct {
		name string
		op   store.Operation
		u    store.OperationUpdate
	}{
		{"wrong from", running, store.OperationUpdate{From: status.Pending, State: status.Cancelled}},
		{"terminal", func() store.Operation { o := running; o.State = status.Failed; return o }(), store.OperationUpdate{From: status.Failed}},
		{"not allowed", base, store.OperationUpdate{From: status.Pending, State: status.Success}},
		{"cancel at flashing", flashing, store.OperationUpdate{From: status.InProgress, State: status.Cancelled}},
		{"abort at flashing", flashing, store.OperationUpdate{From: status.InProgress, State: status.Aborted}},
		{"phase back", flashing, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseUpload)}},
		{"phase none after flashing", flashing, store.OperationUpdate{From: status.InProgress, Phase: store.Ptr(status.PhaseNone)}},
		{"phase on pending", base, store.OperationUpdate{From: status.Pending, Phase: store.Ptr(status.PhaseConnecting)}},
		{"phase with cancel", running, store.OperationUpdate{From: status.InProgress, State: status.Cancelled, Phase: store.Ptr(status.PhaseImageTest)}},
	} {
		got, err := store.ApplyUpdate(tc.op, tc.u, now)
		require.ErrorIs(t, err, store.ErrInvalidTransition, tc.name)
		assert.Equal(t, tc.op, got, "%s: returns the operation unchanged", tc.name)
	}
	for _, tc := range []struct {
		u     store.OperationUpdate
		field string
	}{
		{store.OperationUpdate{From: "x"}, "From"},
		{store.OperationUpdate{From: status.Pending, State: "x"}, "State"},
		{store.OperationUpdate{From: status.Pending, Reason: "x"}, "Reason"},
		{store.OperationUpdate{From: status.Pending, Phase: store.Ptr(status.Phase("x"))}, "Phase"},
		{store.OperationUpdate{From: status.Pending, Progress: store.Ptr(101)}, "Progress"},
		{store.OperationUpdate{From: status.Pending, Progress: store.Ptr(-1)}, "Progress"},
		{store.OperationUpdate{From: status.Pending, Attempt: store.Ptr(-1)}, "Attempt"},
	} {
		_, err := store.ApplyUpdate(base, tc.u, now)
		requireField(t, err, tc.field)
	}
}

func TestCheckProgress(t *testing.T) {
	t.Parallel()
	running := store.Operation{ID: "op", State: status.InProgress}
	assert.NoError(t, store.CheckProgress(running, 0, 0))
	assert.NoError(t, store.CheckProgress(running, 0, 100))
	requireField(t, store.CheckProgress(running, 0, 101), "Progress")
	requireField(t, store.CheckProgress(running, 0, -1), "Progress")
	for _, s := range status.States() {
		if s != status.InProgress {
			assert.ErrorIs(t, store.CheckProgress(store.Operation{State: s}, 0, 50), store.ErrInvalidTransition, "%s", s)
		}
	}
}

func TestNextBatchState(t *testing.T) {
	t.Parallel()
	running := status.Counts{status.Pending: 1, status.Success: 1}
	done := status.Counts{status.Success: 1, status.Failed: 1}
	assert.Equal(t, status.BatchPaused, store.NextBatchState(status.BatchPaused, running), "paused while work remains")
	assert.Equal(t, status.BatchFailed, store.NextBatchState(status.BatchPaused, done), "ends when all ended")
	assert.Equal(t, status.BatchIdle, store.NextBatchState(status.BatchIdle, running), "idle until started")
	assert.Equal(t, status.BatchCancelled, store.NextBatchState(status.BatchIdle, status.Counts{status.Cancelled: 2}), "ends when all ended")
	assert.Equal(t, status.BatchInProgress, store.NextBatchState(status.BatchInProgress, running))
	assert.Equal(t, status.BatchSuccess, store.NextBatchState(status.BatchInProgress, status.Counts{status.Success: 2}))
}

func TestCheckBatchStateChange(t *testing.T) {
	t.Parallel()
	for _, from := range status.BatchStates() {
		for _, to := range status.BatchStates() {
			err := store.CheckBatchStateChange(store.Batch{ID: "b", State: from}, from, to)
			ok := (from == status.BatchInProgress && to == status.BatchPaused) || (from == status.BatchPaused && to == status.BatchInProgress) ||
				(from == status.BatchIdle && to == status.BatchInProgress)
			if ok {
				assert.NoError(t, err, "%s → %s", from, to)
			} else {
				assert.ErrorIs(t, err, store.ErrInvalidTransition, "%s → %s", from, to)
			}
		}
	}
	assert.ErrorIs(t, store.CheckBatchStateChange(store.Batch{State: status.BatchPaused}, status.BatchInProgress, status.BatchPaused),
		store.ErrInvalidTransition, "compare-and-set on from")
	requireField(t, store.CheckBatchStateChange(store.Batch{State: status.BatchInProgress}, status.BatchInProgress, "bogus"), "State")
	requireField(t, store.CheckBatchStateChange(store.Batch{State: status.BatchInProgress}, "bogus", status.BatchPaused), "State")
}

func TestImageFitsOrganization(t *testing.T) {
	t.Parallel()
	assert.True(t, store.ImageFitsOrganization("", "a"))
	assert.True(t, store.ImageFitsOrganization("", ""))
	assert.True(t, store.ImageFitsOrganization("a", "a"))
	assert.False(t, store.ImageFitsOrganization("a", "b"))
	assert.False(t, store.ImageFitsOrganization("a", ""), "an organization's image never reaches an unowned device")
}
