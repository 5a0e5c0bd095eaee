package store_test

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Fuzz targets for what a host hands the store as text or values: the
// rollout policy's parsers and its validation, and the records' validation
// (their IDs, names and options end up in SQL rows, log lines and, for an
// image's name, in the path a device stores the image at).

// fzShort is s for a failure message: its start when it is long (the
// fuzzer writes the whole input to testdata).
func fzShort(s string) string {
	const keep = 256
	if len(s) <= keep {
		return s
	}
	return s[:keep] + fmt.Sprintf("…(%d bytes)", len(s))
}

// FuzzParseWaves: a wave list is refused with ErrInvalid, or read into
// waves of one count or one percentage (0-100 %) each, that format back to
// a list reading the same, and that split any batch into waves covering it
// exactly.
func FuzzParseWaves(f *testing.F) {
	for _, s := range []string{"1,10%,100%", "1", "25%", "100%", " 5 , 50 % ", "0", "-1", "101%", "NaN%", "1,,2",
		"1e-300%", "0x1p-2%", "+5", "1%,1%,1%", "9223372036854775807", "", "10%%"} {
		f.Add(s, uint16(1000))
	}
	f.Add("1,10%,100%", uint16(0))
	f.Add("3,2,1", uint16(7))
	f.Fuzz(func(t *testing.T, s string, n uint16) {
		if len(s) > 4096 {
			return
		}
		waves, err := store.ParseWaves(s)
		if err != nil {
			if waves != nil || !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("ParseWaves(%q) = %v, %v: want nil and ErrInvalid", fzShort(s), waves, err)
			}
			return
		}
		if len(waves) == 0 {
			t.Fatalf("ParseWaves(%q): no wave and no error", fzShort(s))
		}
		texts := make([]string, len(waves))
		for i, w := range waves {
			if (w.Count > 0) == (w.Percent != 0) || w.Count < 0 || math.IsNaN(w.Percent) || w.Percent < 0 || w.Percent > 100 {
				t.Fatalf("ParseWaves(%q): wave %d is %+v", fzShort(s), i, w)
			}
			texts[i] = w.String()
		}
		back, err := store.ParseWaves(strings.Join(texts, ","))
		if err != nil || !cmp.Equal(back, waves) {
			t.Fatalf("ParseWaves(%q) = %v, but its text %q reads %v, %v", fzShort(s), waves, strings.Join(texts, ","), back, err)
		}
		if err := (store.Rollout{Waves: waves}).Validate(); (err == nil) != (len(waves) <= store.MaxWaves) {
			t.Fatalf("ParseWaves(%q): %d waves, Validate: %v", fzShort(s), len(waves), err)
		}
		fzCheckWaveSizes(t, waves, int(n))
	})
}

func fzCheckWaveSizes(t *testing.T, waves []store.WaveSize, n int) {
	t.Helper()
	sizes := store.WaveSizes(waves, n)
	sum := 0
	for _, k := range sizes {
		if k <= 0 {
			t.Fatalf("WaveSizes(%v, %d) = %v: an empty wave", waves, n, sizes)
		}
		sum += k
	}
	if sum != n || len(sizes) > len(waves)+1 {
		t.Fatalf("WaveSizes(%v, %d) = %v: does not split the batch", waves, n, sizes)
	}
}

// FuzzParseWindow: a maintenance window (and a time of day) is refused with
// ErrInvalid, or read into times within the day that format back to the
// same window; a window and its complement (the same times swapped) cover
// every instant exactly once, spanning midnight or not.
func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"01:00-05:00 Europe/Rome", "22:00-04:00", "00:00-24:00", "24:00-01:00", "01:00:30-01:00:31 UTC",
		"01:00-05:00  America/New_York ", "01:00-01:00", "25:00-01:00", "1:00-05:00", "01:00-05:00 Local", "01:00-05:00 Mars/Base",
		"01:00-05:00 ../etc/passwd", "01:60-02:00", "-"} {
		f.Add(s, int64(1_700_000_000))
	}
	f.Add("23:59:59-00:00:01 Asia/Kathmandu", int64(-1))
	f.Add("02:30-03:30 Europe/Rome", int64(1_711_846_800)) // the night the clocks go forward
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		if len(s) > 1024 {
			return
		}
		first, _, _ := strings.Cut(s, "-")
		fzCheckTimeOfDay(t, first)

		w, err := store.ParseWindow(s)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("ParseWindow(%q): %v, want ErrInvalid", fzShort(s), err)
			}
			return
		}
		if w.Start < 0 || w.Start > 86400 || w.End < 0 || w.End > 86400 || w.Start == w.End {
			t.Fatalf("ParseWindow(%q) = %+v", fzShort(s), w)
		}
		if back, err := store.ParseWindow(w.String()); err != nil || back != w {
			t.Fatalf("ParseWindow(%q) = %+v, but its text %q reads %+v, %v", fzShort(s), w, w.String(), back, err)
		}
		complement := store.Window{Start: w.End, End: w.Start, TimeZone: w.TimeZone}
		if err := (store.Rollout{Windows: []store.Window{w, complement}}).Validate(); err != nil {
			t.Fatalf("ParseWindow(%q) = %+v: it or its complement does not validate: %v", fzShort(s), w, err)
		}
		// Any instant within 400 years of 1970, and the window's edges on
		// that day in its time zone.
		at := time.Unix(unix%(400*365*24*3600), 0)
		loc, err := time.LoadLocation(w.TimeZone)
		if err != nil {
			t.Fatalf("ParseWindow(%q) = %+v with an unknown time zone: %v", fzShort(s), w, err)
		}
		y, m, d := at.In(loc).Date()
		instants := []time.Time{at}
		for _, edge := range []store.TimeOfDay{w.Start, w.End} {
			e := time.Date(y, m, d, 0, 0, int(edge), 0, loc)
			instants = append(instants, e, e.Add(-time.Second), e.Add(time.Second))
		}
		for _, tm := range instants {
			if w.Contains(tm) == complement.Contains(tm) {
				t.Fatalf("ParseWindow(%q) = %+v: at %s the window contains it %v, and so does its complement", fzShort(s), w, tm, w.Contains(tm))
			}
			if r := (store.Rollout{Windows: []store.Window{w}}); r.InWindow(tm) != w.Contains(tm) {
				t.Fatalf("InWindow and Contains disagree at %s", tm)
			}
		}
	})
}

// fzCheckTimeOfDay: only "HH:MM" and "HH:MM:SS" (two digits each, 24-hour
// clock, up to 24:00) are times of day, and they format back to themselves.
func fzCheckTimeOfDay(t *testing.T, s string) {
	t.Helper()
	tod, err := store.ParseTimeOfDay(s)
	if err != nil {
		if !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("ParseTimeOfDay(%q): %v, want ErrInvalid", fzShort(s), err)
		}
		return
	}
	if tod < 0 || tod > 86400 {
		t.Fatalf("ParseTimeOfDay(%q) = %d, outside the day", fzShort(s), tod)
	}
	for _, part := range strings.Split(s, ":") {
		if len(part) != 2 || part[0] < '0' || part[0] > '9' || part[1] < '0' || part[1] > '9' {
			t.Fatalf("ParseTimeOfDay(%q) = %s: not HH:MM or HH:MM:SS", fzShort(s), tod)
		}
	}
	if back, err := store.ParseTimeOfDay(tod.String()); err != nil || back != tod {
		t.Fatalf("ParseTimeOfDay(%q) = %d, but %q reads %d, %v", fzShort(s), tod, tod.String(), back, err)
	}
}

// FuzzRolloutValidate builds a rollout from a host's values: Validate
// refuses it with ErrInvalid, or every rule the rollout documents holds and
// the functions that enforce it give sensible answers.
func FuzzRolloutValidate(f *testing.F) {
	f.Add(20, 30, int64(time.Minute), int64(10*time.Minute), "1,10%,100%", 20.0, 90.0, true, false, 3, 2, "location", "01:00-05:00 Europe/Rome;22:00-02:00", uint16(50), uint16(3))
	f.Add(0, 0, int64(0), int64(0), "", 0.0, 0.0, false, false, 0, 0, "", "", uint16(0), uint16(0))
	f.Add(-1, 1, int64(time.Microsecond), int64(-1), "0", math.NaN(), 101.0, true, true, -1, 1, "site", "bad", uint16(1), uint16(1))
	f.Add(1, 0, int64(time.Second), int64(0), "100%", 0.0, 100.0, true, true, 0, 0, "group", "00:00-00:01", uint16(10), uint16(10))
	f.Add(1, 5, int64(25*time.Hour), int64(0), "50%", -0.0, 100.0, true, true, 0, 1, "group", "", uint16(10), uint16(2))
	f.Fuzz(func(t *testing.T, maxConcurrent, rateCount int, ratePer, waveWait int64, waves string,
		failure, success float64, hasFailure, hasSuccess bool, minFinished, groupLimit int, groupBy, windows string,
		n, failed uint16) {
		if len(waves)+len(windows)+len(groupBy) > 4096 {
			return
		}
		r := store.Rollout{
			MaxConcurrent: maxConcurrent,
			StartRate:     store.Rate{Count: rateCount, Per: time.Duration(ratePer)},
			WaveWait:      time.Duration(waveWait),
			MinFinished:   minFinished,
			GroupLimit:    groupLimit,
			GroupBy:       store.GroupKey(groupBy),
		}
		r.Waves, _ = store.ParseWaves(waves)
		if hasFailure {
			r.FailureThreshold = &failure
		}
		if hasSuccess {
			r.SuccessThreshold = &success
		}
		for _, s := range strings.Split(windows, ";") {
			if w, err := store.ParseWindow(s); err == nil {
				r.Windows = append(r.Windows, w)
			}
		}
		err := r.Validate()
		batch := store.Batch{BuildID: "build-1", Name: "fuzz", Rollout: r}
		if berr := batch.Validate(); (err == nil) != (berr == nil) {
			t.Fatalf("rollout %+v: Validate %v, but the batch's Validate %v", r, err, berr)
		}
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("rollout %+v: %v does not match ErrInvalid", r, err)
			}
			return
		}
		fzCheckRollout(t, r, int(n), int(failed))
	})
}

func fzCheckRollout(t *testing.T, r store.Rollout, n, failed int) {
	t.Helper()
	per := r.StartRate.Per
	switch {
	case r.MaxConcurrent < 0 || r.StartRate.Count < 0 || r.WaveWait < 0 || r.MinFinished < 0 || r.GroupLimit < 0:
		t.Fatalf("valid rollout with a negative value: %+v", r)
	case per < 0 || per > store.MaxRatePeriod || (per > 0 && per < time.Millisecond) || (r.StartRate.Count == 0 && per != 0):
		t.Fatalf("valid rollout with start rate %+v", r.StartRate)
	case r.StartRate.Period() <= 0 || r.StartRate.Period() > store.MaxRatePeriod:
		t.Fatalf("valid rollout with a start rate period of %s", r.StartRate.Period())
	case len(r.Waves) > store.MaxWaves || len(r.Windows) > store.MaxWindows:
		t.Fatalf("valid rollout with %d waves, %d windows", len(r.Waves), len(r.Windows))
	case r.GroupLimit > 0 && r.GroupBy != store.GroupByLocation && r.GroupBy != store.GroupByGroup:
		t.Fatalf("valid rollout grouping by %q", r.GroupBy)
	case r.GroupLimit == 0 && r.GroupBy != "":
		t.Fatalf("valid rollout grouping by %q without a limit", r.GroupBy)
	}
	for _, p := range []*float64{r.FailureThreshold, r.SuccessThreshold} {
		if p != nil && (math.IsNaN(*p) || *p < 0 || *p > 100) {
			t.Fatalf("valid rollout with a threshold of %v %%", *p)
		}
	}
	fzCheckWaveSizes(t, r.Waves, n)
	d := store.Device{Location: "north", Group: "lab"}
	if g := r.GroupBy.Of(d); g != "" && g != d.Location && g != d.Group {
		t.Fatalf("GroupBy %q of %+v = %q", r.GroupBy, d, g)
	}
	// A wave of n operations with failed of them failed and the rest
	// successful: no failure is never over a threshold, all successes
	// always reach one.
	failed = min(failed, n)
	tally := store.WaveTally{Size: n, Counts: status.Counts{status.Failed: failed, status.Success: n - failed}}
	if failed == 0 && r.FailureOver(tally) {
		t.Fatalf("rollout %+v: a wave of %d without failure is over the failure threshold", r, n)
	}
	if failed == 0 && !r.SuccessHolds(tally) {
		t.Fatalf("rollout %+v: a wave of %d successes misses the success threshold", r, n)
	}
	if failed == n && n > 0 && r.FailureThreshold != nil && *r.FailureThreshold < 99 && !r.FailureOver(tally) {
		t.Fatalf("rollout %+v: a wave of %d failures is not over a failure threshold of %v %%", r, n, *r.FailureThreshold)
	}
	for _, w := range r.Windows {
		if back, err := store.ParseWindow(w.String()); err != nil || back != w {
			t.Fatalf("window %+v reads back %+v, %v", w, back, err)
		}
	}
}

// FuzzRecordValidate: the records a host creates are refused with
// ErrInvalid, or hold what their documentation promises: valid UTF-8
// without NUL within the length limits, IDs without surrounding white
// space or control characters, an image name that is a plain file name, a
// lowercase hex SHA-256, options that are a JSON object. Log lines are cut,
// never refused.
func FuzzRecordValidate(f *testing.F) {
	sum := strings.Repeat("ab", 32)
	f.Add("dev-1", "openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin", "TP-Link Archer C7 v2", int64(5<<20), sum, []byte(`{"sysupgrade":"c,F"}`), "Upgrade operation in progress")
	f.Add(" dev", "../etc/passwd", "a\x00b", int64(-1), strings.ToUpper(sum), []byte(`[1]`), "\x00\xff")
	f.Add("dev\t1", ".", "", int64(0), sum[:63]+"g", []byte(`{"a":"\u0000"}`), strings.Repeat("é", store.MaxLogLineLen+1))
	f.Add("ok", `a\b.bin`, strings.Repeat("x", store.MaxNameLen+1), int64(1), sum, []byte(`null`), "")
	f.Add("ok", "fw.bin", "board", int64(1), sum, []byte(`{"x":"\\u0000"}`), "line\r\n")
	f.Fuzz(func(t *testing.T, id, name, text string, size int64, sha string, options []byte, line string) {
		if len(id)+len(name)+len(text)+len(sha)+len(options)+len(line) > 64<<10 {
			return
		}
		im := store.Image{BuildID: id, Type: name, Name: name, Size: size, SHA256: sha, Boards: []string{text}}
		if err := fzValid(t, "image", im.Validate()); err == nil {
			fzCheckID(t, id)
			fzCheckText(t, name, store.MaxImageTypeLen)
			fzCheckText(t, text, store.MaxNameLen)
			if strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
				t.Fatalf("image name %q accepted: not a plain file name", fzShort(name))
			}
			if b, err := hex.DecodeString(sha); err != nil || len(b) != 32 || strings.ToLower(sha) != sha || size < 0 {
				t.Fatalf("image SHA-256 %q, size %d accepted", fzShort(sha), size)
			}
		}
		d := store.Device{ID: id, Name: name, Model: text, BoardName: text, Address: text}
		if err := fzValid(t, "device", d.Validate()); err == nil {
			fzCheckID(t, id)
			fzCheckText(t, name, store.MaxNameLen)
			fzCheckText(t, text, store.MaxNameLen)
		}
		op := store.Operation{DeviceID: id, ImageID: id, Options: options}
		if err := fzValid(t, "operation", op.Validate()); err == nil {
			fzCheckID(t, id)
			fzCheckOptions(t, options)
		}
		b := store.Batch{BuildID: id, Name: name, Options: options}
		if err := fzValid(t, "batch", b.Validate()); err == nil {
			fzCheckID(t, id)
			fzCheckText(t, name, store.MaxNameLen)
			fzCheckOptions(t, options)
		}

		cut := store.TruncateLogLine(line)
		if !utf8.ValidString(cut) || strings.ContainsRune(cut, 0) || utf8.RuneCountInString(cut) > store.MaxLogLineLen {
			t.Fatalf("TruncateLogLine(%q) = %q", fzShort(line), fzShort(cut))
		}
		if again := store.TruncateLogLine(cut); again != cut {
			t.Fatalf("TruncateLogLine(%q) = %q, and again %q", fzShort(line), fzShort(cut), fzShort(again))
		}
		if utf8.ValidString(line) && !strings.ContainsRune(line, 0) && utf8.RuneCountInString(line) <= store.MaxLogLineLen && cut != line {
			t.Fatalf("TruncateLogLine(%q) = %q: changed a line within the limit", fzShort(line), fzShort(cut))
		}
	})
}

func fzValid(t *testing.T, record string, err error) error {
	t.Helper()
	if err != nil && !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("%s: %v does not match ErrInvalid", record, err)
	}
	return err
}

func fzCheckText(t *testing.T, s string, limit int) {
	t.Helper()
	if !utf8.ValidString(s) || strings.ContainsRune(s, 0) || utf8.RuneCountInString(s) > limit {
		t.Fatalf("text %q accepted (limit %d)", fzShort(s), limit)
	}
}

func fzCheckID(t *testing.T, id string) {
	t.Helper()
	fzCheckText(t, id, store.MaxIDLen)
	if strings.TrimSpace(id) != id || strings.TrimSpace(id) == "" || strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		t.Fatalf("ID %q accepted", fzShort(id))
	}
}

func fzCheckOptions(t *testing.T, o []byte) {
	t.Helper()
	if len(o) == 0 {
		return
	}
	var m map[string]any
	if len(o) > store.MaxOptionsLen || json.Unmarshal(o, &m) != nil || m == nil || !utf8.Valid(o) {
		t.Fatalf("options %q accepted", fzShort(string(o)))
	}
	if s, _ := json.Marshal(m); strings.Contains(string(s), `\u0000`) {
		t.Fatalf("options %q accepted: they hold a NUL", fzShort(string(o)))
	}
}
