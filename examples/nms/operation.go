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
func (s *server) listOperations(w http.ResponseWriter, r *http.Request, sc scope) error {
	return s.operations(w, r, sc, r.URL.Query().Get("device"))
}

// listDeviceOperations is GET device/{id}/upgrade-operation/.
func (s *server) listDeviceOperations(w http.ResponseWriter, r *http.Request, sc scope) error {
	d, err := s.device(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	return s.operations(w, r, sc, d.ID)
}

func (s *server) operations(w http.ResponseWriter, r *http.Request, sc scope, deviceID string) error {
	states, err := parseStates(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	org, ok := sc.filterOrg(r)
	f := store.OperationFilter{Organization: org, BuildID: q.Get("build"), ImageID: q.Get("image"),
		BatchID: q.Get("batch"), DeviceID: deviceID, States: states, Group: q.Get("group"), Location: q.Get("location")}
	return paginate(w, r, !ok, func(p store.Page) ([]store.Operation, error) {
		f.Page = p
		return s.st.ListOperations(r.Context(), f)
	}, func(op store.Operation) string { return op.ID }, operationJSON)
}

// operation returns operation id when the caller may see it.
func (s *server) operation(ctx context.Context, sc scope, id string) (store.Operation, error) {
	op, err := s.st.Operation(ctx, id)
	return visible(op, err, sc.owns(op.Organization), "upgrade operation", id)
}

// getOperation is GET upgrade-operation/{id}/, with the operation's log.
func (s *server) getOperation(w http.ResponseWriter, r *http.Request, sc scope) error {
	op, err := s.operation(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	log, err := s.st.Logs(r.Context(), op.ID, 0, 0)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, operationWith(op, log))
	return nil
}

// cancelOperation is POST upgrade-operation/{id}/cancel/: 200 with the
// cancelled operation, 409 (with the operation as it is) once it ended or
// started flashing.
func (s *server) cancelOperation(w http.ResponseWriter, r *http.Request, sc scope) error {
	op, err := s.operation(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	cur, err := s.eng.Cancel(r.Context(), op.ID)
	if errors.Is(err, upgrader.ErrNotCancellable) {
		writeJSON(w, http.StatusConflict, map[string]any{"detail": err.Error(), "upgrade_operation": operationJSON(cur)})
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, operationJSON(cur))
	return nil
}

func (s *server) listDevices(w http.ResponseWriter, r *http.Request, sc scope) error {
	q := r.URL.Query()
	org, ok := sc.filterOrg(r)
	f := store.DeviceFilter{Organization: org, Group: q.Get("group"), Location: q.Get("location"), OSIdentifier: q.Get("os")}
	return paginate(w, r, !ok, func(p store.Page) ([]store.Device, error) {
		f.Page = p
		return s.st.ListDevices(r.Context(), f)
	}, func(d store.Device) string { return d.ID }, deviceJSON)
}

// device returns device id when the caller may see it.
func (s *server) device(ctx context.Context, sc scope, id string) (store.Device, error) {
	d, err := s.st.Device(ctx, id)
	return visible(d, err, sc.owns(d.Organization), "device", id)
}

// getDevice is GET device/{id}/ (and device/{id}/firmware/): the device
// with its device firmware (which image it runs or is meant to run).
func (s *server) getDevice(w http.ResponseWriter, r *http.Request, sc scope) error {
	d, err := s.device(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	var fw *store.DeviceFirmware
	df, err := s.st.DeviceFirmware(r.Context(), d.ID)
	switch {
	case err == nil:
		fw = &df
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	writeJSON(w, http.StatusOK, deviceWith(d, fw))
	return nil
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
func (s *server) putDevice(w http.ResponseWriter, r *http.Request, sc scope) error {
	d, err := s.device(r.Context(), sc, r.PathValue("id"))
	if err != nil {
		return err
	}
	var body deviceFirmwareBody
	if err := s.decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	if body.Image == "" {
		return badRequest("image is required")
	}
	opts, err := jsonObject("upgrade_options", body.UpgradeOptions)
	if err != nil {
		return err
	}
	im, err := s.st.Image(r.Context(), body.Image)
	im, err = visible(im, err, sc.sees(im.Organization), "image", body.Image)
	if err != nil {
		return err
	}
	op, err := s.eng.Enqueue(r.Context(), upgrader.Request{DeviceID: d.ID, ImageID: im.ID, Options: opts})
	if err != nil {
		return err
	}
	w.Header().Set("Location", apiPrefix+"upgrade-operation/"+op.ID+"/")
	writeJSON(w, http.StatusAccepted, map[string]any{"device": deviceJSON(d), "upgrade_operation": operationJSON(op)})
	return nil
}
