package openwrttest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkUpload uploads a 32 MiB image by each method over real SSH to a
// simulated device; MB/s is the upload throughput.
func BenchmarkUpload(b *testing.B) {
	im := testImage
	im.Size = 32 << 20
	want := im.SHA256()
	for _, m := range uploadMethods {
		b.Run(m.name, func(b *testing.B) {
			d := setup(b, Config{SFTP: true, SCP: true})
			c := dial(b, d)
			b.SetBytes(im.Len())
			b.ReportAllocs()
			for b.Loop() {
				require.NoError(b, m.upload(c, "/tmp/fw.bin", im))
			}
			fi, _ := d.File("/tmp/fw.bin")
			require.Equal(b, want, fi.SHA256)
		})
	}
}

// BenchmarkImageReader measures the simulated image generator alone.
func BenchmarkImageReader(b *testing.B) {
	im := testImage
	im.Size = 32 << 20
	b.SetBytes(im.Len())
	for b.Loop() {
		_ = im.SHA256()
	}
}
