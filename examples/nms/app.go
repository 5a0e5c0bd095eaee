package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// options configure the application. The zero value is a memory store with
// no simulated device.
type options struct {
	// Store is "memory" ("" too) or a PostgreSQL URL.
	Store string
	// Schema is the PostgreSQL schema. Defaults to postgres.DefaultSchema.
	Schema string
	// Simulate is how many simulated devices to start and register.
	Simulate int
	// Orgs are the organizations the simulated devices are spread over,
	// round robin. Defaults to "default".
	Orgs []string
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// ImageSize is the size of the simulated images. Defaults to 4 MiB.
	ImageSize int64
	// RebootDelay is how long a simulated device takes to reboot. Defaults
	// to 2 s.
	RebootDelay time.Duration
	// Engine, when set, adjusts the engine's configuration (tests make it
	// poll faster).
	Engine func(*upgrader.Config)
	// Server tunes the HTTP side.
	Server serverConfig
}

// app is the running application: store, engine, simulated fleet and the
// HTTP handler.
type app struct {
	eng    *upgrader.Engine
	st     store.Store
	pool   *pgxpool.Pool
	fleet  *fleet
	server *server
	seed   seeded
	log    *slog.Logger
}

// newApp builds the store, the OpenWrt upgrader, the engine and the
// simulated fleet, starts the engine and returns the application. On error
// everything started is stopped again.
func newApp(ctx context.Context, opts options) (_ *app, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.Orgs) == 0 {
		opts.Orgs = []string{"default"}
	}
	if opts.ImageSize <= 0 {
		opts.ImageSize = 4 << 20
	}
	if opts.RebootDelay <= 0 {
		opts.RebootDelay = 2 * time.Second
	}
	a := &app{log: opts.Logger, fleet: newFleet()}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			a.Close(cctx)
		}
	}()

	cfg := &upgrader.Config{Logger: opts.Logger}
	switch opts.Store {
	case "", "memory":
		a.st = memory.New()
	default:
		a.pool, err = pgxpool.New(ctx, opts.Store)
		if err != nil {
			return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
		}
		if opts.Schema == "" {
			opts.Schema = postgres.DefaultSchema
		}
		pg, err := postgres.New(a.pool, postgres.WithSchema(opts.Schema))
		if err != nil {
			return nil, err
		}
		if err := pg.Migrate(ctx); err != nil {
			return nil, fmt.Errorf("migrating the PostgreSQL schema: %w", err)
		}
		files, err := postgres.NewFiles(a.pool, postgres.WithSchema(opts.Schema))
		if err != nil {
			return nil, err
		}
		a.st, cfg.Files = pg, files
	}

	// The NMS hands out each device's address, credentials and host key on
	// every attempt. Here only the simulated devices have any; a real NMS
	// reads its inventory and its vault.
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc:     a.fleet.credentials,
		ReconnectDelay:      opts.RebootDelay / 2,
		ReconnectRetryDelay: max(opts.RebootDelay/10, 50*time.Millisecond),
		Logger:              opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		return nil, err
	}
	if opts.Engine != nil {
		opts.Engine(cfg)
	}
	a.eng, err = upgrader.NewEngine(a.st, reg, cfg)
	if err != nil {
		return nil, err
	}
	if err := a.eng.Start(ctx); err != nil {
		return nil, err
	}
	if opts.Simulate > 0 {
		if a.seed, err = seedCatalog(ctx, a.eng, opts.ImageSize); err != nil {
			return nil, fmt.Errorf("creating the simulated catalog: %w", err)
		}
		if err := a.fleet.start(ctx, a.eng, opts.Simulate, opts.Orgs, opts.RebootDelay); err != nil {
			return nil, fmt.Errorf("starting the simulated devices: %w", err)
		}
	}
	a.server = newServer(a.eng, opts.Logger, opts.Server)
	return a, nil
}

// Handler returns the HTTP handler: the API, the events and the page.
func (a *app) Handler() http.Handler { return a.server.Handler() }

// Close ends the event streams, stops the engine (within ctx), closes the
// simulated devices and the database pool.
func (a *app) Close(ctx context.Context) {
	if a.server != nil {
		a.server.Shutdown()
	}
	if a.eng != nil {
		if err := a.eng.Stop(ctx); err != nil && !errors.Is(err, upgrader.ErrStopped) {
			a.log.Warn("stopping the engine", slog.Any("error", err))
		}
	}
	a.fleet.Close()
	if a.pool != nil {
		a.pool.Close()
	}
}
