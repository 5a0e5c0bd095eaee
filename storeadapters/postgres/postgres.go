package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fwupgrader/fwupgrader/store"
)

// Compile-time assertions: Store implements every role.
var (
	_ store.Store           = (*Store)(nil)
	_ store.Categories      = (*Store)(nil)
	_ store.Builds          = (*Store)(nil)
	_ store.Images          = (*Store)(nil)
	_ store.Devices         = (*Store)(nil)
	_ store.DeviceFirmwares = (*Store)(nil)
	_ store.Batches         = (*Store)(nil)
	_ store.Operations      = (*Store)(nil)
	_ store.Claims          = (*Store)(nil)
)

// DefaultSchema is the schema a Store uses unless WithSchema names another.
const DefaultSchema = "fwupgrader"

// SchemaPlaceholder is what the migrations (see Migrations) write where the
// store's schema goes: replace it with the schema's quoted identifier, e.g.
// pgx.Identifier{"fwupgrader"}.Sanitize().
const SchemaPlaceholder = "{{schema}}"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations returns the store's migrations, files named NNNN_name.sql to be
// applied in name order, for hosts that run migrations with their own tool
// instead of Store.Migrate. Each file writes SchemaPlaceholder where the
// schema's quoted name goes; the tool substitutes it and creates the schema
// first. Store.Migrate records what it applied in the schema's
// schema_migrations table (version, name, applied_at); a host that applies
// the files itself keeps its own record and does not call Migrate.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // cannot happen: the directory is embedded
	}
	return sub
}

// Store is the PostgreSQL store. Create it with New; it is safe for
// concurrent use, by any number of goroutines and processes sharing the
// database.
type Store struct {
	pool   *pgxpool.Pool
	schema string // unquoted
	quoted string // the schema as a quoted identifier
	sqlr   *strings.Replacer
}

// Option configures a Store.
type Option func(*Store) error

var plainIdentifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// WithSchema sets the schema the store keeps its tables in (DefaultSchema
// otherwise), so that several installations share one database. The name
// must be a plain identifier: letters, digits and underscores, not starting
// with a digit, at most 63 bytes. It is used as given, case included.
func WithSchema(name string) Option {
	return func(s *Store) error {
		if len(name) > 63 || !plainIdentifier.MatchString(name) || strings.HasPrefix(strings.ToLower(name), "pg_") {
			return fmt.Errorf("store/postgres: schema %q is not a plain identifier (letters, digits, _; at most 63; not pg_...)", name)
		}
		s.schema = name
		return nil
	}
}

// New returns a store on pool, which the host owns (New does not close it).
// Call Migrate, or apply Migrations, before using it.
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("store/postgres: nil pool")
	}
	s := &Store{pool: pool, schema: DefaultSchema}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	s.quoted = pgx.Identifier{s.schema}.Sanitize()
	s.sqlr = strings.NewReplacer(SchemaPlaceholder, s.quoted)
	return s, nil
}

// Schema returns the store's schema name.
func (s *Store) Schema() string { return s.schema }

// sql returns q with the schema substituted.
func (s *Store) sql(q string) string { return s.sqlr.Replace(q) }

// migrationLockClass is the first key of the advisory lock Migrate takes;
// the second is the hash of the schema name.
const migrationLockClass = 0x66777570 // "fwup"

// Migrate creates the schema if needed and applies the migrations it has
// not applied yet, in one transaction, recording them in the schema's
// schema_migrations table. Several processes may call it at once: a
// transaction-level advisory lock on the schema's name serializes them, and
// the later ones find nothing to do.
func (s *Store) Migrate(ctx context.Context) error {
	files, err := fs.Glob(Migrations(), "*.sql")
	if err != nil {
		return fmt.Errorf("store/postgres: migrations: %w", err)
	}
	slices.Sort(files)
	type migration struct {
		version int64
		name    string
		sql     string
	}
	var ms []migration
	for _, f := range files {
		num, _, ok := strings.Cut(f, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("store/postgres: migration %s: the name must start with a number and _", f)
		}
		b, err := fs.ReadFile(Migrations(), f)
		if err != nil {
			return fmt.Errorf("store/postgres: migration %s: %w", f, err)
		}
		ms = append(ms, migration{v, f, s.sql(string(b))})
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, int32(migrationLockClass), s.schema); err != nil {
			return fmt.Errorf("store/postgres: migrate: lock: %w", err)
		}
		if _, err := tx.Exec(ctx, s.sql(`CREATE SCHEMA IF NOT EXISTS {{schema}}`)); err != nil {
			return fmt.Errorf("store/postgres: migrate: %w", err)
		}
		if _, err := tx.Exec(ctx, s.sql(`CREATE TABLE IF NOT EXISTS {{schema}}.schema_migrations (
			version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)); err != nil {
			return fmt.Errorf("store/postgres: migrate: %w", err)
		}
		rows, err := tx.Query(ctx, s.sql(`SELECT version FROM {{schema}}.schema_migrations`))
		if err != nil {
			return fmt.Errorf("store/postgres: migrate: %w", err)
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return fmt.Errorf("store/postgres: migrate: %w", err)
		}
		for _, m := range ms {
			if slices.Contains(applied, m.version) {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("store/postgres: migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, s.sql(`INSERT INTO {{schema}}.schema_migrations (version, name) VALUES ($1, $2)`),
				m.version, m.name); err != nil {
				return fmt.Errorf("store/postgres: migration %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// ---- transactions, clock and errors ----

// maxAttempts bounds how often a transaction that lost a deadlock or a
// serialization conflict (both can happen between overlapping batch
// creations) is run again.
const maxAttempts = 5

// errRetry makes tx run its function again from the start.
var errRetry = errors.New("store/postgres: retry")

// txOptions: every transaction is READ COMMITTED, whatever the database's
// default, as the store's locking relies on: a statement that follows a
// row lock reads what was committed before the lock was granted.
var txOptions = pgx.TxOptions{IsoLevel: pgx.ReadCommitted}

// tx runs fn in a transaction, again from the start when the database
// reports a deadlock or a serialization failure (or fn asks with errRetry),
// and translates the error. fn must set its results only from what it did in
// its last run.
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/postgres: %w", err)
	}
	var err error
	for attempt := 1; ; attempt++ {
		err = pgx.BeginTxFunc(ctx, s.pool, txOptions, fn)
		if attempt < maxAttempts && (errors.Is(err, errRetry) || retryable(err)) && ctx.Err() == nil {
			continue
		}
		return translate(err)
	}
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// translate maps driver errors to the store's sentinels; it is the only
// place that reads PostgreSQL error codes. Errors that are already the
// store's (from the rule functions or the adapter's own checks) pass
// through.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %v", store.ErrNotFound, err)
		}
		if isStoreError(err) {
			return err
		}
		return fmt.Errorf("store/postgres: %w", err)
	}
	switch pe.Code {
	case "23505": // unique_violation
		if pe.ConstraintName == "operations_device_active" {
			return fmt.Errorf("%w: %s", store.ErrDeviceBusy, pgDetail(pe))
		}
		return fmt.Errorf("%w: %s", store.ErrConflict, pgDetail(pe))
	case "23503": // foreign_key_violation: a record referred to is gone
		return fmt.Errorf("%w: %s", store.ErrNotFound, pgDetail(pe))
	case "23514", "23502", "22001", "22P02", "22021", "22007", "22008": // check, not null, too long, bad text or time
		return &store.ValidationError{Record: pe.TableName, Field: pe.ColumnName, Problem: pgDetail(pe)}
	}
	return fmt.Errorf("store/postgres: %w", err)
}

func pgDetail(pe *pgconn.PgError) string {
	if pe.Detail != "" {
		return pe.Message + ": " + pe.Detail
	}
	if pe.ConstraintName != "" {
		return pe.Message + " (" + pe.ConstraintName + ")"
	}
	return pe.Message
}

func isStoreError(err error) bool {
	for _, s := range []error{store.ErrNotFound, store.ErrConflict, store.ErrInvalid, store.ErrInvalidTransition,
		store.ErrDeviceBusy, store.ErrOrganizationMismatch, store.ErrLeased, store.ErrStaleToken} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func notFound(kind, id string) error {
	return fmt.Errorf("%w: %s %q", store.ErrNotFound, kind, id)
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/postgres: %w", err)
	}
	return nil
}

const nowSQL = `SELECT clock_timestamp()`

// now returns the database's clock. Every time the store sets or compares
// comes from it, never from the process's clock.
func now(ctx context.Context, q pgx.Tx) (time.Time, error) {
	var t time.Time
	if err := q.QueryRow(ctx, nowSQL).Scan(&t); err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// ---- times ----

// ts is a time as the store writes it: NULL for the zero time, otherwise
// UTC truncated to the microsecond, PostgreSQL's precision.
func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return norm(t)
}

// norm truncates t to the microsecond, in UTC; the zero time stays zero.
func norm(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// tv reads a nullable timestamptz.
func tv(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// normOp truncates op's times as the store writes them, so that what a call
// returns is what a read returns.
func normOp(op *store.Operation) {
	for _, t := range []*time.Time{&op.NextAttemptAt, &op.Deadline, &op.LeaseExpiresAt, &op.CreatedAt,
		&op.UpdatedAt, &op.StartedAt, &op.FinishedAt} {
		*t = norm(*t)
	}
}

// jsonText returns options as the store writes them: NULL when empty.
func jsonText(o []byte) any {
	if len(o) == 0 {
		return nil
	}
	return string(o)
}

func jsonBytes(s *string) []byte {
	if s == nil {
		return nil
	}
	return []byte(*s)
}

// where builds the WHERE clause of a listing.
type where struct {
	conds []string
	args  []any
}

// arg adds v and returns its placeholder.
func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return "$" + strconv.Itoa(len(w.args))
}

func (w *where) add(cond string) { w.conds = append(w.conds, cond) }

// page adds the keyset condition on idCol and returns the ORDER BY and LIMIT
// clause of p.
func (w *where) page(idCol string, p store.Page) string {
	if p.After != "" {
		w.add(idCol + " > " + w.arg(p.After))
	}
	tail := " ORDER BY " + idCol
	if p.Limit > 0 {
		tail += " LIMIT " + w.arg(p.Limit)
	}
	return tail
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// org adds the organization filter of a catalog listing.
func (w *where) org(col, org string, includeShared bool) {
	if org == "" {
		return
	}
	if includeShared {
		w.add("(" + col + " = " + w.arg(org) + " OR " + col + " = '')")
		return
	}
	w.add(col + " = " + w.arg(org))
}
