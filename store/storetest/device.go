package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

func deviceTests() []test {
	return []test{
		{"PutCreatesAndGet", func(t *testing.T, f *fixture) {
			in := store.Device{ID: "dev-1", Organization: "org-a", Name: "ap-1", Group: "aps", Location: "hq",
				Model: "TP-Link Archer C7 v2", BoardName: "tplink,archer-c7-v2", OSIdentifier: "OpenWrt 23.05.3",
				Connection: "openwrt-ssh", Address: "192.0.2.1", Active: true}
			d, err := f.s.PutDevice(f.ctx, in)
			require.NoError(t, err)
			assert.False(t, d.CreatedAt.IsZero())
			assert.False(t, d.UpdatedAt.IsZero())
			want := in
			want.CreatedAt, want.UpdatedAt = d.CreatedAt, d.UpdatedAt
			requireSame(t, want, d)
			got, err := f.s.Device(f.ctx, "dev-1")
			require.NoError(t, err)
			requireSame(t, d, got)
		}},
		{"PutReplacesKeepingCreatedAt", func(t *testing.T, f *fixture) {
			first, err := f.s.PutDevice(f.ctx, store.Device{ID: "dev-1", Organization: "org-a", Name: "old", Address: "192.0.2.1"})
			require.NoError(t, err)
			time.Sleep(5 * time.Millisecond)
			second, err := f.s.PutDevice(f.ctx, store.Device{ID: "dev-1", Organization: "org-a", Name: "new", Active: true})
			require.NoError(t, err)
			assert.WithinDuration(t, first.CreatedAt, second.CreatedAt, time.Millisecond, "CreatedAt kept")
			assert.True(t, second.UpdatedAt.After(first.UpdatedAt), "UpdatedAt moves on")
			got, err := f.s.Device(f.ctx, "dev-1")
			require.NoError(t, err)
			requireSame(t, store.Device{ID: "dev-1", Organization: "org-a", Name: "new", Active: true,
				CreatedAt: first.CreatedAt, UpdatedAt: second.UpdatedAt}, got, "replaced, not merged")
			all, err := f.s.ListDevices(f.ctx, store.DeviceFilter{})
			require.NoError(t, err)
			assert.Len(t, all, 1)
		}},
		{"UnknownID", func(t *testing.T, f *fixture) {
			_, err := f.s.Device(f.ctx, "no-such-device")
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"MoveOrganizationWithActiveOperation", func(t *testing.T, f *fixture) {
			d := f.device("org-a")
			op := f.op(d.ID, f.imageOf("").ID)
			moved := d
			moved.Organization = "org-b"
			before := f.snapshot()
			_, err := f.s.PutDevice(f.ctx, moved)
			require.ErrorIs(t, err, store.ErrOrganizationMismatch, "pending operation")
			f.requireUnchanged(before)
			f.start(op.ID, status.PhaseConnecting)
			_, err = f.s.PutDevice(f.ctx, moved)
			require.ErrorIs(t, err, store.ErrOrganizationMismatch, "in-progress operation")
			same := d
			same.Name = "renamed"
			_, err = f.s.PutDevice(f.ctx, same)
			require.NoError(t, err, "changes within the organization are fine")
		}},
		{"MoveOrganizationAfterOperationEnds", func(t *testing.T, f *fixture) {
			d := f.device("org-a")
			op := f.op(d.ID, f.imageOf("").ID)
			f.drive(op.ID, status.Success, status.PhaseVerifying)
			d.Organization = "org-b"
			got, err := f.s.PutDevice(f.ctx, d)
			require.NoError(t, err)
			assert.Equal(t, "org-b", got.Organization)
		}},
		{"MoveOrganizationWithFirmwareRecord", func(t *testing.T, f *fixture) {
			d := f.device("org-a")
			_, err := f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: f.imageOf("org-a").ID, Installed: true})
			require.NoError(t, err)
			d.Organization = "org-b"
			before := f.snapshot()
			_, err = f.s.PutDevice(f.ctx, d)
			require.ErrorIs(t, err, store.ErrOrganizationMismatch)
			f.requireUnchanged(before)
		}},
	}
}

func deviceFirmwareTests() []test {
	return []test{
		{"PutAndGet", func(t *testing.T, f *fixture) {
			d := f.device("org-a")
			im1, im2 := f.imageOf("org-a"), f.imageOf("org-a")
			df, err := f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: im1.ID})
			require.NoError(t, err)
			assert.False(t, df.UpdatedAt.IsZero())
			requireSame(t, store.DeviceFirmware{DeviceID: d.ID, ImageID: im1.ID, UpdatedAt: df.UpdatedAt}, df)
			df2, err := f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: im2.ID, Installed: true})
			require.NoError(t, err)
			got, err := f.s.DeviceFirmware(f.ctx, d.ID)
			require.NoError(t, err)
			requireSame(t, store.DeviceFirmware{DeviceID: d.ID, ImageID: im2.ID, Installed: true, UpdatedAt: df2.UpdatedAt}, got, "replaced")
		}},
		{"ListDeviceFirmware", func(t *testing.T, f *fixture) {
			l, ok := f.s.(store.DeviceFirmwareLister)
			if !ok {
				t.Skip("the store does not implement store.DeviceFirmwareLister")
			}
			d1, d2, d3 := f.device("org-a"), f.device("org-a"), f.device("org-b")
			df1, err := f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: d1.ID, ImageID: f.imageOf("org-a").ID, Installed: true})
			require.NoError(t, err)
			df3, err := f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: d3.ID, ImageID: f.imageOf("org-b").ID})
			require.NoError(t, err)
			got, err := l.ListDeviceFirmware(f.ctx, []string{d3.ID, "no-such-device", d1.ID, d2.ID, d1.ID})
			require.NoError(t, err)
			want := []store.DeviceFirmware{df1, df3}
			if d3.ID < d1.ID {
				want = []store.DeviceFirmware{df3, df1}
			}
			requireSame(t, want, got, "the records of the devices that have one, each once, in device ID order")
			got, err = l.ListDeviceFirmware(f.ctx, nil)
			require.NoError(t, err)
			assert.Empty(t, got)
			_, err = l.ListDeviceFirmware(f.ctx, make([]string, store.MaxDeviceFirmwareList+1))
			var ve *store.ValidationError
			require.ErrorAs(t, err, &ve, "over store.MaxDeviceFirmwareList IDs")
		}},
		{"NoRecord", func(t *testing.T, f *fixture) {
			d := f.device("org-a")
			_, err := f.s.DeviceFirmware(f.ctx, d.ID)
			require.ErrorIs(t, err, store.ErrNotFound, "known device without a record")
			_, err = f.s.DeviceFirmware(f.ctx, "no-such-device")
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"UnknownDeviceOrImage", func(t *testing.T, f *fixture) {
			d, im := f.device("org-a"), f.imageOf("org-a")
			_, err := f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: "no-such-device", ImageID: im.ID})
			require.ErrorIs(t, err, store.ErrNotFound)
			_, err = f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: d.ID, ImageID: store.NewID()})
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"SharedImageFitsAnyOrganization", func(t *testing.T, f *fixture) {
			im := f.imageOf("")
			for _, org := range []string{"org-a", "org-b", ""} {
				_, err := f.s.PutDeviceFirmware(f.ctx, store.DeviceFirmware{DeviceID: f.device(org).ID, ImageID: im.ID})
				require.NoError(t, err, "device of organization %q", org)
			}
		}},
	}
}
