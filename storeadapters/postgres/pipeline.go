package postgres

import (
	"context"
	"errors"
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

// lockOpNow locks and reads operation id, then reads the database's clock,
// in one round trip: the clock is read once the row's lock is held.
func (s *Store) lockOpNow(ctx context.Context, tx pgx.Tx, id string) (store.Operation, time.Time, error) {
	op, _, t, err := s.lockOpBatchNow(ctx, tx, id, false)
	return op, t, err
}

// lockOpBatchNow is lockOpNow that, withBatch, also locks and reads the
// operation's batch (nil when it has none) after the operation, in the same
// round trip: the order every transaction takes the two locks in.
func (s *Store) lockOpBatchNow(ctx context.Context, tx pgx.Tx, id string, withBatch bool) (store.Operation, *store.Batch, time.Time, error) {
	var (
		op    store.Operation
		opErr error
		b     *store.Batch
		t     time.Time
	)
	pb := &pgx.Batch{}
	pb.Queue(s.sql(lockOpSQL), id).QueryRow(func(r pgx.Row) error {
		op, opErr = scanOp(r)
		if errors.Is(opErr, pgx.ErrNoRows) {
			opErr = notFound("operation", id)
			return nil
		}
		return opErr
	})
	const ofOp = ` = (SELECT batch_id FROM {{schema}}.operations WHERE id = $1)`
	if withBatch {
		pb.Queue(s.sql(`SELECT FROM {{schema}}.batches WHERE id`+ofOp+` FOR NO KEY UPDATE`), id)
	}
	pb.Queue(nowSQL).QueryRow(func(r pgx.Row) error { return r.Scan(&t) })
	if withBatch {
		pb.Queue(s.sql(batchSelect+` WHERE b.id`+ofOp), id).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				bt, err := scanBatch(rows)
				if err != nil {
					return err
				}
				b = &bt
			}
			return rows.Err()
		})
	}
	if err := tx.SendBatch(ctx, pb).Close(); err != nil {
		if opErr != nil {
			return op, nil, t, opErr
		}
		return op, nil, t, err
	}
	return op, b, t.UTC(), opErr
}
