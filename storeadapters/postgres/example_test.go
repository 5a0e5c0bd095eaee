package postgres_test

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// A host on several machines opens its own pool, migrates the schema once
// per start (processes migrating at once are serialized) and gives the
// store, and the image bytes kept in the same database, to its engine.
//
// This example needs a PostgreSQL database, so it is only compiled, not run.
func ExampleStore_Migrate() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL")) // the host's pool: the store never closes it
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	st, err := postgres.New(pool, postgres.WithSchema("fwupgrader"))
	if err != nil {
		log.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil { // or apply postgres.Migrations() with your own tool
		log.Fatal(err)
	}
	files, err := postgres.NewFiles(pool, postgres.WithSchema("fwupgrader"))
	if err != nil {
		log.Fatal(err)
	}

	reg := upgrader.NewRegistry() // register your upgraders, e.g. openwrt.Connection
	eng, err := upgrader.NewEngine(st, reg, &upgrader.Config{Files: files, Owner: "upgrader-eu-1"})
	if err != nil {
		log.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer eng.Stop(ctx)
}

// Hosts that run migrations with their own tool take the files from
// Migrations, apply them in name order, and put the schema's quoted name
// where SchemaPlaceholder stands. They keep their own record of what they
// applied and do not call Migrate.
func ExampleMigrations() {
	migrations := postgres.Migrations()
	names, err := fs.Glob(migrations, "*.sql")
	if err != nil {
		panic(err)
	}
	fmt.Println(names)

	schema := pgx.Identifier{"fleet_eu"}.Sanitize()
	sql, err := fs.ReadFile(migrations, names[0])
	if err != nil {
		panic(err)
	}
	ready := strings.ReplaceAll(string(sql), postgres.SchemaPlaceholder, schema)
	fmt.Println("CREATE SCHEMA IF NOT EXISTS " + schema + ";")
	sc := bufio.NewScanner(strings.NewReader(ready))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "CREATE TABLE") {
			fmt.Println(sc.Text())
			break
		}
	}
	// Output:
	// [0001_init.sql 0002_image_files.sql]
	// CREATE SCHEMA IF NOT EXISTS "fleet_eu";
	// CREATE TABLE "fleet_eu".categories (
}

// Several installations share one database, each in its own schema; the
// schema also names the channel its engines wake each other on. New
// connects to nothing (pgxpool connects lazily), so this example runs without
// a database.
func ExampleWithSchema() {
	pool, err := pgxpool.New(context.Background(), "postgres://fwupgrader@db.example.net/fleet")
	if err != nil {
		panic(err)
	}
	defer pool.Close()

	st, err := postgres.New(pool, postgres.WithSchema("fleet_eu"))
	if err != nil {
		panic(err)
	}
	fmt.Println(st.Schema(), st.NotifyChannel())

	st, _ = postgres.New(pool)
	fmt.Println(st.Schema())

	_, err = postgres.New(pool, postgres.WithSchema("fleet-eu; DROP TABLE x"))
	fmt.Println(err)
	// Output:
	// fleet_eu fwupgrader:fleet_eu
	// fwupgrader
	// store/postgres: schema "fleet-eu; DROP TABLE x" is not a plain identifier (letters, digits, _; at most 63; not pg_...)
}
