package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// Notifications (store.Notifier), with PostgreSQL's LISTEN/NOTIFY.
//
// Every change that may make operations claimable, or that cancels
// operations, calls pg_notify in its own transaction, so a notification is
// delivered only once the change is committed (and not at all when the
// transaction rolls back or runs again). The channel is the schema's (see
// NotifyChannel), so installations sharing a database do not wake each
// other. Payloads:
//
//   - "work": operations may have become claimable. Sent by CreateOperation
//     (unless the batch it joins is not in progress), CreateBatch of a batch
//     in progress, SetBatchState and SetRollout leaving the batch in
//     progress (a start, a resume, a rollout change), ReleaseOperation that
//     released a lease, and AdvanceBatches that moved a batch in progress to
//     its next wave. A lease that expires changes nothing in the database,
//     so nothing can announce it: polling finds such operations.
//   - "cancel:<operation ID>": the operation was cancelled, by
//     UpdateOperation or CancelBatch.
//   - "cancel": operations were cancelled that are not named. CancelBatch
//     names at most maxCancelNotices operations, those that held a lease
//     (an attempt runs somewhere) first; the holders of the others learn of
//     the cancel at their next lease renewal, as without notifications.
//
// PostgreSQL merges identical notifications of one transaction and limits
// a payload to 8000 bytes (an operation ID is at most store.MaxIDLen
// characters).
//
// Listen takes a connection of the pool for itself (pgxpool.Conn.Hijack: it
// no longer counts against the pool's MaxConns, and it is closed, never
// returned, when Listen ends), runs LISTEN on it and reads notifications
// until ctx ends or the connection breaks. Reading never waits for the
// consumer: notifications wait in a small channel and, when it is full, in
// the listener, in order, where a work notice merges into the one already
// waiting and cancels are kept (up to maxPendingCancels, then merged into
// one unnamed cancel).

// Notification payloads.
const (
	payloadWork   = "work"
	payloadCancel = "cancel"
)

// maxCancelNotices is how many operations one transaction names in cancel
// notifications; more get one unnamed "cancel".
const maxCancelNotices = 1000

// listenBuffer is the capacity of the channel Listen returns.
const listenBuffer = 16

// maxPendingCancels bounds the cancels a listener keeps for a consumer that
// does not keep up.
const maxPendingCancels = 10_000

// channelPrefix starts the name of every store's channel.
const channelPrefix = "fwupgrader:"

// maxChannelLen is PostgreSQL's longest identifier (NAMEDATALEN - 1).
const maxChannelLen = 63

// NotifyChannel returns the name of the channel the store notifies on:
// "fwupgrader:" and the schema's name, or, when that is longer than
// PostgreSQL's 63 bytes, its first part and a hash of the schema's name.
// Quote it as an identifier to LISTEN to it (pgx.Identifier{ch}.Sanitize()).
func (s *Store) NotifyChannel() string {
	c := channelPrefix + s.schema
	if len(c) <= maxChannelLen {
		return c
	}
	sum := sha256.Sum256([]byte(s.schema))
	h := hex.EncodeToString(sum[:8])
	return c[:maxChannelLen-len(h)-1] + "#" + h
}

// notify sends payloads on the store's channel when tx commits.
func (s *Store) notify(ctx context.Context, q execer, payloads []string) error {
	if len(payloads) == 0 {
		return nil
	}
	_, err := q.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, s.NotifyChannel(), payloads)
	return err
}

// notifyWork announces, when tx commits, that operations may have become
// claimable.
func (s *Store) notifyWork(ctx context.Context, q execer) error {
	return s.notify(ctx, q, []string{payloadWork})
}

// notifyAdvanced announces the batches AdvanceBatches moved on, when one of
// them is in progress.
func (s *Store) notifyAdvanced(ctx context.Context, tx pgx.Tx, bs []store.Batch) error {
	for _, b := range bs {
		if b.State == status.BatchInProgress {
			return s.notifyWork(ctx, tx)
		}
	}
	return nil
}

// notifyCancelled announces, when tx commits, the operations of after that
// are cancelled and were not in before (the same operations, before the
// change): at most maxCancelNotices by ID, those that held a lease first,
// then one unnamed cancel for the rest.
func (s *Store) notifyCancelled(ctx context.Context, q execer, before, after []store.Operation) error {
	was := make(map[string]store.Operation, len(before))
	for _, op := range before {
		was[op.ID] = op
	}
	var held, others []string
	for _, op := range after {
		prev, ok := was[op.ID]
		if op.State != status.Cancelled || (ok && prev.State == status.Cancelled) {
			continue
		}
		if ok && prev.LeaseOwner != "" && !prev.LeaseExpiresAt.IsZero() {
			held = append(held, op.ID)
		} else {
			others = append(others, op.ID)
		}
	}
	ids := append(held, others...)
	var payloads []string
	for i, id := range ids {
		if i == maxCancelNotices {
			payloads = append(payloads, payloadCancel)
			break
		}
		payloads = append(payloads, payloadCancel+":"+id)
	}
	return s.notify(ctx, q, payloads)
}

// parsePayload reads a notification's payload; ok is false for anything
// malformed.
func parsePayload(p string) (n store.Notification, ok bool) {
	switch {
	case p == payloadWork:
		return store.Notification{Kind: store.NotifyWork}, true
	case p == payloadCancel:
		return store.Notification{Kind: store.NotifyCancel}, true
	case strings.HasPrefix(p, payloadCancel+":") && len(p) > len(payloadCancel)+1:
		return store.Notification{Kind: store.NotifyCancel, OperationID: p[len(payloadCancel)+1:]}, true
	}
	return store.Notification{}, false
}

var _ store.Notifier = (*Store)(nil)

// Listen implements store.Notifier (see the comment at the top of this
// file). The notifications of every change committed after Listen returned
// are delivered, unless the consumer falls behind (then work notices
// merge). The channel is closed when ctx ends or the connection breaks
// (the server restarted, the backend was terminated), once the connection
// is closed; the caller calls Listen again to resume.
func (s *Store) Listen(ctx context.Context) (<-chan store.Notification, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("store/postgres: listen: %w", err)
	}
	conn := pc.Hijack()
	channel := s.NotifyChannel()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("store/postgres: listen: %w", err)
	}
	l := &listener{kick: make(chan struct{}, 1)}
	out := make(chan store.Notification, listenBuffer)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer closeConn(conn)
		l.read(ctx, conn, channel)
	}()
	go func() {
		defer close(out)
		l.deliver(ctx, out)
		<-readDone // the connection is closed before the channel
	}()
	return out, nil
}

// closeConn closes a connection Listen took, waiting at most a second for
// the server.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// listener holds what a Listen read and has not delivered yet, in the
// order read, a work notice merged into the one waiting, if any.
type listener struct {
	mu      sync.Mutex
	queue   []store.Notification
	work    bool // a work notice waits in queue
	unnamed bool // an unnamed cancel waits in queue
	named   int  // named cancels waiting in queue
	ended   bool // the connection is gone
	kick    chan struct{}
}

// read reads notifications from conn until ctx ends or the connection
// breaks. It never waits for the consumer.
func (l *listener) read(ctx context.Context, conn *pgx.Conn, channel string) {
	defer l.add(store.Notification{}, true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return
		}
		if n == nil || n.Channel != channel {
			continue
		}
		if nt, ok := parsePayload(n.Payload); ok {
			l.add(nt, false)
		}
	}
}

// add records a notification (or the end of the connection) and wakes
// deliver. A work notice while one waits is dropped; so is a named cancel
// beyond maxPendingCancels, which becomes an unnamed one.
func (l *listener) add(nt store.Notification, end bool) {
	l.mu.Lock()
	switch {
	case end:
		l.ended = true
	case nt.Kind == store.NotifyWork:
		if !l.work {
			l.work = true
			l.queue = append(l.queue, nt)
		}
	case nt.OperationID != "" && l.named < maxPendingCancels:
		l.named++
		l.queue = append(l.queue, nt)
	default:
		if !l.unnamed {
			l.unnamed = true
			l.queue = append(l.queue, store.Notification{Kind: store.NotifyCancel})
		}
	}
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// take returns what waits to be delivered, and whether the connection is
// gone.
func (l *listener) take() ([]store.Notification, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.queue
	l.queue, l.work, l.unnamed, l.named = nil, false, false, 0
	return out, l.ended
}

// deliver hands what read records to out until ctx ends, or the connection
// is gone and everything read was delivered.
func (l *listener) deliver(ctx context.Context, out chan<- store.Notification) {
	for {
		batch, ended := l.take()
		for _, nt := range batch {
			select {
			case out <- nt:
			case <-ctx.Done():
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		if ended {
			return
		}
		select {
		case <-l.kick:
		case <-ctx.Done():
			return
		}
	}
}
