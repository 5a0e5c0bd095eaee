package openwrt_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	other, err := openwrttest.New(openwrttest.Config{})
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		uuid    string
		hostKey func(dev *openwrttest.Device) openwrt.Credentials
		kind    upgrader.Kind
		reason  status.Reason
	}{
		{name: "OpenWISPDevice", uuid: "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e"},
		{name: "NoUUID"},
		{name: "WrongHostKey", hostKey: func(*openwrttest.Device) openwrt.Credentials {
			return openwrt.Credentials{HostKeyCallback: openwrt.PinnedKey(other.HostKey())}
		}, kind: upgrader.KindAborted, reason: status.ReasonHostKeyMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dev, err := openwrttest.New(openwrttest.Config{UUID: tc.uuid, Model: "GL.iNet GL-MT3000", BoardName: "glinet,gl-mt3000",
				Release: "OpenWrt 23.05.2 r23630-842932a63d"})
			require.NoError(t, err)
			require.NoError(t, dev.Start())
			t.Cleanup(func() { dev.Close() })
			ow, err := openwrt.New(&openwrt.Config{
				CredentialsFunc: func(context.Context, store.Device) (openwrt.Credentials, error) {
					c := openwrt.Credentials{HostKeyCallback: openwrt.PinnedKey(dev.HostKey())}
					if tc.hostKey != nil {
						c = tc.hostKey(dev)
					}
					c.Address, c.User, c.Password = dev.Addr(), openwrttest.DefaultUser, openwrttest.DefaultPassword
					return c, nil
				},
				Logger: slog.New(slog.DiscardHandler),
			})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			info, err := ow.Probe(ctx, store.Device{ID: "d"})
			if tc.reason != status.ReasonNone {
				kind, reason := upgrader.Classify(err)
				assert.Equal(t, tc.kind, kind)
				assert.Equal(t, tc.reason, reason)
				assert.Empty(t, dev.Commands(), "nothing ran on a device with the wrong host key")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, openwrt.DeviceInfo{Model: "GL.iNet GL-MT3000", BoardName: "glinet,gl-mt3000",
				Release: "OpenWrt 23.05.2 r23630-842932a63d", UUID: tc.uuid}, info)
			for _, argv := range dev.Executed() {
				assert.Contains(t, []string{"cat", "uci"}, argv[0], "Probe only reads: %v", argv)
			}
		})
	}
}

// Probe works on a 12.09 device, which has no /tmp/sysinfo and no procd
// (ubus has no system object): the model comes from /proc/cpuinfo.
func TestProbeWithoutSysinfo(t *testing.T) {
	t.Parallel()
	dev, err := openwrttest.New(openwrttest.Config{Release: openwrttest.ReleaseDescription("12.09")})
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { dev.Close() })
	require.False(t, dev.SysInfo(), "the 12.09 profile has no /tmp/sysinfo")
	u, err := openwrt.New(&openwrt.Config{Logger: slog.New(slog.DiscardHandler),
		CredentialsFunc: func(context.Context, store.Device) (openwrt.Credentials, error) {
			return openwrt.Credentials{Address: dev.Addr(), User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
				HostKeyCallback: openwrt.PinnedKey(dev.HostKey())}, nil
		}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := u.Probe(ctx, store.Device{ID: "old-box"})
	require.NoError(t, err)
	assert.NotEmpty(t, info.Model, "the model comes from /proc/cpuinfo")
	assert.Contains(t, info.Release, "12.09")
}
