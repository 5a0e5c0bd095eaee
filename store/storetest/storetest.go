package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// DefaultRounds is the default size of the concurrency subtests: how many
// operations race, or how many goroutines do.
const DefaultRounds = 50

// Options tunes the suite. A nil *Options is the same as the zero value.
type Options struct {
	// SkipConcurrency skips the Concurrency group, for a quick run while
	// developing an adapter. A store that skips it does not conform.
	SkipConcurrency bool
	// Rounds sets the size of the concurrency subtests (racing operations,
	// goroutines). Defaults to DefaultRounds; the AppendLog race always uses
	// at least 100 goroutines.
	Rounds int
}

func (o *Options) rounds() int {
	if o == nil || o.Rounds <= 0 {
		return DefaultRounds
	}
	return o.Rounds
}

// test is one contract point.
type test struct {
	name string
	fn   func(t *testing.T, f *fixture)
}

type group struct {
	name  string
	tests []test
}

// Run runs the whole suite on stores made by newStore, which is called once
// per subtest and must return a fresh, empty store. Every subtest calls
// t.Parallel.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts *Options) {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	groups := []group{
		{"Category", categoryTests()},
		{"Build", buildTests()},
		{"Image", imageTests()},
		{"Device", deviceTests()},
		{"DeviceFirmware", deviceFirmwareTests()},
		{"Operation", operationTests()},
		{"Transition", transitionTests()},
		{"Progress", progressTests()},
		{"Log", logTests()},
		{"Batch", batchTests()},
		{"Organization", organizationTests()},
		{"List", listTests()},
		{"Copy", copyTests()},
		{"Invalid", invalidTests()},
		{"Claims", claimTests(opts.rounds())},
		{"Rollout", rolloutTests()},
	}
	if !opts.SkipConcurrency {
		groups = append(groups, group{"Concurrency", concurrencyTests(opts.rounds())})
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					s := newStore(t)
					require.NotNil(t, s, "newStore returned nil")
					tc.fn(t, &fixture{t: t, ctx: t.Context(), s: s, n: new(atomic.Int64)})
				})
			}
		})
	}
}

// fixture is what one subtest works with: its store and helpers that create
// records, failing the test on error.
type fixture struct {
	t   *testing.T
	ctx context.Context
	s   store.Store
	n   *atomic.Int64 // shared with sub-fixtures
}

// with returns a fixture on the same store for the subtest t.
func (f *fixture) with(t *testing.T) *fixture {
	return &fixture{t: t, ctx: t.Context(), s: f.s, n: f.n}
}

// uniq returns prefix with a number unique within the fixture.
func (f *fixture) uniq(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, f.n.Add(1))
}

func sha(seed string) string {
	const hexdigits = "0123456789abcdef"
	var b strings.Builder
	h := uint32(2166136261)
	for i := range 64 {
		for _, c := range []byte(seed) {
			h = (h ^ uint32(c)) * 16777619
		}
		h = (h ^ uint32(i)) * 16777619
		b.WriteByte(hexdigits[h%16])
	}
	return b.String()
}

func (f *fixture) category(org string) store.Category {
	f.t.Helper()
	c, err := f.s.CreateCategory(f.ctx, store.Category{Organization: org, Name: f.uniq("category")})
	require.NoError(f.t, err)
	return c
}

func (f *fixture) build(categoryID string) store.Build {
	f.t.Helper()
	b, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: categoryID, Version: f.uniq("v")})
	require.NoError(f.t, err)
	return b
}

func (f *fixture) image(buildID string) store.Image {
	f.t.Helper()
	typ := f.uniq("type")
	im, err := f.s.CreateImage(f.ctx, store.Image{
		BuildID: buildID, Type: typ, Name: typ + ".bin", Size: 1024, SHA256: sha(typ),
	})
	require.NoError(f.t, err)
	return im
}

// imageOf creates a category of org, a build and an image.
func (f *fixture) imageOf(org string) store.Image {
	f.t.Helper()
	return f.image(f.build(f.category(org).ID).ID)
}

func (f *fixture) device(org string) store.Device {
	f.t.Helper()
	d, err := f.s.PutDevice(f.ctx, store.Device{
		ID: f.uniq("device"), Organization: org, Name: "router", Connection: "openwrt-ssh", Active: true,
	})
	require.NoError(f.t, err)
	return d
}

func (f *fixture) op(deviceID, imageID string) store.Operation {
	f.t.Helper()
	op, err := f.s.CreateOperation(f.ctx, store.Operation{DeviceID: deviceID, ImageID: imageID})
	require.NoError(f.t, err)
	return op
}

// newOp creates an operation on a new device of org with a new image of org.
func (f *fixture) newOp(org string) store.Operation {
	f.t.Helper()
	return f.op(f.device(org).ID, f.imageOf(org).ID)
}

func (f *fixture) update(id string, u store.OperationUpdate) store.Operation {
	f.t.Helper()
	op, err := f.s.UpdateOperation(f.ctx, id, u)
	require.NoError(f.t, err)
	return op
}

func (f *fixture) get(id string) store.Operation {
	f.t.Helper()
	op, err := f.s.Operation(f.ctx, id)
	require.NoError(f.t, err)
	return op
}

// start moves a pending operation to in-progress in phase p.
func (f *fixture) start(id string, p status.Phase) store.Operation {
	f.t.Helper()
	return f.update(id, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: &p})
}

// drive moves a pending operation to state to (terminal states through
// in-progress), with phase p while in progress.
func (f *fixture) drive(id string, to status.State, p status.Phase) store.Operation {
	f.t.Helper()
	op := f.get(id)
	if to == status.Pending {
		return op
	}
	op = f.start(id, p)
	if to == status.InProgress {
		return op
	}
	return f.update(id, store.OperationUpdate{From: status.InProgress, State: to, Reason: reasonFor(to)})
}

func reasonFor(s status.State) status.Reason {
	switch s {
	case status.Failed:
		return status.ReasonFlashFailed
	case status.Aborted:
		return status.ReasonImageInvalid
	case status.Cancelled:
		return status.ReasonCancelledByUser
	}
	return status.ReasonNone
}

func (f *fixture) batch(id string) store.Batch {
	f.t.Helper()
	b, err := f.s.Batch(f.ctx, id)
	require.NoError(f.t, err)
	return b
}

// requireInvalid asserts err is ErrInvalid and a *store.ValidationError
// naming field.
func requireInvalid(t *testing.T, err error, field string) {
	t.Helper()
	require.ErrorIs(t, err, store.ErrInvalid)
	var ve *store.ValidationError
	require.True(t, errors.As(err, &ve), "error %v is not a *store.ValidationError", err)
	require.Equal(t, field, ve.Field, "ValidationError.Field of %v", err)
}

// nonZero drops zero counts, so Counts with and without them compare equal.
func nonZero(c status.Counts) map[status.State]int {
	out := map[status.State]int{}
	for k, v := range c {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// cmpRecords compares records: timestamps to the millisecond (databases
// round them), Counts without zero entries, empty and nil slices alike.
var cmpRecords = cmp.Options{
	cmpopts.EquateApproxTime(time.Millisecond),
	cmpopts.EquateEmpty(),
	cmp.Transformer("nonZero", nonZero),
}

func requireSame(t *testing.T, want, got any, msgAndArgs ...any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmpRecords); d != "" {
		require.Fail(t, "records differ (-want +got):\n"+d, msgAndArgs...)
	}
}

// ignoreTimes ignores the timestamps a store sets itself.
var ignoreTimes = cmpopts.IgnoreFields(store.Operation{}, "UpdatedAt", "CreatedAt", "StartedAt", "FinishedAt")

// snapshot is everything a store holds, as its listings show it.
type snapshot struct {
	Categories []store.Category
	Builds     []store.Build
	Images     []store.Image
	Devices    []store.Device
	Firmware   []store.DeviceFirmware
	Batches    []store.Batch
	Operations []store.Operation
	Logs       map[string][]store.LogEntry
}

func (f *fixture) snapshot() snapshot {
	f.t.Helper()
	var sn snapshot
	var err error
	sn.Categories, err = f.s.ListCategories(f.ctx, store.CategoryFilter{})
	require.NoError(f.t, err)
	sn.Builds, err = f.s.ListBuilds(f.ctx, store.BuildFilter{})
	require.NoError(f.t, err)
	sn.Images, err = f.s.ListImages(f.ctx, store.ImageFilter{})
	require.NoError(f.t, err)
	sn.Devices, err = f.s.ListDevices(f.ctx, store.DeviceFilter{})
	require.NoError(f.t, err)
	for _, d := range sn.Devices {
		df, err := f.s.DeviceFirmware(f.ctx, d.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		require.NoError(f.t, err)
		sn.Firmware = append(sn.Firmware, df)
	}
	sn.Batches, err = f.s.ListBatches(f.ctx, store.BatchFilter{})
	require.NoError(f.t, err)
	sn.Operations, err = f.s.ListOperations(f.ctx, store.OperationFilter{})
	require.NoError(f.t, err)
	sn.Logs = map[string][]store.LogEntry{}
	for _, op := range sn.Operations {
		sn.Logs[op.ID], err = f.s.Logs(f.ctx, op.ID, 0, 0)
		require.NoError(f.t, err)
	}
	return sn
}

// requireUnchanged asserts the store holds what before shows.
func (f *fixture) requireUnchanged(before snapshot) {
	f.t.Helper()
	if d := cmp.Diff(before, f.snapshot(), cmpopts.EquateEmpty(), cmp.Transformer("nonZero", nonZero)); d != "" {
		require.Fail(f.t, "a failed call changed the store (-before +after):\n"+d)
	}
}
