package upgrader

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// BatchRequest asks for a mass upgrade of a build: which devices, with what
// options, and how to roll it out.
//
// Devices are selected as openwisp-firmware-upgrader selects them: those
// whose device firmware (store.DeviceFirmware) is an image of the build's
// category and not already this build's, each retargeted to the build's
// image of the same type (or, failing that, the build's image that fits its
// board); with Firmwareless, also the devices without a device firmware
// whose board one of the build's images fits. Devices with a firmware of
// another category, or without firmware when Firmwareless is false, are not
// part of the fleet being upgraded and are not listed.
type BatchRequest struct {
	// BuildID is the build to install.
	BuildID string
	// Name is the batch's name, for people.
	Name string
	// Organization, Group and Location filter the devices (ANDed); empty
	// ones match everything. The batch belongs to Organization, or to the
	// build's organization when that is empty.
	Organization string
	Group        string
	Location     string
	// DeviceIDs, when not empty, limits the selection to these devices.
	DeviceIDs []string
	// Firmwareless also selects devices without a device firmware whose
	// board one of the build's images fits.
	Firmwareless bool
	// Order sorts the selected devices (waves take them in this order),
	// like slices.SortStableFunc's cmp: for example leaf devices first by
	// network topology, so that a failure does not cut off the devices
	// behind it. Nil: by device ID.
	Order func(a, b store.Device) int
	// Options are the upgrade options of every operation (see Request).
	Options json.RawMessage
	// Rollout is the batch's rollout policy.
	Rollout store.Rollout
	// Hold creates the batch without starting it (StartBatch starts it).
	Hold bool
}

// SkipReason says why a device is not in a batch.
type SkipReason string

// Why devices are skipped.
const (
	SkipNoImageForBoard SkipReason = "no-image-for-board"
	SkipDeactivated     SkipReason = "deactivated"
	SkipAlreadyOnBuild  SkipReason = "already-on-build"
	SkipOtherOrg        SkipReason = "other-organization"
	SkipUpgradeRunning  SkipReason = "upgrade-in-progress"
	SkipInAnotherBatch  SkipReason = "in-another-batch"
	SkipNoUpgrader      SkipReason = "no-upgrader"
	SkipInvalidOptions  SkipReason = "invalid-options"
	// Only for devices asked for by ID (BatchRequest.DeviceIDs):
	SkipUnknownDevice SkipReason = "unknown-device"
	SkipFilteredOut   SkipReason = "filtered-out"
)

// PlanEntry is one device of a plan: selected with its image, or skipped
// with the reason.
type PlanEntry struct {
	Device store.Device `json:"device"`
	// Image is the image the device gets (zero when skipped).
	Image store.Image `json:"image"`
	// Wave is the device's wave (0-based) when selected.
	Wave int `json:"wave"`
	// Skip is why the device is not in the batch ("" when selected), and
	// Detail says more.
	Skip   SkipReason `json:"skip,omitempty"`
	Detail string     `json:"detail,omitempty"`
	// Check holds the dry run's checks of the device, when asked.
	Check *DeviceCheck `json:"check,omitempty"`
}

// Plan is what a batch would do: the selected devices in order, and every
// skipped device with its reason.
type Plan struct {
	Build    store.Build `json:"build"`
	Selected []PlanEntry `json:"selected"`
	Skipped  []PlanEntry `json:"skipped"`
	// WaveSizes is the size of each wave.
	WaveSizes []int `json:"wave_sizes"`
}

// ErrNothingSelected is returned by CreateBatch when the selection is
// empty; the plan returned with it says why each device was skipped.
var ErrNothingSelected = errors.New("upgrader: the batch selects no device")

// listAll reads every page of a listing.
func listAll[T any](ctx context.Context, list func(store.Page) ([]T, error), id func(T) string) ([]T, error) {
	const page = 1000
	var out []T
	p := store.Page{Limit: page}
	for {
		items, err := list(p)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if len(items) < page {
			return out, nil
		}
		p.After = id(items[len(items)-1])
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

func opID(o store.Operation) string { return o.ID }

// PlanBatch selects the devices of req without creating anything, and, with
// check, runs the read-only checks of every selected device (see
// DryRunBatch).
func (e *Engine) PlanBatch(ctx context.Context, req BatchRequest) (Plan, error) {
	return e.plan(ctx, req, "")
}

// plan is PlanBatch; the devices of batch retried (RetryBatch) do not count
// as being in another batch.
func (e *Engine) plan(ctx context.Context, req BatchRequest, retried string) (Plan, error) {
	var plan Plan
	if err := req.Rollout.Validate(); err != nil {
		return plan, fmt.Errorf("upgrader: batch: %w", err)
	}
	build, err := e.store.Build(ctx, req.BuildID)
	if err != nil {
		return plan, fmt.Errorf("upgrader: build %q: %w", req.BuildID, err)
	}
	plan.Build = build
	org := req.Organization
	if org == "" {
		org = build.Organization
	}
	if build.Organization != "" && req.Organization != "" && req.Organization != build.Organization {
		return plan, &RefusedError{Reason: status.ReasonOrganizationMismatch,
			Err: fmt.Errorf("build %s is not available to organization %q", build.ID, req.Organization)}
	}
	images, err := listAll(ctx, func(p store.Page) ([]store.Image, error) {
		return e.store.ListImages(ctx, store.ImageFilter{BuildID: build.ID, Page: p})
	}, func(im store.Image) string { return im.ID })
	if err != nil {
		return plan, err
	}
	// Only the batch's organization is listed: other tenants' devices never
	// appear in a plan, unless asked for by ID (then only as skipped IDs).
	devices, err := listAll(ctx, func(p store.Page) ([]store.Device, error) {
		return e.store.ListDevices(ctx, store.DeviceFilter{Organization: org, Group: req.Group, Location: req.Location, Page: p})
	}, func(d store.Device) string { return d.ID })
	if err != nil {
		return plan, err
	}
	if len(req.DeviceIDs) > 0 {
		if devices, err = e.onlyAsked(ctx, req, devices, &plan); err != nil {
			return plan, err
		}
	}
	busy, inBatch, err := e.devicesInUse(ctx, retried)
	if err != nil {
		return plan, err
	}
	cat := categoryCache{e: e, builds: map[string]store.Build{build.ID: build}, images: map[string]store.Image{}}
	for chunk := range slices.Chunk(devices, planChunk) {
		firmware, err := e.firmwareOf(ctx, chunk)
		if err != nil {
			return plan, err
		}
		for _, d := range chunk {
			if err := ctx.Err(); err != nil {
				return plan, err
			}
			entry, inFleet, err := e.planDevice(ctx, req, org, build, images, d, firmware, &cat)
			if err != nil {
				return plan, err
			}
			if !inFleet {
				continue
			}
			if entry.Skip == "" {
				if id, ok := busy[d.ID]; ok {
					entry.Skip, entry.Detail = SkipUpgradeRunning, "operation "+id+" is not finished"
					if b := inBatch[d.ID]; b != "" {
						entry.Skip, entry.Detail = SkipInAnotherBatch, "operation "+id+" of batch "+b+" is not finished"
					}
				} else if b := inBatch[d.ID]; b != "" {
					entry.Skip, entry.Detail = SkipInAnotherBatch, "batch "+b+" is still active"
				}
			}
			if entry.Skip != "" {
				entry.Image = store.Image{}
				plan.Skipped = append(plan.Skipped, entry)
			} else {
				plan.Selected = append(plan.Selected, entry)
			}
		}
	}
	order := req.Order
	if order == nil {
		order = func(a, b store.Device) int { return cmp.Compare(a.ID, b.ID) }
	}
	slices.SortStableFunc(plan.Selected, func(a, b PlanEntry) int {
		if c := order(a.Device, b.Device); c != 0 {
			return c
		}
		return cmp.Compare(a.Device.ID, b.Device.ID)
	})
	plan.WaveSizes = store.WaveSizes(req.Rollout.Waves, len(plan.Selected))
	i := 0
	for w, n := range plan.WaveSizes {
		for range n {
			plan.Selected[i].Wave = w
			i++
		}
	}
	return plan, nil
}

// onlyAsked keeps the devices req.DeviceIDs names, and reports the IDs it
// does not find among them: of another organization (by ID only), or
// unknown.
func (e *Engine) onlyAsked(ctx context.Context, req BatchRequest, devices []store.Device, plan *Plan) ([]store.Device, error) {
	want := make(map[string]bool, len(req.DeviceIDs))
	for _, id := range req.DeviceIDs {
		want[id] = true
	}
	devices = slices.DeleteFunc(devices, func(d store.Device) bool { return !want[d.ID] })
	for _, d := range devices {
		delete(want, d.ID)
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		d, err := e.store.Device(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			plan.Skipped = append(plan.Skipped, PlanEntry{Device: store.Device{ID: id}, Skip: SkipUnknownDevice, Detail: "no such device"})
		case err != nil:
			return nil, err
		case req.Group != "" && d.Group != req.Group, req.Location != "" && d.Location != req.Location:
			plan.Skipped = append(plan.Skipped, PlanEntry{Device: store.Device{ID: id}, Skip: SkipFilteredOut, Detail: "not in the group or location asked for"})
		default:
			plan.Skipped = append(plan.Skipped, PlanEntry{Device: store.Device{ID: id}, Skip: SkipOtherOrg, Detail: "the device belongs to another organization"})
		}
	}
	return devices, nil
}

// planChunk is how many devices' firmware records a plan reads at once.
const planChunk = 1000

// firmwareOf returns the firmware records of devices, for planDevice: read
// in one call when the store is a store.DeviceFirmwareLister, else device
// by device as asked. A device without a record gets store.ErrNotFound.
func (e *Engine) firmwareOf(ctx context.Context, devices []store.Device) (func(id string) (store.DeviceFirmware, error), error) {
	l, ok := e.store.(store.DeviceFirmwareLister)
	if !ok {
		return func(id string) (store.DeviceFirmware, error) { return e.store.DeviceFirmware(ctx, id) }, nil
	}
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.ID
	}
	list, err := l.ListDeviceFirmware(ctx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]store.DeviceFirmware, len(list))
	for _, df := range list {
		byID[df.DeviceID] = df
	}
	return func(id string) (store.DeviceFirmware, error) {
		df, ok := byID[id]
		if !ok {
			return df, fmt.Errorf("%w: device firmware %q", store.ErrNotFound, id)
		}
		return df, nil
	}, nil
}

// categoryCache remembers the builds and images read while planning.
type categoryCache struct {
	e      *Engine
	builds map[string]store.Build
	images map[string]store.Image
}

func (c *categoryCache) image(ctx context.Context, id string) (store.Image, store.Build, error) {
	im, ok := c.images[id]
	if !ok {
		var err error
		if im, err = c.e.store.Image(ctx, id); err != nil {
			return im, store.Build{}, err
		}
		c.images[id] = im
	}
	b, ok := c.builds[im.BuildID]
	if !ok {
		var err error
		if b, err = c.e.store.Build(ctx, im.BuildID); err != nil {
			return im, b, err
		}
		c.builds[b.ID] = b
	}
	return im, b, nil
}

// planDevice decides one device's entry. inFleet is false for devices that
// are not part of the build's fleet at all (firmware of another category,
// or none without Firmwareless).
func (e *Engine) planDevice(ctx context.Context, req BatchRequest, org string, build store.Build, images []store.Image,
	d store.Device, firmware func(id string) (store.DeviceFirmware, error), cat *categoryCache) (PlanEntry, bool, error) {
	entry := PlanEntry{Device: d}
	var fit []store.Image
	for _, im := range images {
		if e.Fits(im, d) {
			fit = append(fit, im)
		}
	}
	df, err := firmware(d.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if !req.Firmwareless {
			return entry, false, nil
		}
		if len(fit) == 0 {
			entry.Skip, entry.Detail = SkipNoImageForBoard, fmt.Sprintf("no image of build %s fits model %q, board %q (decided by %s)",
				build.Version, d.Model, d.BoardName, e.fitDeciders(d))
			return entry, true, nil
		}
		entry.Image = fit[0]
	case err != nil:
		return entry, false, err
	default:
		cur, curBuild, err := cat.image(ctx, df.ImageID)
		if errors.Is(err, store.ErrNotFound) {
			return entry, false, nil
		}
		if err != nil {
			return entry, false, err
		}
		if curBuild.CategoryID != build.CategoryID {
			return entry, false, nil
		}
		if curBuild.ID == build.ID {
			entry.Skip, entry.Detail = SkipAlreadyOnBuild, "runs "+cur.Name
			return entry, true, nil
		}
		for _, im := range images {
			if im.Type == cur.Type && e.Fits(im, d) {
				entry.Image = im
			}
		}
		if entry.Image.ID == "" && len(fit) > 0 {
			entry.Image = fit[0]
		}
		if entry.Image.ID == "" {
			entry.Skip, entry.Detail = SkipNoImageForBoard, fmt.Sprintf("build %s has no image of type %q, nor any other, that fits model %q, board %q (decided by %s)",
				build.Version, cur.Type, d.Model, d.BoardName, e.fitDeciders(d))
			return entry, true, nil
		}
	}
	switch {
	case org != "" && d.Organization != org:
		entry.Skip, entry.Detail = SkipOtherOrg, fmt.Sprintf("device of organization %q, batch of %q", d.Organization, org)
	case !store.ImageFitsOrganization(entry.Image.Organization, d.Organization):
		entry.Skip, entry.Detail = SkipOtherOrg, fmt.Sprintf("image of organization %q, device of %q", entry.Image.Organization, d.Organization)
	case !d.Active:
		entry.Skip, entry.Detail = SkipDeactivated, "the device is deactivated"
	}
	if entry.Skip == "" {
		u, ok := e.reg.Lookup(d.Connection)
		switch {
		case !ok:
			entry.Skip, entry.Detail = SkipNoUpgrader, fmt.Sprintf("no upgrader registered for connection kind %q", d.Connection)
		default:
			if err := validateOptions(u, req.Options); err != nil {
				entry.Skip, entry.Detail = SkipInvalidOptions, err.Error()
			}
		}
	}
	return entry, true, nil
}

// devicesInUse returns the devices with an operation that is not
// terminal (device → operation) and the devices in a batch that has not
// ended (device → batch), batch retried aside.
func (e *Engine) devicesInUse(ctx context.Context, retried string) (map[string]string, map[string]string, error) {
	busy := map[string]string{}
	inBatch := map[string]string{}
	active, err := listAll(ctx, func(p store.Page) ([]store.Operation, error) {
		return e.store.ListOperations(ctx, store.OperationFilter{States: []status.State{status.Pending, status.InProgress}, Page: p})
	}, opID)
	if err != nil {
		return nil, nil, err
	}
	for _, op := range active {
		busy[op.DeviceID] = op.ID
	}
	batches, err := listAll(ctx, func(p store.Page) ([]store.Batch, error) {
		return e.store.ListBatches(ctx, store.BatchFilter{States: []status.BatchState{status.BatchIdle, status.BatchInProgress, status.BatchPaused}, Page: p})
	}, func(b store.Batch) string { return b.ID })
	if err != nil {
		return nil, nil, err
	}
	for _, b := range batches {
		if b.ID == retried {
			continue
		}
		ops, err := listAll(ctx, func(p store.Page) ([]store.Operation, error) {
			return e.store.ListOperations(ctx, store.OperationFilter{BatchID: b.ID, Page: p})
		}, opID)
		if err != nil {
			return nil, nil, err
		}
		for _, op := range ops {
			inBatch[op.DeviceID] = b.ID
		}
	}
	return busy, inBatch, nil
}

// CreateBatch plans req (see PlanBatch) and stores the batch with one
// pending operation per selected device, in the plan's order, atomically.
// It starts the batch unless req.Hold. An empty selection is refused with
// ErrNothingSelected (nothing stored) and the plan that explains it.
func (e *Engine) CreateBatch(ctx context.Context, req BatchRequest) (store.Batch, Plan, error) {
	return e.createBatch(ctx, req, "")
}

func (e *Engine) createBatch(ctx context.Context, req BatchRequest, retried string) (store.Batch, Plan, error) {
	plan, err := e.plan(ctx, req, retried)
	if err != nil {
		return store.Batch{}, plan, err
	}
	if len(plan.Selected) == 0 {
		return store.Batch{}, plan, fmt.Errorf("%w: %d devices skipped", ErrNothingSelected, len(plan.Skipped))
	}
	org := req.Organization
	if org == "" {
		org = plan.Build.Organization
	}
	b := store.Batch{Organization: org, BuildID: plan.Build.ID, Name: req.Name, Options: req.Options, Rollout: req.Rollout,
		State: status.BatchInProgress}
	if req.Hold {
		b.State = status.BatchIdle
	}
	ops := make([]store.Operation, len(plan.Selected))
	for i, s := range plan.Selected {
		ops[i] = store.Operation{DeviceID: s.Device.ID, ImageID: s.Image.ID, Options: req.Options}
	}
	b, created, err := e.store.CreateBatch(ctx, b, ops)
	if err != nil {
		if errors.Is(err, store.ErrDeviceBusy) {
			return store.Batch{}, plan, &RefusedError{Reason: status.ReasonAnotherUpgradeInProgress,
				Err: fmt.Errorf("a device got another operation while the batch was planned (plan again): %w", err)}
		}
		return store.Batch{}, plan, err
	}
	now := e.cfg.Now()
	for _, op := range created {
		e.events.publish(opEvent(EventOperationCreated, op, now))
	}
	e.publishBatch(b, EventBatchState)
	e.prod.wake()
	return b, plan, nil
}

// RetryBatch creates a new batch for the operations of batch id that ended
// failed or aborted: same build, options and rollout (or rollout, when not
// nil), started unless hold. Batch id may still be running (paused by its
// failure threshold, say). The devices are planned again, so a device that
// meanwhile got another operation or was deactivated is skipped with its
// reason.
func (e *Engine) RetryBatch(ctx context.Context, id string, rollout *store.Rollout, hold bool) (store.Batch, Plan, error) {
	old, err := e.store.Batch(ctx, id)
	if err != nil {
		return store.Batch{}, Plan{}, fmt.Errorf("upgrader: batch %q: %w", id, err)
	}
	ops, err := listAll(ctx, func(p store.Page) ([]store.Operation, error) {
		return e.store.ListOperations(ctx, store.OperationFilter{BatchID: id, States: []status.State{status.Failed, status.Aborted}, Page: p})
	}, opID)
	if err != nil {
		return store.Batch{}, Plan{}, err
	}
	if len(ops) == 0 {
		return store.Batch{}, Plan{}, fmt.Errorf("%w: batch %s has no failed or aborted operation", ErrNothingSelected, id)
	}
	name := old.Name + " (retry)"
	if utf8.RuneCountInString(name) > store.MaxNameLen {
		name = old.Name
	}
	req := BatchRequest{BuildID: old.BuildID, Name: name, Organization: old.Organization,
		Options: old.Options, Rollout: old.Rollout, Hold: hold, Firmwareless: true}
	if rollout != nil {
		req.Rollout = *rollout
	}
	pos := map[string]int{}
	for i, op := range ops {
		req.DeviceIDs = append(req.DeviceIDs, op.DeviceID)
		pos[op.DeviceID] = i
	}
	req.Order = func(a, b store.Device) int { return cmp.Compare(pos[a.ID], pos[b.ID]) }
	return e.createBatch(ctx, req, id)
}

// StartBatch starts a batch created with Hold.
func (e *Engine) StartBatch(ctx context.Context, id string) (store.Batch, error) {
	return e.setBatchState(ctx, id, status.BatchIdle, status.BatchInProgress)
}

// PauseBatch pauses a batch: nothing of it starts until ResumeBatch;
// operations running finish.
func (e *Engine) PauseBatch(ctx context.Context, id string) (store.Batch, error) {
	return e.setBatchState(ctx, id, status.BatchInProgress, status.BatchPaused)
}

// ResumeBatch resumes a paused batch, whatever paused it. A batch paused by
// its success threshold goes on with its next wave: resuming accepts the
// wave as it is.
func (e *Engine) ResumeBatch(ctx context.Context, id string) (store.Batch, error) {
	return e.setBatchState(ctx, id, status.BatchPaused, status.BatchInProgress)
}

func (e *Engine) setBatchState(ctx context.Context, id string, from, to status.BatchState) (store.Batch, error) {
	b, err := e.store.SetBatchState(ctx, id, from, to)
	if err != nil {
		return b, fmt.Errorf("upgrader: batch %s: %w", id, err)
	}
	e.publishBatch(b, EventBatchState)
	e.prod.wake()
	return b, nil
}

// SetRollout changes the rollout of a batch that has not ended. Caps,
// rates, thresholds, group limits, the schedule and the windows may change
// and apply from the next start; the waves cannot (the operations were
// split into waves when the batch was created): retry into a new batch
// instead.
func (e *Engine) SetRollout(ctx context.Context, id string, r store.Rollout) (store.Batch, error) {
	b, err := e.store.SetRollout(ctx, id, r)
	if err != nil {
		return b, fmt.Errorf("upgrader: batch %s: %w", id, err)
	}
	e.publishBatch(b, EventBatchState)
	e.prod.wake()
	return b, nil
}

// CancelBatch cancels a batch: its pending operations, and those in
// progress that have not reached flashing, end cancelled (running attempts
// are interrupted and restart the services they stopped); operations
// flashing finish and are verified.
func (e *Engine) CancelBatch(ctx context.Context, id string) (store.Batch, error) {
	b, ops, err := e.store.CancelBatch(ctx, id)
	if err != nil {
		return b, fmt.Errorf("upgrader: batch %s: %w", id, err)
	}
	for _, op := range ops {
		if c := e.heldClaim(op.ID); c != nil {
			c.markCancelled()
		} else if !op.StartedAt.IsZero() {
			// An attempt of another engine, or of a dead one, may have
			// left changes on the device: undone once its lease lapsed.
			e.restoreLater(op, e.cfg.Now().Add(e.cfg.LeaseDuration))
		}
		e.wakeWaiters(op.ID)
		e.events.publish(opEvent(EventOperationState, op, e.cfg.Now()))
	}
	if b, err = e.store.Batch(ctx, id); err != nil {
		return b, err
	}
	e.publishBatch(b, EventBatchState)
	return b, nil
}

// BatchStatus is a batch with what is derived from it for people.
type BatchStatus struct {
	store.Batch
	// Total, Done, Pending (waiting to start, the offline ones included)
	// and Waiting (pending after an offline device) count its operations.
	Total, Done, Pending, Waiting int
	// Hold says why the batch starts nothing now ("" when it may).
	Hold store.HoldReason
	// Summary reads "12 of 50 done, 30 pending (2 offline), wave 2 of 3".
	Summary string
}

// StatusOf derives b's status at now.
func StatusOf(b store.Batch, now time.Time) BatchStatus {
	s := BatchStatus{Batch: b, Total: b.Total(), Done: b.Done(), Pending: b.Counts[status.Pending], Waiting: b.Waiting()}
	s.Hold = store.Hold(b, now)
	if s.Hold == store.HoldNone && b.Rollout.WaveWait > 0 && !b.WaveSettledAt.IsZero() {
		s.Hold = store.HoldWaveWait
	}
	s.Summary = fmt.Sprintf("%d of %d done, %d pending", s.Done, s.Total, s.Pending)
	if s.Waiting > 0 {
		s.Summary += fmt.Sprintf(" (%d offline)", s.Waiting)
	}
	if n := len(b.WaveTallies); n > 1 {
		s.Summary += fmt.Sprintf(", wave %d of %d", b.Wave+1, n)
	}
	switch {
	case b.State == status.BatchPaused:
		s.Summary += fmt.Sprintf(", paused (%s)", b.PauseReason)
	case s.Hold != store.HoldNone && !b.State.Terminal():
		s.Summary += fmt.Sprintf(", held (%s)", s.Hold)
	}
	return s
}

// Batch returns the status of batch id.
func (e *Engine) Batch(ctx context.Context, id string) (BatchStatus, error) {
	b, err := e.store.Batch(ctx, id)
	if err != nil {
		return BatchStatus{}, err
	}
	return StatusOf(b, e.cfg.Now()), nil
}

// WaitBatch blocks until batch id ends (success, failed or cancelled) or
// ctx ends, and returns its status. A paused batch does not end: WaitBatch
// keeps waiting for it to be resumed or cancelled.
func (e *Engine) WaitBatch(ctx context.Context, id string) (BatchStatus, error) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		s, err := e.Batch(ctx, id)
		if err != nil || s.State.Terminal() {
			return s, err
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-t.C:
		}
	}
}

// publishBatch emits a batch event for b.
func (e *Engine) publishBatch(b store.Batch, kind EventKind) {
	e.events.publish(Event{Kind: kind, Time: e.cfg.Now(), BatchID: b.ID, BatchState: b.State,
		PauseReason: b.PauseReason, Wave: b.Wave, Counts: b.Counts})
}
