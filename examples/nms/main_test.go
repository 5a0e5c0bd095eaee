package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRun runs the command as `go run ./examples/nms --addr 127.0.0.1:0
// --simulate 2` does: it serves the page and the API on simulated devices,
// and returns nil once its context ends (a signal in main).
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"--addr", "127.0.0.1:0", "--simulate", "2", "--orgs", "acme, globex"}, pw,
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		pw.Close()
		done <- err
	}()

	// The command prints where its page is.
	var base string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "status page: "); ok {
			base = u
			break
		}
	}
	require.NotEmpty(t, base, "run printed no address")
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	res, err := http.Get(base)
	require.NoError(t, err)
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, string(page), `id="operation-rows"`)

	req, err := http.NewRequest("GET", strings.TrimSuffix(base, "/")+apiPrefix+"device/", nil)
	require.NoError(t, err)
	req.Header.Set(orgHeader, "globex")
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, string(body), `"count":1,`, "one simulated device per organization: %s", body)

	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestFlags refuses bad command lines with a usage error.
func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--simulate", "-1"}, {"--simulate", "x"}, {"--store", "mysql://db"}, {"--nope"}, {"extra"},
	} {
		_, _, err := parseFlags(args, io.Discard)
		assert.True(t, errors.Is(err, errUsage), "%v: %v", args, err)
	}
	opts, addr, err := parseFlags([]string{"--addr", ":9000", "--store", "postgres://u@h/db", "--simulate", "3", "--orgs", "a,,b"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, ":9000", addr)
	assert.Equal(t, options{Store: "postgres://u@h/db", Schema: "fwupgrader", Simulate: 3, Orgs: []string{"a", "b"}}, opts)
}
