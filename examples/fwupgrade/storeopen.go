package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
)

// storeFlags are --store and --schema.
type storeFlags struct {
	url, schema string
}

func (sf *storeFlags) define(f *flagSet, required bool) {
	usage := "PostgreSQL database that keeps the batch, so that other processes and machines can work on it and control it (status, pause, resume, cancel). The password is best kept out of the command line: pgx reads PGPASSWORD and ~/.pgpass."
	if required {
		usage = "PostgreSQL database that keeps the batch (the one given to 'fwupgrade batch --store'). Required. The password is best kept out of the command line: pgx reads PGPASSWORD and ~/.pgpass."
	}
	f.String(&sf.url, "store", "URL", "", "--store postgres://fw@db.example.net:5432/fleet", usage)
	if !required {
		f.showDefault("store", "the memory store, which lives only in this process")
	}
	f.String(&sf.schema, "schema", "NAME", postgres.DefaultSchema, "--schema fw_lab",
		"PostgreSQL schema of the store's tables, so that several installations can share a database.")
}

// check validates the flags without connecting.
func (sf *storeFlags) check(required bool) error {
	if sf.url == "" {
		if required {
			return usagef("--store is required: a batch of the memory store lives only in the process that runs it")
		}
		return nil
	}
	if !strings.HasPrefix(sf.url, "postgres://") && !strings.HasPrefix(sf.url, "postgresql://") {
		return usagef("--store %q: give a postgres:// URL", redactURL(sf.url))
	}
	if _, err := pgxpool.ParseConfig(sf.url); err != nil {
		return usagef("--store %s: %v", redactURL(sf.url), redactErr(err, sf.url))
	}
	if err := postgres.WithSchema(sf.schema)(new(postgres.Store)); err != nil {
		return usagef("--schema: %v", err)
	}
	return nil
}

// pgStore is an open PostgreSQL store with its image files.
type pgStore struct {
	pool  *pgxpool.Pool
	store *postgres.Store
	files *postgres.Files
}

// open connects to the store; migrate applies the schema's migrations (for
// commands that write: batch, resume that runs). minConns is how many
// connections the pool needs at least.
func (sf *storeFlags) open(ctx context.Context, migrate bool, minConns int) (*pgStore, error) {
	cfg, err := pgxpool.ParseConfig(sf.url)
	if err != nil {
		return nil, usagef("--store: %v", redactErr(err, sf.url))
	}
	if !strings.Contains(sf.url, "pool_max_conns") && cfg.MaxConns < int32(minConns) {
		cfg.MaxConns = int32(minConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("--store %s: %w", redactURL(sf.url), redactErr(err, sf.url))
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("--store %s: cannot connect: %w", redactURL(sf.url), redactErr(err, sf.url))
	}
	st, err := postgres.New(pool, postgres.WithSchema(sf.schema))
	if err != nil {
		pool.Close()
		return nil, usagef("--schema: %v", err)
	}
	files, err := postgres.NewFiles(pool, postgres.WithSchema(sf.schema))
	if err != nil {
		pool.Close()
		return nil, usagef("--schema: %v", err)
	}
	if migrate {
		if err := st.Migrate(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("--store %s: migrating schema %s: %w", redactURL(sf.url), sf.schema, redactErr(err, sf.url))
		}
	}
	return &pgStore{pool: pool, store: st, files: files}, nil
}

func (p *pgStore) close() { p.pool.Close() }

// storeProblem words an error of a store call for a person: a schema that
// has no tables is most likely a wrong --schema.
func (sf *storeFlags) storeProblem(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") {
		return fmt.Errorf("schema %q of %s holds no fwupgrader tables (wrong --schema or --store?)", sf.schema, redactURL(sf.url))
	}
	if errors.Is(err, store.ErrNotFound) {
		return err
	}
	return redactErr(err, sf.url)
}

// redactURL returns u without its password, for messages and hints.
func redactURL(u string) string {
	parsed, err := url.Parse(u)
	if err != nil || parsed.User == nil {
		return u
	}
	if _, has := parsed.User.Password(); has {
		parsed.User = url.UserPassword(parsed.User.Username(), "REDACTED")
	}
	return parsed.String()
}

// redactErr removes the URL's password from err's text, should a driver
// error quote it.
func redactErr(err error, u string) error {
	if err == nil {
		return nil
	}
	parsed, perr := url.Parse(u)
	if perr != nil || parsed.User == nil {
		return err
	}
	pw, has := parsed.User.Password()
	if !has || pw == "" || !strings.Contains(err.Error(), pw) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pw, "REDACTED"))
}
