package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

func organizationTests() []test {
	return []test{
		{"SharedCategoryFitsEveryOrganization", func(t *testing.T, f *fixture) {
			im := f.imageOf("")
			require.Empty(t, im.Organization)
			for _, org := range []string{"org-a", "org-b"} {
				d := f.device(org)
				op := f.op(d.ID, im.ID)
				assert.Equal(t, org, op.Organization)
				_, err := f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: im.ID})
				require.NoError(t, err)
			}
		}},
		{"OtherOrganizationRefusedEverywhere", func(t *testing.T, f *fixture) {
			imA := f.imageOf("org-a")
			dB, unowned := f.device("org-b"), f.device("")
			before := f.snapshot()
			_, err := f.s.CreateOperation(f.ctx, store.Operation{DeviceID: dB.ID, ImageID: imA.ID})
			require.ErrorIs(t, err, store.ErrOrganizationMismatch, "CreateOperation")
			_, err = f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: dB.ID, ImageID: imA.ID})
			require.ErrorIs(t, err, store.ErrOrganizationMismatch, "PutDeviceFirmware")
			for _, org := range []string{"org-a", "org-b", ""} {
				_, _, err = f.s.CreateBatch(f.ctx, store.Batch{Organization: org, BuildID: imA.BuildID},
					[]store.Operation{{DeviceID: dB.ID, ImageID: imA.ID}})
				require.ErrorIs(t, err, store.ErrOrganizationMismatch, "CreateBatch of organization %q", org)
			}
			_, err = f.s.CreateOperation(f.ctx, store.Operation{DeviceID: unowned.ID, ImageID: imA.ID})
			require.ErrorIs(t, err, store.ErrOrganizationMismatch, "a device without organization only takes shared images")
			f.requireUnchanged(before)
		}},
		{"BatchTakesDevicesOfItsOrganization", func(t *testing.T, f *fixture) {
			im := f.imageOf("")
			before := f.snapshot()
			_, _, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID},
				[]store.Operation{{DeviceID: f.device("org-a").ID, ImageID: im.ID}, {DeviceID: f.device("org-b").ID, ImageID: im.ID}})
			require.ErrorIs(t, err, store.ErrOrganizationMismatch)
			after := f.snapshot()
			assert.Empty(t, after.Batches)
			assert.Empty(t, after.Operations)
			assert.Len(t, after.Devices, len(before.Devices)+2)
		}},
		{"FilledFromParents", func(t *testing.T, f *fixture) {
			for _, org := range []string{"org-a", ""} {
				c := f.category(org)
				b := f.build(c.ID)
				im := f.image(b.ID)
				assert.Equal(t, org, b.Organization, "Build.Organization from the category")
				assert.Equal(t, org, im.Organization, "Image.Organization from the build")
				d := f.device("org-a")
				op := f.op(d.ID, im.ID)
				assert.Equal(t, "org-a", op.Organization, "Operation.Organization from the device")
			}
		}},
	}
}

// walk lists every page of size limit with list and returns the records'
// IDs, failing if a page is out of order or overlaps the previous one.
func walk[T any](t *testing.T, limit int, id func(T) string, list func(store.Page) ([]T, error)) []string {
	t.Helper()
	var all []string
	after := ""
	for range 10000 {
		page, err := list(store.Page{After: after, Limit: limit})
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), limit, "page larger than Limit")
		if len(page) == 0 {
			return all
		}
		for _, r := range page {
			require.Greater(t, id(r), after, "page out of ascending ID order")
			after = id(r)
			all = append(all, after)
		}
	}
	require.Fail(t, "pagination does not end")
	return nil
}

func ids[T any](recs []T, id func(T) string) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = id(r)
	}
	return out
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	if s == nil {
		s = []string{}
	}
	return s
}

func catID(c store.Category) string  { return c.ID }
func buildID(b store.Build) string   { return b.ID }
func imageID(im store.Image) string  { return im.ID }
func devID(d store.Device) string    { return d.ID }
func batchID(b store.Batch) string   { return b.ID }
func opID(op store.Operation) string { return op.ID }

func listTests() []test {
	return []test{
		{"Categories", func(t *testing.T, f *fixture) {
			a1, a2, b1, s1 := f.category("org-a"), f.category("org-a"), f.category("org-b"), f.category("")
			for _, tc := range []struct {
				name string
				f    store.CategoryFilter
				want []string
			}{
				{"all", store.CategoryFilter{}, sorted(a1.ID, a2.ID, b1.ID, s1.ID)},
				{"org", store.CategoryFilter{Organization: "org-a"}, sorted(a1.ID, a2.ID)},
				{"org+shared", store.CategoryFilter{Organization: "org-a", IncludeShared: true}, sorted(a1.ID, a2.ID, s1.ID)},
				{"name", store.CategoryFilter{Name: a2.Name}, sorted(a2.ID)},
				{"name+org mismatch", store.CategoryFilter{Name: a2.Name, Organization: "org-b"}, sorted()},
				{"unknown org", store.CategoryFilter{Organization: "org-z"}, sorted()},
			} {
				got, err := f.s.ListCategories(f.ctx, tc.f)
				require.NoError(t, err)
				assert.Equal(t, tc.want, sorted(ids(got, catID)...), tc.name)
				assert.Equal(t, tc.want, ids(got, catID), "%s: ascending ID order", tc.name)
			}
		}},
		{"Builds", func(t *testing.T, f *fixture) {
			ca, cs := f.category("org-a"), f.category("")
			a1, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: ca.ID, Version: "1", OSIdentifier: "OpenWrt 1"})
			require.NoError(t, err)
			a2 := f.build(ca.ID)
			b1 := f.build(f.category("org-b").ID)
			s1, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: cs.ID, Version: "1", OSIdentifier: "OpenWrt 1"})
			require.NoError(t, err)
			for _, tc := range []struct {
				name string
				f    store.BuildFilter
				want []string
			}{
				{"all", store.BuildFilter{}, sorted(a1.ID, a2.ID, b1.ID, s1.ID)},
				{"org", store.BuildFilter{Organization: "org-a"}, sorted(a1.ID, a2.ID)},
				{"org+shared", store.BuildFilter{Organization: "org-a", IncludeShared: true}, sorted(a1.ID, a2.ID, s1.ID)},
				{"category", store.BuildFilter{CategoryID: ca.ID}, sorted(a1.ID, a2.ID)},
				{"os identifier", store.BuildFilter{OSIdentifier: "OpenWrt 1"}, sorted(a1.ID, s1.ID)},
				{"os identifier+org", store.BuildFilter{OSIdentifier: "OpenWrt 1", Organization: "org-a"}, sorted(a1.ID)},
			} {
				got, err := f.s.ListBuilds(f.ctx, tc.f)
				require.NoError(t, err)
				assert.Equal(t, tc.want, ids(got, buildID), tc.name)
			}
		}},
		{"Images", func(t *testing.T, f *fixture) {
			ba := f.build(f.category("org-a").ID)
			a1, a2 := f.image(ba.ID), f.image(ba.ID)
			b1 := f.imageOf("org-b")
			s1 := f.imageOf("")
			for _, tc := range []struct {
				name string
				f    store.ImageFilter
				want []string
			}{
				{"all", store.ImageFilter{}, sorted(a1.ID, a2.ID, b1.ID, s1.ID)},
				{"org", store.ImageFilter{Organization: "org-b"}, sorted(b1.ID)},
				{"org+shared", store.ImageFilter{Organization: "org-b", IncludeShared: true}, sorted(b1.ID, s1.ID)},
				{"build", store.ImageFilter{BuildID: ba.ID}, sorted(a1.ID, a2.ID)},
				{"type", store.ImageFilter{Type: a2.Type}, sorted(a2.ID)},
			} {
				got, err := f.s.ListImages(f.ctx, tc.f)
				require.NoError(t, err)
				assert.Equal(t, tc.want, ids(got, imageID), tc.name)
			}
		}},
		{"Devices", func(t *testing.T, f *fixture) {
			put := func(d store.Device) store.Device {
				d, err := f.s.PutDevice(f.ctx, d)
				require.NoError(t, err)
				return d
			}
			d1 := put(store.Device{ID: "d1", Organization: "org-a", Group: "aps", Location: "hq", OSIdentifier: "OpenWrt 1"})
			d2 := put(store.Device{ID: "d2", Organization: "org-a", Group: "routers", Location: "hq"})
			d3 := put(store.Device{ID: "d3", Organization: "org-b", Group: "aps", Location: "branch", OSIdentifier: "OpenWrt 1"})
			for _, tc := range []struct {
				name string
				f    store.DeviceFilter
				want []string
			}{
				{"all", store.DeviceFilter{}, sorted(d1.ID, d2.ID, d3.ID)},
				{"org", store.DeviceFilter{Organization: "org-a"}, sorted(d1.ID, d2.ID)},
				{"group", store.DeviceFilter{Group: "aps"}, sorted(d1.ID, d3.ID)},
				{"location", store.DeviceFilter{Location: "hq"}, sorted(d1.ID, d2.ID)},
				{"os identifier", store.DeviceFilter{OSIdentifier: "OpenWrt 1"}, sorted(d1.ID, d3.ID)},
				{"combined", store.DeviceFilter{Organization: "org-a", Group: "aps", Location: "hq"}, sorted(d1.ID)},
			} {
				got, err := f.s.ListDevices(f.ctx, tc.f)
				require.NoError(t, err)
				assert.Equal(t, tc.want, ids(got, devID), tc.name)
			}
		}},
		{"Batches", func(t *testing.T, f *fixture) {
			a1, a1ops := f.newBatch("org-a", 1)
			a2, _ := f.newIdleBatch("org-a", 1)
			b1, _ := f.newIdleBatch("org-b", 1)
			f.start(a1ops[0].ID, status.PhaseConnecting)
			for _, tc := range []struct {
				name string
				f    store.BatchFilter
				want []string
			}{
				{"all", store.BatchFilter{}, sorted(a1.ID, a2.ID, b1.ID)},
				{"org", store.BatchFilter{Organization: "org-a"}, sorted(a1.ID, a2.ID)},
				{"build", store.BatchFilter{BuildID: b1.BuildID}, sorted(b1.ID)},
				{"state", store.BatchFilter{States: []status.BatchState{status.BatchInProgress}}, sorted(a1.ID)},
				{"states", store.BatchFilter{States: []status.BatchState{status.BatchIdle, status.BatchInProgress}}, sorted(a1.ID, a2.ID, b1.ID)},
				{"states+org", store.BatchFilter{Organization: "org-b", States: []status.BatchState{status.BatchIdle}}, sorted(b1.ID)},
			} {
				got, err := f.s.ListBatches(f.ctx, tc.f)
				require.NoError(t, err)
				assert.Equal(t, tc.want, ids(got, batchID), tc.name)
			}
		}},
		{"Operations", func(t *testing.T, f *fixture) {
			put := func(org, group, loc string) store.Device {
				d, err := f.s.PutDevice(f.ctx, store.Device{ID: f.uniq("dev"), Organization: org, Group: group, Location: loc})
				require.NoError(t, err)
				return d
			}
			imA, imS := f.imageOf("org-a"), f.imageOf("")
			imA2 := f.image(imA.BuildID)
			dA1, dA2, dB := put("org-a", "aps", "hq"), put("org-a", "routers", "hq"), put("org-b", "aps", "branch")
			o1 := f.op(dA1.ID, imA.ID)
			o2 := f.op(dA2.ID, imA2.ID)
			o3 := f.op(dB.ID, imS.ID)
			f.drive(o1.ID, status.Success, status.PhaseVerifying)
			o4 := f.op(dA1.ID, imS.ID) // second operation of dA1
			f.start(o2.ID, status.PhaseConnecting)
			dA3 := put("org-a", "aps", "lab")
			bt, bops, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: imA.BuildID},
				[]store.Operation{{DeviceID: dA3.ID, ImageID: imA.ID}})
			require.NoError(t, err)
			o5 := bops[0]
			for _, tc := range []struct {
				name string
				f    store.OperationFilter
				want []string
			}{
				{"all", store.OperationFilter{}, sorted(o1.ID, o2.ID, o3.ID, o4.ID, o5.ID)},
				{"org", store.OperationFilter{Organization: "org-a"}, sorted(o1.ID, o2.ID, o4.ID, o5.ID)},
				{"build", store.OperationFilter{BuildID: imA.BuildID}, sorted(o1.ID, o2.ID, o5.ID)},
				{"image", store.OperationFilter{ImageID: imS.ID}, sorted(o3.ID, o4.ID)},
				{"batch", store.OperationFilter{BatchID: bt.ID}, sorted(o5.ID)},
				{"device", store.OperationFilter{DeviceID: dA1.ID}, sorted(o1.ID, o4.ID)},
				{"state", store.OperationFilter{States: []status.State{status.Pending}}, sorted(o3.ID, o4.ID, o5.ID)},
				{"states", store.OperationFilter{States: []status.State{status.Success, status.InProgress}}, sorted(o1.ID, o2.ID)},
				{"group", store.OperationFilter{Group: "aps"}, sorted(o1.ID, o3.ID, o4.ID, o5.ID)},
				{"location", store.OperationFilter{Location: "hq"}, sorted(o1.ID, o2.ID, o4.ID)},
				{"group+location+state", store.OperationFilter{Group: "aps", Location: "hq", States: []status.State{status.Pending}}, sorted(o4.ID)},
				{"device+batch", store.OperationFilter{DeviceID: dA1.ID, BatchID: bt.ID}, sorted()},
			} {
				got, err := f.s.ListOperations(f.ctx, tc.f)
				require.NoError(t, err)
				assert.Equal(t, tc.want, ids(got, opID), tc.name)
			}
		}},
		{"PaginationWalksEveryRecordOnce", func(t *testing.T, f *fixture) {
			const n = 23
			var cats, devs, ops []string
			im := f.imageOf("") // its category is shared: not among org-a's
			for i := range n {
				cats = append(cats, f.category("org-a").ID)
				// device IDs are the host's: not in creation order
				d, err := f.s.PutDevice(f.ctx, store.Device{ID: fmt.Sprintf("dev-%02d", (i*7)%n), Organization: "org-a"})
				require.NoError(t, err)
				devs = append(devs, d.ID)
				ops = append(ops, f.op(d.ID, im.ID).ID)
			}
			for _, limit := range []int{1, 5, n, n + 1} {
				assert.Equal(t, sorted(cats...), walk(t, limit, catID, func(p store.Page) ([]store.Category, error) {
					return f.s.ListCategories(f.ctx, store.CategoryFilter{Organization: "org-a", Page: p})
				}), "categories, limit %d", limit)
				assert.Equal(t, sorted(devs...), walk(t, limit, devID, func(p store.Page) ([]store.Device, error) {
					return f.s.ListDevices(f.ctx, store.DeviceFilter{Page: p})
				}), "devices, limit %d", limit)
				assert.Equal(t, sorted(ops...), walk(t, limit, opID, func(p store.Page) ([]store.Operation, error) {
					return f.s.ListOperations(f.ctx, store.OperationFilter{ImageID: im.ID, Page: p})
				}), "operations, limit %d", limit)
			}
			all, err := f.s.ListOperations(f.ctx, store.OperationFilter{})
			require.NoError(t, err)
			assert.Equal(t, sorted(ops...), ids(all, opID), "Limit 0 = everything, ascending")
		}},
		{"PaginationOfEveryKind", func(t *testing.T, f *fixture) {
			b, _ := f.newBatch("org-a", 2)
			b2, _ := f.newBatch("org-a", 1)
			assert.Equal(t, sorted(b.ID, b2.ID), walk(t, 1, batchID, func(p store.Page) ([]store.Batch, error) {
				return f.s.ListBatches(f.ctx, store.BatchFilter{Page: p})
			}))
			builds, err := f.s.ListBuilds(f.ctx, store.BuildFilter{})
			require.NoError(t, err)
			assert.Equal(t, ids(builds, buildID), walk(t, 1, buildID, func(p store.Page) ([]store.Build, error) {
				return f.s.ListBuilds(f.ctx, store.BuildFilter{Page: p})
			}))
			images, err := f.s.ListImages(f.ctx, store.ImageFilter{})
			require.NoError(t, err)
			assert.Equal(t, ids(images, imageID), walk(t, 1, imageID, func(p store.Page) ([]store.Image, error) {
				return f.s.ListImages(f.ctx, store.ImageFilter{Page: p})
			}))
		}},
		{"IDsFollowCreationOrder", func(t *testing.T, f *fixture) {
			var want []string
			for range 20 {
				want = append(want, f.newOp("org-a").ID)
			}
			all, err := f.s.ListOperations(f.ctx, store.OperationFilter{})
			require.NoError(t, err)
			assert.Equal(t, want, ids(all, opID), "store-assigned IDs sort in creation order")
		}},
		{"NegativeLimitRefused", func(t *testing.T, f *fixture) {
			p := store.Page{Limit: -1}
			var err error
			_, err = f.s.ListCategories(f.ctx, store.CategoryFilter{Page: p})
			requireInvalid(t, err, "Limit")
			_, err = f.s.ListBuilds(f.ctx, store.BuildFilter{Page: p})
			requireInvalid(t, err, "Limit")
			_, err = f.s.ListImages(f.ctx, store.ImageFilter{Page: p})
			requireInvalid(t, err, "Limit")
			_, err = f.s.ListDevices(f.ctx, store.DeviceFilter{Page: p})
			requireInvalid(t, err, "Limit")
			_, err = f.s.ListBatches(f.ctx, store.BatchFilter{Page: p})
			requireInvalid(t, err, "Limit")
			_, err = f.s.ListOperations(f.ctx, store.OperationFilter{Page: p})
			requireInvalid(t, err, "Limit")
		}},
	}
}

func copyTests() []test {
	return []test{
		{"OperationOptions", func(t *testing.T, f *fixture) {
			in := json.RawMessage(`{"a":1}`)
			op, err := f.s.CreateOperation(f.ctx, store.Operation{DeviceID: f.device("org-a").ID, ImageID: f.imageOf("org-a").ID, Options: in})
			require.NoError(t, err)
			copy(in, `{"b":2}`)
			copy(op.Options, `{"c":3}`)
			got := f.get(op.ID)
			assert.Equal(t, `{"a":1}`, string(got.Options), "neither the caller's input nor a returned record aliases the store")
			copy(got.Options, `{"d":4}`)
			listed, err := f.s.ListOperations(f.ctx, store.OperationFilter{})
			require.NoError(t, err)
			assert.Equal(t, `{"a":1}`, string(listed[0].Options))
			copy(listed[0].Options, `{"e":5}`)
			upd := f.update(op.ID, store.OperationUpdate{From: status.Pending})
			copy(upd.Options, `{"f":6}`)
			assert.Equal(t, `{"a":1}`, string(f.get(op.ID).Options))
		}},
		{"BatchOptionsAndCounts", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			in := json.RawMessage(`{"a":1}`)
			b, ops, err := f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID, Options: in},
				[]store.Operation{{DeviceID: f.device("org-a").ID, ImageID: im.ID, Options: json.RawMessage(`{"x":1}`)}})
			require.NoError(t, err)
			copy(in, `{"b":2}`)
			copy(b.Options, `{"c":3}`)
			copy(ops[0].Options, `{"y":2}`)
			b.Counts[status.Failed] = 7
			got := f.batch(b.ID)
			assert.Equal(t, `{"a":1}`, string(got.Options))
			assert.Equal(t, map[status.State]int{status.Pending: 1}, nonZero(got.Counts))
			assert.Equal(t, `{"x":1}`, string(f.get(ops[0].ID).Options))
			got.Counts[status.Success] = 3
			listed, err := f.s.ListBatches(f.ctx, store.BatchFilter{})
			require.NoError(t, err)
			assert.Equal(t, map[status.State]int{status.Pending: 1}, nonZero(listed[0].Counts))
		}},
		{"ImageBoards", func(t *testing.T, f *fixture) {
			b := f.build(f.category("org-a").ID)
			boards := []string{"tplink,archer-c7-v2", "tplink,archer-c7-v5"}
			im, err := f.s.CreateImage(f.ctx, store.Image{BuildID: b.ID, Type: "t", Name: "n", SHA256: sha("1"), Boards: boards})
			require.NoError(t, err)
			boards[0] = "changed-input"
			im.Boards[1] = "changed-output"
			got, err := f.s.Image(f.ctx, im.ID)
			require.NoError(t, err)
			assert.Equal(t, []string{"tplink,archer-c7-v2", "tplink,archer-c7-v5"}, got.Boards)
			got.Boards[0] = "changed-again"
			listed, err := f.s.ListImages(f.ctx, store.ImageFilter{})
			require.NoError(t, err)
			assert.Equal(t, []string{"tplink,archer-c7-v2", "tplink,archer-c7-v5"}, listed[0].Boards)
		}},
		{"Logs", func(t *testing.T, f *fixture) {
			op := f.newOp("org-a")
			require.NoError(t, f.s.AppendLog(f.ctx, op.ID, 0, "one", "two"))
			logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
			require.NoError(t, err)
			logs[0].Line = strings.ToUpper(logs[0].Line)
			_ = append(logs[:1], store.LogEntry{Line: "injected"})
			again, err := f.s.Logs(f.ctx, op.ID, 0, 0)
			require.NoError(t, err)
			assert.Equal(t, []string{"one", "two"}, lines(again))
		}},
	}
}
