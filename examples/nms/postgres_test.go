package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// TestPostgresStoreRestart runs the server on PostgreSQL twice over one
// schema, as --store postgres://… does: the second run finds the catalog the
// first made, deactivates the first run's simulated device (nobody answers
// at its address any more), serves image bytes from the database, and
// upgrades its own device.
func TestPostgresStoreRestart(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	schema := "nms_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	opts := testOptions(1, []string{"acme"}, func(o *options) { o.Store, o.Schema = url, schema })

	first := newRig(t, opts, nil)
	firstDevice := first.app.fleet.ids()[0]
	first.close()

	r := newRig(t, opts, nil)
	assert.Equal(t, map[string]int{"categories": 1, "builds": 2, "images": 2, "devices": 2, "batches": 0, "operations": 0},
		r.records(t), "the second run reuses the catalog")
	var old deviceView
	must(t, http.StatusOK, r.do(t, "GET", "device/"+firstDevice+"/", "acme", nil)).decode(t, &old)
	assert.False(t, old.Active, "the first run's device was deactivated")

	// Image bytes round-trip through the database.
	sim := openwrttest.Image{Boards: []string{simBoard}, Release: simNewRelease, Size: 700 << 10, Fwtool: true}
	var img imageView
	must(t, http.StatusCreated, r.upload(t, r.app.seed.NewBuild.ID, "", "x.bin", sim.Reader(),
		"type", "other-"+simImageType)).decode(t, &img)
	dl := must(t, http.StatusOK, r.do(t, "GET", r.srv.URL+img.File, "", nil))
	assert.Equal(t, sim.Bytes(), dl.body, "the download is the upload, byte for byte")
	part := must(t, http.StatusPartialContent, r.do(t, "GET", r.srv.URL+img.File, "", nil, "Range", "bytes=600000-600099"))
	assert.Equal(t, sim.Bytes()[600000:600100], part.body)

	var created createdBatch
	must(t, http.StatusCreated, r.do(t, "POST", "build/"+r.app.seed.NewBuild.ID+"/upgrade/", "acme", nil)).decode(t, &created)
	require.Len(t, created.Plan.Selected, 1)
	assert.Equal(t, r.app.fleet.ids()[0], created.Plan.Selected[0].Device)
	require.Len(t, created.Plan.Skipped, 1)
	assert.Equal(t, firstDevice, created.Plan.Skipped[0].Device)
	assert.Equal(t, upgrader.SkipDeactivated, created.Plan.Skipped[0].Skip)
	st := r.waitBatch(t, created.Batch)
	assert.Equal(t, status.BatchSuccess, st.State, st.Summary)
}
