package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// apiPrefix is where the REST API lives, as in openwisp-firmware-upgrader.
const apiPrefix = "/api/v1/firmware-upgrader/"

// orgHeader names the caller's organization.
const orgHeader = "X-Organization"

// Defaults of serverConfig.
const (
	defaultMaxJSONBody      = 1 << 20
	defaultStreamWrite      = 10 * time.Second
	defaultStreamKeepAlive  = 15 * time.Second
	defaultStreamBuffer     = 1024
	defaultPageSize         = 20
	maxPageSize             = 100
	multipartOverhead       = 1 << 20 // the form fields and boundaries around an image
	maxMultipartFieldLength = 4096
)

// serverConfig tunes the HTTP side. Zero fields take the defaults above.
type serverConfig struct {
	// MaxJSONBody bounds JSON request bodies.
	MaxJSONBody int64
	// StreamWriteTimeout bounds each write of an event stream: a client
	// that stops reading for longer is disconnected.
	StreamWriteTimeout time.Duration
	// StreamKeepAlive is how often an idle event stream sends a comment.
	StreamKeepAlive time.Duration
	// StreamBuffer is the engine subscription's buffer of each stream.
	StreamBuffer int
}

// server serves the API, the events and the status page over one engine.
type server struct {
	eng   *upgrader.Engine
	st    store.Store
	files upgrader.Files
	log   *slog.Logger
	cfg   serverConfig
	mux   *http.ServeMux

	// streams counts the event streams being served.
	streams atomic.Int64
	// done is closed by Shutdown: event streams end.
	done     chan struct{}
	doneOnce sync.Once
}

func newServer(eng *upgrader.Engine, log *slog.Logger, cfg serverConfig) *server {
	if cfg.MaxJSONBody <= 0 {
		cfg.MaxJSONBody = defaultMaxJSONBody
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = defaultStreamWrite
	}
	if cfg.StreamKeepAlive <= 0 {
		cfg.StreamKeepAlive = defaultStreamKeepAlive
	}
	if cfg.StreamBuffer <= 0 {
		cfg.StreamBuffer = defaultStreamBuffer
	}
	s := &server{eng: eng, st: eng.Store(), files: eng.Config().Files, log: log, cfg: cfg,
		mux: http.NewServeMux(), done: make(chan struct{})}
	s.routes()
	return s
}

func (s *server) routes() {
	api := func(pattern string, h handler) {
		method, path, _ := strings.Cut(pattern, " ")
		s.mux.HandleFunc(method+" "+apiPrefix+path+"{$}", s.handle(h))
	}
	api("GET category/", s.listCategories)
	api("POST category/", s.createCategory)
	api("GET category/{id}/", getOne(s.category, categoryJSON))
	api("GET build/", s.listBuilds)
	api("POST build/", s.createBuild)
	api("GET build/{id}/", getOne(s.build, buildJSON))
	api("GET build/{id}/image/", s.listImages)
	api("POST build/{id}/image/", s.uploadImage)
	api("GET build/{id}/image/{image}/", s.getImage)
	api("GET build/{id}/image/{image}/download/", s.downloadImage)
	api("GET build/{id}/upgrade/", s.dryRunUpgrade)
	api("POST build/{id}/upgrade/", s.upgradeBuild)
	api("GET batch-upgrade-operation/", s.listBatches)
	api("GET batch-upgrade-operation/{id}/", getOne(s.batch, batchJSON))
	api("POST batch-upgrade-operation/{id}/{action}/", s.batchAction)
	api("GET upgrade-operation/", s.listOperations)
	api("GET upgrade-operation/{id}/", s.getOperation)
	api("POST upgrade-operation/{id}/cancel/", s.cancelOperation)
	api("GET device/", s.listDevices)
	api("GET device/{id}/", s.getDevice)
	api("GET device/{id}/firmware/", s.getDevice)
	api("PUT device/{id}/", s.putDevice)
	api("PUT device/{id}/firmware/", s.putDevice)
	api("GET device/{id}/upgrade-operation/", s.listDeviceOperations)
	api("GET events/", s.events)
	s.mux.HandleFunc("GET /{$}", s.page)
	s.mux.Handle("GET /static/", staticHandler())
}

// handler is an API handler: it answers the request of a caller of scope
// sc, or returns the error to answer.
type handler func(w http.ResponseWriter, r *http.Request, sc scope) error

// handle makes h an http.HandlerFunc: it reads the caller's scope, and
// answers an error h returns with s.fail.
func (s *server) handle(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sc, err := scopeOf(r)
		if err == nil {
			err = h(w, r, sc)
		}
		if err != nil {
			s.fail(w, r, err)
		}
	}
}

// getOne is the handler of GET .../{id}/ for a record that find looks up
// for the caller, written as render shapes it.
func getOne[T any](find func(context.Context, scope, string) (T, error), render func(T) any) handler {
	return func(w http.ResponseWriter, r *http.Request, sc scope) error {
		rec, err := find(r.Context(), sc, r.PathValue("id"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, render(rec))
		return nil
	}
}

// Handler returns the server's handler. Requests the API does not route
// (an unknown path, a method it does not allow) get the mux's status with a
// JSON body.
func (s *server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := s.mux.Handler(r); pattern == "" && strings.HasPrefix(r.URL.Path, apiPrefix) {
			rec := &statusRecorder{header: http.Header{}}
			s.mux.ServeHTTP(rec, r)
			for _, h := range []string{"Allow", "Location"} {
				if v := rec.header.Get(h); v != "" {
					w.Header().Set(h, v)
				}
			}
			writeError(w, rec.code, http.StatusText(rec.code))
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// Shutdown ends the event streams; the HTTP server's Shutdown does the
// rest (register it with http.Server.RegisterOnShutdown).
func (s *server) Shutdown() {
	s.doneOnce.Do(func() { close(s.done) })
}

// statusRecorder keeps the status and headers of the mux's own 404 and 405
// answers.
type statusRecorder struct {
	header http.Header
	code   int
}

func (r *statusRecorder) Header() http.Header { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return len(b), nil
}
func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// scope is who asks: an organization (X-Organization), or everyone.
type scope struct {
	org string
}

// scoped reports whether the caller is limited to one organization.
func (sc scope) scoped() bool { return sc.org != "" }

// owns reports whether the caller may see a record of organization org
// that is never shared (a device, an operation, a batch).
func (sc scope) owns(org string) bool { return !sc.scoped() || org == sc.org }

// sees reports whether the caller may see a record of organization org
// that may be shared ("" = shared: a category, a build, an image).
func (sc scope) sees(org string) bool { return org == "" || sc.owns(org) }

// writable reports whether the caller may add to a record of organization
// org: scoped callers may not change shared records.
func (sc scope) writable(org string) bool { return sc.owns(org) }

// filterOrg returns the organization a list is limited to, and false when
// the ?organization= filter and the caller's scope exclude each other (the
// list is empty).
func (sc scope) filterOrg(r *http.Request) (string, bool) {
	f := r.URL.Query().Get("organization")
	if !sc.scoped() {
		return f, true
	}
	return sc.org, f == "" || f == sc.org
}

// scopeOf reads the caller's organization.
func scopeOf(r *http.Request) (scope, error) {
	org := strings.TrimSpace(r.Header.Get(orgHeader))
	if len(org) > store.MaxIDLen {
		return scope{}, badRequest("the %s header is longer than %d characters", orgHeader, store.MaxIDLen)
	}
	return scope{org: org}, nil
}

// visible returns rec, which a store read returned with err, when the
// caller may see it (ok). A record that does not exist and one the caller
// may not see are the same 404 (what and id name it): a caller does not
// learn of other organizations' records.
func visible[T any](rec T, err error, ok bool, what, id string) (T, error) {
	if errors.Is(err, store.ErrNotFound) || (err == nil && !ok) {
		var zero T
		return zero, notFound(what, id)
	}
	return rec, err
}

// apiError is an error with its HTTP status.
type apiError struct {
	code   int
	detail string
	extra  map[string]any
}

func (e *apiError) Error() string { return e.detail }

func badRequest(format string, args ...any) error {
	return &apiError{code: http.StatusBadRequest, detail: fmt.Sprintf(format, args...)}
}

func notFound(what, id string) error {
	return &apiError{code: http.StatusNotFound, detail: fmt.Sprintf("%s %q not found", what, id)}
}

func forbidden(format string, args ...any) error {
	return &apiError{code: http.StatusForbidden, detail: fmt.Sprintf(format, args...)}
}

// fail answers err as JSON with the status it deserves. Errors nobody
// classified are 500, logged, and their text is not shown.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	var mbe *http.MaxBytesError
	var ve *store.ValidationError
	var re *upgrader.RefusedError
	code, detail := http.StatusInternalServerError, "internal error"
	switch {
	case errors.As(err, &ae):
		writeJSON(w, ae.code, errorBody(ae.detail, ae.extra))
		return
	case errors.As(err, &mbe):
		code, detail = http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, upgrader.ErrImageTooLarge):
		code, detail = http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, store.ErrNotFound):
		code, detail = http.StatusNotFound, err.Error()
	case errors.As(err, &re):
		code = http.StatusBadRequest
		if errors.Is(err, store.ErrDeviceBusy) {
			code = http.StatusConflict
		}
		writeJSON(w, code, errorBody(err.Error(), map[string]any{"reason": re.Reason}))
		return
	case errors.As(err, &ve):
		writeJSON(w, http.StatusBadRequest, errorBody(err.Error(), map[string]any{"field": ve.Field}))
		return
	case errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrOrganizationMismatch),
		errors.Is(err, upgrader.ErrImageInvalid), errors.Is(err, upgrader.ErrUnknownImageType):
		code, detail = http.StatusBadRequest, err.Error()
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrDeviceBusy),
		errors.Is(err, store.ErrInvalidTransition), errors.Is(err, upgrader.ErrNotCancellable):
		code, detail = http.StatusConflict, err.Error()
	case errors.Is(err, upgrader.ErrStopped):
		code, detail = http.StatusServiceUnavailable, err.Error()
	case r.Context().Err() != nil:
		return // the client left
	default:
		s.log.Error("request failed", slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Any("error", err))
	}
	writeError(w, code, detail)
}

func errorBody(detail string, extra map[string]any) map[string]any {
	out := map[string]any{"detail": detail}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

func writeError(w http.ResponseWriter, code int, detail string) {
	writeJSON(w, code, errorBody(detail, nil))
}

// writeJSON answers v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the API is JSON, not HTML: "&" in a URL stays "&"
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"detail":"internal error"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// decodeJSON reads r's body, which must be one JSON object of the allowed
// fields, into v: 415 for another content type, 413 for a body over the
// limit, 400 for anything else wrong. With allowEmpty, a request without a
// body leaves v as it is.
func (s *server) decodeJSON(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	ct := r.Header.Get("Content-Type")
	if allowEmpty && ct == "" && r.ContentLength <= 0 {
		body := http.MaxBytesReader(w, r.Body, 1)
		if n, _ := body.Read(make([]byte, 1)); n == 0 {
			return nil
		}
		return &apiError{code: http.StatusUnsupportedMediaType, detail: "the body must be application/json"}
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return &apiError{code: http.StatusUnsupportedMediaType,
			detail: fmt.Sprintf("the body must be application/json, not %q", ct)}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return badRequest("the body is empty: a JSON object is expected")
		}
		return badRequest("the body is not a valid JSON object: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("the body holds more than one JSON value")
	}
	return nil
}

// jsonObject checks that raw, when given, is a JSON object (upgrade
// options are one).
func jsonObject(field string, raw json.RawMessage) (json.RawMessage, error) {
	t := strings.TrimSpace(string(raw))
	if t == "" || t == "null" {
		return nil, nil
	}
	if !strings.HasPrefix(t, "{") {
		return nil, badRequest("%s must be a JSON object", field)
	}
	return raw, nil
}
