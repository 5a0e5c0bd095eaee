package openwrttest

import (
	"slices"
	"sync"
	"time"
)

// Meter measures a fleet of simulated devices from their side, for tests of
// rollout limits: how many devices are busy at once (a device is busy while
// it has at least one SSH connection that passed authentication) in all
// and per group, and when each device first became busy. Share one Meter
// between devices through Config.Meter. Its methods are safe for concurrent
// use.
type Meter struct {
	mu       sync.Mutex
	open     map[*Device]int
	busy     int
	maxBusy  int
	group    map[string]int
	maxGroup map[string]int
	first    map[*Device]time.Time
	starts   []time.Time // every change from idle to busy, in order
}

// NewMeter returns an empty meter.
func NewMeter() *Meter {
	return &Meter{open: map[*Device]int{}, group: map[string]int{}, maxGroup: map[string]int{}, first: map[*Device]time.Time{}}
}

func (m *Meter) connOpened(d *Device, group string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open[d]++
	if m.open[d] > 1 {
		return
	}
	now := time.Now()
	m.starts = append(m.starts, now)
	if _, ok := m.first[d]; !ok {
		m.first[d] = now
	}
	m.busy++
	m.maxBusy = max(m.maxBusy, m.busy)
	m.group[group]++
	m.maxGroup[group] = max(m.maxGroup[group], m.group[group])
}

func (m *Meter) connClosed(d *Device, group string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.open[d]--; m.open[d] > 0 {
		return
	}
	delete(m.open, d)
	m.busy--
	m.group[group]--
}

// MaxBusy returns the most devices that were busy at once.
func (m *Meter) MaxBusy() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maxBusy
}

// MaxBusyIn returns the most devices of group (Config.MeterGroup) that were
// busy at once.
func (m *Meter) MaxBusyIn(group string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.maxGroup[group]
}

// Groups returns the groups seen, sorted.
func (m *Meter) Groups() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for g := range m.maxGroup {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// FirstBusy returns, in order, when each device first became busy.
func (m *Meter) FirstBusy() []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]time.Time, 0, len(m.first))
	for _, t := range m.first {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// MaxFirstBusyWithin returns the most devices that first became busy
// within any period of length d: the start rate seen by the fleet.
func (m *Meter) MaxFirstBusyWithin(d time.Duration) int {
	ts := m.FirstBusy()
	best, j := 0, 0
	for i := range ts {
		for ts[i].Sub(ts[j]) >= d {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}
