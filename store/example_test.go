package store_test

import (
	"errors"
	"fmt"
	"time"
	_ "time/tzdata" // the examples' time zones, even on machines without a zoneinfo database

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Waves are cumulative targets: a canary of one device, then up to a tenth
// of the batch, then everything.
func ExampleParseWaves() {
	waves, err := store.ParseWaves("1, 10%, 100%")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(waves)
	fmt.Println(store.WaveSizes(waves, 50))

	_, err = store.ParseWaves("1,ten")
	fmt.Println(err)
	_, err = store.ParseWaves("1,150%")
	fmt.Println(err)
	// Output:
	// [1 10% 100%]
	// [1 4 45]
	// store: invalid rollout Waves: "ten" is neither a count nor a percentage
	// store: invalid rollout Waves: a wave of 150% is outside 0-100%
}

// The same waves split batches of different sizes: percentages are rounded
// up, waves that add nothing are dropped, and what the last entry leaves
// forms a final wave.
func ExampleWaveSizes() {
	waves := []store.WaveSize{{Count: 1}, {Percent: 10}, {Count: 20}}
	for _, n := range []int{1, 5, 50, 1000} {
		fmt.Printf("%4d devices: %v\n", n, store.WaveSizes(waves, n))
	}
	// Output:
	//    1 devices: [1]
	//    5 devices: [1 4]
	//   50 devices: [1 4 15 30]
	// 1000 devices: [1 99 900]
}

// A window whose end is before its start spans midnight; its time zone is
// the devices', whatever the engines' machines say.
func ExampleParseWindow() {
	w, err := store.ParseWindow("22:00-04:00 Europe/Rome")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(w)
	for _, t := range []string{
		"2025-01-15T21:30:00Z", // 22:30 in Rome (CET, UTC+1)
		"2025-01-16T02:59:00Z", // 03:59 in Rome
		"2025-01-16T03:00:00Z", // 04:00 in Rome: the end is excluded
		"2025-07-15T20:30:00Z", // 22:30 in Rome (CEST, UTC+2)
	} {
		at, _ := time.Parse(time.RFC3339, t)
		fmt.Println(t, w.Contains(at))
	}

	_, err = store.ParseWindow("01:00-05:00 Mars/Olympus")
	fmt.Println(err)
	// Output:
	// 22:00-04:00 Europe/Rome
	// 2025-01-15T21:30:00Z true
	// 2025-01-16T02:59:00Z true
	// 2025-01-16T03:00:00Z false
	// 2025-07-15T20:30:00Z true
	// store: invalid rollout Windows: unknown time zone "Mars/Olympus"
}

// Validate refuses a rollout that cannot mean anything, naming the field.
// Stores and the engine call it before anything is stored.
func ExampleRollout_Validate() {
	threshold := 120.0
	for _, r := range []store.Rollout{
		{MaxConcurrent: 20, Waves: []store.WaveSize{{Count: 1}, {Percent: 100}}, GroupLimit: 2, GroupBy: store.GroupByLocation},
		{GroupLimit: 1},
		{FailureThreshold: &threshold},
		{StartRate: store.Rate{Per: time.Minute}},
	} {
		err := r.Validate()
		var ve *store.ValidationError
		if errors.As(err, &ve) {
			fmt.Printf("%s (field %s, ErrInvalid: %v)\n", err, ve.Field, errors.Is(err, store.ErrInvalid))
		} else {
			fmt.Println("valid:", err == nil)
		}
	}
	// Output:
	// valid: true
	// store: invalid rollout GroupBy: must be "location" or "group" with a group limit, got "" (field GroupBy, ErrInvalid: true)
	// store: invalid rollout FailureThreshold: 120% is outside 0-100% (field FailureThreshold, ErrInvalid: true)
	// store: invalid rollout StartRate: a period (1m0s) without a count (field StartRate, ErrInvalid: true)
}

// Hold says why a batch starts no new device at a given moment.
func ExampleHold() {
	night, _ := store.ParseWindow("01:00-05:00")
	b := store.Batch{
		State:   status.BatchInProgress,
		Rollout: store.Rollout{Windows: []store.Window{night}},
	}
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, s); return t }

	fmt.Printf("%q\n", store.Hold(b, at("2025-01-15T02:00:00Z")))
	fmt.Printf("%q\n", store.Hold(b, at("2025-01-15T12:00:00Z")))
	b.Rollout.StartAt = at("2025-01-20T00:00:00Z")
	fmt.Printf("%q\n", store.Hold(b, at("2025-01-15T02:00:00Z")))
	b.State, b.PauseReason = status.BatchPaused, status.PauseFailureThreshold
	fmt.Printf("%q\n", store.Hold(b, at("2025-01-21T02:00:00Z")))
	b.State = status.BatchIdle
	fmt.Printf("%q\n", store.Hold(b, at("2025-01-21T02:00:00Z")))
	// Output:
	// ""
	// "outside-window"
	// "scheduled"
	// "paused"
	// "not-started"
}

// A store asks ClaimAllowed, in the claim's own atomic step, whether a
// batch's rollout lets an operation run now. A paused batch starts no new
// device, lets attempts already started go on, and never holds back the
// verification of a flash.
func ExampleClaimAllowed() {
	now := time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC)
	paused := &store.Batch{State: status.BatchPaused, PauseReason: status.PauseOperator,
		Rollout: store.Rollout{MaxConcurrent: 2}}
	running := store.BatchUse{Running: 1}

	notStarted := store.Operation{State: status.Pending}
	retrying := store.Operation{State: status.InProgress, Phase: status.PhaseNone, Attempt: 1}
	flashed := store.Operation{State: status.InProgress, Phase: status.PhaseRebooting, Attempt: 1}

	fmt.Println("paused, not started:", store.ClaimAllowed(paused, running, notStarted, now))
	fmt.Println("paused, retrying:   ", store.ClaimAllowed(paused, running, retrying, now))
	fmt.Println("paused, flashed:    ", store.ClaimAllowed(paused, running, flashed, now))

	// Caps count every claim before flashing, but not verifications.
	full := store.BatchUse{Running: 2}
	fmt.Println("capped, retrying:   ", store.ClaimAllowed(paused, full, retrying, now))
	fmt.Println("capped, flashed:    ", store.ClaimAllowed(paused, full, flashed, now))

	// Waves: a device of a later wave waits for its wave.
	b := &store.Batch{State: status.BatchInProgress, Wave: 0}
	fmt.Println("wave 0 device:      ", store.ClaimAllowed(b, store.BatchUse{}, store.Operation{State: status.Pending, Wave: 0}, now))
	fmt.Println("wave 1 device:      ", store.ClaimAllowed(b, store.BatchUse{}, store.Operation{State: status.Pending, Wave: 1}, now))
	// Output:
	// paused, not started: false
	// paused, retrying:    true
	// paused, flashed:     true
	// capped, retrying:    false
	// capped, flashed:     true
	// wave 0 device:       true
	// wave 1 device:       false
}

// ApplyUpdate holds the rules every store applies: a compare-and-set on the
// state, and the point of no return. Once an attempt entered flashing, a
// cancel loses.
func ExampleApplyUpdate() {
	now := time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC)
	op := store.Operation{ID: "op-1", DeviceID: "ap-1", ImageID: "img-1", State: status.InProgress, Phase: status.PhaseImageTest}

	op, err := store.ApplyUpdate(op, store.OperationUpdate{From: status.InProgress,
		Phase: store.Ptr(status.PhaseFlashing), Progress: store.Ptr(status.ProgressFlashing)}, now)
	fmt.Println(op.Phase, op.Progress, err)

	_, err = store.ApplyUpdate(op, store.OperationUpdate{From: status.InProgress,
		State: status.Cancelled, Reason: status.ReasonCancelledByUser}, now)
	fmt.Println(errors.Is(err, store.ErrInvalidTransition))
	fmt.Println(err)

	// A writer that expects another state changes nothing.
	_, err = store.ApplyUpdate(op, store.OperationUpdate{From: status.Pending, State: status.InProgress}, now)
	fmt.Println(err)
	// Output:
	// flashing 65 <nil>
	// true
	// store: invalid transition: operation op-1 is flashing, past the point of no return: it can no longer be cancelled
	// store: invalid transition: operation op-1 is in-progress, not pending
}
