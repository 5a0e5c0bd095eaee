package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fwupgrader/fwupgrader/store"
)

// FuzzRESTBodies sends arbitrary bodies to the endpoints that decode JSON
// (creating a category; a batch upgrade's dry run): never a server error,
// always a JSON answer, a refusal with a "detail", and a refused create
// stores nothing.
func FuzzRESTBodies(f *testing.F) {
	for _, seed := range []string{
		`{"name": "routers"}`, `{"name": ""}`, `{"name": 42}`, `{"name": "x", "colour": "red"}`, `{"name": "a"}{"name": "b"}`,
		`{"organization": "globex", "name": "x"}`, `{"waves": "1,150%"}`, `{"failure_threshold": 120}`,
		`{"windows": ["05:00-05:00"]}`, `{"start_rate": {"count": 5, "per": "-1m"}}`, `{"group_limit": 1, "group_by": "colour"}`,
		`{"upgrade_options": {"c": true, "n": true}}`, `{"devices": ["nope"]}`, `[]`, `null`, `{`, ``, "\xff",
	} {
		f.Add(byte(0), []byte(seed), true)
		f.Add(byte(1), []byte(seed), true)
	}
	f.Add(byte(0), []byte(`{"name": "x"}`), false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := newApp(ctx, testOptions(1, []string{"acme"}))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	h := a.Handler()
	categories := func() int {
		cs, err := a.eng.Store().ListCategories(context.Background(), store.CategoryFilter{})
		if err != nil {
			f.Fatal(err)
		}
		return len(cs)
	}
	f.Fuzz(func(t *testing.T, endpoint byte, body []byte, jsonType bool) {
		if len(body) > 1<<16 {
			return
		}
		method, path := http.MethodPost, apiPrefix+"category/"
		if endpoint%2 == 1 { // a dry run stores nothing, whatever the body
			path = apiPrefix + "build/" + a.seed.NewBuild.ID + "/upgrade/?dry_run=1"
		}
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set("X-Organization", "acme")
		if jsonType {
			req.Header.Set("Content-Type", "application/json")
		}
		before := categories()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s with %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		var answer map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil {
			t.Fatalf("%s %s with %q: the answer is not a JSON object: %q", method, path, body, rec.Body)
		}
		if rec.Code >= 400 {
			if d, _ := answer["detail"].(string); d == "" {
				t.Fatalf("a refusal without a detail: %d %s", rec.Code, rec.Body)
			}
			if after := categories(); after != before {
				t.Fatalf("a refused request stored something: %d categories, then %d", before, after)
			}
		}
	})
}
