package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Batch upgrades: the dry run, the start, and the batches' control.

// upgradeBody asks for the batch upgrade of a build (openwisp's "upgrade
// all devices" with its filters, plus fwupgrader's rollout).
type upgradeBody struct {
	Name           string          `json:"name"`
	Organization   string          `json:"organization"`
	Group          string          `json:"group"`
	Location       string          `json:"location"`
	Devices        []string        `json:"devices"`
	Firmwareless   bool            `json:"firmwareless"`
	UpgradeOptions json.RawMessage `json:"upgrade_options"`
	Rollout        *rolloutBody    `json:"rollout"`
	Hold           bool            `json:"hold"`
}

// request turns the body into the engine's request for build b, scoped:
// a scoped caller's batch selects only the devices of its organization.
func (body upgradeBody) request(sc scope, b store.Build) (upgrader.BatchRequest, error) {
	org, err := ownOrg(sc, body.Organization)
	if err != nil {
		return upgrader.BatchRequest{}, err
	}
	opts, err := jsonObject("upgrade_options", body.UpgradeOptions)
	if err != nil {
		return upgrader.BatchRequest{}, err
	}
	r, err := body.Rollout.rollout()
	if err != nil {
		return upgrader.BatchRequest{}, err
	}
	name := strings.TrimSpace(body.Name)
	if name == "" {
		name = "Upgrade to " + b.Version
	}
	return upgrader.BatchRequest{BuildID: b.ID, Name: name, Organization: org, Group: body.Group,
		Location: body.Location, DeviceIDs: body.Devices, Firmwareless: body.Firmwareless,
		Options: opts, Rollout: r, Hold: body.Hold}, nil
}

// queryBool reads a boolean query parameter ("1", "true", ...).
func queryBool(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("%s must be a boolean, not %q", key, v)
	}
	return b, nil
}

// dryRunUpgrade is GET build/{id}/upgrade/: what a batch upgrade would do,
// with the filters as query parameters; ?check=1 also runs the read-only
// checks on every selected device. Nothing is created.
func (s *server) dryRunUpgrade(w http.ResponseWriter, r *http.Request, sc scope) error {
	b, err := s.build(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	body := upgradeBody{Organization: q.Get("organization"), Group: q.Get("group"), Location: q.Get("location")}
	if v := q.Get("devices"); v != "" {
		body.Devices = strings.Split(v, ",")
	}
	if body.Firmwareless, err = queryBool(r, "firmwareless"); err != nil {
		return err
	}
	req, err := body.request(sc, b)
	if err != nil {
		return err
	}
	return s.dryRun(w, r, sc, req)
}

// dryRun answers the plan of req (200), with the checks when ?check=1.
func (s *server) dryRun(w http.ResponseWriter, r *http.Request, sc scope, req upgrader.BatchRequest) error {
	check, err := queryBool(r, "check")
	if err != nil {
		return err
	}
	var plan upgrader.Plan
	if check {
		plan, err = s.eng.DryRunBatch(r.Context(), req, upgrader.DryRunOptions{Check: true})
	} else {
		plan, err = s.eng.PlanBatch(r.Context(), req)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "plan": scopedPlan(sc, plan)})
	return nil
}

// scopedPlan drops from a plan the devices of other organizations that a
// scoped caller must not learn of.
func scopedPlan(sc scope, p upgrader.Plan) planView {
	keep := p.Skipped[:0:0]
	for _, e := range p.Skipped {
		if sc.owns(e.Device.Organization) {
			keep = append(keep, e)
		}
	}
	p.Skipped = keep
	return planJSON(p)
}

// upgradeBuild is POST build/{id}/upgrade/: it creates and (unless "hold")
// starts a batch upgrade, 201 with the batch and its plan. ?dry_run=1 only
// plans it. A selection that is empty is 400 with the plan that explains why,
// and nothing is created.
func (s *server) upgradeBuild(w http.ResponseWriter, r *http.Request, sc scope) error {
	b, err := s.build(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	var body upgradeBody
	if err := s.decodeJSON(w, r, &body, true); err != nil {
		return err
	}
	req, err := body.request(sc, b)
	if err != nil {
		return err
	}
	dry, err := queryBool(r, "dry_run")
	if err != nil {
		return err
	}
	if dry {
		return s.dryRun(w, r, sc, req)
	}
	batch, plan, err := s.eng.CreateBatch(r.Context(), req)
	if errors.Is(err, upgrader.ErrNothingSelected) {
		writeJSON(w, http.StatusBadRequest, map[string]any{"detail": err.Error(), "plan": scopedPlan(sc, plan)})
		return nil
	}
	if err != nil {
		return err
	}
	st, err := s.eng.Batch(r.Context(), batch.ID)
	if err != nil {
		st = upgrader.StatusOf(batch, time.Now())
	}
	w.Header().Set("Location", apiPrefix+"batch-upgrade-operation/"+batch.ID+"/")
	writeJSON(w, http.StatusCreated, map[string]any{
		"batch": batch.ID, "batch_upgrade_operation": batchJSON(st), "plan": scopedPlan(sc, plan)})
	return nil
}

// parseStates reads ?status=a,b as operation states.
func parseStates(r *http.Request) ([]status.State, error) {
	var out []status.State
	for _, v := range splitList(r.URL.Query().Get("status")) {
		st, err := status.ParseState(v)
		if err != nil {
			return nil, badRequest("status: %v", err)
		}
		out = append(out, st)
	}
	return out, nil
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (s *server) listBatches(w http.ResponseWriter, r *http.Request, sc scope) error {
	f := store.BatchFilter{BuildID: r.URL.Query().Get("build")}
	for _, v := range splitList(r.URL.Query().Get("status")) {
		st, err := status.ParseBatchState(v)
		if err != nil {
			return badRequest("status: %v", err)
		}
		f.States = append(f.States, st)
	}
	org, ok := sc.filterOrg(r)
	f.Organization = org
	now := time.Now()
	return paginate(w, r, !ok, func(p store.Page) ([]store.Batch, error) {
		f.Page = p
		return s.st.ListBatches(r.Context(), f)
	}, func(b store.Batch) string { return b.ID }, func(b store.Batch) any {
		return batchJSON(upgrader.StatusOf(b, now))
	})
}

// batch returns the status of batch id when the caller may see it.
func (s *server) batch(ctx context.Context, sc scope, id string) (upgrader.BatchStatus, error) {
	b, err := s.eng.Batch(ctx, id)
	return visible(b, err, sc.owns(b.Organization), "batch upgrade operation", id)
}

// batchAction is POST batch-upgrade-operation/{id}/{start,pause,resume,cancel}/.
func (s *server) batchAction(w http.ResponseWriter, r *http.Request, sc scope) error {
	actions := map[string]func(context.Context, string) (store.Batch, error){
		"start": s.eng.StartBatch, "pause": s.eng.PauseBatch, "resume": s.eng.ResumeBatch, "cancel": s.eng.CancelBatch,
	}
	act, ok := actions[r.PathValue("action")]
	if !ok {
		return &apiError{code: http.StatusNotFound,
			detail: "unknown action " + strconv.Quote(r.PathValue("action")) + ": start, pause, resume or cancel"}
	}
	b, err := s.batch(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	if _, err := act(r.Context(), b.ID); err != nil {
		return err
	}
	st, err := s.eng.Batch(r.Context(), b.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, batchJSON(st))
	return nil
}
