package openwrt

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/internal/devicesim"
)

// BenchmarkUpload uploads a simulated image to a simulated device (in the
// same process, over real SSH on loopback) by each method. The device and
// the image generator run in the benchmark's process: their CPU time and
// allocations count too.
func BenchmarkUpload(b *testing.B) {
	for _, m := range []UploadMethod{UploadSFTP, UploadSCP, UploadCat} {
		for _, size := range []int64{1 << 20, 32 << 20} {
			b.Run(fmt.Sprintf("%s/%dMiB", m, size>>20), func(b *testing.B) {
				dev, err := devicesim.New(devicesim.Config{SFTP: true, SCP: true, MemAvailable: 100 << 20})
				require.NoError(b, err)
				require.NoError(b, dev.Start())
				b.Cleanup(func() { dev.Close() })
				ctx := context.Background()
				c, err := dial(ctx, Credentials{
					Address: dev.Addr(), User: devicesim.DefaultUser, Password: devicesim.DefaultPassword,
					HostKeyCallback: PinnedKey(dev.HostKey()),
				}, 5*time.Second)
				require.NoError(b, err)
				b.Cleanup(func() { c.Close() })
				img := devicesim.Image{Boards: []string{devicesim.DefaultBoardName}, Release: newRelease, Size: size}
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
