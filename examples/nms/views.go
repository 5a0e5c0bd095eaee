package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// The API's JSON shapes, named and laid out like openwisp-firmware-upgrader's
// serializers where it has an equivalent ("os" for the OS identifier,
// "status" for a state, "created"/"modified").

// ts is a time for JSON: null when zero, UTC otherwise.
func ts(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

type categoryView struct {
	ID           string     `json:"id"`
	Organization *string    `json:"organization"`
	Name         string     `json:"name"`
	Description  string     `json:"description"`
	Created      *time.Time `json:"created"`
	Modified     *time.Time `json:"modified"`
}

// nullable is a string for JSON: null when empty (a shared record's
// organization, the batch of an operation outside any).
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func categoryJSON(c store.Category) any {
	return categoryView{ID: c.ID, Organization: nullable(c.Organization), Name: c.Name, Description: c.Description,
		Created: ts(c.CreatedAt), Modified: ts(c.UpdatedAt)}
}

type buildView struct {
	ID           string     `json:"id"`
	Category     string     `json:"category"`
	Organization *string    `json:"organization"`
	Version      string     `json:"version"`
	OS           string     `json:"os"`
	Changelog    string     `json:"changelog"`
	Created      *time.Time `json:"created"`
	Modified     *time.Time `json:"modified"`
}

func buildJSON(b store.Build) any {
	return buildView{ID: b.ID, Category: b.CategoryID, Organization: nullable(b.Organization), Version: b.Version,
		OS: b.OSIdentifier, Changelog: b.Changelog, Created: ts(b.CreatedAt), Modified: ts(b.UpdatedAt)}
}

type imageView struct {
	ID           string     `json:"id"`
	Build        string     `json:"build"`
	Organization *string    `json:"organization"`
	Type         string     `json:"type"`
	Name         string     `json:"name"`
	Size         int64      `json:"size"`
	SHA256       string     `json:"sha256"`
	Boards       []string   `json:"boards"`
	File         string     `json:"file"`
	Created      *time.Time `json:"created"`
}

func imageJSON(im store.Image) any {
	boards := im.Boards
	if boards == nil {
		boards = []string{}
	}
	return imageView{ID: im.ID, Build: im.BuildID, Organization: nullable(im.Organization), Type: im.Type, Name: im.Name,
		Size: im.Size, SHA256: im.SHA256, Boards: boards,
		File:    fmt.Sprintf("%sbuild/%s/image/%s/download/", apiPrefix, im.BuildID, im.ID),
		Created: ts(im.CreatedAt)}
}

type deviceView struct {
	ID           string              `json:"id"`
	Organization string              `json:"organization"`
	Name         string              `json:"name"`
	Group        string              `json:"group"`
	Location     string              `json:"location"`
	Model        string              `json:"model"`
	BoardName    string              `json:"board_name"`
	OS           string              `json:"os"`
	Connection   string              `json:"connection"`
	Address      string              `json:"address"`
	Active       bool                `json:"active"`
	Firmware     *deviceFirmwareView `json:"firmware,omitempty"`
	Created      *time.Time          `json:"created"`
	Modified     *time.Time          `json:"modified"`
}

type deviceFirmwareView struct {
	Image     string     `json:"image"`
	Installed bool       `json:"installed"`
	Modified  *time.Time `json:"modified"`
}

func deviceJSON(d store.Device) any { return deviceView(deviceWith(d, nil)) }

func deviceWith(d store.Device, df *store.DeviceFirmware) deviceView {
	v := deviceView{ID: d.ID, Organization: d.Organization, Name: d.Name, Group: d.Group, Location: d.Location,
		Model: d.Model, BoardName: d.BoardName, OS: d.OSIdentifier, Connection: d.Connection, Address: d.Address,
		Active: d.Active, Created: ts(d.CreatedAt), Modified: ts(d.UpdatedAt)}
	if df != nil {
		v.Firmware = &deviceFirmwareView{Image: df.ImageID, Installed: df.Installed, Modified: ts(df.UpdatedAt)}
	}
	return v
}

type operationView struct {
	ID             string          `json:"id"`
	Organization   string          `json:"organization"`
	Device         string          `json:"device"`
	Image          string          `json:"image"`
	Batch          *string         `json:"batch"`
	Wave           int             `json:"wave"`
	Status         status.State    `json:"status"`
	Phase          status.Phase    `json:"phase"`
	Progress       int             `json:"progress"`
	Reason         status.Reason   `json:"reason"`
	Attempt        int             `json:"attempt"`
	UpgradeOptions json.RawMessage `json:"upgrade_options"`
	Created        *time.Time      `json:"created"`
	Modified       *time.Time      `json:"modified"`
	Started        *time.Time      `json:"started"`
	Finished       *time.Time      `json:"finished"`
	Log            []logView       `json:"log,omitempty"`
}

type logView struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	Line string    `json:"line"`
}

func operationJSON(op store.Operation) any { return operationWith(op, nil) }

func operationWith(op store.Operation, log []store.LogEntry) operationView {
	opts := op.Options
	if len(opts) == 0 {
		opts = json.RawMessage("{}")
	}
	v := operationView{ID: op.ID, Organization: op.Organization, Device: op.DeviceID, Image: op.ImageID,
		Batch: nullable(op.BatchID), Wave: op.Wave, Status: op.State, Phase: op.Phase, Progress: op.Progress,
		Reason: op.Reason, Attempt: op.Attempt, UpgradeOptions: opts,
		Created: ts(op.CreatedAt), Modified: ts(op.UpdatedAt), Started: ts(op.StartedAt), Finished: ts(op.FinishedAt)}
	for _, e := range log {
		v.Log = append(v.Log, logView{Seq: e.Seq, Time: e.Time.UTC(), Line: e.Line})
	}
	return v
}

type batchView struct {
	ID              string             `json:"id"`
	Organization    *string            `json:"organization"`
	Build           string             `json:"build"`
	Name            string             `json:"name"`
	Status          status.BatchState  `json:"status"`
	PauseReason     status.PauseReason `json:"pause_reason"`
	CancelRequested bool               `json:"cancel_requested"`
	Hold            store.HoldReason   `json:"hold"`
	Counts          map[string]int     `json:"counts"`
	Total           int                `json:"total"`
	Done            int                `json:"done"`
	Pending         int                `json:"pending"`
	Waiting         int                `json:"waiting"`
	Summary         string             `json:"progress_report"`
	Wave            int                `json:"wave"`
	Waves           int                `json:"waves"`
	Rollout         rolloutBody        `json:"rollout"`
	UpgradeOptions  json.RawMessage    `json:"upgrade_options"`
	Created         *time.Time         `json:"created"`
	Modified        *time.Time         `json:"modified"`
}

// countsJSON lists every state, zeros included, so a client can show them
// all.
func countsJSON(c status.Counts) map[string]int {
	out := make(map[string]int, len(status.States()))
	for _, st := range status.States() {
		out[string(st)] = c[st]
	}
	return out
}

func batchJSON(bs upgrader.BatchStatus) any {
	opts := bs.Options
	if len(opts) == 0 {
		opts = json.RawMessage("{}")
	}
	return batchView{ID: bs.ID, Organization: nullable(bs.Organization), Build: bs.BuildID, Name: bs.Name,
		Status: bs.State, PauseReason: bs.PauseReason, CancelRequested: bs.CancelRequested, Hold: bs.Hold,
		Counts: countsJSON(bs.Counts), Total: bs.Total, Done: bs.Done, Pending: bs.Pending, Waiting: bs.Waiting,
		Summary: bs.Summary, Wave: bs.Wave, Waves: len(bs.WaveTallies), Rollout: rolloutJSON(bs.Rollout),
		UpgradeOptions: opts, Created: ts(bs.CreatedAt), Modified: ts(bs.UpdatedAt)}
}

type planEntryView struct {
	Device     string                `json:"device"`
	DeviceName string                `json:"device_name"`
	Image      string                `json:"image,omitempty"`
	Wave       *int                  `json:"wave,omitempty"`
	Skip       upgrader.SkipReason   `json:"skip,omitempty"`
	Detail     string                `json:"detail,omitempty"`
	Check      *upgrader.DeviceCheck `json:"check,omitempty"`
}

type planView struct {
	Build     string          `json:"build"`
	Selected  []planEntryView `json:"selected"`
	Skipped   []planEntryView `json:"skipped"`
	WaveSizes []int           `json:"wave_sizes"`
}

func planJSON(p upgrader.Plan) planView {
	v := planView{Build: p.Build.ID, Selected: []planEntryView{}, Skipped: []planEntryView{}, WaveSizes: p.WaveSizes}
	if v.WaveSizes == nil {
		v.WaveSizes = []int{}
	}
	for _, e := range p.Selected {
		wave := e.Wave
		v.Selected = append(v.Selected, planEntryView{Device: e.Device.ID, DeviceName: e.Device.Name,
			Image: e.Image.ID, Wave: &wave, Check: e.Check})
	}
	for _, e := range p.Skipped {
		v.Skipped = append(v.Skipped, planEntryView{Device: e.Device.ID, DeviceName: e.Device.Name,
			Skip: e.Skip, Detail: e.Detail})
	}
	return v
}
