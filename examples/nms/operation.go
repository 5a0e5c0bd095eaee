package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Upgrade operations and devices.

// listOperations is GET upgrade-operation/ with the store's filters.
func (s *server) listOperations(w http.ResponseWriter, r *http.Request) {
	s.operations(w, r, "")
}

// listDeviceOperations is GET device/{id}/upgrade-operation/.
func (s *server) listDeviceOperations(w http.ResponseWriter, r *http.Request) {
	sc, err := scopeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.device(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.operations(w, r, d.ID)
}

func (s *server) operations(w http.ResponseWriter, r *http.Request, deviceID string) {
	sc, err := scopeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	states, err := parseStates(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	org, ok := sc.filterOrg(r)
	if deviceID == "" {
		deviceID = q.Get("device")
	}
	f := store.OperationFilter{Organization: org, BuildID: q.Get("build"), ImageID: q.Get("image"),
		BatchID: q.Get("batch"), DeviceID: deviceID, States: states, Group: q.Get("group"), Location: q.Get("location")}
	paginate(w, r, s, !ok, func(p store.Page) ([]store.Operation, error) {
		f.Page = p
		return s.st.ListOperations(r.Context(), f)
	}, func(op store.Operation) string { return op.ID }, operationJSON)
}

// operation returns operation id when the caller may see it.
func (s *server) operation(ctx context.Context, sc scope, id string) (store.Operation, error) {
	op, err := s.st.Operation(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !sc.owns(op.Organization)) {
		return store.Operation{}, notFound("upgrade operation", id)
	}
	return op, err
}

// getOperation is GET upgrade-operation/{id}/, with the operation's log.
func (s *server) getOperation(w http.ResponseWriter, r *http.Request) {
	sc, err := scopeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	op, err := s.operation(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	log, err := s.st.Logs(r.Context(), op.ID, 0, 0)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, operationWith(op, log))
}

// cancelOperation is POST upgrade-operation/{id}/cancel/: 200 with the
// cancelled operation, 409 (with the operation as it is) once it ended or
// started flashing.
func (s *server) cancelOperation(w http.ResponseWriter, r *http.Request) {
	sc, err := scopeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	op, err := s.operation(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cur, err := s.eng.Cancel(r.Context(), op.ID)
	if errors.Is(err, upgrader.ErrNotCancellable) {
		writeJSON(w, http.StatusConflict, map[string]any{"detail": err.Error(), "upgrade_operation": operationJSON(cur)})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, operationJSON(cur))
}

func (s *server) listDevices(w http.ResponseWriter, r *http.Request) {
	sc, err := scopeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	org, ok := sc.filterOrg(r)
	f := store.DeviceFilter{Organization: org, Group: q.Get("group"), Location: q.Get("location"), OSIdentifier: q.Get("os")}
	paginate(w, r, s, !ok, func(p store.Page) ([]store.Device, error) {
		f.Page = p
		return s.st.ListDevices(r.Context(), f)
	}, func(d store.Device) string { return d.ID }, deviceJSON)
}

// device returns device id when the caller may see it.
func (s *server) device(ctx context.Context, sc scope, id string) (store.Device, error) {
	d, err := s.st.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !sc.owns(d.Organization)) {
		return store.Device{}, notFound("device", id)
	}
	return d, err
}

// getDevice is GET device/{id}/ (and device/{id}/firmware/): the device
// with its device firmware (which image it runs or is meant to run).
func (s *server) getDevice(w http.ResponseWriter, r *http.Request) {
	sc, err := scopeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.device(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var fw *store.DeviceFirmware
	df, err := s.st.DeviceFirmware(r.Context(), d.ID)
	switch {
	case err == nil:
		fw = &df
	case !errors.Is(err, store.ErrNotFound):
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceWith(d, fw))
}

// deviceFirmwareBody is PUT device/{id}/: install image on the device, as
// changing a device firmware's image does in openwisp.
type deviceFirmwareBody struct {
	Image          string          `json:"image"`
	UpgradeOptions json.RawMessage `json:"upgrade_options"`
}

// putDevice upgrades one device to an image: 202 with the new operation
// (its progress is on the events stream and at upgrade-operation/{id}/).
// The device firmware record changes when the device proved it runs the
// image.
func (s *server) putDevice(w http.ResponseWriter, r *http.Request) {
	sc, err := scopeOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := s.device(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var body deviceFirmwareBody
	if err := s.decodeJSON(w, r, &body, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if body.Image == "" {
		s.fail(w, r, badRequest("image is required"))
		return
	}
	opts, err := jsonObject("upgrade_options", body.UpgradeOptions)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	im, err := s.st.Image(r.Context(), body.Image)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !sc.sees(im.Organization)) {
		err = notFound("image", body.Image)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	op, err := s.eng.Enqueue(r.Context(), upgrader.Request{DeviceID: d.ID, ImageID: im.ID, Options: opts})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", apiPrefix+"upgrade-operation/"+op.ID+"/")
	writeJSON(w, http.StatusAccepted, map[string]any{"device": deviceJSON(d), "upgrade_operation": operationJSON(op)})
}
