package postgres_test

// Benchmarks of the PostgreSQL store and of the engine over it. Being
// benchmarks they run only with -bench, never in a plain go test:
//
//	go test ./storeadapters/postgres -run '^$' -bench BenchmarkCreateBatch100k -benchtime=1x
//	go test ./storeadapters/postgres -run '^$' -bench BenchmarkTransitions -benchtime=2000x
//	go test ./storeadapters/postgres -run '^$' -bench 'BenchmarkClaims/(single|concurrent)' -benchtime=2000x
//	go test ./storeadapters/postgres -run '^$' -bench 'BenchmarkClaims/capped' -benchtime=2000x
//	go test ./storeadapters/postgres -run '^$' -bench BenchmarkEngineOperations -benchtime=1x
//	FWUPGRADER_BENCH_OPS=100000 go test ./storeadapters/postgres -run '^$' -bench BenchmarkEngineOperations -benchtime=1x -timeout 0
//
// They use the throwaway cluster of pgtest (fsync off, on a Unix socket), or
// the database of FWUPGRADER_TEST_DATABASE_URL, a schema of their own each.
// What they prepare (catalog, devices, batches, claims) is off the clock;
// the devices are inserted with one INSERT ... SELECT and analyzed, as a
// long-lived fleet table is by autovacuum.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const (
	// benchLargeBatch is the size of the large batches (CreateBatch,
	// claims).
	benchLargeBatch = 100_000
	// benchWorkers is how many goroutines drive operations at once in
	// BenchmarkTransitions and claim at once in BenchmarkClaims/concurrent-4.
	benchWorkers = 4
	// benchClaimLimit is the limit of each ClaimOperations: one engine with
	// 8 free workers.
	benchClaimLimit = 8
	// benchOpsEnv sets the number of operations of
	// BenchmarkEngineOperations: 100000 for the documented figure (about 27
	// minutes on PostgreSQL on a 2-core machine, so not the default).
	benchOpsEnv = "FWUPGRADER_BENCH_OPS"
	// benchOpsDefault is BenchmarkEngineOperations' size without
	// benchOpsEnv.
	benchOpsDefault = 10_000
)

// benchFixture is a migrated schema of its own with a category, a build and
// an image of organization "org".
type benchFixture struct {
	s     *postgres.Store
	build store.Build
	image store.Image
}

// benchNew migrates a new schema in pool's database (dropped when b ends)
// and fills its catalog.
func benchNew(b *testing.B, pool *pgxpool.Pool) *benchFixture {
	b.Helper()
	ctx := context.Background()
	s := newStore(b, pool)
	cat, err := s.CreateCategory(ctx, store.Category{Organization: "org", Name: "c"})
	require.NoError(b, err)
	build, err := s.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"})
	require.NoError(b, err)
	im, err := s.CreateImage(ctx, store.Image{BuildID: build.ID, Type: "t", Name: "fw.bin", SHA256: strings.Repeat("0", 64)})
	require.NoError(b, err)
	return &benchFixture{s: s, build: build, image: im}
}

// benchPool returns a pool of maxConns connections to pgtest's database,
// closed when b ends.
func benchPool(b *testing.B, maxConns int32) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(b))
	require.NoError(b, err)
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	return pool
}

// benchDevices inserts n devices like tmpl, prefix0 to prefix(n-1), into
// s's schema in one statement, analyzes the table, and returns their IDs.
func benchDevices(b *testing.B, pool *pgxpool.Pool, s *postgres.Store, prefix string, n int, tmpl store.Device) []string {
	b.Helper()
	ctx := context.Background()
	table := pgx.Identifier{s.Schema(), "devices"}.Sanitize()
	_, err := pool.Exec(ctx, `INSERT INTO `+table+` (id, organization, name, group_name, location, model, board_name,
		os_identifier, connection, address, active, created_at, updated_at)
		SELECT $1 || g, $2, '', 'group-' || (g % 20), 'loc-' || (g % 50), $3, $4, $5, $6, '', $7, now(), now()
		FROM generate_series(0, $8::integer - 1) g`,
		prefix, tmpl.Organization, tmpl.Model, tmpl.BoardName, tmpl.OSIdentifier, tmpl.Connection, tmpl.Active, n)
	require.NoError(b, err)
	_, err = pool.Exec(ctx, `ANALYZE `+table)
	require.NoError(b, err)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids
}

// benchOpsFor returns new operations of image on devices.
func benchOpsFor(devices []string, image string) []store.Operation {
	ops := make([]store.Operation, len(devices))
	for i, d := range devices {
		ops[i] = store.Operation{DeviceID: d, ImageID: image}
	}
	return ops
}

// benchBatch makes a fixture with a batch of n pending operations, in
// progress, with rollout r.
func benchBatch(b *testing.B, pool *pgxpool.Pool, n int, r store.Rollout) (*benchFixture, store.Batch) {
	b.Helper()
	f := benchNew(b, pool)
	ids := benchDevices(b, pool, f.s, "dev-", n, store.Device{Organization: "org", Active: true})
	bt, out, err := f.s.CreateBatch(context.Background(), store.Batch{Organization: "org", BuildID: f.build.ID,
		State: status.BatchInProgress, Rollout: r}, benchOpsFor(ids, f.image.ID))
	require.NoError(b, err)
	require.Len(b, out, n)
	return f, bt
}

// BenchmarkCreateBatch100k creates a batch of 100,000 operations (devices
// and catalog made off the clock) and reports seconds per batch. The
// requirement: at most 10 s.
func BenchmarkCreateBatch100k(b *testing.B) {
	b.StopTimer() // the cluster's start too
	pool := pgtest.Start(b)
	ctx := context.Background()
	var total time.Duration
	for range b.N {
		b.StopTimer()
		f := benchNew(b, pool)
		ids := benchDevices(b, pool, f.s, "dev-", benchLargeBatch, store.Device{Organization: "org", Active: true})
		ops := benchOpsFor(ids, f.image.ID)
		batch := store.Batch{Organization: "org", BuildID: f.build.ID, State: status.BatchInProgress,
			Rollout: store.Rollout{MaxConcurrent: 10, Waves: []store.WaveSize{{Count: 1}, {Percent: 10}, {Percent: 100}}}}
		b.StartTimer()
		t0 := time.Now()
		bt, out, err := f.s.CreateBatch(ctx, batch, ops)
		total += time.Since(t0)
		b.StopTimer()
		require.NoError(b, err)
		require.Len(b, out, benchLargeBatch)
		require.Equal(b, benchLargeBatch, bt.Counts[status.Pending])
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/batch")
	b.ReportMetric(float64(benchLargeBatch*b.N)/total.Seconds(), "ops/s")
}

// BenchmarkTransitions drives b.N claimed operations, benchWorkers at a
// time, each worker its own, through the updates the engine makes for a
// successful attempt, every one with the claim's fencing token:
//
//	UpdateOperation pending → in-progress (phase none, progress 0, attempt, deadline, a log line)
//	UpdateOperation phase connecting
//	UpdateOperation phase upload
//	SetProgress 50
//	AppendLog
//	UpdateOperation phase flashing (progress 65)
//	UpdateOperation phase rebooting
//	UpdateOperation phase verifying
//	UpdateOperation in-progress → success (progress 100, a log line)
//
// It reports transitions/s, counting every UpdateOperation (7 per
// operation), and writes/s, counting the progress and the log line too. The
// claims (one ClaimOperations for all b.N) are off the clock. Sub-benchmarks:
//
//   - batch: the operations are one batch's, as in a fleet upgrade (each
//     change of state also updates the batch's tallies, under its row's
//     lock, and the first phase after connecting records a contact);
//   - standalone: the operations are outside any batch;
//   - batch-per-worker: each worker drives the operations of a batch of its
//     own (the batch's work without contention on its row).
//
// The requirement: at least 2,000 transitions/s. Run it with e.g.
// -benchtime=2000x (b.N is the number of operations).
func BenchmarkTransitions(b *testing.B) {
	b.Run("batch", func(b *testing.B) { benchTransitions(b, 1) })
	b.Run("standalone", func(b *testing.B) { benchTransitions(b, 0) })
	b.Run("batch-per-worker", func(b *testing.B) { benchTransitions(b, benchWorkers) })
}

// benchTransitions runs BenchmarkTransitions with the operations in
// batches batches (0, 1 or benchWorkers).
func benchTransitions(b *testing.B, batches int) {
	ctx := context.Background()
	pool := pgtest.Start(b)
	f := benchNew(b, pool)
	ids := benchDevices(b, pool, f.s, "dev-", b.N, store.Device{Organization: "org", Active: true})
	ops := benchOpsFor(ids, f.image.ID)
	worker := map[string]int{} // batch ID → the worker driving its operations, with benchWorkers batches
	if batches == 0 {
		for _, op := range ops {
			_, err := f.s.CreateOperation(ctx, op)
			require.NoError(b, err)
		}
	}
	for i := range batches {
		var part []store.Operation
		for j := i; j < len(ops); j += batches {
			part = append(part, ops[j])
		}
		if len(part) == 0 {
			continue
		}
		bt, _, err := f.s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: f.build.ID,
			State: status.BatchInProgress}, part)
		require.NoError(b, err)
		worker[bt.ID] = i % benchWorkers
	}
	claimed, err := f.s.ClaimOperations(ctx, "bench-engine", b.N, time.Hour)
	require.NoError(b, err)
	require.Len(b, claimed, b.N)
	lanes := make([][]store.Operation, benchWorkers) // each worker's operations
	for i, op := range claimed {
		w := i % benchWorkers
		if batches == benchWorkers {
			w = worker[op.BatchID]
		}
		lanes[w] = append(lanes[w], op)
	}

	var transitions, writes atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchWorkers)
	b.ResetTimer()
	start := time.Now()
	for _, lane := range lanes {
		wg.Go(func() {
			for _, op := range lane {
				if err := benchDrive(ctx, f.s, op, &transitions, &writes); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	require.Equal(b, int64(7*b.N), transitions.Load())
	done, err := f.s.ListOperations(ctx, store.OperationFilter{States: []status.State{status.Success}})
	require.NoError(b, err)
	require.Len(b, done, b.N)
	b.ReportMetric(float64(transitions.Load())/elapsed.Seconds(), "transitions/s")
	b.ReportMetric(float64(writes.Load())/elapsed.Seconds(), "writes/s")
}

// benchDrive runs claimed operation op through a successful attempt, as
// the engine writes it (see BenchmarkTransitions), counting the
// UpdateOperation calls in transitions and every write in writes.
func benchDrive(ctx context.Context, s *postgres.Store, op store.Operation, transitions, writes *atomic.Int64) error {
	tok := op.Token
	update := func(u store.OperationUpdate) error {
		u.Token = tok
		if _, err := s.UpdateOperation(ctx, op.ID, u); err != nil {
			return fmt.Errorf("operation %s: %+v: %w", op.ID, u, err)
		}
		transitions.Add(1)
		writes.Add(1)
		return nil
	}
	phase := func(p status.Phase, progress *int) error {
		return update(store.OperationUpdate{From: status.InProgress, Phase: &p, Progress: progress})
	}
	attempt := op.Attempt + 1
	if err := update(store.OperationUpdate{From: status.Pending, State: status.InProgress,
		Phase: store.Ptr(status.PhaseNone), Progress: store.Ptr(0), Attempt: &attempt,
		DeadlineAfter: store.Ptr(upgrader.DefaultOperationTimeout),
		Log:           []string{fmt.Sprintf("attempt %d of %d", attempt, upgrader.DefaultMaxRetries+1)}}); err != nil {
		return err
	}
	if err := phase(status.PhaseConnecting, nil); err != nil {
		return err
	}
	if err := phase(status.PhaseUpload, nil); err != nil {
		return err
	}
	if err := s.SetProgress(ctx, op.ID, tok, 50); err != nil {
		return err
	}
	writes.Add(1)
	if err := s.AppendLog(ctx, op.ID, tok, "uploading firmware: 50%"); err != nil {
		return err
	}
	writes.Add(1)
	if err := phase(status.PhaseFlashing, store.Ptr(status.ProgressFlashing)); err != nil {
		return err
	}
	if err := phase(status.PhaseRebooting, nil); err != nil {
		return err
	}
	if err := phase(status.PhaseVerifying, nil); err != nil {
		return err
	}
	return update(store.OperationUpdate{From: status.InProgress, State: status.Success,
		Progress: store.Ptr(status.ProgressDone), Log: []string{"upgrade successful"}})
}

// BenchmarkClaims measures ClaimOperations with limit 8 (an engine with 8
// free workers) on a batch of 100,000 pending operations, in progress:
//
//   - single, concurrent-4: one claimer, and 4 claiming at once (b.N calls
//     in all), reporting claims/s (operations claimed per second) and
//     µs/call (the time over b.N: with 4 claimers, not a call's latency).
//     The claimed operations keep their leases (an hour), as in the memory
//     store's BenchmarkClaim, so the batch's live leases grow with b.N; a
//     batch that runs dry is replaced off the clock. Run with e.g.
//     -benchtime=2000x (16,000 operations claimed).
//   - capped: the batch has MaxConcurrent 10 and 10 operations claimed;
//     every call finds nothing. Reports ns per ClaimOperations call.
func BenchmarkClaims(b *testing.B) {
	b.Run("single", func(b *testing.B) { benchClaims(b, 1) })
	b.Run(fmt.Sprintf("concurrent-%d", benchWorkers), func(b *testing.B) { benchClaims(b, benchWorkers) })
	b.Run("capped", benchClaimsCapped)
}

func benchClaims(b *testing.B, claimers int) {
	ctx := context.Background()
	pool := pgtest.Start(b)
	var (
		mu      sync.RWMutex // held for writing while the batch is replaced
		cur     *postgres.Store
		gen     int
		calls   atomic.Int64 // calls handed out
		claimed atomic.Int64
		wg      sync.WaitGroup
	)
	refill := func() {
		f, _ := benchBatch(b, pool, benchLargeBatch, store.Rollout{})
		cur = f.s
		gen++
	}
	refill()
	errs := make(chan error, claimers)
	b.ResetTimer()
	for w := range claimers {
		owner := fmt.Sprintf("bench-claimer-%d", w)
		wg.Go(func() {
			for calls.Add(1) <= int64(b.N) {
				for {
					mu.RLock()
					s, g := cur, gen
					ops, err := s.ClaimOperations(ctx, owner, benchClaimLimit, time.Hour)
					mu.RUnlock()
					if err != nil {
						errs <- err
						return
					}
					if len(ops) > 0 {
						claimed.Add(int64(len(ops)))
						break
					}
					mu.Lock() // the batch ran dry: a new one, off the clock
					if gen == g {
						b.StopTimer()
						refill()
						b.StartTimer()
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	elapsed := b.Elapsed()
	b.StopTimer()
	close(errs)
	for err := range errs {
		require.NoError(b, err)
	}
	b.ReportMetric(float64(claimed.Load())/elapsed.Seconds(), "claims/s")
	b.ReportMetric(float64(elapsed.Microseconds())/float64(b.N), "µs/call")
}

func benchClaimsCapped(b *testing.B) {
	ctx := context.Background()
	f, _ := benchBatch(b, pgtest.Start(b), benchLargeBatch, store.Rollout{MaxConcurrent: 10})
	first, err := f.s.ClaimOperations(ctx, "bench-engine", 100, time.Hour)
	require.NoError(b, err)
	require.Len(b, first, 10)
	for b.Loop() {
		ops, err := f.s.ClaimOperations(ctx, "bench-engine", benchClaimLimit, time.Hour)
		if err != nil || len(ops) != 0 {
			b.Fatal(err, len(ops))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/claim")
}

// benchNoop succeeds at once, reporting no phase: the engine's own cost
// (upgrader's BenchmarkOperations uses the same).
type benchNoop struct{}

func (benchNoop) Upgrade(context.Context, *upgrader.Job) error { return nil }

const (
	benchImageType = "test-board-squashfs-sysupgrade.bin"
	benchBoard     = "test,board"
	benchModel     = "Test Board v1"
)

// benchOps returns the size of BenchmarkEngineOperations: benchOpsEnv, or
// benchOpsDefault.
func benchOps(b *testing.B) int {
	b.Helper()
	v := os.Getenv(benchOpsEnv)
	if v == "" {
		return benchOpsDefault
	}
	n, err := strconv.Atoi(v)
	require.NoError(b, err, benchOpsEnv)
	require.Positive(b, n, benchOpsEnv)
	return n
}

// benchEngineRun is one run of BenchmarkEngineOperations.
type benchEngineRun struct {
	total, enqueue time.Duration
}

// BenchmarkEngineOperations runs 10,000 operations, or FWUPGRADER_BENCH_OPS
// of them (100000 for the documented figure; 100,000 took 27 minutes on
// PostgreSQL on a 2-core machine), each on its own device, with a no-op
// upgrader through an engine with 8 workers: on the memory store and on
// PostgreSQL, set up as upgrader's BenchmarkOperations does (its Config,
// catalog and devices; the operations Enqueue'd one by one after Start,
// then waited for). It reports total-s (Start to the last Wait), enqueue-s
// (Start to the last Enqueue) and ops/s for each, and, in the postgres one
// when memory ran first, x-memory: its total over memory's. The PostgreSQL
// pool has 16 connections (8 workers, the producer, the enqueuer, the
// waiter and the engine's loops).
func BenchmarkEngineOperations(b *testing.B) {
	n := benchOps(b)
	var mem time.Duration
	b.Run("memory", func(b *testing.B) {
		r := benchEngine(b, n, func(b *testing.B) (store.Store, func(store.Device) []string) {
			st := memory.New()
			return st, func(tmpl store.Device) []string {
				ids := make([]string, n)
				for i := range n {
					d := tmpl
					d.ID = "bench-" + strconv.Itoa(i)
					_, err := st.PutDevice(context.Background(), d)
					require.NoError(b, err)
					ids[i] = d.ID
				}
				return ids
			}
		})
		mem = r.total
	})
	b.Run("postgres", func(b *testing.B) {
		b.StopTimer()
		pool := benchPool(b, 16)
		r := benchEngine(b, n, func(b *testing.B) (store.Store, func(store.Device) []string) {
			s := newStore(b, pool)
			return s, func(tmpl store.Device) []string { return benchDevices(b, pool, s, "bench-", n, tmpl) }
		})
		if mem > 0 {
			b.ReportMetric(r.total.Seconds()/mem.Seconds(), "x-memory")
			b.Logf("%d operations: postgres %.2f s, memory %.2f s: %.1f times", n, r.total.Seconds(), mem.Seconds(),
				r.total.Seconds()/mem.Seconds())
		}
	})
}

// benchEngine runs n operations through an engine over the store open
// returns (with a function that adds n devices like a template to it), b.N
// times, reports the mean times and returns them.
func benchEngine(b *testing.B, n int, open func(b *testing.B) (store.Store, func(store.Device) []string)) benchEngineRun {
	ctx := context.Background()
	var sum benchEngineRun
	b.StopTimer()
	for range b.N {
		st, addDevices := open(b)
		m, err := imagemap.New(map[string]imagemap.Entry{
			benchImageType: {Label: "Test board", Boards: []string{benchModel}, BoardNames: []string{benchBoard}},
		})
		require.NoError(b, err)
		reg := upgrader.NewRegistry()
		require.NoError(b, reg.Register("noop", benchNoop{}))
		eng, err := upgrader.NewEngine(st, reg, &upgrader.Config{
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Retry: upgrader.RetryPolicy{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond,
				RandomizationFactor: upgrader.NoRetryRandomization},
			ImageMap: m,
			Files:    upgrader.NewMemFiles(),
			Workers:  8,
		})
		require.NoError(b, err)
		cat, err := eng.CreateCategory(ctx, store.Category{Organization: "org1", Name: "routers"})
		require.NoError(b, err)
		build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "2.0", OSIdentifier: "TestOS 2.0 r1"})
		require.NoError(b, err)
		im, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: benchImageType}, strings.NewReader("firmware bytes"))
		require.NoError(b, err)
		devices := addDevices(store.Device{Organization: "org1", Model: benchModel, BoardName: benchBoard,
			Connection: "noop", Active: true, OSIdentifier: "TestOS 1.0"})
		ids := make([]string, n)

		b.StartTimer()
		start := time.Now()
		require.NoError(b, eng.Start(ctx))
		for i, d := range devices {
			op, err := eng.Enqueue(ctx, upgrader.Request{DeviceID: d, ImageID: im.ID})
			require.NoError(b, err)
			ids[i] = op.ID
		}
		enqueued := time.Since(start)
		for _, id := range ids {
			_, err := eng.Wait(ctx, id)
			require.NoError(b, err)
		}
		total := time.Since(start)
		b.StopTimer()

		require.NoError(b, eng.Stop(ctx))
		ops, err := st.ListOperations(ctx, store.OperationFilter{States: []status.State{status.Success}})
		require.NoError(b, err)
		require.Len(b, ops, n)
		sum.total += total
		sum.enqueue += enqueued
	}
	sum.total /= time.Duration(b.N)
	sum.enqueue /= time.Duration(b.N)
	b.ReportMetric(sum.total.Seconds(), "total-s")
	b.ReportMetric(sum.enqueue.Seconds(), "enqueue-s")
	b.ReportMetric(float64(n)/sum.total.Seconds(), "ops/s")
	return sum
}
