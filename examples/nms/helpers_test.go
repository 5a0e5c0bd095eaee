package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// TestMain stops the throwaway PostgreSQL, and fails the package when a
// test left a goroutine behind: event streams, engines, simulated devices,
// database pools and browsers must all end.
func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Limits of the test rigs, small so that the bad-input cases are cheap.
const (
	testImageSize   = 256 << 10
	testMaxImage    = 1 << 20
	testMaxJSONBody = 4 << 10
)

// rig is one application on simulated devices behind an httptest server.
type rig struct {
	app       *app
	srv       *httptest.Server
	url       string // the API's base URL
	closeOnce sync.Once
}

// setup starts an application with n simulated devices spread over orgs,
// the memory store, and an engine and devices tuned to be quick.
func setup(t *testing.T, n int, orgs []string, tune ...func(*options)) *rig {
	t.Helper()
	return newRig(t, testOptions(n, orgs, tune...), nil)
}

// testOptions are the options of a test application.
func testOptions(n int, orgs []string, tune ...func(*options)) options {
	opts := options{
		Simulate: n, Orgs: orgs, ImageSize: testImageSize, RebootDelay: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Engine: func(c *upgrader.Config) {
			c.PollInterval = 50 * time.Millisecond
			c.MaintenanceInterval = 50 * time.Millisecond
			c.MaxImageSize = testMaxImage
		},
		Server: serverConfig{MaxJSONBody: testMaxJSONBody},
	}
	for _, f := range tune {
		f(&opts)
	}
	return opts
}

// newRig starts the application of opts behind an httptest server whose
// listener wrap may replace.
func newRig(t *testing.T, opts options, wrap func(net.Listener) net.Listener) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := newApp(ctx, opts)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(a.Handler())
	if wrap != nil {
		srv.Listener = wrap(srv.Listener)
	}
	srv.Config.RegisterOnShutdown(a.server.Shutdown)
	srv.Start()
	r := &rig{app: a, srv: srv, url: srv.URL + apiPrefix}
	t.Cleanup(r.close)
	return r
}

// close stops the rig: its event streams (so that the server's Close does
// not wait for them), its server, its engine and its devices. It may be
// called again.
func (r *rig) close() {
	r.closeOnce.Do(func() {
		r.app.server.Shutdown()
		r.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r.app.Close(ctx)
	})
}

// response is an answer of the API.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// json decodes the body into a map.
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

// decode decodes the body into v.
func (r response) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.body, v), "body: %s", r.body)
}

// do sends a request to the API (path relative to apiPrefix, or absolute
// http URL) as org ("" = every organization). A body that is not an
// io.Reader or []byte is sent as JSON.
func (r *rig) do(t *testing.T, method, path, org string, body any, header ...string) response {
	t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(t, err)
		rd, ct = bytes.NewReader(j), "application/json"
	}
	u := path
	if !strings.HasPrefix(u, "http") {
		u = r.url + path
	}
	req, err := http.NewRequest(method, u, rd)
	require.NoError(t, err)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if org != "" {
		req.Header.Set(orgHeader, org)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := r.srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{code: res.StatusCode, header: res.Header, body: b}
}

// must requires the answer's status code.
func must(t *testing.T, code int, res response) response {
	t.Helper()
	require.Equal(t, code, res.code, "body: %s", res.body)
	return res
}

// upload sends an image as multipart/form-data, the fields first, the file
// last (none when content is nil), streamed through a pipe.
func (r *rig) upload(t *testing.T, buildID, org, fileName string, content io.Reader, fields ...string) response {
	t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		var err error
		for i := 0; i+1 < len(fields) && err == nil; i += 2 {
			err = mw.WriteField(fields[i], fields[i+1])
		}
		if err == nil && content != nil {
			var fw io.Writer
			if fw, err = mw.CreateFormFile("file", fileName); err == nil {
				_, err = io.Copy(fw, content)
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	res := r.do(t, http.MethodPost, fmt.Sprintf("build/%s/image/", buildID), org, pr,
		"Content-Type", mw.FormDataContentType())
	_ = pr.Close() // the server may answer before reading everything
	return res
}

// records counts what the store holds, to prove a refused request stored
// nothing.
func (r *rig) records(t *testing.T) map[string]int {
	t.Helper()
	ctx := context.Background()
	st := r.app.st
	cats, err := st.ListCategories(ctx, store.CategoryFilter{})
	require.NoError(t, err)
	builds, err := st.ListBuilds(ctx, store.BuildFilter{})
	require.NoError(t, err)
	images, err := st.ListImages(ctx, store.ImageFilter{})
	require.NoError(t, err)
	batches, err := st.ListBatches(ctx, store.BatchFilter{})
	require.NoError(t, err)
	ops, err := st.ListOperations(ctx, store.OperationFilter{})
	require.NoError(t, err)
	devs, err := st.ListDevices(ctx, store.DeviceFilter{})
	require.NoError(t, err)
	return map[string]int{"categories": len(cats), "builds": len(builds), "images": len(images),
		"batches": len(batches), "operations": len(ops), "devices": len(devs)}
}

// waitBatch waits for a batch to end and returns its status.
func (r *rig) waitBatch(t *testing.T, id string) upgrader.BatchStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	st, err := r.app.eng.WaitBatch(ctx, id)
	require.NoError(t, err, "the batch did not end: %s", st.Summary)
	return st
}

// eventually polls cond; the limit only keeps a broken server from hanging
// the test (nothing is asserted about how long it took).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	limit := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(limit) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chromiumPath finds a Chromium or Chrome binary.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// requireChromium returns Chromium's path, or skips the test (fails it with
// FWUPGRADER_REQUIRE_CHROMIUM=1) when there is none.
func requireChromium(t *testing.T) string {
	t.Helper()
	p := chromiumPath()
	if p != "" {
		return p
	}
	const how = "no chromium on PATH: install it (Debian: apt-get install chromium) to run the browser test"
	if os.Getenv("FWUPGRADER_REQUIRE_CHROMIUM") == "1" {
		t.Fatal(how + " (FWUPGRADER_REQUIRE_CHROMIUM=1)")
	}
	t.Skip(how)
	return ""
}
