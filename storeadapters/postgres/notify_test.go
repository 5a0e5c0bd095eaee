package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// ntWait bounds every wait for a notification: far longer than delivery
// takes, far shorter than any poll or renewal interval of the engine tests.
const ntWait = 5 * time.Second

// ntFixture is a store (the writer, on its own pool) and the same schema
// seen from another pool (the listener), as two processes would, with a
// catalog to create operations from.
type ntFixture struct {
	s, other *postgres.Store
	pool     *pgxpool.Pool // the writer's
	build    string
	image    string
	devs     int
}

func ntSetup(t *testing.T) *ntFixture {
	t.Helper()
	pool, otherPool := pgtest.Start(t), pgtest.Start(t)
	s := newStore(t, pool)
	other, err := postgres.New(otherPool, postgres.WithSchema(s.Schema()))
	require.NoError(t, err)
	ctx := t.Context()
	cat := must(s.CreateCategory(ctx, store.Category{Organization: "org", Name: "c"}))
	build := must(s.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "1"}))
	im := must(s.CreateImage(ctx, store.Image{BuildID: build.ID, Type: "t", Name: "n.bin", SHA256: strings.Repeat("0", 64)}))
	return &ntFixture{s: s, other: other, pool: pool, build: build.ID, image: im.ID}
}

// devices registers n new devices.
func (f *ntFixture) devices(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		f.devs++
		d := must(f.s.PutDevice(t.Context(), store.Device{ID: fmt.Sprintf("dev-%05d", f.devs), Organization: "org"}))
		ids = append(ids, d.ID)
	}
	return ids
}

func (f *ntFixture) ops(devs []string) []store.Operation {
	ops := make([]store.Operation, len(devs))
	for i, d := range devs {
		ops[i] = store.Operation{DeviceID: d, ImageID: f.image}
	}
	return ops
}

// ntListen listens on s until the test ends.
func ntListen(t *testing.T, s *postgres.Store) <-chan store.Notification {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Listen(ctx)
	require.NoError(t, err)
	return ch
}

func ntString(n store.Notification) string {
	if n.OperationID == "" {
		return string(n.Kind)
	}
	return string(n.Kind) + ":" + n.OperationID
}

// ntNext returns the next notification of ch, failing the test when none
// comes within ntWait or ch is closed.
func ntNext(t *testing.T, ch <-chan store.Notification) store.Notification {
	t.Helper()
	select {
	case n, ok := <-ch:
		require.True(t, ok, "the channel was closed")
		return n
	case <-time.After(ntWait):
		t.Fatal("no notification")
		return store.Notification{}
	}
}

// ntSentinelSeq numbers sentinels.
var ntSentinelSeq atomic.Int64

// ntUntil sends a sentinel cancel on s's channel and returns, deduplicated
// and sorted, what ch delivers before it: everything committed before the
// sentinel was sent (notifications are delivered in commit order).
func ntUntil(t *testing.T, pool *pgxpool.Pool, s *postgres.Store, ch <-chan store.Notification) []string {
	t.Helper()
	sentinel := fmt.Sprintf("sentinel-%d", ntSentinelSeq.Add(1))
	_, err := pool.Exec(t.Context(), `SELECT pg_notify($1, $2)`, s.NotifyChannel(), "cancel:"+sentinel)
	require.NoError(t, err)
	got := []string{}
	for {
		n := ntNext(t, ch)
		if n.Kind == store.NotifyCancel && n.OperationID == sentinel {
			slices.Sort(got)
			return slices.Compact(got)
		}
		got = append(got, ntString(n))
	}
}

// TestNotifyEachChange makes every kind of change and checks what each
// notifies, on a Listen of another pool.
func TestNotifyEachChange(t *testing.T) {
	t.Parallel()
	f := ntSetup(t)
	ctx := t.Context()
	ch := ntListen(t, f.other)
	s := f.s
	step := func(name string, want []string, change func()) {
		t.Helper()
		change()
		if want == nil {
			want = []string{}
		}
		assert.Equal(t, want, ntUntil(t, f.pool, s, ch), name)
	}
	work := []string{"work"}
	devs := f.devices(t, 10)

	var op store.Operation
	step("CreateOperation", work, func() { op = must(s.CreateOperation(ctx, store.Operation{DeviceID: devs[0], ImageID: f.image})) })
	step("ClaimOperation", nil, func() { op = must(s.ClaimOperation(ctx, op.ID, "e1", time.Minute)) })
	step("RenewLeases", nil, func() {
		must(s.RenewLeases(ctx, "e1", time.Minute, []store.Lease{{OperationID: op.ID, Token: op.Token}}))
	})
	step("UpdateOperation to in-progress", nil, func() {
		op = must(s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress,
			Phase: store.Ptr(status.PhaseConnecting), Token: op.Token}))
	})
	step("SetProgress and AppendLog", nil, func() {
		require.NoError(t, s.SetProgress(ctx, op.ID, op.Token, 10))
		require.NoError(t, s.AppendLog(ctx, op.ID, op.Token, "line"))
	})
	step("ReleaseOperation", work, func() { require.NoError(t, s.ReleaseOperation(ctx, op.ID, op.Token)) })
	step("UpdateOperation to cancelled", []string{"cancel:" + op.ID}, func() {
		must(s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: status.Cancelled,
			Reason: status.ReasonCancelledByUser}))
	})

	var b store.Batch
	var bops []store.Operation
	step("CreateBatch idle", nil, func() {
		b, bops = must2(s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: f.build,
			Rollout: store.Rollout{Waves: []store.WaveSize{{Count: 1}}}}, f.ops(devs[1:4])))
	})
	require.Len(t, b.WaveTallies, 2)
	step("CreateOperation in an idle batch", nil, func() {
		bops = append(bops, must(s.CreateOperation(ctx, store.Operation{DeviceID: devs[4], ImageID: f.image, BatchID: b.ID})))
	})
	step("SetBatchState start", work, func() { must(s.SetBatchState(ctx, b.ID, status.BatchIdle, status.BatchInProgress)) })
	step("SetBatchState pause", nil, func() { must(s.SetBatchState(ctx, b.ID, status.BatchInProgress, status.BatchPaused)) })
	step("SetRollout of a paused batch", nil, func() {
		must(s.SetRollout(ctx, b.ID, store.Rollout{MaxConcurrent: 3, Waves: []store.WaveSize{{Count: 1}}}))
	})
	step("SetBatchState resume", work, func() { must(s.SetBatchState(ctx, b.ID, status.BatchPaused, status.BatchInProgress)) })
	step("SetRollout", work, func() {
		must(s.SetRollout(ctx, b.ID, store.Rollout{MaxConcurrent: 5, Waves: []store.WaveSize{{Count: 1}}}))
	})
	step("AdvanceBatches with nothing to do", nil, func() { require.Empty(t, must(s.AdvanceBatches(ctx, 10))) })
	first := bops[0]
	require.Equal(t, 0, first.Wave)
	step("UpdateOperation cancels wave 0", []string{"cancel:" + first.ID}, func() {
		must(s.UpdateOperation(ctx, first.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled,
			Reason: status.ReasonCancelledByUser}))
	})
	step("AdvanceBatches", work, func() { require.Len(t, must(s.AdvanceBatches(ctx, 10)), 1) })
	step("CreateOperation in a batch in progress", work, func() {
		bops = append(bops, must(s.CreateOperation(ctx, store.Operation{DeviceID: devs[5], ImageID: f.image, BatchID: b.ID})))
	})
	var cancelled []string
	for _, o := range bops[1:] {
		cancelled = append(cancelled, "cancel:"+o.ID)
	}
	slices.Sort(cancelled)
	step("CancelBatch", cancelled, func() {
		_, ops := must2(s.CancelBatch(ctx, b.ID))
		require.Len(t, ops, len(bops)-1)
	})
	step("CreateBatch in progress", work, func() {
		must2(s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: f.build, State: status.BatchInProgress},
			f.ops(devs[6:8])))
	})
	step("a refused change", nil, func() {
		_, err := s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled})
		require.ErrorIs(t, err, store.ErrInvalidTransition)
	})
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}

// TestNotifyOnlyAfterCommit holds the store's transaction open at its
// commit (a deferred trigger waits for an advisory lock the test holds):
// nothing is delivered meanwhile, and once it commits the notification
// arrives and the change is visible from another connection.
func TestNotifyOnlyAfterCommit(t *testing.T) {
	t.Parallel()
	f := ntSetup(t)
	ctx := t.Context()
	var kb [4]byte
	_, _ = rand.Read(kb[:])
	key := int64(binary.BigEndian.Uint32(kb[:]) >> 1) // classid 0, objid key in pg_locks
	_, err := f.pool.Exec(ctx, fmt.Sprintf(`
		CREATE FUNCTION %[1]s.gate() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM pg_advisory_xact_lock_shared(%[2]d::bigint); RETURN NULL; END $$;
		CREATE CONSTRAINT TRIGGER gate AFTER INSERT OR UPDATE ON %[1]s.operations
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION %[1]s.gate()`,
		pgx.Identifier{f.s.Schema()}.Sanitize(), key))
	require.NoError(t, err)
	gate, err := f.pool.Acquire(ctx)
	require.NoError(t, err)
	defer gate.Release()
	ch := ntListen(t, f.other)
	devs := f.devices(t, 2)

	held := func(change func() error, visible func() bool, want string) {
		t.Helper()
		_, err := gate.Exec(ctx, `SELECT pg_advisory_lock($1)`, key)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- change() }()
		require.Eventually(t, func() bool {
			var waiting bool
			err := f.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
				AND NOT granted AND classid = 0 AND objid::bigint = $1 AND objsubid = 1)`, key).Scan(&waiting)
			return err == nil && waiting
		}, ntWait, time.Millisecond, "the change waits at its commit")
		select {
		case n := <-ch:
			t.Fatalf("notified before the commit: %+v", n)
		case <-time.After(300 * time.Millisecond):
		}
		assert.False(t, visible(), "not committed yet")
		_, err = gate.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key)
		require.NoError(t, err)
		n := ntNext(t, ch)
		assert.True(t, visible(), "committed when notified")
		assert.Equal(t, want, ntString(n))
		require.NoError(t, <-done)
	}

	held(func() error {
		_, err := f.s.CreateOperation(ctx, store.Operation{ID: "gated-op", DeviceID: devs[0], ImageID: f.image})
		return err
	}, func() bool {
		_, err := f.other.Operation(ctx, "gated-op")
		return err == nil
	}, "work")

	held(func() error {
		_, err := f.s.UpdateOperation(ctx, "gated-op", store.OperationUpdate{From: status.Pending, State: status.Cancelled,
			Reason: status.ReasonCancelledByUser})
		return err
	}, func() bool {
		op, err := f.other.Operation(ctx, "gated-op")
		return err == nil && op.State == status.Cancelled
	}, "cancel:gated-op")
}

// ntListeners returns the PIDs of the connections listening on s's
// channel (their last statement was the LISTEN).
func ntListeners(t *testing.T, pool *pgxpool.Pool, s *postgres.Store) []int32 {
	t.Helper()
	pids, err := ntListenerPIDs(t.Context(), pool, s)
	require.NoError(t, err)
	return pids
}

func ntListenerPIDs(ctx context.Context, pool *pgxpool.Pool, s *postgres.Store) ([]int32, error) {
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()`,
		"LISTEN "+pgx.Identifier{s.NotifyChannel()}.Sanitize())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int32])
}

// ntClosed waits for ch to be closed, failing when it delivers nothing but
// stays open for ntWait.
func ntClosed(t *testing.T, ch <-chan store.Notification) {
	t.Helper()
	deadline := time.After(ntWait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the channel stayed open")
		}
	}
}

func TestListenEndsWithContext(t *testing.T) {
	t.Parallel()
	f := ntSetup(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := f.other.Listen(ctx)
	require.NoError(t, err)
	require.Len(t, ntListeners(t, f.pool, f.other), 1)
	cancel()
	ntClosed(t, ch)
	// The connection was closed before the channel; its server process
	// exits a moment later.
	assert.Eventually(t, func() bool {
		pids, err := ntListenerPIDs(t.Context(), f.pool, f.other)
		return err == nil && len(pids) == 0
	}, ntWait, 5*time.Millisecond, "the connection is closed")

	_, err = f.other.Listen(ctx)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestListenEndsWhenTheConnectionIsKilled(t *testing.T) {
	t.Parallel()
	f := ntSetup(t)
	ch := ntListen(t, f.other)
	pids := ntListeners(t, f.pool, f.other)
	require.Len(t, pids, 1)
	var ok bool
	require.NoError(t, f.pool.QueryRow(t.Context(), `SELECT pg_terminate_backend($1)`, pids[0]).Scan(&ok))
	require.True(t, ok)
	ntClosed(t, ch)

	// Listening again works.
	ch = ntListen(t, f.other)
	dev := f.devices(t, 1)[0]
	must(f.s.CreateOperation(t.Context(), store.Operation{DeviceID: dev, ImageID: f.image}))
	assert.Equal(t, store.Notification{Kind: store.NotifyWork}, ntNext(t, ch))
}

// TestNotifySchemasApart: stores of two schemas in one database do not see
// each other's notifications.
func TestNotifySchemasApart(t *testing.T) {
	t.Parallel()
	a, b := ntSetup(t), ntSetup(t)
	require.NotEqual(t, a.s.NotifyChannel(), b.s.NotifyChannel())
	chA, chB := ntListen(t, a.other), ntListen(t, b.other)
	ctx := t.Context()
	cancel := func(f *ntFixture, id string) {
		op := must(f.s.CreateOperation(ctx, store.Operation{ID: id, DeviceID: f.devices(t, 1)[0], ImageID: f.image}))
		must(f.s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.Cancelled}))
	}
	cancel(a, "op-of-a")
	cancel(b, "op-of-b")
	// Each listener's notifications up to its own sentinel are its own
	// schema's only, though a's came first.
	assert.Equal(t, []string{"cancel:op-of-a", "work"}, ntUntil(t, a.pool, a.s, chA))
	assert.Equal(t, []string{"cancel:op-of-b", "work"}, ntUntil(t, b.pool, b.s, chB))
}

func TestNotifyChannelNames(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	long := func(c byte) string { return "s" + strings.Repeat(string(c), 62) }
	seen := map[string]bool{}
	for _, schema := range []string{"fwupgrader", "Tenant_2", "tenant_2", long('a'), long('b')} {
		s, err := postgres.New(pool, postgres.WithSchema(schema))
		require.NoError(t, err)
		c := s.NotifyChannel()
		assert.LessOrEqual(t, len(c), 63, c)
		assert.False(t, seen[c], "channel %q twice", c)
		seen[c] = true
	}
	// A schema of the longest name listens and notifies.
	schema := "x" + randomSchema() + strings.Repeat("y", 62-len(randomSchema()))
	require.Len(t, schema, 63)
	s, err := postgres.New(pool, postgres.WithSchema(schema))
	require.NoError(t, err)
	ch := ntListen(t, s)
	_, err = pool.Exec(t.Context(), `SELECT pg_notify($1, 'work')`, s.NotifyChannel())
	require.NoError(t, err)
	assert.Equal(t, store.Notification{Kind: store.NotifyWork}, ntNext(t, ch))
}

func TestListenIgnoresMalformedPayloads(t *testing.T) {
	t.Parallel()
	f := ntSetup(t)
	ch := ntListen(t, f.other)
	for _, p := range []string{"", "junk", "cancel:", "Work", "work ", "cancelled:x", `{"kind":"work"}`} {
		_, err := f.pool.Exec(t.Context(), `SELECT pg_notify($1, $2)`, f.s.NotifyChannel(), p)
		require.NoError(t, err)
	}
	_, err := f.pool.Exec(t.Context(), `SELECT pg_notify($1, 'cancel')`, f.s.NotifyChannel())
	require.NoError(t, err)
	assert.Equal(t, []string{"cancel"}, ntUntil(t, f.pool, f.s, ch))
}

// TestListenSlowConsumer: a consumer that reads nothing for a while gets,
// when it reads, every cancel in order and the work notices merged; the
// listener went on reading meanwhile.
func TestListenSlowConsumer(t *testing.T) {
	t.Parallel()
	f := ntSetup(t)
	ch := ntListen(t, f.other)
	ctx := t.Context()
	const works, cancels = 1000, 100
	var want []string
	// One transaction each: PostgreSQL merges nothing.
	for i := range works {
		_, err := f.pool.Exec(ctx, `SELECT pg_notify($1, 'work')`, f.s.NotifyChannel())
		require.NoError(t, err)
		if i%(works/cancels) == 0 {
			id := fmt.Sprintf("op-%03d", len(want))
			want = append(want, id)
			_, err := f.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, f.s.NotifyChannel(), "cancel:"+id)
			require.NoError(t, err)
		}
	}
	_, err := f.pool.Exec(ctx, `SELECT pg_notify($1, 'cancel:last')`, f.s.NotifyChannel())
	require.NoError(t, err)
	want = append(want, "last")
	time.Sleep(time.Second) // the consumer is slow
	var gotCancels []string
	gotWorks := 0
	for len(gotCancels) < len(want) {
		n := ntNext(t, ch)
		if n.Kind == store.NotifyWork {
			gotWorks++
		} else {
			gotCancels = append(gotCancels, n.OperationID)
		}
	}
	assert.Equal(t, want, gotCancels)
	assert.GreaterOrEqual(t, gotWorks, 1)
	assert.Less(t, gotWorks, works/4, "work notices merged")
	t.Logf("%d work notices delivered for %d sent", gotWorks, works)
}

// TestCancelBatchNotifiesBounded cancels a batch of more operations than
// one transaction names: the ones held by an engine are named first, and
// one unnamed cancel stands for the rest.
func TestCancelBatchNotifiesBounded(t *testing.T) {
	t.Parallel()
	f := ntSetup(t)
	ctx := t.Context()
	const n = 1100
	_, err := f.pool.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.devices (id, organization, name, group_name, location, model,
		board_name, os_identifier, connection, address, active, created_at, updated_at)
		SELECT 'bulk-' || lpad(g::text, 5, '0'), 'org', '', '', '', '', '', '', '', '', true, now(), now()
		FROM generate_series(1, $1) g`, pgx.Identifier{f.s.Schema()}.Sanitize()), n)
	require.NoError(t, err)
	var ops []store.Operation
	for i := range n {
		ops = append(ops, store.Operation{ID: fmt.Sprintf("op-%05d", i), DeviceID: fmt.Sprintf("bulk-%05d", i+1), ImageID: f.image})
	}
	b, _ := must2(f.s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: f.build, State: status.BatchInProgress}, ops))
	held := []string{ops[n-1].ID, ops[n-2].ID, ops[n-50].ID} // last in ID order
	for _, id := range held {
		must(f.s.ClaimOperation(ctx, id, "engine", time.Minute))
	}
	ch := ntListen(t, f.other)
	_, cancelled := must2(f.s.CancelBatch(ctx, b.ID))
	require.Len(t, cancelled, n)
	got := ntUntil(t, f.pool, f.s, ch)
	assert.Len(t, got, 1001, "1000 named, one unnamed")
	assert.Contains(t, got, "cancel")
	for _, id := range held {
		assert.Contains(t, got, "cancel:"+id, "a held operation is named")
	}
}

// ---- the engine ----

// ntClaimCounter counts the engine's claims, to know when its producer
// waits for its next poll.
type ntClaimCounter struct {
	*postgres.Store
	claims, inflight atomic.Int64
}

func (c *ntClaimCounter) ClaimOperations(ctx context.Context, owner string, limit int, lease time.Duration) ([]store.Operation, error) {
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	c.claims.Add(1)
	return c.Store.ClaimOperations(ctx, owner, limit, lease)
}

// ntHold is an upgrader that goes up to the upload and waits there for its
// context to end, and records why it ended.
type ntHold struct {
	mu      sync.Mutex
	reached map[string]bool
	causes  map[string]error
}

func (h *ntHold) Upgrade(ctx context.Context, job *upgrader.Job) error {
	for _, p := range []status.Phase{status.PhaseConnecting, status.PhaseIdentity, status.PhaseChecksum,
		status.PhaseMemory, status.PhaseUpload} {
		if err := job.Report.Phase(ctx, p); err != nil {
			return err
		}
	}
	h.mu.Lock()
	h.reached[job.Operation.ID] = true
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	h.causes[job.Operation.ID] = context.Cause(ctx)
	h.mu.Unlock()
	return ctx.Err()
}

func (h *ntHold) state(id string) (reached bool, cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reached[id], h.causes[id]
}

const ntImageType = "test-board-squashfs-sysupgrade.bin"

// TestEnginesFollowNotifications runs engine B with a one-minute poll and a
// 30-second lease (renewed every 10 s), and changes the store through
// engine A, never started: B starts new work, and a cancel reaches B's
// attempt, only through notifications within the time the test waits
// (ntWait), well before B would poll or renew.
func TestEnginesFollowNotifications(t *testing.T) {
	t.Parallel()
	poolA, poolB := pgtest.Start(t), pgtest.Start(t)
	sa := newStore(t, poolA)
	sb := &ntClaimCounter{Store: must(postgres.New(poolB, postgres.WithSchema(sa.Schema())))}
	filesA := must(postgres.NewFiles(poolA, postgres.WithSchema(sa.Schema())))
	filesB := must(postgres.NewFiles(poolB, postgres.WithSchema(sa.Schema())))
	imap, err := imagemap.New(map[string]imagemap.Entry{
		ntImageType: {Label: "Test board", Boards: []string{"Test Board"}, BoardNames: []string{"test,board"}},
	})
	require.NoError(t, err)
	cfg := func(owner string, files upgrader.Files) *upgrader.Config {
		return &upgrader.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ImageMap: imap, Files: files,
			Owner: owner, Workers: 2, PollInterval: time.Minute, LeaseDuration: 30 * time.Second,
			MaintenanceInterval: time.Minute}
	}
	regA, regB := upgrader.NewRegistry(), upgrader.NewRegistry()
	fakeB, holdB := &upgradertest.Fake{}, &ntHold{reached: map[string]bool{}, causes: map[string]error{}}
	require.NoError(t, regA.Register("quick", &upgradertest.Fake{}))
	require.NoError(t, regA.Register("hold", &ntHold{}))
	require.NoError(t, regB.Register("quick", fakeB))
	require.NoError(t, regB.Register("hold", holdB))
	a := must(upgrader.NewEngine(sa, regA, cfg("engine-a", filesA)))
	b := must(upgrader.NewEngine(sb, regB, cfg("engine-b", filesB)))

	ctx := t.Context()
	cat := must(a.CreateCategory(ctx, store.Category{Organization: "org", Name: "routers"}))
	build := must(a.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "2.0"}))
	im := must(a.UploadImage(ctx, store.Image{BuildID: build.ID, Type: ntImageType}, strings.NewReader("firmware bytes")))
	device := func(id, conn string) string {
		d := must(a.RegisterDevice(ctx, store.Device{ID: id, Organization: "org", Model: "Test Board", BoardName: "test,board",
			Connection: conn, Active: true}))
		return d.ID
	}
	quick, hold := device("quick-1", "quick"), device("hold-1", "hold")

	require.NoError(t, b.Start(ctx))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, b.Stop(sctx))
		assert.NoError(t, a.Stop(sctx))
	})
	// B listens, and its producer made its first claim and the one the
	// start of listening asks for: it now waits a minute for its next poll.
	require.Eventually(t, func() bool {
		pids, err := ntListenerPIDs(ctx, poolA, sb.Store)
		return err == nil && len(pids) == 1 && sb.claims.Load() >= 2 && sb.inflight.Load() == 0
	}, ntWait, 5*time.Millisecond)

	t.Run("NewWorkStartsAtOnce", func(t *testing.T) {
		before := sb.claims.Load()
		op := must(a.Create(ctx, upgrader.Request{DeviceID: quick, ImageID: im.ID}))
		require.Eventually(t, func() bool {
			o, err := sa.Operation(ctx, op.ID)
			return err == nil && o.State == status.Success
		}, ntWait, 5*time.Millisecond, "B ran the operation A created")
		assert.Equal(t, 1, fakeB.Attempts(op.ID))
		assert.Greater(t, sb.claims.Load(), before)
	})

	t.Run("CancelReachesTheHolder", func(t *testing.T) {
		op := must(a.Create(ctx, upgrader.Request{DeviceID: hold, ImageID: im.ID}))
		require.Eventually(t, func() bool {
			reached, _ := holdB.state(op.ID)
			return reached
		}, ntWait, 5*time.Millisecond, "B runs the operation")
		held := must(sa.Operation(ctx, op.ID))
		require.Equal(t, "engine-b", held.LeaseOwner)
		require.Equal(t, status.PhaseUpload, held.Phase)

		c, err := a.Cancel(ctx, op.ID)
		require.NoError(t, err)
		assert.Equal(t, status.Cancelled, c.State)
		var cause error
		require.Eventually(t, func() bool {
			_, cause = holdB.state(op.ID)
			return cause != nil
		}, ntWait, 5*time.Millisecond, "B's attempt was interrupted")
		assert.ErrorIs(t, cause, upgrader.ErrCancelled)
		end := must(sa.Operation(ctx, op.ID))
		assert.Equal(t, status.Cancelled, end.State)
		assert.Equal(t, status.PhaseUpload, end.Phase, "stopped before flashing")
	})
}
