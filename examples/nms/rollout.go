package main

import (
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/store"
)

// rolloutBody is a batch's rollout policy in JSON (store.Rollout), with
// durations as Go durations ("10m"), waves as "1,10%,100%" and windows as
// "01:00-05:00 Europe/Rome".
type rolloutBody struct {
	MaxConcurrent    int        `json:"max_concurrent,omitempty"`
	StartRate        *rateBody  `json:"start_rate,omitempty"`
	Waves            string     `json:"waves,omitempty"`
	WaveWait         string     `json:"wave_wait,omitempty"`
	FailureThreshold *float64   `json:"failure_threshold,omitempty"`
	MinFinished      int        `json:"min_finished,omitempty"`
	SuccessThreshold *float64   `json:"success_threshold,omitempty"`
	GroupLimit       int        `json:"group_limit,omitempty"`
	GroupBy          string     `json:"group_by,omitempty"`
	StartAt          *time.Time `json:"start_at,omitempty"`
	Windows          []string   `json:"windows,omitempty"`
}

type rateBody struct {
	Count int    `json:"count"`
	Per   string `json:"per,omitempty"`
}

// rollout converts the body, checking every field: a bad one is a 400
// naming it, before anything is created.
func (b *rolloutBody) rollout() (store.Rollout, error) {
	var r store.Rollout
	if b == nil {
		return r, nil
	}
	r.MaxConcurrent = b.MaxConcurrent
	if b.StartRate != nil {
		r.StartRate.Count = b.StartRate.Count
		if b.StartRate.Per != "" {
			d, err := time.ParseDuration(b.StartRate.Per)
			if err != nil {
				return r, badRequest("rollout.start_rate.per: %v", err)
			}
			r.StartRate.Per = d
		}
	}
	if strings.TrimSpace(b.Waves) != "" {
		w, err := store.ParseWaves(b.Waves)
		if err != nil {
			return r, badRequest("rollout.waves: %v", err)
		}
		r.Waves = w
	}
	if b.WaveWait != "" {
		d, err := time.ParseDuration(b.WaveWait)
		if err != nil {
			return r, badRequest("rollout.wave_wait: %v", err)
		}
		r.WaveWait = d
	}
	r.FailureThreshold, r.SuccessThreshold = b.FailureThreshold, b.SuccessThreshold
	r.MinFinished = b.MinFinished
	r.GroupLimit = b.GroupLimit
	switch store.GroupKey(b.GroupBy) {
	case "", store.GroupByLocation, store.GroupByGroup:
		r.GroupBy = store.GroupKey(b.GroupBy)
	default:
		return r, badRequest("rollout.group_by: %q is neither %q nor %q", b.GroupBy, store.GroupByLocation, store.GroupByGroup)
	}
	if b.StartAt != nil {
		r.StartAt = *b.StartAt
	}
	for _, s := range b.Windows {
		w, err := store.ParseWindow(s)
		if err != nil {
			return r, badRequest("rollout.windows: %v", err)
		}
		r.Windows = append(r.Windows, w)
	}
	if err := r.Validate(); err != nil {
		return r, badRequest("rollout: %v", err)
	}
	return r, nil
}

// rolloutJSON writes a rollout as rolloutBody reads it.
func rolloutJSON(r store.Rollout) rolloutBody {
	b := rolloutBody{MaxConcurrent: r.MaxConcurrent, FailureThreshold: r.FailureThreshold,
		MinFinished: r.MinFinished, SuccessThreshold: r.SuccessThreshold, GroupLimit: r.GroupLimit,
		GroupBy: string(r.GroupBy)}
	if r.StartRate.Count > 0 {
		b.StartRate = &rateBody{Count: r.StartRate.Count, Per: r.StartRate.Period().String()}
	}
	var waves []string
	for _, w := range r.Waves {
		waves = append(waves, w.String())
	}
	b.Waves = strings.Join(waves, ",")
	if r.WaveWait > 0 {
		b.WaveWait = r.WaveWait.String()
	}
	if !r.StartAt.IsZero() {
		t := r.StartAt.UTC()
		b.StartAt = &t
	}
	for _, w := range r.Windows {
		b.Windows = append(b.Windows, w.String())
	}
	return b
}
