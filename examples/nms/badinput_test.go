package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
)

// TestBadInput sends every kind of bad request and checks its status, that
// the answer is a JSON error, and that nothing was stored by any of them.
func TestBadInput(t *testing.T) {
	t.Parallel()
	r := setup(t, 1, []string{"acme"})
	build := r.app.seed.NewBuild.ID
	image := r.app.seed.NewImage.ID
	device := r.app.fleet.ids()[0]
	before := r.records(t)

	type req struct {
		name, method, path string
		body               any
		header             []string
		code               int
	}
	cases := []req{
		{"bad JSON", "POST", "category/", []byte(`{"name":`), []string{"Content-Type", "application/json"}, 400},
		{"not an object", "POST", "category/", []byte(`["x"]`), []string{"Content-Type", "application/json"}, 400},
		{"unknown field", "POST", "category/", map[string]any{"name": "x", "colour": "red"}, nil, 400},
		{"two values", "POST", "category/", []byte(`{"name":"x"} {"name":"y"}`), []string{"Content-Type", "application/json"}, 400},
		{"empty body", "POST", "category/", []byte(``), []string{"Content-Type", "application/json"}, 400},
		{"invalid name", "POST", "category/", map[string]any{"name": ""}, nil, 400},
		{"name too long", "POST", "category/", map[string]any{"name": strings.Repeat("n", 200)}, nil, 400},
		{"oversized body", "POST", "category/", map[string]any{"name": "x", "description": strings.Repeat("d", testMaxJSONBody)}, nil, 413},
		{"text/plain", "POST", "category/", []byte(`{"name":"x"}`), []string{"Content-Type", "text/plain"}, 415},
		{"no content type", "POST", "category/", []byte(`{"name":"x"}`), nil, 415},
		{"unknown category", "POST", "build/", map[string]any{"category": store0ID, "version": "1"}, nil, 404},
		{"no category", "POST", "build/", map[string]any{"version": "1"}, nil, 400},
		{"duplicate version", "POST", "build/", map[string]any{"category": r.app.seed.Category.ID, "version": simNewVersion}, nil, 409},
		{"upload as JSON", "POST", "build/" + build + "/image/", map[string]any{"file": "x"}, nil, 415},
		{"upload to unknown build", "POST", "build/" + store0ID + "/image/", []byte("x"), []string{"Content-Type", "multipart/form-data; boundary=b"}, 404},
		{"upgrade text/plain", "POST", "build/" + build + "/upgrade/", []byte(`{}`), []string{"Content-Type", "text/plain"}, 415},
		{"upgrade bad JSON", "POST", "build/" + build + "/upgrade/", []byte(`{"hold":`), []string{"Content-Type", "application/json"}, 400},
		{"upgrade bad waves", "POST", "build/" + build + "/upgrade/", map[string]any{"rollout": map[string]any{"waves": "one,two"}}, nil, 400},
		{"upgrade bad window", "POST", "build/" + build + "/upgrade/", map[string]any{"rollout": map[string]any{"windows": []string{"25:00-26:00"}}}, nil, 400},
		{"upgrade bad duration", "POST", "build/" + build + "/upgrade/", map[string]any{"rollout": map[string]any{"wave_wait": "soon"}}, nil, 400},
		{"upgrade bad group_by", "POST", "build/" + build + "/upgrade/", map[string]any{"rollout": map[string]any{"group_limit": 1, "group_by": "colour"}}, nil, 400},
		{"upgrade options not an object", "POST", "build/" + build + "/upgrade/", map[string]any{"upgrade_options": []int{1}}, nil, 400},
		{"upgrade bad options", "POST", "build/" + build + "/upgrade/", map[string]any{"upgrade_options": map[string]any{"c": true, "n": true}}, nil, 400},
		{"upgrade selects nothing", "POST", "build/" + build + "/upgrade/", map[string]any{"group": "nobody"}, nil, 400},
		{"upgrade unknown build", "POST", "build/" + store0ID + "/upgrade/", map[string]any{}, nil, 404},
		{"dry run bad flag", "GET", "build/" + build + "/upgrade/?firmwareless=maybe", nil, nil, 400},
		{"batch bad action", "POST", "batch-upgrade-operation/" + store0ID + "/explode/", nil, nil, 404},
		{"batch unknown", "POST", "batch-upgrade-operation/" + store0ID + "/pause/", nil, nil, 404},
		{"put unknown image", "PUT", "device/" + device + "/", map[string]any{"image": store0ID}, nil, 404},
		{"put no image", "PUT", "device/" + device + "/", map[string]any{}, nil, 400},
		{"put options not an object", "PUT", "device/" + device + "/", map[string]any{"image": image, "upgrade_options": "c"}, nil, 400},
		{"put unknown device", "PUT", "device/" + store0ID + "/", map[string]any{"image": image}, nil, 404},
		{"cancel unknown", "POST", "upgrade-operation/" + store0ID + "/cancel/", nil, nil, 404},
		{"page zero", "GET", "upgrade-operation/?page=0", nil, nil, 400},
		{"page size too large", "GET", "device/?page_size=1000", nil, nil, 400},
		{"page and cursor", "GET", "device/?page=1&cursor=", nil, nil, 400},
		{"unknown state", "GET", "upgrade-operation/?status=done", nil, nil, 400},
		{"unknown batch state", "GET", "batch-upgrade-operation/?status=done", nil, nil, 400},
		{"header too long", "GET", "device/", nil, []string{orgHeader, strings.Repeat("o", 100)}, 400},
		{"unrouted method", "DELETE", "build/", nil, nil, 405},
		{"unrouted path", "GET", "firmware/", nil, nil, 404},
	}
	for _, id := range []string{
		"category/" + store0ID + "/", "build/" + store0ID + "/", "build/" + store0ID + "/image/",
		"build/" + build + "/image/" + store0ID + "/", "build/" + build + "/image/" + store0ID + "/download/",
		"build/" + store0ID + "/image/" + image + "/", // an image of another build
		"build/" + store0ID + "/upgrade/", "batch-upgrade-operation/" + store0ID + "/",
		"upgrade-operation/" + store0ID + "/", "device/" + store0ID + "/", "device/" + store0ID + "/upgrade-operation/",
		"events/?batch=" + store0ID, "events/?operation=" + store0ID,
	} {
		cases = append(cases, req{"unknown " + id, "GET", id, nil, nil, 404})
	}
	for _, c := range cases {
		res := r.do(t, c.method, c.path, "", c.body, c.header...)
		if !assert.Equal(t, c.code, res.code, "%s: %s", c.name, res.body) {
			continue
		}
		assert.Equal(t, "application/json", res.header.Get("Content-Type"), c.name)
		assert.NotEmpty(t, res.json(t)["detail"], "%s: a JSON error with a detail", c.name)
	}
	assert.Equal(t, before, r.records(t), "no bad request stored anything")

	// Images: each refused upload stores neither a record nor bytes.
	img := func(size int64) openwrttest.Image {
		return openwrttest.Image{Boards: []string{simBoard}, Release: simNewRelease, Size: size, Fwtool: true}
	}
	upload := func(name string, code int, fileName string, content io.Reader, fields ...string) {
		t.Helper()
		res := r.upload(t, build, "", fileName, content, fields...)
		if assert.Equal(t, code, res.code, "%s: %s", name, res.body) {
			assert.NotEmpty(t, res.json(t)["detail"], name)
		}
	}
	typ := "other-" + simImageType
	upload("over MaxImageSize", 413, "x.bin", img(testMaxImage+64<<10).Reader(), "type", typ)
	bad := openwrttest.Image{Boards: []string{simBoard}, Release: simNewRelease, Size: 64 << 10,
		Metadata: &imagemap.Metadata{Raw: []byte(`{"supported_devices": [`)}}
	upload("corrupt metadata", 400, "x.bin", bad.Reader(), "type", typ)
	noMeta := openwrttest.Image{Boards: []string{simBoard}, Release: simNewRelease, Size: 64 << 10}
	upload("unknown type", 400, "firmware.bin", noMeta.Reader())
	upload("wrong checksum", 400, "x.bin", img(64<<10).Reader(), "type", typ, "sha256", strings.Repeat("0", 64))
	upload("duplicate type", 409, "x.bin", img(64<<10).Reader(), "type", simImageType)
	upload("unknown field", 400, "x.bin", img(64<<10).Reader(), "colour", "red")
	upload("no file", 400, "", nil, "type", typ)
	upload("empty file", 400, "x.bin", strings.NewReader(""), "type", typ)
	must(t, http.StatusNotFound, r.upload(t, store0ID, "", "x.bin", img(64<<10).Reader(), "type", typ))

	// A file part cut short, without its closing boundary.
	var cut bytes.Buffer
	fmt.Fprintf(&cut, "--b\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n%s\r\n", typ)
	fmt.Fprintf(&cut, "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\r\n")
	cut.Write(img(64 << 10).Bytes())
	res := r.do(t, "POST", "build/"+build+"/image/", "", cut.Bytes(), "Content-Type", "multipart/form-data; boundary=b")
	require.Equal(t, http.StatusBadRequest, res.code, "cut short: %s", res.body)

	assert.Equal(t, before, r.records(t), "no refused upload stored anything")
}
