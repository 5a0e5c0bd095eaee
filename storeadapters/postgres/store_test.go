package postgres_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

func TestWithSchemaRefusesWhatIsNotAPlainIdentifier(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	for _, name := range []string{"", `bad"name`, "a;b", "$1", "1abc", "has space", "pg_catalog", "x.y",
		strings.Repeat("a", 64), "sch\x00ema", "ünï"} {
		_, err := postgres.New(pool, postgres.WithSchema(name))
		require.Error(t, err, "%q", name)
	}
	for _, name := range []string{"fwupgrader", "Tenant_2", "_x", strings.Repeat("a", 63)} {
		s, err := postgres.New(pool, postgres.WithSchema(name))
		require.NoError(t, err, "%q", name)
		assert.Equal(t, name, s.Schema())
	}
	s, err := postgres.New(pool)
	require.NoError(t, err)
	assert.Equal(t, postgres.DefaultSchema, s.Schema())
	_, err = postgres.New(nil)
	require.Error(t, err)
}

// TestBadInputReachesSQLOnlyAsParameters stores values made of quotes,
// semicolons, placeholders and statements and reads them back unchanged,
// through every kind of record, filter and write.
func TestBadInputReachesSQLOnlyAsParameters(t *testing.T) {
	t.Parallel()
	s := newStore(t, pgtest.Start(t))
	ctx := t.Context()
	weird := []string{
		`it's`, `"quoted"`, `semi;colon`, `$1`, `$2::text`, `'); DROP TABLE categories; --`,
		`back\slash`, `%s %d %v`, `{{schema}}`, `ünïcödé ☃`, `a''b""c`, `/* comment */ x`,
	}
	for i, w := range weird {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			c, err := s.CreateCategory(ctx, store.Category{Organization: w, Name: w, Description: w})
			require.NoError(t, err)
			got, err := s.Category(ctx, c.ID)
			require.NoError(t, err)
			assert.Equal(t, w, got.Name)
			assert.Equal(t, w, got.Organization)
			assert.Equal(t, w, got.Description)
			cs, err := s.ListCategories(ctx, store.CategoryFilter{Organization: w, Name: w})
			require.NoError(t, err)
			require.Len(t, cs, 1)

			version := w
			if len([]rune(version)) > store.MaxVersionLen {
				version = string([]rune(version)[:store.MaxVersionLen])
			}
			b, err := s.CreateBuild(ctx, store.Build{CategoryID: c.ID, Version: version, OSIdentifier: w, Changelog: w})
			require.NoError(t, err)
			bs, err := s.ListBuilds(ctx, store.BuildFilter{Organization: w, OSIdentifier: w})
			require.NoError(t, err)
			require.Len(t, bs, 1)
			assert.Equal(t, version, bs[0].Version)

			im, err := s.CreateImage(ctx, store.Image{BuildID: b.ID, Type: w, Name: "openwrt.bin", SHA256: strings.Repeat("ab", 32),
				Boards: []string{w, "x" + w}})
			require.NoError(t, err)
			gotIm, err := s.Image(ctx, im.ID)
			require.NoError(t, err)
			assert.Equal(t, w, gotIm.Type)
			assert.Equal(t, []string{w, "x" + w}, gotIm.Boards)

			devID := "dev " + w
			d, err := s.PutDevice(ctx, store.Device{ID: devID, Organization: w, Name: w, Group: w, Location: w, Model: w,
				BoardName: w, OSIdentifier: w, Connection: w, Address: w})
			require.NoError(t, err)
			gotDev, err := s.Device(ctx, devID)
			require.NoError(t, err)
			assert.Equal(t, d, gotDev)
			ds, err := s.ListDevices(ctx, store.DeviceFilter{Organization: w, Group: w, Location: w, OSIdentifier: w})
			require.NoError(t, err)
			require.Len(t, ds, 1)

			opts, err := json.Marshal(map[string]string{w: w})
			require.NoError(t, err)
			bt, ops, err := s.CreateBatch(ctx, store.Batch{Organization: w, BuildID: b.ID, Name: w, Options: opts,
				State: status.BatchInProgress, Rollout: store.Rollout{MaxConcurrent: 1}},
				[]store.Operation{{ID: "op " + w, DeviceID: devID, ImageID: im.ID, Options: opts}})
			require.NoError(t, err)
			gotB, err := s.Batch(ctx, bt.ID)
			require.NoError(t, err)
			assert.Equal(t, w, gotB.Name)
			assert.Equal(t, string(opts), string(gotB.Options))
			op, err := s.Operation(ctx, "op "+w)
			require.NoError(t, err)
			assert.Equal(t, string(opts), string(op.Options))
			listed, err := s.ListOperations(ctx, store.OperationFilter{Organization: w, Group: w, Location: w, DeviceID: devID,
				BatchID: bt.ID, BuildID: b.ID, Page: store.Page{After: "op"}})
			require.NoError(t, err)
			require.Len(t, listed, 1)

			claimed, err := s.ClaimOperations(ctx, "owner "+w, 10, time.Minute)
			require.NoError(t, err)
			var mine *store.Operation
			for i := range claimed {
				if claimed[i].ID == ops[0].ID {
					mine = &claimed[i]
				}
			}
			require.NotNil(t, mine, "claimed")
			assert.Equal(t, "owner "+w, mine.LeaseOwner)
			require.NoError(t, s.AppendLog(ctx, mine.ID, mine.Token, w, w+w))
			logs, err := s.Logs(ctx, mine.ID, 0, 0)
			require.NoError(t, err)
			require.Len(t, logs, 2)
			assert.Equal(t, w, logs[0].Line)
			assert.Equal(t, w+w, logs[1].Line)
		})
	}
	// Nothing was dropped or rewritten on the way.
	cs, err := s.ListCategories(ctx, store.CategoryFilter{})
	require.NoError(t, err)
	assert.Len(t, cs, len(weird))
}

func TestMigrationsFS(t *testing.T) {
	t.Parallel()
	files, err := fs.Glob(postgres.Migrations(), "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	assert.Equal(t, "0001_init.sql", files[0])
	b, err := fs.ReadFile(postgres.Migrations(), files[0])
	require.NoError(t, err)
	assert.Contains(t, string(b), postgres.SchemaPlaceholder+".operations")
}

// TestMigrateConcurrentAndIdempotent migrates one new schema from several
// pools (processes, as far as the database can tell) at once, then again.
func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	t.Parallel()
	pools := []*pgxpool.Pool{pgtest.Start(t), pgtest.Start(t), pgtest.Start(t)}
	schema := randomSchema()
	t.Cleanup(func() { _ = dropSchema(pools[0], schema) })
	errs := make([]error, 6)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.New(pools[i%len(pools)], postgres.WithSchema(schema))
			if err == nil {
				err = s.Migrate(t.Context())
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	s, err := postgres.New(pools[0], postgres.WithSchema(schema))
	require.NoError(t, err)
	require.NoError(t, s.Migrate(t.Context()), "again")
	var n int
	require.NoError(t, pools[0].QueryRow(t.Context(), `SELECT count(*) FROM `+schema+`.schema_migrations`).Scan(&n))
	files, _ := fs.Glob(postgres.Migrations(), "*.sql")
	assert.Equal(t, len(files), n, "each migration recorded once")
	_, err = s.CreateCategory(t.Context(), store.Category{Name: "works"})
	require.NoError(t, err)
}

// TestCapsHoldAcrossProcesses runs claimers on two stores with their own
// pools on one schema, as two engines in two processes would.
func TestCapsHoldAcrossProcesses(t *testing.T) {
	t.Parallel()
	poolA, poolB := pgtest.Start(t), pgtest.Start(t)
	a := newStore(t, poolA)
	b, err := postgres.New(poolB, postgres.WithSchema(a.Schema()))
	require.NoError(t, err)
	ctx := t.Context()
	cat, err := a.CreateCategory(ctx, store.Category{Organization: "org", Name: "c"})
	require.NoError(t, err)
	build, err := a.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"})
	require.NoError(t, err)
	im, err := a.CreateImage(ctx, store.Image{BuildID: build.ID, Type: "t", Name: "n.bin", SHA256: strings.Repeat("0", 64)})
	require.NoError(t, err)
	dev := 0
	batch := func(r store.Rollout, location string) map[string]bool {
		var ops []store.Operation
		for range 30 {
			dev++
			d, err := a.PutDevice(ctx, store.Device{ID: fmt.Sprintf("d%03d", dev), Organization: "org", Location: location})
			require.NoError(t, err)
			ops = append(ops, store.Operation{DeviceID: d.ID, ImageID: im.ID})
		}
		_, out, err := a.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: build.ID, State: status.BatchInProgress, Rollout: r}, ops)
		require.NoError(t, err)
		ids := map[string]bool{}
		for _, op := range out {
			ids[op.ID] = true
		}
		return ids
	}
	capped := batch(store.Rollout{MaxConcurrent: 4}, "")
	rated := batch(store.Rollout{StartRate: store.Rate{Count: 3, Per: time.Hour}}, "")
	grouped := batch(store.Rollout{GroupLimit: 2, GroupBy: store.GroupByLocation}, "north")
	stores := []*postgres.Store{a, b}
	var mu sync.Mutex
	owner := map[string]string{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i%2]
			for range 20 {
				ops, err := s.ClaimOperations(ctx, fmt.Sprintf("engine-%d", i), 1+i%3, time.Minute)
				if !assert.NoError(t, err) || len(ops) == 0 {
					return
				}
				mu.Lock()
				for _, op := range ops {
					assert.NotContains(t, owner, op.ID, "claimed twice")
					owner[op.ID] = op.LeaseOwner
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, op := range must(b.ClaimOperations(ctx, "sweeper", 100, time.Minute)) {
		assert.NotContains(t, owner, op.ID, "claimed twice")
		owner[op.ID] = op.LeaseOwner
	}
	count := map[string]int{}
	for id := range owner {
		switch {
		case capped[id]:
			count["capped"]++
		case rated[id]:
			count["rated"]++
		case grouped[id]:
			count["grouped"]++
		}
	}
	assert.Equal(t, map[string]int{"capped": 4, "rated": 3, "grouped": 2}, count)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestLargeBatch creates a large batch (COPY, in one transaction), checks
// that a claim on it, held back or capped, costs a few index probes rather
// than a scan, and cancels it; it logs the times. It has 20,000 operations,
// or FWUPGRADER_TEST_LARGE_BATCH of them (100000 for the figures of the
// package's documentation).
func TestLargeBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("a large batch: not in -short")
	}
	t.Parallel()
	n := 20_000
	if v := os.Getenv("FWUPGRADER_TEST_LARGE_BATCH"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "FWUPGRADER_TEST_LARGE_BATCH")
		require.GreaterOrEqual(t, n, 100, "FWUPGRADER_TEST_LARGE_BATCH")
	}
	pool := pgtest.Start(t)
	s := newStore(t, pool)
	ctx := t.Context()
	cat, err := s.CreateCategory(ctx, store.Category{Organization: "org", Name: "c"})
	require.NoError(t, err)
	build, err := s.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"})
	require.NoError(t, err)
	im, err := s.CreateImage(ctx, store.Image{BuildID: build.ID, Type: "t", Name: "n.bin", SHA256: strings.Repeat("0", 64)})
	require.NoError(t, err)
	t0 := time.Now()
	_, err = pool.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.devices (id, organization, name, group_name, location, model, board_name,
		os_identifier, connection, address, active, created_at, updated_at)
		SELECT 'dev-' || lpad(g::text, 6, '0'), 'org', '', '', 'loc-' || (g %% 50), '', '', '', '', '', true, now(), now()
		FROM generate_series(1, $1) g`, pgx.Identifier{s.Schema()}.Sanitize()), n)
	require.NoError(t, err)
	t.Logf("%d devices inserted in %s", n, time.Since(t0))
	ops := make([]store.Operation, n)
	for i := range ops {
		ops[i] = store.Operation{DeviceID: fmt.Sprintf("dev-%06d", i+1), ImageID: im.ID}
	}
	t0 = time.Now()
	b, out, err := s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: build.ID, State: status.BatchInProgress,
		Rollout: store.Rollout{MaxConcurrent: 10, Waves: []store.WaveSize{{Count: 1}, {Percent: 10}, {Percent: 100}}}}, ops)
	created := time.Since(t0)
	require.NoError(t, err)
	require.Len(t, out, n)
	t.Logf("CreateBatch of %d operations: %s (speed is measured by BenchmarkCreateBatch100k, not here)", n, created)
	assert.Equal(t, []int{1, n/10 - 1, n - n/10}, []int{b.WaveTallies[0].Size, b.WaveTallies[1].Size, b.WaveTallies[2].Size})

	t0 = time.Now()
	got, err := s.Batch(ctx, b.ID)
	require.NoError(t, err)
	assert.Equal(t, n, got.Counts[status.Pending])
	t.Logf("Batch: %s", time.Since(t0))

	// Wave 0 is one operation: one claim, then nothing until it settles.
	first := must(s.ClaimOperations(ctx, "e", 100, time.Minute))
	require.Len(t, first, 1)
	t0 = time.Now()
	for range 20 {
		require.Empty(t, must(s.ClaimOperations(ctx, "e", 100, time.Minute)))
	}
	t.Logf("a claim with the batch held by its wave: %s", time.Since(t0)/20)
	_, err = s.UpdateOperation(ctx, first[0].ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled, Token: first[0].Token})
	require.NoError(t, err)
	require.Len(t, must(s.AdvanceBatches(ctx, 10)), 1)
	// Wave 1: capped at 10.
	require.Len(t, must(s.ClaimOperations(ctx, "e", 100, time.Minute)), 10)
	t0 = time.Now()
	for range 20 {
		require.Empty(t, must(s.ClaimOperations(ctx, "e", 100, time.Minute)))
	}
	t.Logf("a claim with the batch capped: %s", time.Since(t0)/20)

	t0 = time.Now()
	_, cancelled, err := s.CancelBatch(ctx, b.ID)
	require.NoError(t, err)
	assert.Len(t, cancelled, n-1)
	t.Logf("CancelBatch of %d operations: %s", n-1, time.Since(t0))
	got, err = s.Batch(ctx, b.ID)
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int{status.Cancelled: n}, map[status.State]int(got.Counts))
	assert.Equal(t, status.BatchCancelled, got.State)
}

// TestCreateBatchCopyPath creates a batch large enough for COPY and reads
// every operation back as CreateBatch returned it.
func TestCreateBatchCopyPath(t *testing.T) {
	t.Parallel()
	s := newStore(t, pgtest.Start(t))
	ctx := t.Context()
	cat := must(s.CreateCategory(ctx, store.Category{Organization: "org", Name: "c"}))
	build := must(s.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"}))
	im := must(s.CreateImage(ctx, store.Image{BuildID: build.ID, Type: "t", Name: "n.bin", SHA256: strings.Repeat("0", 64)}))
	var ops []store.Operation
	for i := range 150 {
		d := must(s.PutDevice(ctx, store.Device{ID: fmt.Sprintf("d-%03d", 150-i), Organization: "org"}))
		op := store.Operation{DeviceID: d.ID, ImageID: im.ID, Attempt: i % 3,
			NextAttemptAt: time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC), Deadline: time.Now().Add(time.Hour)}
		if i%2 == 0 {
			op.Options = json.RawMessage(fmt.Sprintf(`{"keep": %d, "name": "it's \"%d\""}`, i, i))
		}
		if i%5 == 0 {
			op.ID = fmt.Sprintf("op-%03d", i)
		}
		ops = append(ops, op)
	}
	b, out, err := s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: build.ID,
		Rollout: store.Rollout{Waves: []store.WaveSize{{Percent: 10}}}}, ops)
	require.NoError(t, err)
	require.Len(t, out, len(ops))
	for i, op := range out {
		assert.Equal(t, ops[i].DeviceID, op.DeviceID, "in the order given")
		got := must(s.Operation(ctx, op.ID))
		assert.Equal(t, op, got)
		assert.Equal(t, string(ops[i].Options), string(got.Options), "verbatim")
		assert.Equal(t, time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC), got.NextAttemptAt, "to the microsecond")
	}
	assert.Equal(t, []int{15, 135}, []int{b.WaveTallies[0].Size, b.WaveTallies[1].Size})
	listed := must(s.ListOperations(ctx, store.OperationFilter{BatchID: b.ID}))
	assert.Len(t, listed, len(ops))
}
