package store

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
)

// Rollout is a batch's rollout policy. Its rules are enforced by the store
// when an operation is claimed (ClaimAllowed), so they hold however many
// engines share the store. The zero Rollout has no limit: every operation
// may start as soon as the batch is started.
//
// A rollout holds back devices not started yet (pending operations) by
// schedule, windows, waves and pauses, and caps every claim before
// status.PhaseFlashing (a first attempt, a retry, a device that was
// offline). A claim that verifies a flash already made is never held back;
// see ClaimAllowed.
type Rollout struct {
	// MaxConcurrent caps how many of the batch's operations hold a lease
	// (run) at once. 0: no cap beyond the engines' workers.
	MaxConcurrent int
	// StartRate caps how many devices are contacted within any period of
	// StartRate.Per (at most MaxRatePeriod), as the devices see it. Zero:
	// no limit. Every claim before flashing (a claim by ID included) is a
	// start in flight until its attempt reaches the device, which is when
	// it first reports a phase after status.PhaseConnecting; the start is
	// then dated by that contact. A start in flight that ends without
	// contact (the device unreachable, the lease released or lost) is
	// forgotten. A claim is allowed while the starts in flight plus the
	// contacts within the last period stay under Count, so the contacts
	// of any period never exceed it, however long connecting takes. A rate
	// set or lengthened by SetRollout counts the starts already made.
	StartRate Rate
	// Waves split the batch's operations, in their order, into waves.
	// Each entry is the cumulative size the rollout reaches with that wave,
	// as a count or a percentage of the batch (rounded up): 1, 10 %, 100 %
	// is a canary of one device, then up to a tenth of the batch, then the
	// rest. Operations left over by the last entry form a final wave;
	// entries that add nothing are dropped. Empty: one wave. A wave starts
	// once the previous one settled (see WaveTally.Settled), its success
	// threshold held and WaveWait passed. Waves cannot be changed once the
	// batch exists.
	Waves []WaveSize
	// WaveWait is how long to wait after a wave settled before the next
	// one starts.
	WaveWait time.Duration
	// FailureThreshold, in percent (0-100), pauses the batch
	// (status.PauseFailureThreshold) when a wave's failed and aborted
	// operations, over the wave's size less its cancelled operations, go
	// strictly above it. Nil: no threshold. See MinFinished for when it is
	// checked; after an operator resumes, only a new failure trips it
	// again.
	FailureThreshold *float64
	// MinFinished is how many of a wave's operations must have finished
	// (success, failed or aborted) before the failure threshold applies:
	// it is checked when the wave reaches that many (successes included)
	// and at every failure after. 0 counts as 1; a wave smaller than
	// MinFinished applies it once all its operations finished.
	MinFinished int
	// SuccessThreshold, in percent (0-100), must be reached by a settled
	// wave's successful operations, over the wave's size less its cancelled
	// operations, before the next wave starts; otherwise the batch pauses
	// (status.PauseSuccessThreshold). Nil: no threshold.
	SuccessThreshold *float64
	// GroupLimit caps how many of the batch's operations run at once per
	// value of GroupBy (for example at most one per location; devices with
	// an empty value form one group). 0: no limit.
	GroupLimit int
	// GroupBy is the device field GroupLimit counts by; required with a
	// GroupLimit.
	GroupBy GroupKey
	// StartAt is when the batch may start its first operation. Zero: at
	// once.
	StartAt time.Time
	// Windows are daily maintenance windows: new operations start only
	// inside one of them; running ones finish. Empty: at any time.
	Windows []Window
}

// Rate is a number of starts per period.
type Rate struct {
	// Count is how many starts are allowed per period; 0 means no limit.
	Count int
	// Per is the period; zero means a minute.
	Per time.Duration
}

// Period returns r.Per, or a minute when it is zero.
func (r Rate) Period() time.Duration {
	if r.Per == 0 {
		return time.Minute
	}
	return r.Per
}

// WaveSize is one entry of Rollout.Waves: a count or a percentage, exactly
// one of them set.
type WaveSize struct {
	Count   int
	Percent float64
}

// String returns "10" or "25%".
func (w WaveSize) String() string {
	if w.Percent != 0 {
		return strconv.FormatFloat(w.Percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(w.Count)
}

// ParseWaves parses a comma-separated wave list such as "1,10%,100%".
func ParseWaves(s string) ([]WaveSize, error) {
	var out []WaveSize
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		var w WaveSize
		if p, ok := strings.CutSuffix(f, "%"); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil {
				return nil, invalid("rollout", "Waves", "%q is not a percentage", f)
			}
			w.Percent = v
		} else {
			v, err := strconv.Atoi(f)
			if err != nil {
				return nil, invalid("rollout", "Waves", "%q is neither a count nor a percentage", f)
			}
			w.Count = v
		}
		if err := w.validate(); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

func (w WaveSize) validate() error {
	switch {
	case w.Count != 0 && w.Percent != 0:
		return invalid("rollout", "Waves", "a wave is a count or a percentage, not both (%d and %v%%)", w.Count, w.Percent)
	case w.Count < 0:
		return invalid("rollout", "Waves", "a wave of %d operations is negative", w.Count)
	case math.IsNaN(w.Percent) || w.Percent < 0 || w.Percent > 100:
		return invalid("rollout", "Waves", "a wave of %v%% is outside 0-100%%", w.Percent)
	case w.Count == 0 && w.Percent == 0:
		return invalid("rollout", "Waves", "a wave must hold at least one operation")
	}
	return nil
}

// GroupKey names the device field a group limit counts by.
type GroupKey string

// Group keys.
const (
	GroupByLocation GroupKey = "location"
	GroupByGroup    GroupKey = "group"
)

// Of returns d's value of the key.
func (k GroupKey) Of(d Device) string {
	switch k {
	case GroupByLocation:
		return d.Location
	case GroupByGroup:
		return d.Group
	}
	return ""
}

// TimeOfDay is a time of day in seconds after midnight, 0 to 86400 (the end
// of the day, "24:00").
type TimeOfDay int

// ParseTimeOfDay parses "HH:MM" or "HH:MM:SS" (24-hour clock; "24:00" is
// the end of the day).
func ParseTimeOfDay(s string) (TimeOfDay, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, invalid("rollout", "Windows", "%q is not a time of day (HH:MM or HH:MM:SS)", s)
	}
	limits := []int{24, 59, 59}
	secs := []int{3600, 60, 1}
	total := 0
	for i, p := range parts {
		// Two digits exactly: no sign, no space (strconv.Atoi takes "+1").
		if len(p) != 2 || p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9' {
			return 0, invalid("rollout", "Windows", "%q is not a time of day (HH:MM or HH:MM:SS)", s)
		}
		v := int(p[0]-'0')*10 + int(p[1]-'0')
		if v > limits[i] {
			return 0, invalid("rollout", "Windows", "%q is not a time of day (HH:MM or HH:MM:SS)", s)
		}
		total += v * secs[i]
	}
	if total > 86400 {
		return 0, invalid("rollout", "Windows", "%q is after the end of the day", s)
	}
	return TimeOfDay(total), nil
}

// String returns "HH:MM" or "HH:MM:SS".
func (t TimeOfDay) String() string {
	h, m, s := int(t)/3600, int(t)/60%60, int(t)%60
	if s != 0 {
		return fmt.Sprintf("%02d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%02d:%02d", h, m)
}

// Window is a daily maintenance window from Start to End in a time zone. A
// window whose End is before its Start spans midnight (22:00 to 04:00).
type Window struct {
	Start, End TimeOfDay
	// TimeZone is an IANA name such as "Europe/Rome"; empty is UTC.
	TimeZone string
}

// ParseWindow parses "HH:MM-HH:MM", with an optional time zone name after a
// space: "01:00-05:00 Europe/Rome".
func ParseWindow(s string) (Window, error) {
	spec, tz, _ := strings.Cut(strings.TrimSpace(s), " ")
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return Window{}, invalid("rollout", "Windows", "%q is not a window (HH:MM-HH:MM [time zone])", s)
	}
	start, err := ParseTimeOfDay(a)
	if err != nil {
		return Window{}, err
	}
	end, err := ParseTimeOfDay(b)
	if err != nil {
		return Window{}, err
	}
	w := Window{Start: start, End: end, TimeZone: strings.TrimSpace(tz)}
	return w, w.validate()
}

func (w Window) String() string {
	s := w.Start.String() + "-" + w.End.String()
	if w.TimeZone != "" {
		s += " " + w.TimeZone
	}
	return s
}

var zones sync.Map // time zone name -> *time.Location

func loadZone(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zones.Store(name, l)
	return l, nil
}

func (w Window) validate() error {
	switch {
	case w.Start < 0 || w.Start > 86400 || w.End < 0 || w.End > 86400:
		return invalid("rollout", "Windows", "window %s is outside the day (00:00-24:00)", w)
	case w.Start == w.End || (w.Start == 0 && w.End == 86400) || (w.Start == 86400 && w.End == 0):
		return invalid("rollout", "Windows", "window %s is empty or the whole day: leave Windows empty for no window", w)
	case strings.ContainsAny(w.TimeZone, " \t\n") || len(w.TimeZone) > MaxNameLen:
		return invalid("rollout", "Windows", "time zone %q is not a time zone name", w.TimeZone)
	case w.TimeZone == "Local":
		return invalid("rollout", "Windows", "time zone \"Local\" depends on each engine's machine: name the zone (e.g. Europe/Rome)")
	}
	if _, err := loadZone(w.TimeZone); err != nil {
		return invalid("rollout", "Windows", "unknown time zone %q", w.TimeZone)
	}
	return nil
}

// Contains reports whether t falls inside the window.
func (w Window) Contains(t time.Time) bool {
	loc, err := loadZone(w.TimeZone)
	if err != nil {
		return false
	}
	h, m, s := t.In(loc).Clock()
	now := TimeOfDay(h*3600 + m*60 + s)
	if w.Start < w.End {
		return w.Start <= now && now < w.End
	}
	return now >= w.Start || now < w.End
}

// Limits of a rollout.
const (
	MaxWaves      = 100
	MaxWindows    = 24
	MaxRatePeriod = 24 * time.Hour
)

// Validate checks the rollout on its own.
func (r Rollout) Validate() error {
	switch {
	case r.MaxConcurrent < 0:
		return invalid("rollout", "MaxConcurrent", "is negative (%d)", r.MaxConcurrent)
	case r.StartRate.Count < 0:
		return invalid("rollout", "StartRate", "is negative (%d)", r.StartRate.Count)
	case r.StartRate.Per < 0 || (r.StartRate.Per > 0 && r.StartRate.Per < time.Millisecond) || r.StartRate.Per > MaxRatePeriod:
		return invalid("rollout", "StartRate", "period %s must be within 1ms-%s (0 = a minute)", r.StartRate.Per, MaxRatePeriod)
	case r.StartRate.Count == 0 && r.StartRate.Per != 0:
		return invalid("rollout", "StartRate", "a period (%s) without a count", r.StartRate.Per)
	case len(r.Waves) > MaxWaves:
		return invalid("rollout", "Waves", "%d waves, the limit is %d", len(r.Waves), MaxWaves)
	case r.WaveWait < 0:
		return invalid("rollout", "WaveWait", "is negative (%s)", r.WaveWait)
	case r.MinFinished < 0:
		return invalid("rollout", "MinFinished", "is negative (%d)", r.MinFinished)
	case r.GroupLimit < 0:
		return invalid("rollout", "GroupLimit", "is negative (%d)", r.GroupLimit)
	case r.GroupLimit > 0 && r.GroupBy != GroupByLocation && r.GroupBy != GroupByGroup:
		return invalid("rollout", "GroupBy", "must be %q or %q with a group limit, got %q", GroupByLocation, GroupByGroup, r.GroupBy)
	case r.GroupLimit == 0 && r.GroupBy != "":
		return invalid("rollout", "GroupBy", "%q is set without a GroupLimit", r.GroupBy)
	case len(r.Windows) > MaxWindows:
		return invalid("rollout", "Windows", "%d windows, the limit is %d", len(r.Windows), MaxWindows)
	}
	for _, w := range r.Waves {
		if err := w.validate(); err != nil {
			return err
		}
	}
	for _, p := range []struct {
		name string
		v    *float64
	}{{"FailureThreshold", r.FailureThreshold}, {"SuccessThreshold", r.SuccessThreshold}} {
		if p.v != nil && (math.IsNaN(*p.v) || *p.v < 0 || *p.v > 100) {
			return invalid("rollout", p.name, "%v%% is outside 0-100%%", *p.v)
		}
	}
	for _, w := range r.Windows {
		if err := w.validate(); err != nil {
			return err
		}
	}
	return nil
}

// InWindow reports whether new operations may start at t: always without
// windows, otherwise inside one of them.
func (r Rollout) InWindow(t time.Time) bool {
	if len(r.Windows) == 0 {
		return true
	}
	for _, w := range r.Windows {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// WaveSizes returns the size of each wave of a batch of n operations: the
// entries of waves as cumulative targets (percentages rounded up, capped at
// n), without the waves that add nothing, and a final wave for what is left.
func WaveSizes(waves []WaveSize, n int) []int {
	var sizes []int
	done := 0
	for _, w := range waves {
		target := w.Count
		if w.Percent != 0 {
			// Rounded up, but not by floating-point error: 16.1 % of 1,000
			// is 161, not 162.
			target = int(math.Ceil(w.Percent*float64(n)/100 - 1e-9))
		}
		target = min(target, n)
		if target > done {
			sizes = append(sizes, target-done)
			done = target
		}
	}
	if done < n {
		sizes = append(sizes, n-done)
	}
	return sizes
}

// WaveTally counts the operations of one wave of a batch.
type WaveTally struct {
	// Size is how many operations the wave holds.
	Size int
	// Counts holds how many of them are in each state.
	Counts status.Counts
	// Waiting is how many of the pending ones wait for a device that was
	// offline (they started once and went back to pending).
	Waiting int
}

// Finished returns how many of the wave's operations ended success, failed
// or aborted.
func (t WaveTally) Finished() int {
	return t.Counts[status.Success] + t.Counts[status.Failed] + t.Counts[status.Aborted]
}

// Settled reports whether nothing of the wave remains to start or runs:
// every operation ended or waits for an offline device. The next wave can
// start then: a device that is offline does not hold the rollout back.
func (t WaveTally) Settled() bool {
	return t.Counts[status.InProgress] == 0 && t.Counts[status.Pending] == t.Waiting
}

// counted returns the wave's size without its cancelled operations: the
// total of the thresholds.
func (t WaveTally) counted() int { return t.Size - t.Counts[status.Cancelled] }

// minFinished is how many of the wave's operations must have finished for
// the failure threshold to apply.
func (r Rollout) minFinished(t WaveTally) int {
	return max(min(r.MinFinished, t.counted()), 1)
}

// FailureOver reports whether the wave's failures are strictly above the
// rollout's failure threshold (with enough finished operations).
func (r Rollout) FailureOver(t WaveTally) bool {
	if r.FailureThreshold == nil || t.Finished() < r.minFinished(t) || t.counted() <= 0 {
		return false
	}
	bad := float64(t.Counts[status.Failed] + t.Counts[status.Aborted])
	return bad*100 > *r.FailureThreshold*float64(t.counted())
}

// SuccessHolds reports whether the wave reached the rollout's success
// threshold (always true without one).
func (r Rollout) SuccessHolds(t WaveTally) bool {
	if r.SuccessThreshold == nil || t.counted() <= 0 {
		return true
	}
	return float64(t.Counts[status.Success])*100 >= *r.SuccessThreshold*float64(t.counted())
}

// Waiting returns how many of the batch's pending operations wait for a
// device that was offline.
func (b Batch) Waiting() int {
	n := 0
	for _, t := range b.WaveTallies {
		n += t.Waiting
	}
	return n
}

// Total returns how many operations the batch holds.
func (b Batch) Total() int { return b.Counts.Total() }

// Done returns how many of the batch's operations ended.
func (b Batch) Done() int {
	n := 0
	for st, c := range b.Counts {
		if st.Terminal() {
			n += c
		}
	}
	return n
}

// BatchUse is how much of its rollout's limits a batch uses at the moment
// of a claim, for ClaimAllowed.
type BatchUse struct {
	// Running is how many of its operations hold a live lease.
	Running int
	// RunningInGroup is how many of them belong to the claimed operation's
	// group (Rollout.GroupBy).
	RunningInGroup int
	// RecentStarts is how many of its starts are in flight (claimed before
	// flashing, device not reached yet) plus how many reached their device
	// within the last Rollout.StartRate.Period() (see Rollout.StartRate).
	RecentStarts int
}

// ClaimAllowed reports whether the batch b (nil for an operation outside
// any batch) lets op be claimed at now, given its current use.
//
//   - An operation at or after status.PhaseFlashing is always allowed: its
//     flash must be verified.
//   - A pending operation is a device not started yet (or waiting again for
//     a device that was offline): it is held back while the batch is idle
//     (not started), paused, cancelled or ended, before Rollout.StartAt,
//     outside the maintenance windows, and until its wave started.
//   - An operation in progress (waiting for a retry, or taken over from a
//     lost engine) already started: it goes on while the batch is paused or
//     outside its windows ("running ones finish"), but not once the batch
//     was cancelled.
//   - Every claim before flashing counts against the caps (concurrency,
//     group limit, start rate).
func ClaimAllowed(b *Batch, use BatchUse, op Operation, now time.Time) bool {
	if b == nil || op.Phase.AfterPointOfNoReturn() {
		return true
	}
	if b.CancelRequested || b.State.Terminal() {
		return false
	}
	if op.State == status.Pending && (Hold(*b, now) != HoldNone || op.Wave > b.Wave) {
		return false
	}
	return !Capped(b.Rollout, use)
}

// Capped reports whether a rollout's caps forbid one more start.
func Capped(r Rollout, use BatchUse) bool {
	return (r.MaxConcurrent > 0 && use.Running >= r.MaxConcurrent) ||
		(r.GroupLimit > 0 && use.RunningInGroup >= r.GroupLimit) ||
		(r.StartRate.Count > 0 && use.RecentStarts >= r.StartRate.Count)
}

// HoldReason says why a batch starts nothing at the moment.
type HoldReason string

// Hold reasons.
const (
	HoldNone       HoldReason = ""
	HoldNotStarted HoldReason = "not-started"
	HoldPaused     HoldReason = "paused"
	HoldCancelled  HoldReason = "cancelled"
	HoldEnded      HoldReason = "ended"
	HoldScheduled  HoldReason = "scheduled"
	HoldWindow     HoldReason = "outside-window"
	HoldWaveWait   HoldReason = "wave-wait"
)

// Hold returns why the batch starts nothing at now, or HoldNone when it may
// start operations of its current wave (caps permitting).
func Hold(b Batch, now time.Time) HoldReason {
	switch {
	case b.CancelRequested:
		return HoldCancelled
	case b.State.Terminal():
		return HoldEnded
	case b.State == status.BatchIdle:
		return HoldNotStarted
	case b.State == status.BatchPaused:
		return HoldPaused
	case now.Before(b.Rollout.StartAt):
		return HoldScheduled
	case !b.Rollout.InWindow(now):
		return HoldWindow
	}
	return HoldNone
}

// NextWave applies the wave rules to b at now and reports whether it
// changed b: once the current wave settled, the batch pauses
// (status.PauseSuccessThreshold) when the wave missed the success threshold,
// otherwise it records when the wave settled and, WaveWait later, moves to
// the next wave. Adapters call it for AdvanceBatches, compare-and-set.
func NextWave(b Batch, now time.Time) (Batch, bool) {
	if b.State != status.BatchInProgress || b.CancelRequested || b.Wave >= len(b.WaveTallies)-1 {
		return b, false
	}
	t := b.WaveTallies[b.Wave]
	// Once settled, a wave stays settled: an offline device of it trying
	// again must not restart WaveWait.
	if !t.Settled() && b.WaveSettledAt.IsZero() {
		return b, false
	}
	if b.WaveSettledAt.IsZero() && !b.Rollout.SuccessHolds(t) {
		b.State, b.PauseReason = status.BatchPaused, status.PauseSuccessThreshold
		b.UpdatedAt = now
		return b, true
	}
	if b.WaveSettledAt.IsZero() {
		b.WaveSettledAt = now
		if b.Rollout.WaveWait > 0 {
			b.UpdatedAt = now
			return b, true
		}
	}
	if now.Before(b.WaveSettledAt.Add(b.Rollout.WaveWait)) {
		return b, false
	}
	b.Wave++
	b.WaveSettledAt = time.Time{}
	b.UpdatedAt = now
	return b, true
}

// AfterOperationChange applies the batch rules after one of b's operations
// of wave wave moved from state from ("" for a new one) to state to (b's
// counts and tallies already updated): the batch's state is recomputed
// (NextBatchState), and the failure threshold may pause the batch when the
// operation just failed or aborted, or when its finishing brought the wave
// to the rollout's MinFinished.
func AfterOperationChange(b Batch, wave int, from, to status.State, now time.Time) Batch {
	if next := NextBatchState(b.State, b.Counts); next != b.State {
		b.State = next
		if next != status.BatchPaused {
			b.PauseReason = status.PauseNone
		}
		b.UpdatedAt = now
	}
	if b.State != status.BatchInProgress || wave >= len(b.WaveTallies) || from == to {
		return b
	}
	t := b.WaveTallies[wave]
	failedNow := to == status.Failed || to == status.Aborted
	reached := (failedNow || to == status.Success) && t.Finished() == b.Rollout.minFinished(t)
	if (failedNow || reached) && b.Rollout.FailureOver(t) {
		b.State, b.PauseReason = status.BatchPaused, status.PauseFailureThreshold
		b.UpdatedAt = now
	}
	return b
}

// Tally moves one operation of b between tallies: old is its record before
// the change (nil for a new operation), cur after it. It keeps b.Counts and
// b.WaveTallies in step; adapters that count in SQL use it as the
// definition.
func Tally(b *Batch, old *Operation, cur Operation) {
	if b.Counts == nil {
		b.Counts = status.Counts{}
	}
	if old != nil {
		if b.Counts[old.State]--; b.Counts[old.State] <= 0 {
			delete(b.Counts, old.State)
		}
		if old.Wave < len(b.WaveTallies) {
			t := &b.WaveTallies[old.Wave]
			if t.Counts[old.State]--; t.Counts[old.State] <= 0 {
				delete(t.Counts, old.State)
			}
			if WaitingOffline(*old) {
				t.Waiting--
			}
		}
	}
	b.Counts[cur.State]++
	if cur.Wave < len(b.WaveTallies) {
		t := &b.WaveTallies[cur.Wave]
		if t.Counts == nil {
			t.Counts = status.Counts{}
		}
		t.Counts[cur.State]++
		if WaitingOffline(cur) {
			t.Waiting++
		}
	}
}

// WaitingOffline reports whether op is pending after having started: it
// went back to wait for a device that could not be reached.
func WaitingOffline(op Operation) bool {
	return op.State == status.Pending && !op.StartedAt.IsZero()
}

// CheckRolloutChange validates SetRollout: the batch has not ended, the new
// rollout is valid and keeps the batch's waves (the operations were split
// into waves at creation).
func CheckRolloutChange(b Batch, r Rollout) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if b.State.Terminal() || b.CancelRequested {
		return fmt.Errorf("%w: batch %s is %s; its rollout can no longer change", ErrInvalidTransition, b.ID, b.State)
	}
	if !slices.Equal(b.Rollout.Waves, r.Waves) {
		return fmt.Errorf("%w: batch %s: the waves of a batch are fixed when it is created (a new batch can retry its operations)",
			ErrInvalidTransition, b.ID)
	}
	return nil
}

// CheckBatchCancel validates CancelBatch.
func CheckBatchCancel(b Batch) error {
	if b.State.Terminal() {
		return fmt.Errorf("%w: batch %s is %s and cannot be cancelled", ErrInvalidTransition, b.ID, b.State)
	}
	return nil
}

// CancelInBatch returns the update CancelBatch applies to op, and false
// when op is left alone (terminal, or at or after flashing: it finishes and
// is verified).
func CancelInBatch(op Operation) (OperationUpdate, bool) {
	if op.State.Terminal() || op.Phase.AfterPointOfNoReturn() {
		return OperationUpdate{}, false
	}
	return OperationUpdate{From: op.State, State: status.Cancelled, Reason: status.ReasonCancelledByUser,
		Log: []string{"cancelled: its batch was cancelled"}}, true
}

// Contacted reports whether an update moving op from phase from to phase to
// is its attempt reaching the device: the first phase after
// status.PhaseConnecting. Adapters date a start in flight by it.
func Contacted(from, to status.Phase) bool {
	return to.Order() > status.PhaseConnecting.Order() && from.Order() <= status.PhaseConnecting.Order()
}
