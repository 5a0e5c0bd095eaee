package openwrttest

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestThousandDevices starts 1,000 devices in one process, talks to some of
// them and closes them all, then checks that no goroutine is left. It is not
// parallel so that the goroutine count is its own.
func TestThousandDevices(t *testing.T) {
	const n = 1000
	before := runtime.NumGoroutine()
	var msBefore runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&msBefore)
	start := time.Now()

	devs := make([]*Device, n)
	for i := range devs {
		d, err := New(Config{RebootDelay: 50 * time.Millisecond})
		require.NoError(t, err)
		require.NoError(t, d.Start())
		devs[i] = d
	}
	started := time.Since(start)
	var msUp runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&msUp)
	up := runtime.NumGoroutine()
	require.LessOrEqual(t, up-before, n+10, "one goroutine per idle device")

	var wg sync.WaitGroup
	for i := 0; i < n; i += 50 {
		wg.Go(func() {
			d := devs[i]
			require.Equal(t, d.BootID()+"\n", sh(t, d, "cat /proc/sys/kernel/random/boot_id"))
		})
	}
	wg.Wait()

	for _, d := range devs {
		wg.Go(func() { require.NoError(t, d.Close()) })
	}
	wg.Wait()
	t.Logf("%d devices: start %v, %d goroutines, heap +%d KiB (%.1f KiB/device), total %v",
		n, started, up-before, (int64(msUp.HeapAlloc)-int64(msBefore.HeapAlloc))>>10,
		float64(int64(msUp.HeapAlloc)-int64(msBefore.HeapAlloc))/1024/n, time.Since(start))

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines leaked")
}
