package openwrt

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
)

// BenchmarkUpload uploads a simulated image to a simulated device (in the
// same process, over real SSH on loopback) by each method. The device and
// the image generator run in the benchmark's process: their CPU time and
// allocations count too.
func BenchmarkUpload(b *testing.B) {
	for _, m := range []UploadMethod{UploadSFTP, UploadSCP, UploadCat} {
		for _, size := range []int64{1 << 20, 32 << 20} {
			b.Run(fmt.Sprintf("%s/%dMiB", m, size>>20), func(b *testing.B) {
				dev, err := openwrttest.New(openwrttest.Config{SFTP: true, SCP: true, MemAvailable: 100 << 20})
				require.NoError(b, err)
				require.NoError(b, dev.Start())
				b.Cleanup(func() { dev.Close() })
				ctx := context.Background()
				c, err := dial(ctx, Credentials{
					Address: dev.Addr(), User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
					HostKeyCallback: PinnedKey(dev.HostKey()),
				}, 5*time.Second)
				require.NoError(b, err)
				b.Cleanup(func() { c.Close() })
				img := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: size}
				want := img.SHA256()
				b.SetBytes(size)
				b.ReportAllocs()
				for b.Loop() {
					if err := c.uploadVia(ctx, m, img.Reader(), size, "/tmp/bench.bin"); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(size)*float64(b.N)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
				f, ok := dev.File("/tmp/bench.bin")
				require.True(b, ok)
				require.Equal(b, want, f.SHA256)
			})
		}
	}
}

// BenchmarkReconnectAfterSilentReboot measures, per upgrade of a device
// whose address is silent while it reboots (connects time out), how long
// after its SSH answers again the upgrade is recorded a success: the
// "after-up-ms" metric (median over the iterations). "defaults" uses the
// Config defaults; "previous-defaults" the defaults before OpenWrt release
// awareness (first reconnection 20 s after the flash, then every 10 s, each
// with the 15 s connect timeout), side by side in one run. Run it with
//
//	go test ./openwrt -run '^$' -bench ReconnectAfterSilentReboot -benchtime 5x
func BenchmarkReconnectAfterSilentReboot(b *testing.B) {
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"defaults", func(c *Config) {
			c.ConnectTimeout, c.ReconnectDelay, c.ReconnectRetryDelay, c.ReconnectDialTimeout, c.ReconnectMaxRetries = 0, 0, 0, 0, 0
		}},
		{"previous-defaults", func(c *Config) {
			c.ConnectTimeout, c.ReconnectDelay, c.ReconnectRetryDelay, c.ReconnectMaxRetries = 0, 20*time.Second, 10*time.Second, 40
			c.ReconnectDialTimeout = DefaultConnectTimeout
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var after []time.Duration
			for range b.N {
				bd := setup(b, setupOpts{sim: openwrttest.Config{RebootDelay: 10 * time.Second,
					Faults: openwrttest.Faults{SilentReboot: true}}, config: tc.cfg})
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				upAt := make(chan time.Time, 1)
				go func() {
					if bd.dev.WaitDown(ctx) == nil && bd.dev.WaitUp(ctx) == nil {
						upAt <- time.Now()
					}
					close(upAt)
				}()
				err := bd.u.Upgrade(ctx, bd.job)
				done := time.Now()
				cancel()
				require.NoError(b, err)
				up, ok := <-upAt
				require.True(b, ok, "the device came back")
				after = append(after, done.Sub(up))
			}
			slices.Sort(after)
			b.ReportMetric(float64(after[len(after)/2].Milliseconds()), "after-up-ms")
		})
	}
}
