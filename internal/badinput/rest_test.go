package badinput_test

// Rows of the NMS example's REST API: one nms process built by TestMain,
// memory store, two simulated devices (one of acme, one of globex), started
// once for all REST rows, which take turns: each snapshots the store through
// the list endpoints, sends its request and snapshots again.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const (
	apiPrefix = "/api/v1/firmware-upgrader/"
	orgHeader = "X-Organization"
	// nmsMaxJSON is the NMS's limit on JSON bodies (1 MiB).
	nmsMaxJSON = 1 << 20
	// unknownID is a well-formed ID no record has.
	unknownID = "0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f"
)

// nmsFixture is the running NMS and the records the rows refer to.
type nmsFixture struct {
	cmd  *exec.Cmd
	base string // http://127.0.0.1:PORT/api/v1/firmware-upgrader/
	exit chan error
	http *http.Client

	// turn serialises the rows: each compares the store before and after.
	turn sync.Mutex

	logMu sync.Mutex
	log   []string // the last lines the NMS logged

	deviceA, deviceB map[string]any // the devices of acme and globex
	newBuild         string         // the shared build to upgrade to
	newImage         string         // its image (fits the devices)
	glImage          string         // an image of newBuild for another board
	catB, buildB     string         // globex's category and build
	imageB           string         // globex's image
	batchB, opB      string         // globex's held batch and its operation
}

var nmsState struct {
	once sync.Once
	mu   sync.Mutex // guards f
	f    *nmsFixture
	err  error
}

// nms starts the NMS once and returns it.
func nms(t *testing.T) *nmsFixture {
	t.Helper()
	requireCommands(t)
	nmsState.once.Do(func() {
		f, err := startNMS()
		nmsState.mu.Lock()
		nmsState.f, nmsState.err = f, err
		nmsState.mu.Unlock()
	})
	nmsState.mu.Lock()
	defer nmsState.mu.Unlock()
	if nmsState.err != nil {
		t.Fatalf("the NMS did not start: %v", nmsState.err)
	}
	if nmsState.f == nil {
		t.Fatal("the NMS was stopped")
	}
	return nmsState.f
}

// stopNMS stops the NMS if a row started it and it runs, and returns how
// it exited.
func stopNMS() error {
	nmsState.mu.Lock()
	f := nmsState.f
	nmsState.f = nil
	nmsState.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.stop()
}

// stop interrupts the NMS, which shuts down cleanly, and waits for it.
func (f *nmsFixture) stop() error {
	_ = f.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-f.exit:
		return err
	case <-time.After(30 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.exit
		return errors.New("it did not stop within 30 s of an interrupt")
	}
}

func startNMS() (*nmsFixture, error) {
	cmd := exec.Command(bin.nms, "--addr", "127.0.0.1:0", "--simulate", "2", "--orgs", orgA+","+orgB)
	dieWithTest(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f := &nmsFixture{cmd: cmd, exit: make(chan error, 1), http: &http.Client{Timeout: time.Minute}}
	addr := make(chan string, 1)
	go func() {
		// Read stderr to its end (the NMS logs there), and pick the
		// status page's address from it.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			f.remember(sc.Text())
			if a, ok := strings.CutPrefix(sc.Text(), "status page: http://"); ok {
				select {
				case addr <- strings.TrimSuffix(a, "/"):
				default:
				}
			}
		}
		f.exit <- cmd.Wait()
	}()
	select {
	case a := <-addr:
		f.base = "http://" + a + apiPrefix
	case err := <-f.exit:
		return nil, fmt.Errorf("the NMS exited: %v", err)
	case <-time.After(rowTimeout):
		_ = cmd.Process.Kill()
		return nil, errors.New("the NMS did not say where it listens")
	}
	if err := f.seed(); err != nil {
		_ = f.stop()
		return nil, err
	}
	return f, nil
}

// remember keeps the last lines the NMS logged.
func (f *nmsFixture) remember(line string) {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	f.log = append(f.log, line)
	if len(f.log) > 40 {
		f.log = f.log[len(f.log)-40:]
	}
}

// lastLog returns the last lines the NMS logged.
func (f *nmsFixture) lastLog() string {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	return strings.Join(f.log, "\n")
}

// response is an answer of the API.
type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.code, r.body) }

// request is what a row sends.
type request struct {
	method, path, org string
	body              io.Reader
	contentType       string
	header            map[string]string
}

func (f *nmsFixture) send(rq request) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rowTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, rq.method, f.base+rq.path, rq.body)
	if err != nil {
		return response{}, err
	}
	if rq.contentType != "" {
		req.Header.Set("Content-Type", rq.contentType)
	}
	if rq.org != "" {
		req.Header.Set(orgHeader, rq.org)
	}
	for k, v := range rq.header {
		req.Header.Set(k, v)
	}
	res, err := f.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{code: res.StatusCode, header: res.Header, body: b}, err
}

// jsonReq is a request with v as its JSON body.
func jsonReq(method, path, org string, v any) request {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return request{method: method, path: path, org: org, body: bytes.NewReader(b), contentType: "application/json"}
}

// rawReq is a request with body b of content type ct.
func rawReq(method, path, org, ct string, b []byte) request {
	return request{method: method, path: path, org: org, body: bytes.NewReader(b), contentType: ct}
}

// part is a field of a multipart form; a file part when file is true.
type part struct {
	name, value string
	file        bool
	fileName    string
	content     io.Reader
}

// multipartReq streams a multipart form through a pipe.
func multipartReq(path, org string, parts ...part) request {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		var err error
		for _, p := range parts {
			if err != nil {
				break
			}
			if !p.file {
				err = mw.WriteField(p.name, p.value)
				continue
			}
			var w io.Writer
			if w, err = mw.CreateFormFile(p.name, p.fileName); err == nil {
				_, err = io.Copy(w, p.content)
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	return request{method: http.MethodPost, path: path, org: org, body: pr, contentType: mw.FormDataContentType()}
}

// decodeJSON decodes a response body.
func decodeJSON[T any](r response) (T, error) {
	var v T
	err := json.Unmarshal(r.body, &v)
	if err != nil {
		err = fmt.Errorf("%w: %s", err, r.body)
	}
	return v, err
}

// list returns every record of a list endpoint (one page of at most 100).
func (f *nmsFixture) list(path string) ([]map[string]any, error) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	res, err := f.send(request{method: http.MethodGet, path: path + sep + "page_size=100"})
	if err != nil {
		return nil, err
	}
	if res.code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, res)
	}
	page, err := decodeJSON[struct {
		Count   int              `json:"count"`
		Results []map[string]any `json:"results"`
	}](res)
	if err != nil {
		return nil, err
	}
	if page.Count != len(page.Results) {
		return nil, fmt.Errorf("GET %s: %d records, more than a page", path, page.Count)
	}
	return page.Results, nil
}

// expect sends rq and requires status code.
func (f *nmsFixture) expect(rq request, code int) (map[string]any, error) {
	res, err := f.send(rq)
	if err != nil {
		return nil, err
	}
	if res.code != code {
		return nil, fmt.Errorf("%s %s: want %d, got %s", rq.method, rq.path, code, res)
	}
	return decodeJSON[map[string]any](res)
}

// seed finds the simulated devices and the seeded catalog, and adds what
// the rows need: globex's catalog and held batch, an image for another
// board.
func (f *nmsFixture) seed() error {
	devs, err := f.list("device/")
	if err != nil {
		return err
	}
	for _, d := range devs {
		switch d["organization"] {
		case orgA:
			f.deviceA = d
		case orgB:
			f.deviceB = d
		}
	}
	if f.deviceA == nil || f.deviceB == nil {
		return fmt.Errorf("want a device of %s and one of %s, got %v", orgA, orgB, devs)
	}
	builds, err := f.list("build/")
	if err != nil {
		return err
	}
	for _, b := range builds {
		if b["version"] == "23.05.3" {
			f.newBuild = b["id"].(string)
		}
	}
	if f.newBuild == "" {
		return fmt.Errorf("no seeded 23.05.3 build in %v", builds)
	}
	ims, err := f.list("build/" + f.newBuild + "/image/")
	if err != nil || len(ims) != 1 {
		return fmt.Errorf("the seeded build's images: %v %v", ims, err)
	}
	f.newImage = ims[0]["id"].(string)

	gl := openwrttest.Image{Boards: []string{glBoard}, Release: openwrttest.ReleaseDescription(newSeries), Size: imageSize, Fwtool: true}
	im, err := f.expect(multipartReq("build/"+f.newBuild+"/image/", "",
		part{name: "file", file: true, fileName: "gl-ar300m-squashfs-sysupgrade.bin", content: gl.Reader()}), http.StatusCreated)
	if err != nil {
		return err
	}
	f.glImage = im["id"].(string)

	c, err := f.expect(jsonReq(http.MethodPost, "category/", orgB, map[string]any{"name": "globex secret routers"}), http.StatusCreated)
	if err != nil {
		return err
	}
	f.catB = c["id"].(string)
	b, err := f.expect(jsonReq(http.MethodPost, "build/", orgB, map[string]any{"category": f.catB, "version": "globex-9.9"}), http.StatusCreated)
	if err != nil {
		return err
	}
	f.buildB = b["id"].(string)
	im, err = f.expect(multipartReq("build/"+f.buildB+"/image/", orgB,
		part{name: "file", file: true, fileName: "globex-secret-sysupgrade.bin", content: c7Sim(imageSize).Reader()}), http.StatusCreated)
	if err != nil {
		return err
	}
	f.imageB = im["id"].(string)
	bt, err := f.expect(jsonReq(http.MethodPost, "build/"+f.newBuild+"/upgrade/", orgB, map[string]any{"hold": true, "name": "globex held"}),
		http.StatusCreated)
	if err != nil {
		return err
	}
	f.batchB = bt["batch"].(string)
	ops, err := f.list("upgrade-operation/?batch=" + f.batchB)
	if err != nil || len(ops) != 1 {
		return fmt.Errorf("globex's batch operations: %v %v", ops, err)
	}
	f.opB = ops[0]["id"].(string)
	return nil
}

// secretsOfB are what an acme caller must never read of globex.
func (f *nmsFixture) secretsOfB() []string {
	return []string{orgB, f.deviceB["name"].(string), f.deviceB["address"].(string), "globex secret routers",
		"globex-9.9", "globex-secret-sysupgrade.bin", "globex held"}
}

// restSnapshot is everything the API lists, as JSON values.
type restSnapshot map[string]any

func (f *nmsFixture) snapshot() (restSnapshot, error) {
	s := restSnapshot{}
	for _, path := range []string{"category/", "build/", "device/", "upgrade-operation/", "batch-upgrade-operation/"} {
		recs, err := f.list(path)
		if err != nil {
			return nil, err
		}
		s[path] = recs
		for _, r := range recs {
			id := r["id"].(string)
			switch path {
			case "build/":
				ims, err := f.list("build/" + id + "/image/")
				if err != nil {
					return nil, err
				}
				s["build/"+id+"/image/"] = ims
			case "device/":
				d, err := f.expect(request{method: http.MethodGet, path: "device/" + id + "/"}, http.StatusOK)
				if err != nil {
					return nil, err
				}
				s["device/"+id+"/"] = d
			case "upgrade-operation/":
				op, err := f.expect(request{method: http.MethodGet, path: "upgrade-operation/" + id + "/"}, http.StatusOK)
				if err != nil {
					return nil, err
				}
				s["upgrade-operation/"+id+"/"] = op // with its log
			}
		}
	}
	return s, nil
}

// restCase is a REST row: the harness takes its turn, snapshots the store,
// sends the request, requires the status with a JSON error body ({"detail":
// "..."} naming the problem), and requires the store as it was.
type restCase struct {
	name, input, want, proves, defect string

	req   func(f *nmsFixture) request
	code  int
	says  []string // words of the detail
	check func(t *testing.T, f *nmsFixture, body map[string]any, raw []byte)
}

func (c restCase) row() row {
	return row{surface: surfaceREST, name: c.name, input: c.input, want: c.want, proves: c.proves, defect: c.defect,
		run: func(t *testing.T) { c.run(t) }}
}

func (c restCase) run(t *testing.T) {
	f := nms(t)
	f.turn.Lock()
	defer f.turn.Unlock()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the NMS's last log lines:\n%s", f.lastLog())
		}
	})
	before, err := f.snapshot()
	require.NoError(t, err)
	rq := c.req(f)
	res, err := f.send(rq)
	if rq.body != nil {
		if cl, ok := rq.body.(io.Closer); ok {
			_ = cl.Close() // the server may answer before reading everything
		}
	}
	require.NoError(t, err, "%s %s", rq.method, rq.path)
	require.Equalf(t, c.code, res.code, "%s %s: %s", rq.method, rq.path, res.body)
	assert.Equal(t, "application/json", res.header.Get("Content-Type"))
	body, err := decodeJSON[map[string]any](res)
	require.NoError(t, err, "a JSON error body")
	detail, _ := body["detail"].(string)
	require.NotEmpty(t, detail, "a detail saying what is wrong: %s", res.body)
	for _, s := range c.says {
		assert.Containsf(t, detail, s, "the detail does not say %q", s)
	}
	if c.check != nil {
		c.check(t, f, body, res.body)
	}
	after, err := f.snapshot()
	require.NoError(t, err)
	if d := cmp.Diff(before, after); d != "" {
		t.Fatalf("the store changed (-before +after):\n%s", d)
	}
}

// notRevealingB requires the answer to hold nothing of globex's records
// (but the ID the caller sent).
func notRevealingB(t *testing.T, f *nmsFixture, _ map[string]any, raw []byte) {
	t.Helper()
	for _, s := range f.secretsOfB() {
		assert.NotContainsf(t, string(raw), s, "the answer reveals %q of the other organization", s)
	}
}

// withReason requires the refusal's reason in the answer.
func withReason(reason string) func(*testing.T, *nmsFixture, map[string]any, []byte) {
	return func(t *testing.T, _ *nmsFixture, body map[string]any, _ []byte) {
		t.Helper()
		assert.Equal(t, reason, body["reason"], "the refusal's reason")
	}
}

func restJSONRows() []restCase {
	post := func(ct string, b []byte) func(*nmsFixture) request {
		return func(*nmsFixture) request { return rawReq(http.MethodPost, "category/", "", ct, b) }
	}
	const js = "application/json"
	const proves = "a bad body is refused before the engine sees it: nothing stored"
	return []restCase{
		{name: "json/malformed", input: `POST category/ with {"name":`, req: post(js, []byte(`{"name":`)),
			code: 400, says: []string{"not a valid JSON object"}, want: "400 JSON error", proves: proves},
		{name: "json/unknown-field", input: `POST category/ with "colour": "red"`, req: post(js, []byte(`{"name":"x","colour":"red"}`)),
			code: 400, says: []string{"colour"}, want: "400 naming the unknown field", proves: proves},
		{name: "json/unknown-nested-field", input: `POST build/ID/upgrade/ with rollout {"speed": "fast"}`,
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPost, "build/"+f.newBuild+"/upgrade/", "", map[string]any{"rollout": map[string]any{"speed": "fast"}})
			},
			code: 400, says: []string{"speed"}, want: "400 naming the unknown field", proves: "no batch created, no device contacted"},
		{name: "json/wrong-field-type", input: `POST category/ with "name": 42`, req: post(js, []byte(`{"name":42}`)),
			code: 400, says: []string{"name"}, want: "400 naming the field", proves: proves},
		{name: "json/two-values", input: "POST category/ with two JSON objects", req: post(js, []byte(`{"name":"x"} {"name":"y"}`)),
			code: 400, says: []string{"more than one"}, want: "400", proves: proves},
		{name: "json/empty-body", input: "POST category/ with no body", req: post(js, nil),
			code: 400, says: []string{"empty"}, want: "400", proves: proves},
		{name: "json/not-an-object", input: `POST category/ with ["x"]`, req: post(js, []byte(`["x"]`)),
			code: 400, want: "400", proves: proves},
		{name: "json/oversized", input: "POST category/ with a 1 MiB description (over the 1 MiB body limit)",
			req: func(*nmsFixture) request {
				return jsonReq(http.MethodPost, "category/", "", map[string]any{"name": "x", "description": strings.Repeat("d", nmsMaxJSON)})
			},
			code: 413, says: []string{"larger than"}, want: "413 naming the limit", proves: proves + "; the body is not read past the limit"},
		{name: "json/wrong-content-type", input: "POST category/ as text/plain", req: post("text/plain", []byte(`{"name":"x"}`)),
			code: 415, says: []string{"application/json"}, want: "415", proves: proves},
		{name: "json/no-content-type", input: "POST category/ without Content-Type", req: post("", []byte(`{"name":"x"}`)),
			code: 415, says: []string{"application/json"}, want: "415", proves: proves},
		{name: "json/invalid-value", input: `POST category/ with an empty name`, req: post(js, []byte(`{"name":""}`)),
			code: 400, says: []string{"Name"}, want: "400 naming the field (from *store.ValidationError)", proves: proves},
	}
}

// wantNaming words the outcome of a row: the status, and what the detail
// names.
func wantNaming(code int, says []string) string {
	if len(says) == 0 {
		return fmt.Sprintf("%d with a JSON error", code)
	}
	return fmt.Sprintf("%d with a JSON error naming %s", code, strings.Join(says, ", "))
}

func restUploadRows() []restCase {
	upload := func(name, input string, code int, parts func() []part, says ...string) restCase {
		return restCase{name: "upload/" + name, input: "POST build/ID/image/ " + input, code: code, says: says,
			want:   wantNaming(code, says),
			proves: "a refused upload stores no image record (and the engine no bytes)",
			req:    func(f *nmsFixture) request { return multipartReq("build/"+f.newBuild+"/image/", "", parts()...) }}
	}
	file := func(name string, im openwrttest.Image) part {
		return part{name: "file", file: true, fileName: name, content: im.Reader()}
	}
	typ := func(v string) part { return part{name: "type", value: v} }
	corrupt := c7Sim(imageSize)
	corrupt.Metadata = &imagemap.Metadata{Raw: []byte(`{"supported_devices": [`)}
	crc := c7Sim(imageSize)
	crc.BadCRC = true
	noMeta := openwrttest.Image{Boards: []string{c7Board}, Release: openwrttest.ReleaseDescription(newSeries), Size: imageSize}
	return []restCase{
		upload("no-file-part", "multipart with a type field and no file part", 400,
			func() []part { return []part{typ("x-sysupgrade.bin")} }, `"file"`),
		upload("empty-file", "an empty file part", 400,
			func() []part {
				return []part{typ("x-sysupgrade.bin"), {name: "file", file: true, fileName: "x.bin", content: strings.NewReader("")}}
			}, "empty"),
		upload("over-max-size", "a file over the engine's MaxImageSize (30 MiB)", 413,
			func() []part {
				return []part{typ("big-sysupgrade.bin"), file("big.bin", c7Sim(upgrader.DefaultMaxImageSize+64<<10))}
			}),
		upload("corrupt-metadata", "fwtool metadata cut short", 400,
			func() []part { return []part{typ("x-sysupgrade.bin"), file("x.bin", corrupt)} }, "metadata"),
		upload("bad-crc", "fwtool metadata with a wrong CRC", 400,
			func() []part { return []part{typ("x-sysupgrade.bin"), file("x.bin", crc)} }, "CRC"),
		upload("unknown-type", "firmware.bin without metadata", 400,
			func() []part { return []part{file("firmware.bin", noMeta)} }, "firmware.bin"),
		upload("sha256-mismatch", "a sha256 field the file does not have", 400,
			func() []part {
				return []part{typ("x-sysupgrade.bin"), {name: "sha256", value: strings.Repeat("0", 64)}, file("x.bin", c7Sim(imageSize))}
			}, "SHA-256"),
		upload("name-path", `a name field "../../etc/passwd"`, 400,
			func() []part {
				return []part{{name: "name", value: "../../etc/passwd"}, file("x.bin", c7Sim(imageSize))}
			}, "plain file name"),
		upload("name-not-utf8", `a name field "fw\xff.bin"`, 400,
			func() []part { return []part{{name: "name", value: "fw\xff.bin"}, file("x.bin", c7Sim(imageSize))} }, "UTF-8"),
		upload("unknown-form-field", `a "colour" field`, 400,
			func() []part { return []part{{name: "colour", value: "red"}, file("x.bin", c7Sim(imageSize))} }, "colour"),
		upload("duplicate-type", "a second image of the build's image type", 409,
			func() []part {
				return []part{typ(imagemap.TypeFromFileName(openwrttest.NewImage(newSeries, c7Board, 0).FileName())), file("x.bin", c7Sim(imageSize))}
			}, "conflict"),
		{name: "upload/as-json", input: "POST build/ID/image/ with a JSON body", code: 415, says: []string{"multipart/form-data"},
			want: "415", proves: "nothing stored",
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPost, "build/"+f.newBuild+"/image/", "", map[string]any{"file": "x"})
			}},
		{name: "upload/cut-short", input: "POST build/ID/image/ whose file part ends without its closing boundary", code: 400,
			says: []string{"multipart"}, want: "400", proves: "a broken upload stores nothing",
			req: func(f *nmsFixture) request {
				var b bytes.Buffer
				fmt.Fprintf(&b, "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\r\n")
				b.Write(c7Sim(imageSize).Bytes())
				return rawReq(http.MethodPost, "build/"+f.newBuild+"/image/", "", "multipart/form-data; boundary=b", b.Bytes())
			}},
		{name: "upload/shared-build-as-tenant", input: "POST build/ID/image/ into the shared build as acme", code: 403,
			says: []string{"shared"}, want: "403", proves: "a tenant cannot add to shared records; nothing stored",
			req: func(f *nmsFixture) request {
				return multipartReq("build/"+f.newBuild+"/image/", orgA, file("x.bin", c7Sim(imageSize)))
			}},
	}
}

func restRolloutRows() []restCase {
	batch := func(name, input string, body map[string]any, says ...string) restCase {
		return restCase{name: name, input: "POST build/ID/upgrade/ with " + input, code: 400, says: says,
			want:   "400 naming the field",
			proves: "no batch, no operation: no device is contacted",
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPost, "build/"+f.newBuild+"/upgrade/", orgA, body)
			}}
	}
	r := func(v map[string]any) map[string]any { return map[string]any{"rollout": v} }
	return []restCase{
		batch("rollout/waves-over-100", `"waves": "1,150%"`, r(map[string]any{"waves": "1,150%"}), "rollout.waves", "150%"),
		batch("rollout/failure-threshold-over-100", `"failure_threshold": 120`, r(map[string]any{"failure_threshold": 120}), "FailureThreshold", "120%"),
		batch("rollout/success-threshold-negative", `"success_threshold": -5`, r(map[string]any{"success_threshold": -5}), "SuccessThreshold"),
		batch("rollout/window-empty", `"windows": ["05:00-05:00"]`, r(map[string]any{"windows": []string{"05:00-05:00"}}), "rollout.windows", "05:00-05:00"),
		batch("rollout/window-bad-zone", `"windows": ["01:00-05:00 Mars/Olympus"]`, r(map[string]any{"windows": []string{"01:00-05:00 Mars/Olympus"}}), "Mars/Olympus"),
		batch("rollout/rate-negative-period", `"start_rate": {"count": 5, "per": "-1m"}`, r(map[string]any{"start_rate": map[string]any{"count": 5, "per": "-1m"}}), "StartRate"),
		batch("rollout/rate-bad-period", `"start_rate": {"count": 5, "per": "soon"}`, r(map[string]any{"start_rate": map[string]any{"count": 5, "per": "soon"}}), "start_rate.per"),
		batch("rollout/group-by-unknown", `"group_limit": 1, "group_by": "colour"`, r(map[string]any{"group_limit": 1, "group_by": "colour"}), "group_by", "colour"),
		batch("rollout/wave-wait-negative", `"wave_wait": "-10m"`, r(map[string]any{"wave_wait": "-10m"}), "WaveWait"),
		{name: "options/batch-conflicting", input: `POST build/ID/upgrade/ with "upgrade_options": {"c": true, "n": true}`,
			code: 400, says: []string{"selects no device"},
			want:   `400 (nothing selected) whose plan skips every device with "invalid-options" and the contradiction`,
			proves: "no batch, no operation: no device is contacted",
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPost, "build/"+f.newBuild+"/upgrade/", orgA,
					map[string]any{"upgrade_options": map[string]any{"c": true, "n": true}})
			},
			check: func(t *testing.T, _ *nmsFixture, body map[string]any, _ []byte) {
				plan, _ := body["plan"].(map[string]any)
				skipped, _ := plan["skipped"].([]any)
				require.Len(t, skipped, 1, "acme's device is skipped: %v", body)
				e := skipped[0].(map[string]any)
				assert.Equal(t, "invalid-options", e["skip"])
				assert.Contains(t, e["detail"], "contradicts")
			}},
		batch("options/batch-not-an-object", `"upgrade_options": "c"`, map[string]any{"upgrade_options": "c"}, "upgrade_options"),
		{name: "options/put-unknown-letter", input: `PUT device/ID/ with "upgrade_options": {"sysupgrade": "c,x"}`,
			code: 400, says: []string{"x"}, check: withReason("invalid-options"),
			want:   `400 with reason "invalid-options"`,
			proves: "Enqueue refuses: no operation, so nothing reaches the device",
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPut, "device/"+f.deviceA["id"].(string)+"/", orgA,
					map[string]any{"image": f.newImage, "upgrade_options": map[string]any{"sysupgrade": "c,x"}})
			}},
		{name: "image/put-wrong-board", input: "PUT device/ID/ of a C7 with an image for the GL-AR300M",
			code: 400, says: []string{c7Board}, check: withReason("no-image-for-board"),
			want:   `400 with reason "no-image-for-board"`,
			proves: "refused at Enqueue, not at upload: no operation, nothing reaches the device",
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPut, "device/"+f.deviceA["id"].(string)+"/", orgA, map[string]any{"image": f.glImage})
			}},
	}
}

func restIDRows() []restCase {
	get := func(path func(f *nmsFixture) string, org string) func(*nmsFixture) request {
		return func(f *nmsFixture) request { return request{method: http.MethodGet, path: path(f), org: org} }
	}
	const nothing = "nothing stored, nothing sent to a device"
	const tenant = "the other tenant's record answers as if it did not exist: 404 naming only the ID asked for"
	return []restCase{
		{name: "ids/unknown-device", input: "GET device/UNKNOWN/", code: 404, says: []string{unknownID},
			req: get(func(*nmsFixture) string { return "device/" + unknownID + "/" }, ""), want: "404 naming the ID", proves: nothing},
		{name: "ids/malformed-id", input: "GET device/%20x%00y%20/ (white space, a NUL)", code: 404,
			req: get(func(*nmsFixture) string { return "device/%20x%00y%20/" }, ""), want: "404", proves: nothing + "; no panic"},
		{name: "ids/overlong-id", input: "GET upgrade-operation/ID/ with a 5000-character ID", code: 404,
			req: get(func(*nmsFixture) string { return "upgrade-operation/" + strings.Repeat("7", 5000) + "/" }, ""), want: "404", proves: nothing},
		{name: "ids/put-unknown-image", input: "PUT device/ID/ with an image ID that does not exist", code: 404, says: []string{unknownID},
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPut, "device/"+f.deviceA["id"].(string)+"/", orgA, map[string]any{"image": unknownID})
			}, want: "404", proves: nothing},
		{name: "ids/cancel-unknown-operation", input: "POST upgrade-operation/UNKNOWN/cancel/", code: 404,
			req: func(*nmsFixture) request {
				return request{method: http.MethodPost, path: "upgrade-operation/" + unknownID + "/cancel/"}
			}, want: "404", proves: nothing},
		{name: "ids/unknown-batch-action", input: "POST batch-upgrade-operation/ID/explode/", code: 404, says: []string{"explode"},
			req: func(f *nmsFixture) request {
				return request{method: http.MethodPost, path: "batch-upgrade-operation/" + f.batchB + "/explode/"}
			}, want: "404 naming the actions there are", proves: nothing},
		{name: "tenant/device", input: "GET device/ID/ of globex's device as acme", code: 404, check: notRevealingB,
			req: func(f *nmsFixture) request {
				return request{method: http.MethodGet, path: "device/" + f.deviceB["id"].(string) + "/", org: orgA}
			}, want: "404", proves: tenant},
		{name: "tenant/put-device", input: "PUT device/ID/ of globex's device as acme", code: 404, check: notRevealingB,
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPut, "device/"+f.deviceB["id"].(string)+"/", orgA, map[string]any{"image": f.newImage})
			}, want: "404", proves: tenant + "; no operation on globex's device"},
		{name: "tenant/image", input: "PUT device/ID/ of acme's device with globex's image, as acme", code: 404, check: notRevealingB,
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPut, "device/"+f.deviceA["id"].(string)+"/", orgA, map[string]any{"image": f.imageB})
			}, want: "404", proves: tenant},
		{name: "tenant/build", input: "GET build/ID/ of globex's build as acme", code: 404, check: notRevealingB,
			req: func(f *nmsFixture) request {
				return request{method: http.MethodGet, path: "build/" + f.buildB + "/", org: orgA}
			},
			want: "404", proves: tenant},
		{name: "tenant/upgrade-build", input: "POST build/ID/upgrade/ of globex's build as acme", code: 404, check: notRevealingB,
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPost, "build/"+f.buildB+"/upgrade/", orgA, map[string]any{})
			}, want: "404", proves: tenant + "; no batch"},
		{name: "tenant/batch", input: "POST batch-upgrade-operation/ID/cancel/ of globex's held batch as acme", code: 404, check: notRevealingB,
			req: func(f *nmsFixture) request {
				return request{method: http.MethodPost, path: "batch-upgrade-operation/" + f.batchB + "/cancel/", org: orgA}
			}, want: "404", proves: tenant + "; the batch is not cancelled"},
		{name: "tenant/operation", input: "POST upgrade-operation/ID/cancel/ of globex's operation as acme", code: 404, check: notRevealingB,
			req: func(f *nmsFixture) request {
				return request{method: http.MethodPost, path: "upgrade-operation/" + f.opB + "/cancel/", org: orgA}
			}, want: "404", proves: tenant + "; the operation stays pending"},
		{name: "tenant/device-in-batch", input: "POST build/ID/upgrade/ as acme naming globex's device in \"devices\"", code: 400,
			check: func(t *testing.T, f *nmsFixture, body map[string]any, raw []byte) {
				notRevealingB(t, f, body, raw)
				assert.NotContains(t, string(raw), f.deviceB["id"].(string), "the plan lists globex's device")
			},
			req: func(f *nmsFixture) request {
				return jsonReq(http.MethodPost, "build/"+f.newBuild+"/upgrade/", orgA, map[string]any{"devices": []string{f.deviceB["id"].(string)}})
			}, want: "400 (nothing selected) with a plan that does not list globex's device",
			proves: "no batch; the plan keeps the other tenant's device out, even by ID"},
		{name: "tenant/body-organization", input: `POST category/ as acme with "organization": "globex"`, code: 403,
			req: func(*nmsFixture) request {
				return jsonReq(http.MethodPost, "category/", orgA, map[string]any{"name": "x", "organization": orgB})
			}, want: "403", proves: "a tenant cannot create records in another organization; nothing stored"},
	}
}

func restHTTPRows() []restCase {
	return []restCase{
		{name: "http/method-not-allowed", input: "DELETE build/", code: 405,
			req:  func(*nmsFixture) request { return request{method: http.MethodDelete, path: "build/"} },
			want: "405 with a JSON body", proves: "nothing deleted"},
		{name: "http/page-size-too-large", input: "GET device/?page_size=1000", code: 400, says: []string{"page_size"},
			req:  func(*nmsFixture) request { return request{method: http.MethodGet, path: "device/?page_size=1000"} },
			want: "400 naming page_size", proves: "lists are bounded"},
		{name: "http/unknown-status-filter", input: "GET upgrade-operation/?status=done", code: 400, says: []string{"done"},
			req: func(*nmsFixture) request {
				return request{method: http.MethodGet, path: "upgrade-operation/?status=done"}
			},
			want: "400 naming the state", proves: "a filter is checked, not ignored"},
		{name: "http/organization-header-too-long", input: "X-Organization of 100 characters", code: 400, says: []string{orgHeader},
			req: func(*nmsFixture) request {
				return request{method: http.MethodGet, path: "device/", org: strings.Repeat("o", 100)}
			}, want: "400 naming the header", proves: "the scope is checked before anything is read"},
		{name: "http/dry-run-bad-flag", input: "GET build/ID/upgrade/?firmwareless=maybe", code: 400, says: []string{"firmwareless"},
			req: func(f *nmsFixture) request {
				return request{method: http.MethodGet, path: "build/" + f.newBuild + "/upgrade/?firmwareless=maybe"}
			}, want: "400 naming the parameter", proves: "no dry run, no device checked"},
	}
}

func restRows() []row {
	var cases []restCase
	cases = append(cases, restJSONRows()...)
	cases = append(cases, restUploadRows()...)
	cases = append(cases, restRolloutRows()...)
	cases = append(cases, restIDRows()...)
	cases = append(cases, restHTTPRows()...)
	rows := make([]row, len(cases))
	for i, c := range cases {
		rows[i] = c.row()
	}
	return rows
}
