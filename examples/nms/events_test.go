package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
)

// sseEvent is one event of a stream.
type sseEvent struct {
	name, data string
}

// openStream opens an event stream as org and returns its events (the
// channel closes when the stream ends) and a function that disconnects.
func (r *rig) openStream(t *testing.T, query, org string) (<-chan sseEvent, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", r.url+"events/"+query, nil)
	require.NoError(t, err)
	if org != "" {
		req.Header.Set(orgHeader, org)
	}
	res, err := r.srv.Client().Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	out := make(chan sseEvent, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					select {
					case out <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return out, stop
}

// next returns the stream's next event, failing the test when the stream
// ends or stays silent for long.
func next(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		require.True(t, ok, "the stream ended")
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event for 30 s")
		return sseEvent{}
	}
}

// TestEventsStream follows a batch on its events stream: a snapshot first,
// then every device's phases and progress up to success, log lines, and
// batch counts that end equal to the store's; a client that leaves ends its
// stream on the server.
func TestEventsStream(t *testing.T) {
	t.Parallel()
	r := setup(t, 3, []string{"acme"})
	var created createdBatch
	must(t, http.StatusCreated, r.do(t, "POST", "build/"+r.app.seed.NewBuild.ID+"/upgrade/", "acme",
		map[string]any{"hold": true})).decode(t, &created)

	events, disconnect := r.openStream(t, "?batch="+created.Batch, "acme")
	first := next(t, events)
	require.Equal(t, "snapshot", first.name)
	var snap struct {
		Resync     bool              `json:"resync"`
		Batch      batchView         `json:"batch"`
		Operations []operationView   `json:"operations"`
		Devices    map[string]string `json:"devices"`
	}
	require.NoError(t, json.Unmarshal([]byte(first.data), &snap))
	assert.False(t, snap.Resync)
	assert.Equal(t, created.Batch, snap.Batch.ID)
	require.Len(t, snap.Operations, 3)
	for _, op := range snap.Operations {
		assert.Equal(t, status.Pending, op.Status)
		assert.NotEmpty(t, snap.Devices[op.Device], "the snapshot names the devices")
	}
	assert.Equal(t, int64(1), r.app.server.streams.Load())

	must(t, http.StatusOK, r.do(t, "POST", "batch-upgrade-operation/"+created.Batch+"/start/", "acme", nil))

	progress := map[string]int{}
	state := map[string]status.State{}
	phases := map[string]map[status.Phase]bool{}
	logs := 0
	var last batchEvent
	for last.Status != status.BatchSuccess {
		ev := next(t, events)
		switch ev.name {
		case "operation":
			var o operationEvent
			require.NoError(t, json.Unmarshal([]byte(ev.data), &o))
			require.NotNil(t, o.Batch)
			assert.Equal(t, created.Batch, *o.Batch, "only the batch's events")
			progress[o.Operation] = max(progress[o.Operation], o.Progress)
			state[o.Operation] = o.Status
			if phases[o.Operation] == nil {
				phases[o.Operation] = map[status.Phase]bool{}
			}
			phases[o.Operation][o.Phase] = true
		case "log":
			logs++
		case "batch":
			require.NoError(t, json.Unmarshal([]byte(ev.data), &last))
			assert.Equal(t, created.Batch, last.Batch)
		case "snapshot":
			t.Fatalf("a resync snapshot: this stream should not have lost events")
		}
	}
	require.Len(t, state, 3)
	for id, st := range state {
		assert.Equal(t, status.Success, st, "operation %s", id)
		assert.Equal(t, 100, progress[id], "operation %s", id)
		for _, p := range []status.Phase{status.PhaseUpload, status.PhaseFlashing, status.PhaseVerifying} {
			assert.True(t, phases[id][p], "operation %s went through %s on the stream", id, p)
		}
	}
	assert.Positive(t, logs, "log lines are streamed")
	bs, err := r.app.eng.Batch(context.Background(), created.Batch)
	require.NoError(t, err)
	assert.Equal(t, countsJSON(bs.Counts), last.Counts, "the last batch event has the store's counts")
	assert.Equal(t, 3, last.Done)

	disconnect()
	eventually(t, "the stream to end on the server", func() bool { return r.app.server.streams.Load() == 0 })
}

// TestEventsScopedToOrganization follows a whole organization: the stream
// of globex carries nothing of acme's batch, and all of its own.
func TestEventsScopedToOrganization(t *testing.T) {
	t.Parallel()
	r := setup(t, 2, []string{"acme", "globex"})
	events, _ := r.openStream(t, "?organization=globex", "")
	require.Equal(t, int64(1), r.app.server.streams.Load())

	var acme, globex createdBatch
	must(t, http.StatusCreated, r.do(t, "POST", "build/"+r.app.seed.NewBuild.ID+"/upgrade/", "acme", nil)).decode(t, &acme)
	require.Equal(t, status.BatchSuccess, r.waitBatch(t, acme.Batch).State)
	must(t, http.StatusCreated, r.do(t, "POST", "build/"+r.app.seed.NewBuild.ID+"/upgrade/", "globex", nil)).decode(t, &globex)

	var acmeDevice string
	for _, id := range r.app.fleet.ids() {
		d, err := r.app.st.Device(context.Background(), id)
		require.NoError(t, err)
		if d.Organization == "acme" {
			acmeDevice = id
		}
	}
	require.NotEmpty(t, acmeDevice)
	for {
		ev := next(t, events)
		assert.NotContains(t, ev.data, acme.Batch, "no event of acme's batch")
		assert.NotContains(t, ev.data, acmeDevice, "no event of acme's device")
		if ev.name == "batch" {
			var b batchEvent
			require.NoError(t, json.Unmarshal([]byte(ev.data), &b))
			if b.Batch == globex.Batch && b.Status == status.BatchSuccess {
				break
			}
		}
	}
}

// TestSlowEventClient connects a client that never reads its stream, over
// sockets with tiny buffers: the engine is never held up (the batch ends,
// the stream's events are dropped instead), and the server ends the stream
// once a write stays blocked past the write timeout, although the client
// never closed its connection.
func TestSlowEventClient(t *testing.T) {
	t.Parallel()
	opts := testOptions(3, []string{"acme"}, func(o *options) {
		o.ImageSize = testMaxImage // more upload progress events
		o.Server.StreamWriteTimeout = 500 * time.Millisecond
		o.Server.StreamBuffer = 8
	})
	r := newRig(t, opts, func(l net.Listener) net.Listener { return smallBufferListener{l} })

	// The receive buffer is set before connecting: the window the client
	// advertises is then small from the start, and the server's writes
	// block after a few KiB however fast the devices are.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
		return cmp.Or(err, serr)
	}}
	conn, err := d.Dial("tcp", r.srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = fmt.Fprintf(conn, "GET %sevents/ HTTP/1.1\r\nHost: nms\r\n\r\n", apiPrefix)
	require.NoError(t, err)
	status1, err := bufio.NewReaderSize(conn, 16).ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, status1, "200")
	eventually(t, "the stream to start", func() bool { return r.app.server.streams.Load() == 1 })
	// From here on the client reads nothing.

	var created createdBatch
	must(t, http.StatusCreated, r.do(t, "POST", "build/"+r.app.seed.NewBuild.ID+"/upgrade/", "", nil)).decode(t, &created)
	st := r.waitBatch(t, created.Batch)
	assert.Equal(t, status.BatchSuccess, st.State, "the stuck client did not hold the upgrades up")
	eventually(t, "the server to end the stuck stream", func() bool { return r.app.server.streams.Load() == 0 })
	assert.Positive(t, r.app.eng.DroppedEvents(), "the stuck stream's events were dropped, not waited for")
}

// smallBufferListener gives accepted connections a small send buffer, so
// that a client that does not read blocks the server's writes soon.
type smallBufferListener struct{ net.Listener }

func (l smallBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(1024)
	}
	return c, err
}
