package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
)

// This program runs in three roles: the benchmark (no FWBENCH_ROLE), the
// engine of the peak-memory figure ("peak-engine") and the devices of that
// engine ("device-host"). The roles are this same executable started again
// with FWBENCH_ROLE set; main_test.go's TestMain plays them too.
const (
	envRole    = "FWBENCH_ROLE"
	envPeak    = "FWBENCH_PEAK"    // peak-engine: "<devices> <image bytes> <reboot>"
	envDevices = "FWBENCH_DEVICES" // device-host: "<devices> <reboot>"

	rolePeakEngine = "peak-engine"
	roleDeviceHost = "device-host"
)

// runRole plays role and returns the process's exit status.
func runRole(role string) int {
	var err error
	switch role {
	case rolePeakEngine:
		err = peakEngine(os.Stdout)
	case roleDeviceHost:
		err = deviceHost(os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown %s %q", envRole, role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", role, err)
		return 1
	}
	return 0
}

// peakResult is what the peak-engine process prints, as one JSON line.
type peakResult struct {
	VmHWMKiB      int64   `json:"vmhwm_kib"`
	HWMReset      bool    `json:"hwm_reset"`
	StartRSSKiB   int64   `json:"start_rss_kib"`
	PeakInuse     uint64  `json:"peak_heap_stack_inuse"`
	PeakSys       uint64  `json:"peak_sys_minus_released"`
	DevicesVmHWM  int64   `json:"devices_vmhwm_kib"`
	WallSeconds   float64 `json:"wall_seconds"`
	EngineWorkers int     `json:"engine_workers"`
}

func peakMemory(ctx context.Context, r *run) error {
	n, size := r.set.peakDevices, r.set.peakImage
	name := fmt.Sprintf("peak memory of the library, %d devices at once, %d MiB image", n, size>>20)
	g := atMost(256, "≤ 256 MiB")
	exe, err := os.Executable()
	if err != nil {
		r.skip(name, "MiB", g, "cannot find this program's executable to start it again: "+err.Error())
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), envRole+"="+rolePeakEngine,
		fmt.Sprintf("%s=%d %d %s", envPeak, n, size, r.set.batchReboot))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r.logf("peak memory: %d devices, %d MiB image, in child processes", n, size>>20)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the peak-memory process: %v: %s", err, lastLines(stderr.String(), 5))
	}
	var res peakResult
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &res); err != nil {
		return fmt.Errorf("the peak-memory process printed %q: %w", stdout.String(), err)
	}
	note := fmt.Sprintf("VmHWM of a process running only the engine, the memory store (holding the image) and the openwrt upgrader; RSS when the batch started %.1f MiB; the batch took %.1f s",
		float64(res.StartRSSKiB)/1024, res.WallSeconds)
	if !res.HWMReset {
		note += "; VmHWM could not be reset when the batch started: it is the whole process's peak"
	}
	r.add(name, float64(res.VmHWMKiB)/1024, "MiB", g, note)
	r.add(fmt.Sprintf("peak Go heap and stacks in use, %d devices at once", n), float64(res.PeakInuse)/(1<<20), "MiB", nil,
		"HeapInuse+StackInuse sampled every 20 ms in the same process (spans in use need not all be resident: it can exceed VmHWM)")
	r.add(fmt.Sprintf("peak memory of the %d simulated devices (their own process)", n), float64(res.DevicesVmHWM)/1024, "MiB", nil, "")
	return nil
}

// peakEngine is the peak-engine role: an engine upgrading devices of a
// device-host child, which prints its peakResult.
func peakEngine(out io.Writer) error {
	var n int
	var size int64
	var reboot time.Duration
	if _, err := fmt.Sscanf(os.Getenv(envPeak), "%d %d %v", &n, &size, &reboot); err != nil || n <= 0 || size <= 0 {
		return fmt.Errorf("%s=%q: want \"<devices> <image bytes> <reboot>\"", envPeak, os.Getenv(envPeak))
	}
	if err := raiseFileLimit(uint64(4*n + 1024)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	rg, err := newRig(ctx, n, size, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer rg.close()
	host, err := startDeviceHost(ctx, rg, n, reboot)
	if err != nil {
		return err
	}
	defer host.stop()
	if err := rg.eng.Start(ctx); err != nil {
		return err
	}
	debug.FreeOSMemory() // what the set-up left is not counted
	var res peakResult
	res.EngineWorkers = n
	res.HWMReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	res.StartRSSKiB, _ = procStatusKB("/proc/self/status", "VmRSS")
	mon := startMemMonitor()
	wall, _, err := rg.runBatch(ctx, host.ids)
	res.PeakInuse, res.PeakSys = mon.stop()
	if err != nil {
		return err
	}
	res.WallSeconds = wall.Seconds()
	res.VmHWMKiB, _ = procStatusKB("/proc/self/status", "VmHWM")
	res.DevicesVmHWM, _ = procStatusKB(fmt.Sprintf("/proc/%d/status", host.cmd.Process.Pid), "VmHWM")
	flashed, err := host.finish()
	if err != nil {
		return err
	}
	for _, id := range host.ids {
		if flashed[id] != 1 {
			return fmt.Errorf("device %s was flashed %d times", id, flashed[id])
		}
	}
	return json.NewEncoder(out).Encode(res)
}

// memMonitor samples the Go runtime's memory every 20 ms.
type memMonitor struct {
	done       chan struct{}
	wg         sync.WaitGroup
	inuse, sys uint64
}

func startMemMonitor() *memMonitor {
	m := &memMonitor{done: make(chan struct{})}
	m.wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			m.inuse = max(m.inuse, ms.HeapInuse+ms.StackInuse)
			m.sys = max(m.sys, ms.Sys-ms.HeapReleased)
			select {
			case <-m.done:
				return
			case <-t.C:
			}
		}
	})
	return m
}

func (m *memMonitor) stop() (inuse, sys uint64) {
	close(m.done)
	m.wg.Wait()
	return m.inuse, m.sys
}

// devHost is a child process running simulated devices (the device-host
// role).
type devHost struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	ids   []string
	once  sync.Once
}

// startDeviceHost starts n devices rebooting in reboot in a child process
// and registers them in rg.
func startDeviceHost(ctx context.Context, rg *rig, n int, reboot time.Duration) (*devHost, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	h := &devHost{cmd: exec.Command(exe)}
	h.cmd.Env = append(os.Environ(), envRole+"="+roleDeviceHost, fmt.Sprintf("%s=%d %s", envDevices, n, reboot))
	h.cmd.Stderr = os.Stderr
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	h.out = bufio.NewScanner(stdout)
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
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
			h.stop()
			return nil, fmt.Errorf("device host: %q: %w", h.out.Text(), err)
		}
		rg.mu.Lock()
		rg.remote[f[1]] = remoteDevice{addr: f[2], key: key}
		rg.mu.Unlock()
		if err := rg.register(ctx, f[1], openwrttest.DefaultModel, openwrttest.DefaultBoardName, openwrttest.DefaultRelease); err != nil {
			h.stop()
			return nil, err
		}
		h.ids = append(h.ids, f[1])
	}
	if len(h.ids) != n {
		h.stop()
		return nil, fmt.Errorf("the device host started %d devices of %d", len(h.ids), n)
	}
	return h, nil
}

// finish ends the device host and returns how many times each device was
// flashed.
func (h *devHost) finish() (map[string]int, error) {
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
	return flashed, h.stop()
}

// stop ends the device host (it ends when its standard input closes).
func (h *devHost) stop() error {
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

// deviceHost is the device-host role: it starts the devices, prints
// "device <id> <address> <host key>" for each and "ready", runs them until
// its standard input closes, then prints "flashed <id> <count>" for each
// and "done".
func deviceHost(in io.Reader, stdout io.Writer) error {
	var n int
	var reboot time.Duration
	if _, err := fmt.Sscanf(os.Getenv(envDevices), "%d %v", &n, &reboot); err != nil || n <= 0 {
		return fmt.Errorf("%s=%q: want \"<devices> <reboot>\"", envDevices, os.Getenv(envDevices))
	}
	if err := raiseFileLimit(uint64(4*n + 1024)); err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	devs := make(map[string]*openwrttest.Device, n)
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	for range n {
		id := uuid.NewString()
		d, err := openwrttest.New(openwrttest.Config{UUID: id, RebootDelay: reboot, NoMD5: true})
		if err != nil {
			return err
		}
		devs[id] = d
		if err := d.Start(); err != nil {
			return err
		}
		fmt.Fprintf(out, "device %s %s %s", id, d.Addr(), ssh.MarshalAuthorizedKey(d.HostKey()))
	}
	fmt.Fprintln(out, "ready")
	if err := out.Flush(); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, in)
	for id, d := range devs {
		fmt.Fprintf(out, "flashed %s %s\n", id, strconv.Itoa(d.Flashed()))
	}
	fmt.Fprintln(out, "done")
	return out.Flush()
}
