//go:build unix

package openwrt_test

// Benchmarks of mass upgrades: the engine, the memory store and the openwrt
// upgrader against simulated devices over real SSH on loopback, the
// devices in this process (their CPU time and memory count too) unless
// said otherwise. Run them with
//
//	go test ./openwrt -run '^$' -bench 'BatchThousand|BatchPeak' -benchtime=1x
//
// Each needs a few file descriptors per device (the devices listen each on
// its own loopback address): they skip when the process cannot open enough.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// needFiles skips b unless the process may open n files, raising its soft
// limit towards the hard one when needed.
func needFiles(b *testing.B, n uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Skipf("cannot read the file limit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max >= n {
		raised := lim
		raised.Cur = n
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			return
		}
	}
	b.Skipf("needs %d open files, the limit is %d (hard %d): raise it with ulimit -n", n, lim.Cur, lim.Max)
}

// benchUpgrader is the openwrt configuration of the benchmarks: timeouts
// generous enough that nothing times out when a thousand devices share two
// cores, a reconnection half a second after the flash and then every
// DefaultReconnectRetryDelay (250 ms).
func benchUpgrader(c *openwrt.Config) {
	c.ConnectTimeout, c.CommandTimeout, c.UpgradeTimeout = time.Minute, 2*time.Minute, 2*time.Minute
	c.ReconnectDelay, c.ReconnectRetryDelay, c.ReconnectDialTimeout = 500*time.Millisecond, 0, 0
	c.ReconnectWindow = 10 * time.Minute
}

// benchEngine is the engine configuration of the benchmarks: workers for
// every device and the default lease, poll and maintenance intervals.
func benchEngine(workers int) func(*upgrader.Config) {
	return func(c *upgrader.Config) {
		c.Workers = workers
		c.LeaseDuration, c.PollInterval, c.MaintenanceInterval = 0, 0, 0
		c.OperationTimeout, c.VerifyTimeout = time.Hour, time.Hour
	}
}

// benchBatch creates a batch of ids (all of them selected, else b fails) and
// returns how long it took from the request until the batch ended, polling
// its state every 5 ms, and the CPU time the process used meanwhile. Every
// operation must end success.
func benchBatch(ctx context.Context, b *testing.B, r *batchRig, ids []string, rollout store.Rollout) (wall, cpu time.Duration) {
	b.Helper()
	eng := r.engines[0]
	cpu0 := processCPU()
	start := time.Now()
	bt, plan, err := eng.CreateBatch(ctx, upgrader.BatchRequest{BuildID: r.build.ID, Name: fmt.Sprintf("bench %d", len(ids)),
		DeviceIDs: ids, Firmwareless: true, Rollout: rollout})
	if err != nil {
		b.Fatalf("create the batch: %v", err)
	}
	if len(plan.Selected) != len(ids) {
		b.Fatalf("the batch selected %d devices of %d (skipped: %+v)", len(plan.Selected), len(ids), plan.Skipped[:min(len(plan.Skipped), 3)])
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := eng.Batch(ctx, bt.ID)
		if err != nil {
			b.Fatalf("batch %s: %v", bt.ID, err)
		}
		if s.State.Terminal() {
			break
		}
		select {
		case <-ctx.Done():
			b.Fatalf("batch %s has not ended: %s", bt.ID, s.Summary)
		case <-tick.C:
		}
	}
	took, cpu := time.Since(start), processCPU()-cpu0
	if os.Getenv("FWUPGRADER_BENCH_TIMELINE") != "" {
		fmt.Fprintf(os.Stderr, "batch of %d devices took %s (CPU %s); from CreateBatch:%s\n", len(ids),
			took.Round(time.Millisecond), cpu.Round(time.Millisecond), batchTimeline(ctx, r, bt.ID, start))
	}
	ops, err := r.st.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID})
	if err != nil {
		b.Fatal(err)
	}
	reasons := map[string]int{}
	for _, op := range ops {
		if op.State != status.Success {
			reasons[fmt.Sprintf("%s/%s", op.State, op.Reason)]++
		}
	}
	if len(reasons) > 0 {
		b.Fatalf("batch of %d devices: operations not successful: %v", len(ids), reasons)
	}
	return took, cpu
}

// processCPU returns the CPU time (user and system) the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchMedian(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkBatchThousandDevices measures, in one run, the wall time of a
// batch of one device and of a batch of 1,000 devices (from CreateBatch to
// the batch's end), with the same settings: a 1 MiB image, devices that
// take 2 s to reboot, one engine with 1,000 workers and a rollout of at
// most 1,000 at once. It reports "s/1dev", "s/1000dev" and their "ratio",
// and the CPU time the process used during the 1,000-device batch
// ("cpu-s/1000dev": the devices' share included), medians over b.N runs;
// ns/op counts both batches, not the set-up. With
// FWUPGRADER_BENCH_TIMELINE=1 it prints when the operations reached their
// steps (=log: and the log of one of them).
func BenchmarkBatchThousandDevices(b *testing.B) {
	// Two settings of the first reconnection after the flash, each the same
	// for both batches: half a second (the wall time of one device is then
	// the reboot itself, the hardest reference), and the library's default
	// (DefaultReconnectDelay, 5 s: what an embedding gets).
	for _, v := range []struct {
		name  string
		delay time.Duration
	}{{"reconnect-500ms", 500 * time.Millisecond}, {"reconnect-default", openwrt.DefaultReconnectDelay}} {
		b.Run(v.name, func(b *testing.B) {
			benchThousand(b, func(c *openwrt.Config) {
				benchUpgrader(c)
				c.ReconnectDelay = v.delay
			})
		})
	}
}

func benchThousand(b *testing.B, upg func(*openwrt.Config)) {
	const n = 1000
	needFiles(b, 4*n+1024)
	var one, all, cpu []time.Duration
	for range b.N {
		b.StopTimer()
		r := newBatchRig(b, batchRigOpts{owners: []string{"bench"}, imageSize: 1 << 20,
			engine: benchEngine(n), upgrader: upg})
		devs := r.devices(b, n+1, func(int) openwrttest.Config { return openwrttest.Config{RebootDelay: 2 * time.Second, NoMD5: true} }, nil)
		r.start(b)
		ids := make([]string, n)
		for i, d := range devs[1:] {
			ids[i] = d.ID
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		rollout := store.Rollout{MaxConcurrent: n}
		b.StartTimer()
		t1, _ := benchBatch(ctx, b, r, []string{devs[0].ID}, rollout)
		tn, cn := benchBatch(ctx, b, r, ids, rollout)
		one, all, cpu = append(one, t1), append(all, tn), append(cpu, cn)
		b.StopTimer()
		cancel()
		for _, d := range devs {
			if f := r.dev(d.ID).Flashed(); f != 1 {
				b.Fatalf("device %s flashed %d times", d.ID, f)
			}
		}
		r.close()
	}
	t1, tn := benchMedian(one), benchMedian(all)
	b.ReportMetric(t1.Seconds(), "s/1dev")
	b.ReportMetric(tn.Seconds(), "s/1000dev")
	b.ReportMetric(tn.Seconds()/t1.Seconds(), "ratio")
	b.ReportMetric(benchMedian(cpu).Seconds(), "cpu-s/1000dev")
}

// BenchmarkBatchPeakMemory upgrades 100 devices at once with a 32 MiB
// image and reports the peak memory of the process during the batch: the
// most heap and stacks in use ("peak-inuse-MiB", HeapInuse+StackInuse
// sampled every 10 ms), the most memory held from the system
// ("peak-sys-MiB", Sys-HeapReleased) and the peak resident set ("VmHWM-MiB", reset when the
// batch starts where Linux allows it, otherwise the peak of the whole
// process).
//
// devices-in-process runs the simulated devices in this process: what they
// hold (every SSH server connection's receive buffers, among others)
// counts too. devices-in-child runs them in a child process (this test
// binary running TestBatchDeviceHost): the figures are those of the
// engine, the store and the openwrt upgrader alone, and "devices-VmHWM-MiB"
// is the child's peak resident set.
//
// With FWUPGRADER_PEAK_HEAPPROFILE=prefix each collects the garbage every
// 250 ms (which lowers the peaks: not a reference run), logs the most live
// heap found and writes its heap profile to prefix.<name>.pprof:
//
//	go tool pprof -sample_index=inuse_space -top openwrt.test prefix.devices-in-child.pprof
func BenchmarkBatchPeakMemory(b *testing.B) {
	b.Run("devices-in-process", func(b *testing.B) { peakMemory(b, false) })
	b.Run("devices-in-child", func(b *testing.B) { peakMemory(b, true) })
}

func peakMemory(b *testing.B, child bool) {
	const (
		n      = 100
		size   = 32 << 20
		reboot = 2 * time.Second
	)
	needFiles(b, 4*n+1024)
	profile := os.Getenv("FWUPGRADER_PEAK_HEAPPROFILE")
	var peakInuse, peakSys, hwm, rss0, childHWM []float64
	for range b.N {
		b.StopTimer()
		r := newBatchRig(b, batchRigOpts{owners: []string{"bench"}, imageSize: size, maxImageSize: 64 << 20,
			engine: benchEngine(n), upgrader: benchUpgrader})
		var ids []string
		var host *deviceHost
		if child {
			host = startDeviceHost(b, r, n, reboot)
			ids = host.ids
		} else {
			for _, d := range r.devices(b, n, func(int) openwrttest.Config { return openwrttest.Config{RebootDelay: reboot, NoMD5: true} }, nil) {
				ids = append(ids, d.ID)
			}
		}
		r.start(b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		debug.FreeOSMemory() // what an earlier run left is not counted
		resetHWM := resetPeakRSS()
		if kb, ok := procStatusKB("self", "VmRSS"); ok {
			rss0 = append(rss0, float64(kb)/1024)
		}
		mon := startMemMonitor(profile != "")
		b.StartTimer()
		_, _ = benchBatch(ctx, b, r, ids, store.Rollout{MaxConcurrent: n})
		b.StopTimer()
		inuse, sys, live, prof := mon.stop()
		cancel()
		peakInuse = append(peakInuse, float64(inuse)/(1<<20))
		peakSys = append(peakSys, float64(sys)/(1<<20))
		if kb, ok := procStatusKB("self", "VmHWM"); ok {
			hwm = append(hwm, float64(kb)/1024)
		}
		if !resetHWM {
			b.Log("VmHWM could not be reset: it is the peak of the whole process")
		}
		if profile != "" && prof != nil {
			b.Logf("most live heap found by a forced collection: %.1f MiB", float64(live)/(1<<20))
			name := strings.ReplaceAll(b.Name(), "/", "_")
			if _, sub, ok := strings.Cut(b.Name(), "/"); ok {
				name = strings.TrimSuffix(sub, fmt.Sprintf("-%d", runtime.GOMAXPROCS(0)))
			}
			if err := os.WriteFile(profile+"."+name+".pprof", prof, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		flashed := map[string]int{}
		if child {
			if kb, ok := procStatusKB(strconv.Itoa(host.cmd.Process.Pid), "VmHWM"); ok {
				childHWM = append(childHWM, float64(kb)/1024)
			}
			flashed = host.finish(b)
		} else {
			for _, id := range ids {
				flashed[id] = r.dev(id).Flashed()
			}
		}
		for _, id := range ids {
			if flashed[id] != 1 {
				b.Fatalf("device %s flashed %d times", id, flashed[id])
			}
		}
		r.close()
	}
	b.ReportMetric(benchMedianF(peakInuse), "peak-inuse-MiB")
	b.ReportMetric(benchMedianF(peakSys), "peak-sys-MiB")
	if len(hwm) > 0 {
		b.ReportMetric(benchMedianF(hwm), "VmHWM-MiB")
	}
	if len(rss0) > 0 {
		b.ReportMetric(benchMedianF(rss0), "start-RSS-MiB")
	}
	if len(childHWM) > 0 {
		b.ReportMetric(benchMedianF(childHWM), "devices-VmHWM-MiB")
	}
}

// envDeviceHost makes TestBatchDeviceHost run devices: "<count> <reboot
// delay>".
const envDeviceHost = "FWUPGRADER_BENCH_DEVICE_HOST"

// TestBatchDeviceHost is not a test: it is the child process in which
// BenchmarkBatchPeakMemory/devices-in-child runs its simulated devices
// (see deviceHost). Started by anything else, it skips.
func TestBatchDeviceHost(t *testing.T) {
	spec := os.Getenv(envDeviceHost)
	if spec == "" {
		t.Skip("the device process of BenchmarkBatchPeakMemory/devices-in-child: runs only when the benchmark starts it")
	}
	var n int
	var reboot time.Duration
	if _, err := fmt.Sscanf(spec, "%d %v", &n, &reboot); err != nil {
		t.Fatalf("%s=%q: %v", envDeviceHost, spec, err)
	}
	out := bufio.NewWriter(os.Stdout)
	devs := make(map[string]*openwrttest.Device, n)
	for range n {
		id := uuid.NewString()
		d, err := openwrttest.New(openwrttest.Config{UUID: id, RebootDelay: reboot, NoMD5: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		devs[id] = d
		fmt.Fprintf(out, "device %s %s %s", id, d.Addr(), ssh.MarshalAuthorizedKey(d.HostKey()))
	}
	fmt.Fprintln(out, "ready")
	out.Flush()
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark is done with the devices
	for id, d := range devs {
		fmt.Fprintf(out, "flashed %s %d\n", id, d.Flashed())
	}
	fmt.Fprintln(out, "done")
	out.Flush()
}

// deviceHost is a child process running simulated devices
// (TestBatchDeviceHost).
type deviceHost struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	ids   []string
	once  sync.Once
}

// startDeviceHost starts n devices rebooting in reboot in a child process
// and registers them in r.
func startDeviceHost(b *testing.B, r *batchRig, n int, reboot time.Duration) *deviceHost {
	b.Helper()
	h := &deviceHost{cmd: exec.Command(os.Args[0], "-test.run=^TestBatchDeviceHost$", "-test.count=1")}
	h.cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %s", envDeviceHost, n, reboot))
	h.cmd.Stderr = os.Stderr
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	h.out = bufio.NewScanner(stdout)
	if err := h.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.stop() })
	for h.out.Scan() {
		f := strings.SplitN(h.out.Text(), " ", 4)
		if f[0] == "ready" {
			break
		}
		if f[0] != "device" || len(f) != 4 {
			continue
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(f[3]))
		if err != nil {
			b.Fatalf("device host: %q: %v", h.out.Text(), err)
		}
		r.mu.Lock()
		r.remote[f[1]] = remoteDevice{addr: f[2], key: key}
		r.mu.Unlock()
		_, err = r.engines[0].RegisterDevice(context.Background(), store.Device{ID: f[1], Model: openwrttest.DefaultModel,
			BoardName: openwrttest.DefaultBoardName, OSIdentifier: openwrttest.DefaultRelease, Connection: openwrt.Connection, Active: true})
		if err != nil {
			b.Fatal(err)
		}
		h.ids = append(h.ids, f[1])
	}
	if len(h.ids) != n {
		b.Fatalf("the device host started %d devices of %d", len(h.ids), n)
	}
	return h
}

// finish ends the child and returns how many times each device flashed.
func (h *deviceHost) finish(b *testing.B) map[string]int {
	b.Helper()
	h.stdin.Close()
	flashed := map[string]int{}
	for h.out.Scan() {
		var id string
		var k int
		if _, err := fmt.Sscanf(h.out.Text(), "flashed %s %d", &id, &k); err == nil {
			flashed[id] = k
		}
		if h.out.Text() == "done" {
			break
		}
	}
	if err := h.stop(); err != nil {
		b.Fatalf("device host: %v", err)
	}
	return flashed
}

func (h *deviceHost) stop() error {
	var err error
	h.once.Do(func() {
		h.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- h.cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			_ = h.cmd.Process.Kill()
			err = fmt.Errorf("the device host did not end: %v", <-done)
		}
	})
	return err
}

func benchMedianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// memMonitor samples runtime.MemStats every 10 ms.
type memMonitor struct {
	done chan struct{}
	wg   sync.WaitGroup

	inuse, sys uint64
	live       uint64 // the most heap found live by the forced collections
	prof       []byte // heap profile when live was found
}

// startMemMonitor starts sampling. With profile, it also collects the
// garbage every 250 ms and keeps the heap profile of the collection that
// found the most live heap (the forced collections lower the other
// figures: they are not the reference then).
func startMemMonitor(profile bool) *memMonitor {
	m := &memMonitor{done: make(chan struct{})}
	m.wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for i := 0; ; i++ {
			runtime.ReadMemStats(&ms)
			m.inuse = max(m.inuse, ms.HeapInuse+ms.StackInuse)
			m.sys = max(m.sys, ms.Sys-ms.HeapReleased)
			if profile && i%25 == 0 {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > m.live {
					var buf bytes.Buffer
					if pprof.Lookup("heap").WriteTo(&buf, 0) == nil {
						m.live, m.prof = ms.HeapAlloc, buf.Bytes()
					}
				}
			}
			select {
			case <-m.done:
				return
			case <-t.C:
			}
		}
	})
	return m
}

// stop ends the sampling and returns the highest HeapInuse+StackInuse and
// Sys-HeapReleased seen, and, when profiling, the most live heap found and
// its heap profile.
func (m *memMonitor) stop() (inuse, sys, live uint64, prof []byte) {
	close(m.done)
	m.wg.Wait()
	return m.inuse, m.sys, m.live, m.prof
}

// resetPeakRSS resets the process's VmHWM (Linux 4.0 and later) and
// reports whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// procStatusKB reads a "kB" field of /proc/<pid>/status ("self" for this
// process).
func procStatusKB(pid, field string) (int64, bool) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return kb, err == nil
	}
	return 0, false
}

// batchTimeline summarises when the operations of a batch reached their
// steps, counted from start: percentiles of the first move to in-progress,
// the first connection, the upload's end, the flash command, the
// reconnection and the end.
func batchTimeline(ctx context.Context, r *batchRig, batchID string, start time.Time) string {
	ops, err := r.st.ListOperations(ctx, store.OperationFilter{BatchID: batchID})
	if err != nil {
		return err.Error()
	}
	steps := []struct {
		name, prefix string
	}{
		{"connected", "Connected to "}, {"uploaded", "Image uploaded"}, {"flash", "Upgrade operation in progress"},
		{"reconnected", "Connected to "},
	}
	at := map[string][]time.Duration{}
	for _, op := range ops {
		at["started"] = append(at["started"], op.StartedAt.Sub(start))
		at["finished"] = append(at["finished"], op.FinishedAt.Sub(start))
		logs, err := r.st.Logs(ctx, op.ID, 0, 0)
		if err != nil {
			return err.Error()
		}
		i := 0
		for _, l := range logs {
			if i < len(steps) && strings.HasPrefix(l.Line, steps[i].prefix) {
				at[steps[i].name] = append(at[steps[i].name], l.Time.Sub(start))
				i++
			}
		}
	}
	var sb strings.Builder
	if len(ops) > 0 && os.Getenv("FWUPGRADER_BENCH_TIMELINE") == "log" {
		op := ops[len(ops)/2]
		logs, _ := r.st.Logs(ctx, op.ID, 0, 0)
		for _, l := range logs {
			fmt.Fprintf(&sb, "\n    %8s %s", l.Time.Sub(start).Round(time.Millisecond), l.Line[:min(len(l.Line), 120)])
		}
	}
	for _, k := range []string{"started", "connected", "uploaded", "flash", "reconnected", "finished"} {
		v := at[k]
		if len(v) == 0 {
			continue
		}
		slices.Sort(v)
		p := func(q float64) string { return v[int(q*float64(len(v)-1))].Round(time.Millisecond).String() }
		fmt.Fprintf(&sb, "\n  %-11s min %-8s p50 %-8s p90 %-8s max %s", k, p(0), p(0.5), p(0.9), p(1))
	}
	return sb.String()
}
