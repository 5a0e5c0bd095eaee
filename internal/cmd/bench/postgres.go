package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// The postgres section: the PostgreSQL store's batch creation, the
// transitions of claimed operations and claims, each in a schema of its
// own (migrated, dropped afterwards) of pgtest's throwaway cluster (fsync
// off, a Unix socket), or of FWUPGRADER_TEST_DATABASE_URL's database. What
// each figure prepares (catalog, devices, batches, claims) is off the
// clock; the devices are inserted with one INSERT ... SELECT and analyzed,
// as a long-lived fleet table is by autovacuum.

// pgtest.URL takes a testing.TB, for the test that asks for the database:
// it only skips or fails it. tb stands for one outside a test: a skip or a
// failure ends the call with a panic that pgURL recovers. The embedded
// interface is nil: a method pgtest would call beyond these panics too, and
// is reported the same way.
type tb struct {
	testing.TB
}

type tbStop struct {
	skip bool
	msg  string
}

func (tb) Helper()                           {}
func (tb) Name() string                      { return "bench" }
func (tb) Log(...any)                        {}
func (tb) Logf(string, ...any)               {}
func (tb) Fatal(args ...any)                 { panic(tbStop{msg: fmt.Sprint(args...)}) }
func (tb) Fatalf(format string, args ...any) { panic(tbStop{msg: fmt.Sprintf(format, args...)}) }
func (tb) Skip(args ...any)                  { panic(tbStop{skip: true, msg: fmt.Sprint(args...)}) }
func (tb) Skipf(format string, args ...any) {
	panic(tbStop{skip: true, msg: fmt.Sprintf(format, args...)})
}

var pg struct {
	once sync.Once
	url  string
	skip string // why there is no database
	err  error
}

// pgURL returns the database's URL, starting pgtest's cluster on first
// use; skip says why there is none.
func pgURL() (url, skip string, err error) {
	pg.once.Do(func() {
		defer func() {
			p := recover()
			switch s, ok := p.(tbStop); {
			case p == nil:
			case ok && s.skip:
				pg.skip = s.msg
			case ok:
				pg.err = errors.New(s.msg)
			default:
				pg.err = fmt.Errorf("pgtest: %v", p)
			}
		}()
		pg.url = pgtest.URL(tb{})
	})
	return pg.url, pg.skip, pg.err
}

// stopPostgres stops pgtest's cluster, if this process started one.
func stopPostgres() { pgtest.Stop() }

// pgPool returns a pool of maxConns connections, or why there is none.
func pgPool(ctx context.Context, maxConns int32) (*pgxpool.Pool, string, error) {
	url, skip, err := pgURL()
	if skip != "" || err != nil {
		return nil, skip, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, "", err
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	return pool, "", err
}

// pgSchema is a migrated schema of its own, dropped by drop.
type pgSchema struct {
	pool *pgxpool.Pool
	s    *postgres.Store
}

var schemaSeq atomic.Int64

func newPGSchema(ctx context.Context, pool *pgxpool.Pool) (*pgSchema, error) {
	name := fmt.Sprintf("fwbench_%d_%d_%d", time.Now().Unix()%100000, schemaSeq.Add(1), time.Now().Nanosecond()%1000)
	s, err := postgres.New(pool, postgres.WithSchema(name))
	if err != nil {
		return nil, err
	}
	p := &pgSchema{pool: pool, s: s}
	if err := s.Migrate(ctx); err != nil {
		p.drop()
		return nil, err
	}
	return p, nil
}

func (p *pgSchema) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = p.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{p.s.Schema()}.Sanitize()+" CASCADE")
}

// catalog makes a category, a build and an image of organization org, and
// returns the build and the image.
func (p *pgSchema) catalog(ctx context.Context, org string) (store.Build, store.Image, error) {
	cat, err := p.s.CreateCategory(ctx, store.Category{Organization: org, Name: "routers"})
	if err != nil {
		return store.Build{}, store.Image{}, err
	}
	build, err := p.s.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"})
	if err != nil {
		return store.Build{}, store.Image{}, err
	}
	im, err := p.s.CreateImage(ctx, store.Image{BuildID: build.ID, Type: "t", Name: "fw.bin", SHA256: fmt.Sprintf("%064d", 0)})
	return build, im, err
}

// devices inserts n devices like tmpl, prefix0 to prefix(n-1), in one
// statement, analyzes the table and returns their IDs.
func (p *pgSchema) devices(ctx context.Context, prefix string, n int, tmpl store.Device) ([]string, error) {
	table := pgx.Identifier{p.s.Schema(), "devices"}.Sanitize()
	if _, err := p.pool.Exec(ctx, `INSERT INTO `+table+` (id, organization, name, group_name, location, model, board_name,
		os_identifier, connection, address, active, created_at, updated_at)
		SELECT $1 || g, $2, '', 'group-' || (g % 20), 'loc-' || (g % 50), $3, $4, $5, $6, '', $7, now(), now()
		FROM generate_series(0, $8::integer - 1) g`,
		prefix, tmpl.Organization, tmpl.Model, tmpl.BoardName, tmpl.OSIdentifier, tmpl.Connection, tmpl.Active, n); err != nil {
		return nil, fmt.Errorf("insert %d devices: %w", n, err)
	}
	if _, err := p.pool.Exec(ctx, `ANALYZE `+table); err != nil {
		return nil, err
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids, nil
}

// fleet makes the catalog of organization "org" and n of its devices, and
// returns the build and one operation per device (to create in a batch).
func (p *pgSchema) fleet(ctx context.Context, n int) (store.Build, []store.Operation, error) {
	build, im, err := p.catalog(ctx, "org")
	if err != nil {
		return build, nil, err
	}
	ids, err := p.devices(ctx, "dev-", n, store.Device{Organization: "org", Active: true})
	if err != nil {
		return build, nil, err
	}
	return build, opsFor(ids, im.ID), nil
}

func opsFor(devices []string, image string) []store.Operation {
	ops := make([]store.Operation, len(devices))
	for i, d := range devices {
		ops[i] = store.Operation{DeviceID: d, ImageID: image}
	}
	return ops
}

const (
	pgWorkers    = 4 // goroutines driving operations, and claiming, at once
	pgClaimLimit = 8 // the limit of each ClaimOperations: an engine with 8 free workers
)

func postgresSection(ctx context.Context, r *run) error {
	createGoal := atMost(10*float64(r.set.pgBatch)/100_000, fmt.Sprintf("≤ %s s", strconv.FormatFloat(10*float64(r.set.pgBatch)/100_000, 'g', -1, 64)))
	transGoal := atLeast(2000, "≥ 2000/s")
	createName := fmt.Sprintf("create a batch of %d operations", r.set.pgBatch)
	transName := fmt.Sprintf("transitions, %d workers, one batch", pgWorkers)
	pool, skip, err := pgPool(ctx, 16)
	if skip != "" || err != nil {
		if err != nil {
			skip = err.Error()
		}
		r.skip(createName, "s", createGoal, skip)
		r.skip(transName, "transitions/s", transGoal, skip)
		r.skip("claims, 1 claimer", "claims/s", nil, skip)
		r.skip(fmt.Sprintf("claims, %d claimers", pgWorkers), "claims/s", nil, skip)
		return nil
	}
	defer pool.Close()

	// A batch of pgBatch operations, with waves and a cap, created in one
	// call.
	if err := func() error {
		p, err := newPGSchema(ctx, pool)
		if err != nil {
			return err
		}
		defer p.drop()
		build, ops, err := p.fleet(ctx, r.set.pgBatch)
		if err != nil {
			return err
		}
		r.logf("creating a batch of %d operations", len(ops))
		start := time.Now()
		b, out, err := p.s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: build.ID, State: status.BatchInProgress,
			Rollout: store.Rollout{MaxConcurrent: 10, Waves: []store.WaveSize{{Count: 1}, {Percent: 10}, {Percent: 100}}}},
			ops)
		took := time.Since(start)
		if err != nil {
			return err
		}
		if len(out) != len(ops) || b.Counts[status.Pending] != len(ops) {
			return fmt.Errorf("the batch has %d operations, %d pending; %d expected", len(out), b.Counts[status.Pending], len(ops))
		}
		note := fmt.Sprintf("%.0f operations/s; goal 10 s per 100,000", float64(len(ops))/took.Seconds())
		r.add(createName, took.Seconds(), "s", createGoal, note)
		return nil
	}(); err != nil {
		return fmt.Errorf("create a batch: %w", err)
	}

	if err := transitions(ctx, r, pool, transName, transGoal); err != nil {
		return fmt.Errorf("transitions: %w", err)
	}
	if err := claims(ctx, r, pool); err != nil {
		return fmt.Errorf("claims: %w", err)
	}
	return nil
}

// transitions drives pgTransOps claimed operations of one batch,
// pgWorkers at a time, each worker its own, through the writes the engine
// makes for a successful attempt, each fenced with the claim's token:
// seven UpdateOperation calls (the transitions counted), a SetProgress and
// an AppendLog.
func transitions(ctx context.Context, r *run, pool *pgxpool.Pool, name string, g *goal) error {
	n := r.set.pgTransOps
	p, err := newPGSchema(ctx, pool)
	if err != nil {
		return err
	}
	defer p.drop()
	build, ops, err := p.fleet(ctx, n)
	if err != nil {
		return err
	}
	if _, _, err := p.s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: build.ID, State: status.BatchInProgress},
		ops); err != nil {
		return err
	}
	claimed, err := p.s.ClaimOperations(ctx, "bench-engine", n, time.Hour)
	if err != nil {
		return err
	}
	if len(claimed) != n {
		return fmt.Errorf("claimed %d operations of %d", len(claimed), n)
	}
	lanes := make([][]store.Operation, pgWorkers)
	for i, op := range claimed {
		lanes[i%pgWorkers] = append(lanes[i%pgWorkers], op)
	}
	r.logf("driving %d operations through their transitions", n)
	var count, writes atomic.Int64
	errs := make(chan error, pgWorkers)
	var wg sync.WaitGroup
	start := time.Now()
	for _, lane := range lanes {
		wg.Go(func() {
			for _, op := range lane {
				if err := drive(ctx, p.s, op, &count, &writes); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	done, err := p.s.ListOperations(ctx, store.OperationFilter{States: []status.State{status.Success}})
	if err != nil {
		return err
	}
	if len(done) != n || count.Load() != int64(7*n) {
		return fmt.Errorf("%d operations succeeded of %d, %d transitions", len(done), n, count.Load())
	}
	r.add(name, float64(count.Load())/elapsed.Seconds(), "transitions/s", g,
		fmt.Sprintf("%d operations, 7 transitions each; %.0f writes/s with their progress and log lines", n,
			float64(writes.Load())/elapsed.Seconds()))
	return nil
}

// drive runs claimed operation op through a successful attempt.
func drive(ctx context.Context, s *postgres.Store, op store.Operation, transitions, writes *atomic.Int64) error {
	tok := op.Token
	update := func(u store.OperationUpdate) error {
		u.Token = tok
		if _, err := s.UpdateOperation(ctx, op.ID, u); err != nil {
			return fmt.Errorf("operation %s: %w", op.ID, err)
		}
		transitions.Add(1)
		writes.Add(1)
		return nil
	}
	phase := func(p status.Phase, progress *int) error {
		return update(store.OperationUpdate{From: status.InProgress, Phase: &p, Progress: progress})
	}
	attempt := op.Attempt + 1
	steps := []func() error{
		func() error {
			return update(store.OperationUpdate{From: status.Pending, State: status.InProgress,
				Phase: store.Ptr(status.PhaseNone), Progress: store.Ptr(0), Attempt: &attempt,
				DeadlineAfter: store.Ptr(upgrader.DefaultOperationTimeout), Log: []string{fmt.Sprintf("attempt %d", attempt)}})
		},
		func() error { return phase(status.PhaseConnecting, nil) },
		func() error { return phase(status.PhaseUpload, nil) },
		func() error { writes.Add(1); return s.SetProgress(ctx, op.ID, tok, 50) },
		func() error { writes.Add(1); return s.AppendLog(ctx, op.ID, tok, "uploading firmware: 50%") },
		func() error { return phase(status.PhaseFlashing, store.Ptr(status.ProgressFlashing)) },
		func() error { return phase(status.PhaseRebooting, nil) },
		func() error { return phase(status.PhaseVerifying, nil) },
		func() error {
			return update(store.OperationUpdate{From: status.InProgress, State: status.Success,
				Progress: store.Ptr(status.ProgressDone), Log: []string{"upgrade successful"}})
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// claims measures ClaimOperations (limit 8, leases kept) on a batch of
// pgBatch pending operations: pgClaimCalls calls by one claimer, then as
// many by pgWorkers claimers at once, on the same batch.
func claims(ctx context.Context, r *run, pool *pgxpool.Pool) error {
	p, err := newPGSchema(ctx, pool)
	if err != nil {
		return err
	}
	defer p.drop()
	build, ops, err := p.fleet(ctx, r.set.pgBatch)
	if err != nil {
		return err
	}
	if _, _, err := p.s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: build.ID, State: status.BatchInProgress},
		ops); err != nil {
		return err
	}
	for _, claimers := range []int{1, pgWorkers} {
		calls := r.set.pgClaimCalls
		var next, claimed atomic.Int64
		errs := make(chan error, claimers)
		var wg sync.WaitGroup
		start := time.Now()
		for w := range claimers {
			owner := fmt.Sprintf("bench-claimer-%d-%d", claimers, w)
			wg.Go(func() {
				for next.Add(1) <= int64(calls) {
					ops, err := p.s.ClaimOperations(ctx, owner, pgClaimLimit, time.Hour)
					if err == nil && len(ops) == 0 {
						err = errors.New("the batch ran dry")
					}
					if err != nil {
						errs <- err
						return
					}
					claimed.Add(int64(len(ops)))
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		name := "claims, 1 claimer"
		if claimers > 1 {
			name = fmt.Sprintf("claims, %d claimers", claimers)
		}
		r.add(name, float64(claimed.Load())/elapsed.Seconds(), "claims/s", nil,
			fmt.Sprintf("%d ClaimOperations calls of limit %d on a batch of %d pending operations; %.0f µs per call (wall time over calls)",
				calls, pgClaimLimit, r.set.pgBatch, float64(elapsed.Microseconds())/float64(calls)))
	}
	return nil
}
