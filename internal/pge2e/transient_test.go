package pge2e_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// errConnClosed is what the PostgreSQL store returns when its connection
// dropped under a call (as seen while the database restarts).
var errConnClosed = errors.New("store/postgres: conn closed")

// blinkStore is the PostgreSQL store with one read failing as during a
// restart: once armed (when an attempt starts: the update that counts it),
// the next Operation read fails with errConnClosed, once.
type blinkStore struct {
	store.Store
	armed, fired atomic.Bool
}

func (s *blinkStore) UpdateOperation(ctx context.Context, id string, u store.OperationUpdate) (store.Operation, error) {
	op, err := s.Store.UpdateOperation(ctx, id, u)
	if err == nil && u.Attempt != nil && *u.Attempt == 1 {
		s.armed.Store(true)
	}
	return op, err
}

func (s *blinkStore) Operation(ctx context.Context, id string) (store.Operation, error) {
	if s.armed.CompareAndSwap(true, false) {
		s.fired.Store(true)
		return store.Operation{}, errConnClosed
	}
	return s.Store.Operation(ctx, id)
}

// TestTransientStoreErrorAtCancelCheckpoint is the defect that
// TestPostgresRestart meets, made deterministic in one process: the store
// fails one read (a dropped connection, as during a database restart) at
// the first cancel checkpoint of an attempt, before anything reached the
// device. The engine retries transient store failures everywhere else
// (its writes back off until they land; a failed phase record makes the
// attempt recoverable), so the operation should be tried again and
// succeed. It fails today: reporter.Cancelled (upgrader/report.go) returns
// the store's error as it is, the openwrt upgrader's checkpoint passes it
// on, upgrader.Classify makes an unclassified error KindFailed
// (status.ReasonUpgraderError), and the operation ends failed for good.
func TestTransientStoreErrorAtCancelCheckpoint(t *testing.T) {
	r := newRig(t, pgtest.URL(t), rigOpts{})
	ds := r.devices(1, func(int) openwrttest.Config { return openwrttest.Config{RebootDelay: 300 * time.Millisecond} }, nil)
	dev := r.dev(ds[0].ID)
	var bs *blinkStore
	eng, pool, err := childEngine(r.engineSpec("engine-x"), slog.New(slog.DiscardHandler), func(s store.Store) store.Store {
		bs = &blinkStore{Store: s}
		return bs
	})
	require.NoError(t, err)
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	op, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: ds[0].ID, ImageID: r.image.ID})
	require.NoError(t, err)
	logs := r.logText(op.ID)
	require.True(t, bs.fired.Load(), "the store's read failed once during the attempt")
	assert.Equal(t, status.Success, op.State,
		"one transient store error before anything reached the device ended the operation %s (%s), never retried:\n%s",
		op.State, op.Reason, logs)
	if op.State == status.Success {
		assert.Len(t, dev.Flashes(), 1)
	}
}
