package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fwupgrader/fwupgrader/store"
)

// Round trips.
//
// A transaction's statements that need nothing from each other's results go
// to the server together, in one pgx.Batch (one round trip; the server still
// runs them one after the other, each with its own snapshot, so a read
// queued after a lock sees what was committed before the lock was granted).
// An UpdateOperation is then four round trips (BEGIN; lock and clock;
// writes; COMMIT), five when its batch's tallies change.

// execer runs a statement whose result is not read: a pgx.Tx runs it at
// once, a *queue holds it for one round trip with the others.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// queue holds statements to send in one round trip (see send).
type queue struct{ b pgx.Batch }

// Exec queues sql; it implements execer and never fails.
func (q *queue) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

// send runs the queued statements in tx, in order, and empties q.
func (q *queue) send(ctx context.Context, tx pgx.Tx) error {
	if q.b.Len() == 0 {
		return nil
	}
	err := tx.SendBatch(ctx, &q.b).Close()
	q.b = pgx.Batch{}
	return err
}

// opLock is what queueLockOp reads: an operation locked, the clock read
// after the lock and, when asked, the operation's batch locked and read.
type opLock struct {
	op  store.Operation
	err error // the operation's own (not found), apart from the batch's
	b   *store.Batch
	t   time.Time
}

// queueLockOp queues in pb the locking read of operation id, then, with
// withBatch, the lock and read of its batch (after the operation: the order
// every transaction takes the two locks in), and the clock after the locks.
// The results land in l when pb's results are read.
func (s *Store) queueLockOp(pb *pgx.Batch, id string, withBatch bool, l *opLock) {
	pb.Queue(s.sql(lockOpSQL), id).QueryRow(func(r pgx.Row) error {
		l.op, l.err = scanOp(r)
		if errors.Is(l.err, pgx.ErrNoRows) {
			l.err = notFound("operation", id)
			return nil
		}
		return l.err
	})
	const ofOp = ` = (SELECT batch_id FROM {{schema}}.operations WHERE id = $1)`
	if withBatch {
		pb.Queue(s.sql(`SELECT FROM {{schema}}.batches WHERE id`+ofOp+` FOR NO KEY UPDATE`), id)
	}
	pb.Queue(nowSQL).QueryRow(func(r pgx.Row) error {
		err := r.Scan(&l.t)
		l.t = l.t.UTC()
		return err
	})
	if withBatch {
		pb.Queue(s.sql(batchSelect+` WHERE b.id`+ofOp), id).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				bt, err := scanBatch(rows)
				if err != nil {
					return err
				}
				l.b = &bt
			}
			return rows.Err()
		})
	}
}

// lockOpNow locks and reads operation id, then reads the database's clock,
// in one round trip: the clock is read once the row's lock is held.
func (s *Store) lockOpNow(ctx context.Context, tx pgx.Tx, id string) (store.Operation, time.Time, error) {
	var l opLock
	pb := &pgx.Batch{}
	s.queueLockOp(pb, id, false, &l)
	if err := tx.SendBatch(ctx, pb).Close(); err != nil {
		if l.err != nil {
			return l.op, l.t, l.err
		}
		return l.op, l.t, err
	}
	return l.op, l.t, l.err
}

// onOp runs a change of operation id in one transaction of two round trips
// (see tx2): the first locks the operation (and, withBatch, its batch) and
// reads the clock; change then decides from what was read and queues the
// writes in q.
func (s *Store) onOp(ctx context.Context, id string, withBatch bool, change func(l *opLock, q *queue) error) error {
	var l opLock
	return s.tx2(ctx, func(pb *pgx.Batch) {
		l = opLock{}
		s.queueLockOp(pb, id, withBatch, &l)
	}, func(q *queue) error {
		if l.err != nil {
			return l.err
		}
		return change(&l, q)
	})
}

// tx2 runs a transaction in two round trips on a connection of the pool:
// BEGIN and the statements first queues (locks and reads, whose callbacks
// keep what they read), then the writes then queues and COMMIT. A
// transaction that fails is rolled back; one that loses a deadlock, or whose
// then asks with errRetry, runs again from the start, as tx does. The
// error is translated. then must set its results only from its last run.
func (s *Store) tx2(ctx context.Context, first func(pb *pgx.Batch), then func(q *queue) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/postgres: %w", err)
	}
	var err error
	for attempt := 1; ; attempt++ {
		err = s.tx2Once(ctx, first, then)
		if attempt < maxAttempts && (errors.Is(err, errRetry) || retryable(err)) && ctx.Err() == nil {
			continue
		}
		return translate(err)
	}
}

func (s *Store) tx2Once(ctx context.Context, first func(pb *pgx.Batch), then func(q *queue) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection still in a transaction is closed by Release rather
	// than returned to the pool; ROLLBACK keeps it when it can.
	defer conn.Release()
	ended := false
	defer func() {
		if !ended && !conn.Conn().IsClosed() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			defer cancel()
			_, _ = conn.Exec(rctx, "ROLLBACK")
		}
	}()
	pb := &pgx.Batch{}
	pb.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	first(pb)
	if err := conn.SendBatch(ctx, pb).Close(); err != nil {
		return err
	}
	var q queue
	if err := then(&q); err != nil {
		return err
	}
	q.b.Queue("COMMIT").Exec(func(ct pgconn.CommandTag) error {
		if ct.String() == "ROLLBACK" { // the transaction had failed: nothing was committed
			return pgx.ErrTxCommitRollback
		}
		ended = true
		return nil
	})
	return conn.SendBatch(ctx, &q.b).Close()
}

// rollbackTimeout bounds the ROLLBACK of a failed tx2.
const rollbackTimeout = 5 * time.Second
