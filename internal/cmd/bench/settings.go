package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fwupgrader/fwupgrader/openwrt"
)

// settings are the sizes of a run.
type settings struct {
	quick bool

	// upload
	uploadSize int64
	rounds     int

	// batch: a batch of batchDevices against one device, for each
	// reconnection delay; then the peak memory of a batch of peakDevices
	// with a peakImage image.
	batchDevices int
	batchImage   int64
	batchReboot  time.Duration
	batchDelays  []batchDelay
	peakDevices  int
	peakImage    int64

	// reconnect
	reconnectRuns   int
	reconnectReboot time.Duration

	// postgres
	pgBatch      int // operations of CreateBatch, and of the claims' batch
	pgTransOps   int // operations driven through their transitions
	pgClaimCalls int // ClaimOperations calls per claims figure

	// engine
	engineOps int
}

// batchDelay is one setting of the openwrt upgrader's first reconnection
// after the flash (Config.ReconnectDelay) for the batch figures.
type batchDelay struct {
	name  string
	delay time.Duration
}

func defaults(quick bool) settings {
	s := settings{
		quick:      false,
		uploadSize: 32 << 20, rounds: 5,
		batchDevices: 1000, batchImage: 1 << 20, batchReboot: 2 * time.Second,
		batchDelays: []batchDelay{
			{"reconnect 500 ms", 500 * time.Millisecond},
			{"reconnect default", openwrt.DefaultReconnectDelay},
		},
		peakDevices: 100, peakImage: 32 << 20,
		reconnectRuns: 5, reconnectReboot: 8 * time.Second,
		pgBatch: 100_000, pgTransOps: 2000, pgClaimCalls: 2000,
		engineOps: 5000,
	}
	if quick {
		s.quick = true
		s.uploadSize, s.rounds = 8<<20, 3
		s.batchDelays = s.batchDelays[1:]
		s.peakDevices = 50
		s.reconnectRuns, s.reconnectReboot = 3, 6*time.Second
		s.pgBatch, s.pgTransOps, s.pgClaimCalls = 10_000, 300, 300
		s.engineOps = 1000
	}
	return s
}

// describe says the sizes of the sections in todo.
func (s settings) describe(todo []string) []string {
	var out []string
	for _, name := range todo {
		switch name {
		case "upload":
			out = append(out, fmt.Sprintf("upload: a %d MiB file, median of %d rounds, the contenders alternating in each round",
				s.uploadSize>>20, s.rounds))
		case "batch":
			var delays []string
			for _, d := range s.batchDelays {
				delays = append(delays, d.name)
			}
			out = append(out, fmt.Sprintf("batch: %d devices vs 1 (%d KiB image, %s reboot; %s), one run each; peak memory: %d devices at once, %d MiB image",
				s.batchDevices, s.batchImage>>10, s.batchReboot, strings.Join(delays, ", "), s.peakDevices, s.peakImage>>20))
		case "reconnect":
			out = append(out, fmt.Sprintf("reconnect: %d devices rebooting in about %s (silent while down), median", s.reconnectRuns, s.reconnectReboot))
		case "postgres":
			out = append(out, fmt.Sprintf("postgres: a batch of %d operations; transitions of %d operations; %d claim calls per figure",
				s.pgBatch, s.pgTransOps, s.pgClaimCalls))
		case "engine":
			out = append(out, fmt.Sprintf("engine: %d no-op operations per store", s.engineOps))
		}
	}
	return out
}

// median returns the median of v (the upper one of an even count); 0 for
// none.
func median[T int64 | float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// procStatusKB reads a "kB" field of a /proc file such as
// /proc/self/status or /proc/meminfo.
func procStatusKB(file, field string) (int64, bool) {
	f, err := os.Open(file)
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
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		return kb, err == nil
	}
	return 0, false
}

// raiseFileLimit makes sure the process may open n files, raising its
// soft limit towards the hard one when needed.
func raiseFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open file limit: %w", err)
	}
	if lim.Cur >= n {
		return nil
	}
	if lim.Max < n {
		return fmt.Errorf("needs %d open files, the hard limit is %d: raise it (ulimit -Hn)", n, lim.Max)
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise the open file limit to %d: %w", n, err)
	}
	return nil
}

// processCPU returns the CPU time (user and system) the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mibPerSecond is size bytes in d, in MiB/s.
func mibPerSecond(size int64, d time.Duration) float64 {
	return float64(size) / (1 << 20) / max(d.Seconds(), 1e-9)
}
