package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, log); err != nil {
		fmt.Fprintln(os.Stderr, "nms:", err)
		if errors.Is(err, errUsage) {
			os.Exit(64)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("bad usage")

// parseFlags reads the command line into options.
func parseFlags(args []string, stderr io.Writer) (options, string, error) {
	fs := flag.NewFlagSet("nms", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "listen address")
	storeURL := fs.String("store", "memory", `"memory" or a PostgreSQL URL (postgres://…)`)
	schema := fs.String("schema", postgres.DefaultSchema, "the PostgreSQL schema (with --store postgres://…)")
	simulate := fs.Int("simulate", 4, "number of simulated OpenWrt devices to start (0: none)")
	orgs := fs.String("orgs", "default", "comma-separated organizations of the simulated devices")
	if err := fs.Parse(args); err != nil {
		return options{}, "", fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return options{}, "", fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *simulate < 0 || *simulate > 1000 {
		return options{}, "", fmt.Errorf("%w: --simulate must be between 0 and 1000", errUsage)
	}
	opts := options{Store: *storeURL, Schema: *schema, Simulate: *simulate}
	for _, o := range strings.Split(*orgs, ",") {
		if o = strings.TrimSpace(o); o != "" {
			opts.Orgs = append(opts.Orgs, o)
		}
	}
	if opts.Store != "memory" && !strings.HasPrefix(opts.Store, "postgres://") && !strings.HasPrefix(opts.Store, "postgresql://") {
		return options{}, "", fmt.Errorf("%w: --store is \"memory\" or a postgres:// URL", errUsage)
	}
	return opts, *addr, nil
}

// run starts the application and serves HTTP on the flags' address until
// ctx ends, then shuts down: the event streams first, then the HTTP server,
// then the engine (operations in flight are left for the next start, or
// for another engine sharing a PostgreSQL store), then the devices.
func run(ctx context.Context, args []string, stderr io.Writer, log *slog.Logger) error {
	opts, addr, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	opts.Logger = log
	a, err := newApp(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a.Close(cctx)
	}()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: event streams last; they bound each write
		// themselves.
	}
	srv.RegisterOnShutdown(a.server.Shutdown)
	log.Info("nms listening", slog.String("addr", ln.Addr().String()), slog.Int("simulated", opts.Simulate),
		slog.String("store", storeKind(opts.Store)))
	fmt.Fprintf(stderr, "status page: http://%s/\n", displayAddr(ln.Addr()))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	<-errc
	return nil
}

// storeKind names the store without the URL's credentials.
func storeKind(s string) string {
	if s == "memory" {
		return s
	}
	return "postgres"
}

// displayAddr turns a wildcard listen address into one a browser opens.
func displayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
