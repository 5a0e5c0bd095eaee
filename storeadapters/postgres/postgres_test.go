package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/store/storetest"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
)

// TestMain stops the throwaway cluster after the tests, and fails the run
// when a goroutine the tests started (a Listen, a pool's) is still running.
func TestMain(m *testing.M) { pgtest.Main(m) }

func randomSchema() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "fwt_" + hex.EncodeToString(b)
}

func dropSchema(pool *pgxpool.Pool, schema string) error {
	_, err := pool.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	return err
}

// newStore returns a store migrated in a new schema of pool's database,
// dropped when t ends.
func newStore(t testing.TB, pool *pgxpool.Pool) *postgres.Store {
	t.Helper()
	schema := randomSchema()
	s, err := postgres.New(pool, postgres.WithSchema(schema))
	require.NoError(t, err)
	require.NoError(t, s.Migrate(t.Context()))
	t.Cleanup(func() {
		if err := dropSchema(pool, schema); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return s
}

// schemas hands out migrated, empty schemas and takes them back emptied,
// so that the conformance suite (hundreds of subtests, each wanting a
// fresh store) migrates a few dozen schemas rather than one per subtest:
// a migration costs about 50 ms, emptying a schema about 1 ms. Every
// schema is dropped when the suite ends.
type schemas struct {
	pool *pgxpool.Pool
	mu   sync.Mutex
	free []*postgres.Store
	all  []string
}

// emptyAll empties every table of a store's schema, children first.
const emptyAll = `DELETE FROM %[1]s.operation_logs; DELETE FROM %[1]s.batch_starts; DELETE FROM %[1]s.device_firmware;
DELETE FROM %[1]s.operations; DELETE FROM %[1]s.batch_waves; DELETE FROM %[1]s.batches; DELETE FROM %[1]s.images;
DELETE FROM %[1]s.builds; DELETE FROM %[1]s.categories; DELETE FROM %[1]s.devices`

func (p *schemas) get(t *testing.T) store.Store {
	t.Helper()
	p.mu.Lock()
	var s *postgres.Store
	if n := len(p.free); n > 0 {
		s, p.free = p.free[n-1], p.free[:n-1]
	}
	p.mu.Unlock()
	if s == nil {
		schema := randomSchema()
		var err error
		s, err = postgres.New(p.pool, postgres.WithSchema(schema))
		require.NoError(t, err)
		p.mu.Lock()
		p.all = append(p.all, schema)
		p.mu.Unlock()
		require.NoError(t, s.Migrate(t.Context()))
	}
	t.Cleanup(func() {
		q := fmt.Sprintf(emptyAll, pgx.Identifier{s.Schema()}.Sanitize())
		if _, err := p.pool.Exec(context.Background(), q); err != nil {
			t.Errorf("empty schema %s: %v", s.Schema(), err)
			return // dropped with the others at the end, never reused
		}
		p.mu.Lock()
		p.free = append(p.free, s)
		p.mu.Unlock()
	})
	return s
}

func (p *schemas) dropAll(t *testing.T) {
	for _, schema := range p.all {
		if err := dropSchema(p.pool, schema); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	p := &schemas{pool: pool}
	t.Cleanup(func() { p.dropAll(t) })
	storetest.Run(t, p.get, nil)
}
