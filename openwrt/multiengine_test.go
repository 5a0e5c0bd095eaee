package openwrt_test

// Many engines over one store, standing in for processes: engines that die
// mid-upload and mid-reboot, a cancel from one engine racing the flash in
// another, Wait in one engine for an operation another ends, and an engine
// cut off from its store while it can still reach the device.
//
// A process is an engine over its own view of the shared memory store (a
// procStore: it can die, be cut off, or hold a call) and its own openwrt
// upgrader, whose SSH connections go through a small TCP relay per
// (engine, device) (network): it records when each engine was connected to
// each device and when it last sent to it, slows one engine's link down,
// and cuts a dead engine's connections, as the kernel does when a process
// dies.
//
// Two tests here fail on purpose, each proving a defect:
// TestMultiEngineCancelFromOtherEngineRestartsServices (a cancel seen at a
// checkpoint: the engine's renewal then cancels the attempt's context
// under its cleanup, which leaves services stopped and the image in RAM)
// and TestMultiEnginePartitionedHolderStopsBeforeTakeover (an engine cut
// off from the store notices its lost lease only after another engine
// took the operation over, and goes on using the device).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Log lines the engine and the upgrader write when an operation found at or
// after flashing is taken over: it is verified, never flashed again.
const (
	resumeVerifyLine = "resuming an operation interrupted after flashing started: verifying"
	verifierLine     = "Verifying the outcome of an earlier flash"
)

var (
	errProcessDied      = errors.New("multiengine test: the engine's process died")
	errStoreUnreachable = errors.New("multiengine test: the store is unreachable")
	errLinkDown         = errors.New("multiengine test: the engine's network is down")
)

// ---------------------------------------------------------------------------
// procStore: the shared store as one process sees it.

// partitionDelay is how long a call of a partitioned procStore hangs (or
// until its context ends) before it fails: a store that stopped answering.
const partitionDelay = 250 * time.Millisecond

// procStore is the shared store seen by one engine. After kill every call
// fails (a dead process's writes never arrive); kill waits for the calls in
// flight, so nothing of the dead engine lands afterwards. Partitioned, every
// call hangs partitionDelay and fails. Fenced writes and claims are recorded
// in the ledger (when set); the gate (when set) holds moves into flashing
// and progress reports; onLog and onRenew (when set) see every log line
// appended and every lease renewal.
type procStore struct {
	store.Store
	name    string
	led     *ledger
	gate    *gate
	onLog   func(lines []string)
	onRenew func(rs []store.Renewal)

	mu          sync.RWMutex
	dead        bool
	partitioned atomic.Bool
	renewFails  atomic.Bool // RenewLeases fails at once (the rest works)
}

func (s *procStore) kill() {
	s.mu.Lock()
	s.dead = true
	s.mu.Unlock()
}

func (s *procStore) isDead() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.dead
}

func (s *procStore) do(ctx context.Context, f func() error) error {
	if s.partitioned.Load() {
		t := time.NewTimer(partitionDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return errStoreUnreachable
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.dead {
		return errProcessDied
	}
	return f()
}

func call[T any](ctx context.Context, s *procStore, f func() (T, error)) (T, error) {
	var out T
	err := s.do(ctx, func() (err error) {
		out, err = f()
		return err
	})
	return out, err
}

var _ store.Store = (*procStore)(nil)

func (s *procStore) CreateCategory(ctx context.Context, c store.Category) (store.Category, error) {
	return call(ctx, s, func() (store.Category, error) { return s.Store.CreateCategory(ctx, c) })
}

func (s *procStore) Category(ctx context.Context, id string) (store.Category, error) {
	return call(ctx, s, func() (store.Category, error) { return s.Store.Category(ctx, id) })
}

func (s *procStore) ListCategories(ctx context.Context, f store.CategoryFilter) ([]store.Category, error) {
	return call(ctx, s, func() ([]store.Category, error) { return s.Store.ListCategories(ctx, f) })
}

func (s *procStore) CreateBuild(ctx context.Context, b store.Build) (store.Build, error) {
	return call(ctx, s, func() (store.Build, error) { return s.Store.CreateBuild(ctx, b) })
}

func (s *procStore) Build(ctx context.Context, id string) (store.Build, error) {
	return call(ctx, s, func() (store.Build, error) { return s.Store.Build(ctx, id) })
}

func (s *procStore) ListBuilds(ctx context.Context, f store.BuildFilter) ([]store.Build, error) {
	return call(ctx, s, func() ([]store.Build, error) { return s.Store.ListBuilds(ctx, f) })
}

func (s *procStore) CreateImage(ctx context.Context, im store.Image) (store.Image, error) {
	return call(ctx, s, func() (store.Image, error) { return s.Store.CreateImage(ctx, im) })
}

func (s *procStore) Image(ctx context.Context, id string) (store.Image, error) {
	return call(ctx, s, func() (store.Image, error) { return s.Store.Image(ctx, id) })
}

func (s *procStore) ListImages(ctx context.Context, f store.ImageFilter) ([]store.Image, error) {
	return call(ctx, s, func() ([]store.Image, error) { return s.Store.ListImages(ctx, f) })
}

func (s *procStore) PutDevice(ctx context.Context, d store.Device) (store.Device, error) {
	return call(ctx, s, func() (store.Device, error) { return s.Store.PutDevice(ctx, d) })
}

func (s *procStore) Device(ctx context.Context, id string) (store.Device, error) {
	return call(ctx, s, func() (store.Device, error) { return s.Store.Device(ctx, id) })
}

func (s *procStore) ListDevices(ctx context.Context, f store.DeviceFilter) ([]store.Device, error) {
	return call(ctx, s, func() ([]store.Device, error) { return s.Store.ListDevices(ctx, f) })
}

func (s *procStore) PutDeviceFirmware(ctx context.Context, df store.DeviceFirmware) (store.DeviceFirmware, error) {
	return call(ctx, s, func() (store.DeviceFirmware, error) { return s.Store.PutDeviceFirmware(ctx, df) })
}

func (s *procStore) DeviceFirmware(ctx context.Context, id string) (store.DeviceFirmware, error) {
	return call(ctx, s, func() (store.DeviceFirmware, error) { return s.Store.DeviceFirmware(ctx, id) })
}

func (s *procStore) CreateBatch(ctx context.Context, b store.Batch, ops []store.Operation) (store.Batch, []store.Operation, error) {
	var out []store.Operation
	nb, err := call(ctx, s, func() (nb store.Batch, err error) {
		nb, out, err = s.Store.CreateBatch(ctx, b, ops)
		return nb, err
	})
	return nb, out, err
}

func (s *procStore) Batch(ctx context.Context, id string) (store.Batch, error) {
	return call(ctx, s, func() (store.Batch, error) { return s.Store.Batch(ctx, id) })
}

func (s *procStore) ListBatches(ctx context.Context, f store.BatchFilter) ([]store.Batch, error) {
	return call(ctx, s, func() ([]store.Batch, error) { return s.Store.ListBatches(ctx, f) })
}

func (s *procStore) SetBatchState(ctx context.Context, id string, from, to status.BatchState) (store.Batch, error) {
	return call(ctx, s, func() (store.Batch, error) { return s.Store.SetBatchState(ctx, id, from, to) })
}

func (s *procStore) CreateOperation(ctx context.Context, op store.Operation) (store.Operation, error) {
	return call(ctx, s, func() (store.Operation, error) { return s.Store.CreateOperation(ctx, op) })
}

func (s *procStore) Operation(ctx context.Context, id string) (store.Operation, error) {
	return call(ctx, s, func() (store.Operation, error) { return s.Store.Operation(ctx, id) })
}

func (s *procStore) ListOperations(ctx context.Context, f store.OperationFilter) ([]store.Operation, error) {
	return call(ctx, s, func() ([]store.Operation, error) { return s.Store.ListOperations(ctx, f) })
}

func (s *procStore) UpdateOperation(ctx context.Context, id string, u store.OperationUpdate) (store.Operation, error) {
	if s.gate != nil && u.Phase != nil && *u.Phase == status.PhaseFlashing {
		s.gate.hold(ctx, "flashing:"+id)
	}
	return call(ctx, s, func() (op store.Operation, err error) {
		err = s.led.fenced(id, s.name, u.Token, func() error {
			op, err = s.Store.UpdateOperation(ctx, id, u)
			return err
		})
		return op, err
	})
}

func (s *procStore) SetProgress(ctx context.Context, id string, token int64, percent int) error {
	if s.gate != nil {
		s.gate.hold(ctx, "progress:"+id)
	}
	return s.do(ctx, func() error {
		return s.led.fenced(id, s.name, token, func() error { return s.Store.SetProgress(ctx, id, token, percent) })
	})
}

func (s *procStore) AppendLog(ctx context.Context, id string, token int64, lines ...string) error {
	if s.onLog != nil {
		s.onLog(lines)
	}
	return s.do(ctx, func() error {
		return s.led.fenced(id, s.name, token, func() error { return s.Store.AppendLog(ctx, id, token, lines...) })
	})
}

func (s *procStore) Logs(ctx context.Context, id string, afterSeq int64, limit int) ([]store.LogEntry, error) {
	return call(ctx, s, func() ([]store.LogEntry, error) { return s.Store.Logs(ctx, id, afterSeq, limit) })
}

func (s *procStore) ClaimOperations(ctx context.Context, owner string, limit int, lease time.Duration) ([]store.Operation, error) {
	return call(ctx, s, func() ([]store.Operation, error) {
		return s.led.claimed(s.name, func() ([]store.Operation, error) {
			return s.Store.ClaimOperations(ctx, owner, limit, lease)
		})
	})
}

func (s *procStore) ClaimOperation(ctx context.Context, id, owner string, lease time.Duration) (store.Operation, error) {
	return call(ctx, s, func() (store.Operation, error) {
		ops, err := s.led.claimed(s.name, func() ([]store.Operation, error) {
			op, err := s.Store.ClaimOperation(ctx, id, owner, lease)
			if err != nil {
				return nil, err
			}
			return []store.Operation{op}, nil
		})
		if err != nil {
			return store.Operation{}, err
		}
		return ops[0], nil
	})
}

func (s *procStore) RenewLeases(ctx context.Context, owner string, lease time.Duration, held []store.Lease) ([]store.Renewal, error) {
	if s.renewFails.Load() {
		return nil, errStoreUnreachable
	}
	rs, err := call(ctx, s, func() ([]store.Renewal, error) { return s.Store.RenewLeases(ctx, owner, lease, held) })
	if err == nil && s.onRenew != nil {
		s.onRenew(rs)
	}
	return rs, err
}

func (s *procStore) ReleaseOperation(ctx context.Context, id string, token int64) error {
	return s.do(ctx, func() error { return s.Store.ReleaseOperation(ctx, id, token) })
}

func (s *procStore) ExpireDeadlines(ctx context.Context, limit int) ([]store.Operation, error) {
	return call(ctx, s, func() ([]store.Operation, error) { return s.Store.ExpireDeadlines(ctx, limit) })
}

// ---------------------------------------------------------------------------
// ledger: every claim and every fenced write that landed, in store order.

type ledgerEntry struct {
	claim  bool
	engine string
	token  int64
	at     time.Time
}

// ledger records, per operation, the claims and the fenced writes that the
// store accepted. One lock around the store call and the record keeps the
// record in the store's order.
type ledger struct {
	mu  sync.Mutex
	ops map[string][]ledgerEntry
}

func newLedger() *ledger { return &ledger{ops: map[string][]ledgerEntry{}} }

func (l *ledger) fenced(opID, engine string, token int64, write func() error) error {
	if l == nil || token == 0 {
		return write()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	err := write()
	if err == nil {
		l.ops[opID] = append(l.ops[opID], ledgerEntry{engine: engine, token: token, at: time.Now()})
	}
	return err
}

func (l *ledger) claimed(engine string, claim func() ([]store.Operation, error)) ([]store.Operation, error) {
	if l == nil {
		return claim()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ops, err := claim()
	now := time.Now()
	for _, op := range ops {
		l.ops[op.ID] = append(l.ops[op.ID], ledgerEntry{claim: true, engine: engine, token: op.Token, at: now})
	}
	return ops, err
}

func (l *ledger) entries(opID string) []ledgerEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ops[opID])
}

// check asserts, for the final op, that tokens went 1, 2, 3 … one per
// claim, that every fenced write carried the token of the latest claim and
// came from the engine that made it (no stale holder wrote after a
// takeover), and that the operation's Token counts its claims.
func (l *ledger) check(t *testing.T, op store.Operation) {
	t.Helper()
	var cur ledgerEntry
	claims := 0
	for i, e := range l.entries(op.ID) {
		if e.claim {
			claims++
			if e.token != int64(claims) {
				t.Errorf("operation %s: claim %d by %s got token %d, want %d", op.ID, claims, e.engine, e.token, claims)
			}
			cur = e
			continue
		}
		if e.token != cur.token || e.engine != cur.engine {
			t.Errorf("operation %s: write %d by %s with token %d landed while the latest claim was token %d by %s",
				op.ID, i, e.engine, e.token, cur.token, cur.engine)
		}
	}
	assert.EqualValues(t, claims, op.Token, "operation %s: its token counts its claims", op.ID)
	assert.GreaterOrEqual(t, op.Token, int64(op.Attempt), "operation %s: every attempt needed a claim", op.ID)
}

// firstClaimBy returns when engine first claimed opID.
func (l *ledger) firstClaimBy(opID, engine string) (time.Time, bool) {
	for _, e := range l.entries(opID) {
		if e.claim && e.engine == engine {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// ---------------------------------------------------------------------------
// gate: holds one store call of an engine until the test lets it go.

type gateHold struct {
	arrived chan struct{}
	release chan struct{}
}

// gate holds calls by key: "flashing:ID" for the move of operation ID into
// flashing, "progress:ID" for its progress reports. An armed key holds the
// first call that comes, once.
type gate struct {
	mu    sync.Mutex
	holds map[string]*gateHold
}

func newGate() *gate { return &gate{holds: map[string]*gateHold{}} }

func (g *gate) arm(key string) *gateHold {
	h := &gateHold{arrived: make(chan struct{}), release: make(chan struct{})}
	g.mu.Lock()
	g.holds[key] = h
	g.mu.Unlock()
	return h
}

func (g *gate) hold(ctx context.Context, key string) {
	g.mu.Lock()
	h := g.holds[key]
	delete(g.holds, key)
	g.mu.Unlock()
	if h == nil {
		return
	}
	close(h.arrived)
	select {
	case <-h.release:
	case <-ctx.Done():
	}
}

// ---------------------------------------------------------------------------
// network: a TCP relay per (engine, device).

type span struct {
	engine, device string
	start, end     time.Time    // end is zero while the connection is open
	sent           atomic.Int64 // bytes towards the device
	last           atomic.Int64 // when the last of them went (UnixNano)
}

type relayConn struct {
	client, dev net.Conn
	span        *span
	once        sync.Once
}

type linkKey struct{ engine, device string }

type network struct {
	mu     sync.Mutex
	links  map[linkKey]net.Listener
	conns  map[*relayConn]struct{}
	cut    map[string]bool
	rate   map[string]int           // bytes per second towards the device, per engine
	delay  map[string]time.Duration // added to everything the devices send to an engine
	spans  []*span
	closed bool
	wg     sync.WaitGroup
}

func newNetwork() *network {
	return &network{links: map[linkKey]net.Listener{}, conns: map[*relayConn]struct{}{},
		cut: map[string]bool{}, rate: map[string]int{}, delay: map[string]time.Duration{}}
}

// throttle limits what engine sends to devices to bps bytes per second
// (0: no limit), from now on.
func (n *network) throttle(engine string, bps int) {
	n.mu.Lock()
	n.rate[engine] = bps
	n.mu.Unlock()
}

// slow delays by d every chunk the devices send to engine, from now on.
func (n *network) slow(engine string, d time.Duration) {
	n.mu.Lock()
	n.delay[engine] = d
	n.mu.Unlock()
}

func (n *network) rateOf(engine string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rate[engine]
}

func (n *network) delayOf(engine string) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.delay[engine]
}

// addr returns the address at which engine reaches device.
func (n *network) addr(engine, device string, target func() string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.cut[engine] {
		return "", errLinkDown
	}
	k := linkKey{engine, device}
	if ln := n.links[k]; ln != nil {
		return ln.Addr().String(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	n.links[k] = ln
	n.wg.Add(1)
	go n.serve(ln, k, target)
	return ln.Addr().String(), nil
}

func (n *network) serve(ln net.Listener, k linkKey, target func() string) {
	defer n.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		n.wg.Add(1)
		go n.relay(c, k, target)
	}
}

func (n *network) relay(c net.Conn, k linkKey, target func() string) {
	defer n.wg.Done()
	d, err := net.DialTimeout("tcp", target(), 2*time.Second)
	if err != nil { // the device is down (rebooting): like a refused connection
		c.Close()
		return
	}
	rc := &relayConn{client: c, dev: d, span: &span{engine: k.engine, device: k.device, start: time.Now()}}
	n.mu.Lock()
	if n.closed || n.cut[k.engine] {
		n.mu.Unlock()
		c.Close()
		d.Close()
		return
	}
	n.conns[rc] = struct{}{}
	n.spans = append(n.spans, rc.span)
	rate := n.rate[k.engine]
	n.mu.Unlock()
	if tc, ok := c.(*net.TCPConn); ok && rate > 0 {
		// A small buffer on a slow link: what the engine sends reaches the
		// device about when it is sent, not seconds later out of a backlog.
		_ = tc.SetReadBuffer(16 << 10)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // towards the device
		defer wg.Done()
		buf := make([]byte, 4<<10)
		for {
			k, err := c.Read(buf)
			if k > 0 {
				if _, werr := d.Write(buf[:k]); werr != nil {
					break
				}
				rc.span.sent.Add(int64(k))
				rc.span.last.Store(time.Now().UnixNano())
				if rate := n.rateOf(rc.span.engine); rate > 0 {
					time.Sleep(time.Duration(k) * time.Second / time.Duration(rate))
				}
			}
			if err != nil {
				break
			}
		}
		n.hangUp(rc)
	}()
	go func() { // towards the engine
		defer wg.Done()
		buf := make([]byte, 4<<10)
		for {
			k, err := d.Read(buf)
			if k > 0 {
				if delay := n.delayOf(rc.span.engine); delay > 0 {
					time.Sleep(delay)
				}
				if _, werr := c.Write(buf[:k]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		n.hangUp(rc)
	}()
	wg.Wait()
}

func (n *network) hangUp(rc *relayConn) {
	rc.once.Do(func() {
		rc.client.Close()
		rc.dev.Close()
		n.mu.Lock()
		if rc.span.end.IsZero() {
			rc.span.end = time.Now()
		}
		delete(n.conns, rc)
		n.mu.Unlock()
	})
}

// cutOff takes engine off the network, as when its process dies: its
// connections close and it can open no more.
func (n *network) cutOff(engine string) {
	n.mu.Lock()
	n.cut[engine] = true
	var lns []net.Listener
	for k, ln := range n.links {
		if k.engine == engine {
			lns = append(lns, ln)
		}
	}
	var rcs []*relayConn
	now := time.Now()
	for rc := range n.conns {
		if rc.span.engine == engine {
			rcs = append(rcs, rc)
			rc.span.end = now
		}
	}
	n.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, rc := range rcs {
		n.hangUp(rc)
	}
}

// close ends every relay and waits for their goroutines. Idempotent.
func (n *network) close() {
	n.mu.Lock()
	n.closed = true
	var lns []net.Listener
	for _, ln := range n.links {
		lns = append(lns, ln)
	}
	var rcs []*relayConn
	for rc := range n.conns {
		rcs = append(rcs, rc)
	}
	n.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, rc := range rcs {
		n.hangUp(rc)
	}
	n.wg.Wait()
}

// spanView is a span read under the network's lock.
type spanView struct {
	engine, device string
	start, end     time.Time
	sent           int64
	lastSent       time.Time // zero when nothing was sent
}

func (n *network) spansOf(device string) []spanView {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []spanView
	for _, s := range n.spans {
		if device == "" || s.device == device {
			v := spanView{engine: s.engine, device: s.device, start: s.start, end: s.end, sent: s.sent.Load()}
			if ns := s.last.Load(); ns != 0 {
				v.lastSent = time.Unix(0, ns)
			}
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out
}

// crossEngineOverlaps lists, for every device, the connections of two
// different engines that were open at the same time.
func (n *network) crossEngineOverlaps() []string {
	byDev := map[string][]spanView{}
	for _, s := range n.spansOf("") {
		byDev[s.device] = append(byDev[s.device], s)
	}
	var out []string
	for dev, ss := range byDev {
		for i := range ss {
			for j := i + 1; j < len(ss); j++ {
				a, b := ss[i], ss[j]
				if a.engine == b.engine {
					continue
				}
				aEnd, bEnd := a.end, b.end
				if aEnd.IsZero() {
					aEnd = time.Now()
				}
				if bEnd.IsZero() {
					bEnd = time.Now()
				}
				if a.start.Before(bEnd) && b.start.Before(aEnd) {
					out = append(out, fmt.Sprintf("device %s: %s connected %s-%s, %s connected %s-%s", dev,
						a.engine, a.start.Format("15:04:05.000"), aEnd.Format("15:04:05.000"),
						b.engine, b.start.Format("15:04:05.000"), bEnd.Format("15:04:05.000")))
				}
			}
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// cluster: one memory store, shared image files, simulated devices, engines.

type clusterOpts struct {
	lease     time.Duration
	workers   int
	imageSize int64
	reboot    time.Duration
	relay     bool // SSH through the network relay
	ledger    bool
}

type cluster struct {
	opts  clusterOpts
	st    *memory.Store
	files *upgrader.MemFiles
	host  *upgrader.Engine // the host's handle: registers devices, creates operations; never started
	net   *network
	led   *ledger
	image store.Image

	mu   sync.Mutex
	devs map[string]*openwrttest.Device
}

func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	c := &cluster{opts: o, st: memory.New(), files: upgrader.NewMemFiles(), devs: map[string]*openwrttest.Device{}}
	if o.relay {
		c.net = newNetwork()
		t.Cleanup(c.net.close) // registered first: runs after the engines stopped
	}
	if o.ledger {
		c.led = newLedger()
	}
	var err error
	c.host, err = upgrader.NewEngine(c.st, upgrader.NewRegistry(), &upgrader.Config{Files: c.files, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx := context.Background()
	cat, err := c.host.CreateCategory(ctx, store.Category{Name: "c7"})
	require.NoError(t, err)
	build, err := c.host.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3", OSIdentifier: e2eRelease})
	require.NoError(t, err)
	sim := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: e2eRelease, Size: o.imageSize}
	c.image, err = c.host.UploadImage(ctx, store.Image{BuildID: build.ID, Type: e2eType, Name: "openwrt-23.05.3-" + e2eType}, sim.Reader())
	require.NoError(t, err)
	return c
}

// device starts a simulated device and registers it. cfg.UUID defaults to
// the device's ID.
func (c *cluster) device(t *testing.T, cfg openwrttest.Config) (store.Device, *openwrttest.Device) {
	t.Helper()
	id := uuid.NewString()
	if cfg.UUID == "" {
		cfg.UUID = id
	}
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = c.opts.reboot
	}
	dev, err := openwrttest.New(cfg)
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { dev.Close() })
	c.mu.Lock()
	c.devs[id] = dev
	c.mu.Unlock()
	d, err := c.host.RegisterDevice(context.Background(), store.Device{ID: id, Model: dev.Config().Model,
		BoardName: dev.Config().BoardName, OSIdentifier: dev.Release(), Connection: openwrt.Connection, Active: true})
	require.NoError(t, err)
	return d, dev
}

// proc is one engine standing in for one process.
type proc struct {
	name   string
	eng    *upgrader.Engine
	st     *procStore
	events <-chan upgrader.Event
}

// spawn makes an engine named name (its Owner) over its own view of the
// store and its own openwrt upgrader. It is not started.
func (c *cluster) spawn(t *testing.T, name string) *proc {
	t.Helper()
	p := &proc{name: name, st: &procStore{Store: c.st, name: name, led: c.led}}
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(ctx context.Context, d store.Device) (openwrt.Credentials, error) {
			if p.st.isDead() {
				return openwrt.Credentials{}, errProcessDied
			}
			c.mu.Lock()
			dev := c.devs[d.ID]
			c.mu.Unlock()
			if dev == nil {
				return openwrt.Credentials{}, fmt.Errorf("unknown device %s", d.ID)
			}
			addr := dev.Addr()
			if c.net != nil {
				var err error
				if addr, err = c.net.addr(name, d.ID, dev.Addr); err != nil {
					return openwrt.Credentials{}, err
				}
			}
			return openwrt.Credentials{Address: addr, User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword,
				HostKeyCallback: openwrt.PinnedKey(dev.HostKey())}, nil
		},
		ConnectTimeout: 2 * time.Second, CommandTimeout: 5 * time.Second, UpgradeTimeout: 5 * time.Second,
		ReconnectDelay: 50 * time.Millisecond, ReconnectRetryDelay: 50 * time.Millisecond, ReconnectWindow: 3 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	reg := upgrader.NewRegistry()
	require.NoError(t, reg.Register(openwrt.Connection, ow))
	workers := c.opts.workers
	if workers == 0 {
		workers = 4
	}
	p.eng, err = upgrader.NewEngine(p.st, reg, &upgrader.Config{
		Owner: name, LeaseDuration: c.opts.lease, PollInterval: 50 * time.Millisecond,
		MaintenanceInterval: 100 * time.Millisecond, Workers: workers, Files: c.files,
		Logger: slog.New(slog.DiscardHandler),
		Retry:  upgrader.RetryPolicy{InitialInterval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, RandomizationFactor: -1},
	})
	require.NoError(t, err)
	p.events, _ = p.eng.Subscribe(1 << 14) // closed by Stop
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.eng.Stop(ctx)
	})
	return p
}

// crash kills p's process: its store calls fail from now on (none in
// flight lands afterwards) and its connections to devices close.
func (c *cluster) crash(p *proc) {
	p.st.kill()
	if c.net != nil {
		c.net.cutOff(p.name)
	}
}

// reap ends the goroutines of a crashed engine: Stop with an
// already-cancelled context interrupts its attempts at once.
func reap(p *proc) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.eng.Stop(ctx)
}

// waitAllTerminal polls the shared store until no operation is left
// running, and returns them all.
func (c *cluster) waitAllTerminal(t *testing.T, timeout time.Duration) []store.Operation {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		ops, err := c.st.ListOperations(ctx, store.OperationFilter{})
		require.NoError(t, err)
		var left []string
		for _, op := range ops {
			if !op.State.Terminal() {
				left = append(left, fmt.Sprintf("%s (%s %s, lease %s until %s)", op.ID, op.State, op.Phase,
					op.LeaseOwner, op.LeaseExpiresAt.Format("15:04:05.000")))
			}
		}
		if len(left) == 0 {
			return ops
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d operations still not terminal after %s: %s", len(left), timeout, strings.Join(left[:min(len(left), 10)], "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) logText(t *testing.T, opID string) string {
	t.Helper()
	logs, err := c.st.Logs(context.Background(), opID, 0, 0)
	require.NoError(t, err)
	var b strings.Builder
	for _, l := range logs {
		b.WriteString(l.Line)
		b.WriteByte('\n')
	}
	return b.String()
}

var attemptLineRE = regexp.MustCompile(`(?m)^attempt (\d+) of \d+$`)

// checkAttemptLines asserts that the log counts the attempts 1, 2, …,
// op.Attempt, each once: the Attempt counter moved once per attempt and no
// stale attempt logged.
func checkAttemptLines(t *testing.T, op store.Operation, logs string) {
	t.Helper()
	var got []int
	for _, m := range attemptLineRE.FindAllStringSubmatch(logs, -1) {
		n, _ := strconv.Atoi(m[1])
		got = append(got, n)
	}
	var want []int
	for i := 1; i <= op.Attempt; i++ {
		want = append(want, i)
	}
	assert.Equal(t, want, got, "operation %s: the attempt lines of its log", op.ID)
}

// ---------------------------------------------------------------------------
// Crashes.

// killRecord is what a killed engine held when it died (the operations
// whose latest claim is its own), as the store had them.
type killRecord struct {
	engine  string
	trigger string                     // the operation whose phase chose the moment
	held    map[string]store.Operation // its claims
	flashed map[string]int             // the flashes of their devices at that moment
}

// killOn kills p at the first of its events for which ready says yes, once
// armed is closed and p ended at least after operations. It sends what p
// held then (nothing if p stopped first).
func (c *cluster) killOn(p *proc, armed <-chan struct{}, after int, ready func(upgrader.Event) bool) <-chan killRecord {
	out := make(chan killRecord, 1)
	go func() {
		defer close(out)
		ended := 0
		for ev := range p.events {
			if ev.Kind == upgrader.EventOperationState && ev.State.Terminal() {
				ended++
			}
			select {
			case <-armed:
			default:
				continue
			}
			if ended < after || !ready(ev) {
				continue
			}
			c.crash(p)
			rec := killRecord{engine: p.name, trigger: ev.OperationID, held: map[string]store.Operation{}, flashed: map[string]int{}}
			ops, err := c.st.ListOperations(context.Background(), store.OperationFilter{States: []status.State{status.Pending, status.InProgress}})
			if err == nil {
				for _, op := range ops {
					if op.LeaseOwner == p.name {
						rec.held[op.ID] = op
						c.mu.Lock()
						rec.flashed[op.ID] = c.devs[op.DeviceID].Flashed()
						c.mu.Unlock()
					}
				}
			}
			reap(p)
			out <- rec
			for range p.events { // until Stop closed it
			}
			return
		}
	}()
	return out
}

func (c *cluster) phaseOf(id string) status.Phase {
	op, err := c.st.Operation(context.Background(), id)
	if err != nil {
		return status.PhaseNone
	}
	return op.Phase
}

func waitKill(t *testing.T, ch <-chan killRecord, what string) killRecord {
	t.Helper()
	select {
	case rec, ok := <-ch:
		require.True(t, ok, "the engine to kill %s stopped before the moment came", what)
		return rec
	case <-time.After(45 * time.Second):
		t.Fatalf("the moment to kill an engine %s never came", what)
		return killRecord{}
	}
}

// TestMultiEngineCrashes runs 200 upgrades on simulated devices with two and
// three engines over one memory store, and kills one engine mid-upload and
// another mid-reboot (their store calls fail, their SSH connections drop,
// nothing is cleaned up). With two engines, the first killed one is
// replaced by a new engine (the process restarted) before the second dies.
// Every operation ends; the survivors take the dead engines' operations
// over when their leases expire: a new attempt before flashing, a
// verification (never a second flash) at or after it.
func TestMultiEngineCrashes(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%dEngines", n), func(t *testing.T) {
			t.Parallel()
			testCrashes(t, n)
		})
	}
}

func testCrashes(t *testing.T, engines int) {
	const ops = 200
	const lease = 500 * time.Millisecond
	start := time.Now()
	c := newCluster(t, clusterOpts{lease: lease, workers: 8, imageSize: 64 << 10, reboot: 300 * time.Millisecond,
		relay: true, ledger: true})
	// Engine A's uploads take about a second: it dies mid-upload.
	c.net.throttle("engine-a", 64<<10)
	devs := map[string]*openwrttest.Device{}
	var ids []string
	for range ops {
		d, dev := c.device(t, openwrttest.Config{})
		devs[d.ID] = dev
		ids = append(ids, d.ID)
	}

	a := c.spawn(t, "engine-a")
	b := c.spawn(t, "engine-b")
	procs := []*proc{a, b}
	if engines == 3 {
		procs = append(procs, c.spawn(t, "engine-c"))
	}
	now := make(chan struct{})
	close(now)
	armB := make(chan struct{})
	killA := c.killOn(a, now, 5, func(ev upgrader.Event) bool {
		return ev.Kind == upgrader.EventOperationPhase && ev.Phase == status.PhaseUpload &&
			c.phaseOf(ev.OperationID) == status.PhaseUpload
	})
	killB := c.killOn(b, armB, 0, func(ev upgrader.Event) bool {
		if ev.Kind != upgrader.EventOperationPhase || ev.Phase != status.PhaseRebooting ||
			c.phaseOf(ev.OperationID) != status.PhaseRebooting {
			return false
		}
		c.mu.Lock()
		dev := c.devs[ev.DeviceID]
		c.mu.Unlock()
		return !dev.Up() // mid-reboot for real
	})

	ctx := ctxT(t)
	for _, p := range procs {
		require.NoError(t, p.eng.Start(ctx))
	}
	enq := procs[len(procs)-1]
	for _, id := range ids {
		_, err := enq.eng.Enqueue(ctx, upgrader.Request{DeviceID: id, ImageID: c.image.ID})
		require.NoError(t, err)
	}

	recA := waitKill(t, killA, "mid-upload")
	t.Logf("%s killed after %s holding %d operations", recA.engine, time.Since(start).Round(time.Millisecond), len(recA.held))
	require.Contains(t, recA.held, recA.trigger)
	require.Equal(t, status.PhaseUpload, recA.held[recA.trigger].Phase, "killed mid-upload")
	survivors := procs[1:]
	if engines == 2 {
		a2 := c.spawn(t, "engine-a2") // the process restarted
		require.NoError(t, a2.eng.Start(ctx))
		survivors = append(survivors, a2)
	}
	close(armB)
	recB := waitKill(t, killB, "mid-reboot")
	t.Logf("%s killed after %s holding %d operations", recB.engine, time.Since(start).Round(time.Millisecond), len(recB.held))
	require.Contains(t, recB.held, recB.trigger)
	require.Equal(t, status.PhaseRebooting, recB.held[recB.trigger].Phase, "killed mid-reboot")
	require.Equal(t, 1, recB.flashed[recB.trigger], "the device was flashed before the engine died")

	all := c.waitAllTerminal(t, 60*time.Second)
	t.Logf("%d operations over %d engines ended after %s", len(all), engines, time.Since(start).Round(time.Millisecond))
	for _, p := range survivors {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, p.eng.Stop(sctx))
		cancel()
	}
	c.net.close()

	require.Len(t, all, ops)
	held := map[string]store.Operation{}
	for id, op := range recA.held {
		held[id] = op
	}
	for id, op := range recB.held {
		held[id] = op
	}
	var resumed, verified, failedUnflashed int
	byEngine := map[string]int{}
	for _, op := range all {
		dev := devs[op.DeviceID]
		logs := c.logText(t, op.ID)
		flashes := dev.Flashed()
		byEngine[op.LeaseOwner]++
		assert.LessOrEqual(t, flashes, 1, "device of operation %s flashed more than once", op.ID)
		c.led.check(t, op)
		checkAttemptLines(t, op, logs)

		snap, wasHeld := held[op.ID]
		switch {
		case wasHeld && snap.Phase == status.PhaseFlashing:
			// The flash command may or may not have reached the device
			// before the engine died: the verification tells.
			assert.Contains(t, logs, resumeVerifyLine, "operation %s", op.ID)
			assert.Equal(t, snap.Attempt, op.Attempt, "operation %s: verified, not attempted again", op.ID)
			if flashes == 0 {
				failedUnflashed++
				assert.Equal(t, status.Failed, op.State, "operation %s: never flashed, not proven: %s", op.ID, logs)
				assert.Equal(t, status.ReasonWorkerLost, op.Reason, "operation %s", op.ID)
				continue
			}
			verified++
		case wasHeld && snap.Phase.AfterPointOfNoReturn():
			verified++
			assert.Contains(t, logs, resumeVerifyLine, "operation %s", op.ID)
			assert.Contains(t, logs, verifierLine, "operation %s: the upgrader's Verify ran", op.ID)
			assert.Equal(t, snap.Attempt, op.Attempt, "operation %s: verified, not attempted again", op.ID)
			assert.Equal(t, 1, flashes, "operation %s: not flashed again", op.ID)
		case wasHeld && snap.State == status.InProgress && snap.Phase != status.PhaseNone:
			resumed++
			assert.Contains(t, logs, fmt.Sprintf("attempt %d was interrupted in phase %s", snap.Attempt, snap.Phase), "operation %s", op.ID)
			assert.Greater(t, op.Attempt, snap.Attempt, "operation %s: a new attempt", op.ID)
			assert.NotContains(t, logs, resumeVerifyLine, "operation %s", op.ID)
		}
		if !assert.Equal(t, status.Success, op.State, "operation %s (reason %s):\n%s", op.ID, op.Reason, logs) {
			continue
		}
		assert.Equal(t, status.ReasonNone, op.Reason, "operation %s", op.ID)
		assert.Equal(t, 1, flashes, "operation %s succeeded: its device was flashed once", op.ID)
		assert.Equal(t, e2eRelease, dev.Release(), "operation %s", op.ID)
		df, err := c.st.DeviceFirmware(ctx, op.DeviceID)
		if assert.NoError(t, err, "operation %s", op.ID) {
			assert.Equal(t, c.image.ID, df.ImageID, "operation %s", op.ID)
		}
	}
	assert.Equal(t, 0, byEngine[""], "every operation was claimed")
	assert.GreaterOrEqual(t, resumed, 1, "the operation killed mid-upload got a new attempt")
	assert.GreaterOrEqual(t, verified, 1, "the operation killed mid-reboot was verified")
	t.Logf("ended by engine: %v; taken over: %d with a new attempt, %d verified, %d never flashed (failed)",
		byEngine, resumed, verified, failedUnflashed)
	for _, o := range c.net.crossEngineOverlaps() {
		t.Errorf("two engines worked on one device at once: %s", o)
	}
}

// ---------------------------------------------------------------------------
// Cancel across engines.

// TestMultiEngineCancelRacesFlash holds engine A's move into flashing in the
// store call, then lets it go at the same moment as engine B (another
// engine over the same store, not holding the operation) calls Cancel, many
// rounds: exactly one wins each round. Either Cancel succeeds, the
// operation ends cancelled and the device is never flashed, or Cancel
// returns ErrNotCancellable and the operation ends in success with exactly
// one flash. Two rounds with a fixed order make sure both outcomes occur.
func TestMultiEngineCancelRacesFlash(t *testing.T) {
	t.Parallel()
	const races = 30
	c := newCluster(t, clusterOpts{lease: 500 * time.Millisecond, imageSize: 64 << 10, reboot: 100 * time.Millisecond})
	a := c.spawn(t, "engine-a")
	gate := newGate()
	a.st.gate = gate
	b := c.spawn(t, "engine-b")
	ctx := ctxT(t)

	type round struct {
		order string // "race", "cancel-first", "flash-first"
		d     store.Device
		dev   *openwrttest.Device
	}
	rounds := []*round{{order: "cancel-first"}, {order: "flash-first"}}
	for range races {
		rounds = append(rounds, &round{order: "race"})
	}
	for _, r := range rounds {
		r.d, r.dev = c.device(t, openwrttest.Config{})
	}

	var cancelWon, flashWon atomic.Int32
	run := func(r *round) {
		op, err := c.host.Create(ctx, upgrader.Request{DeviceID: r.d.ID, ImageID: c.image.ID})
		if !assert.NoError(t, err) {
			return
		}
		h := gate.arm("flashing:" + op.ID)
		done := make(chan store.Operation, 1)
		go func() {
			end, err := a.eng.Run(ctx, op.ID)
			assert.NoError(t, err, "engine A's Run of %s", op.ID)
			done <- end
		}()
		select {
		case <-h.arrived:
		case end := <-done:
			t.Errorf("round %s: the operation ended %s (%s) before flashing", r.order, end.State, end.Reason)
			return
		case <-time.After(30 * time.Second):
			t.Errorf("round %s: engine A never tried to enter flashing", r.order)
			close(h.release)
			<-done
			return
		}

		var cerr error
		switch r.order {
		case "cancel-first":
			_, cerr = b.eng.Cancel(ctx, op.ID)
			close(h.release)
		case "flash-first":
			close(h.release)
			// Flashing, or already past it: on a quiet machine the
			// simulated flash can end before a poll sees it.
			for !c.phaseOf(op.ID).AfterPointOfNoReturn() && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			_, cerr = b.eng.Cancel(ctx, op.ID)
		default:
			start := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(2)
			spin := func() { // up to 300 µs, to let either side go first
				until := time.Now().Add(time.Duration(rand.IntN(300)) * time.Microsecond)
				for time.Now().Before(until) {
				}
			}
			go func() {
				defer wg.Done()
				<-start
				spin()
				close(h.release)
			}()
			go func() {
				defer wg.Done()
				<-start
				spin()
				_, cerr = b.eng.Cancel(ctx, op.ID)
			}()
			close(start)
			wg.Wait()
		}
		end := <-done
		stored, err := c.st.Operation(ctx, op.ID)
		assert.NoError(t, err)
		assert.Equal(t, end.State, stored.State, "Run returned the stored outcome")
		switch {
		case cerr == nil:
			cancelWon.Add(1)
			assert.Equal(t, status.Cancelled, end.State, "round %s: Cancel won: %s", r.order, c.logText(t, op.ID))
			assert.Equal(t, status.ReasonCancelledByUser, end.Reason)
			assert.Equal(t, 0, r.dev.Flashed(), "round %s: Cancel won: the device is never flashed", r.order)
			assert.False(t, didFlash(r.dev), "round %s: no sysupgrade ran", r.order)
			assert.Equal(t, openwrttest.DefaultRelease, r.dev.Release())
			assert.NotEqual(t, "flash-first", r.order, "a cancel after flashing started must not win")
		case errors.Is(cerr, upgrader.ErrNotCancellable):
			flashWon.Add(1)
			assert.Equal(t, status.Success, end.State, "round %s: flashing won (reason %s): %s", r.order, end.Reason, c.logText(t, op.ID))
			assert.Equal(t, 1, r.dev.Flashed(), "round %s: flashing won: exactly one flash", r.order)
			assert.Equal(t, e2eRelease, r.dev.Release())
			assert.NotEqual(t, "cancel-first", r.order, "a cancel before flashing must win")
		default:
			t.Errorf("round %s: Cancel returned %v", r.order, cerr)
		}
	}

	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, r := range rounds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			run(r)
		}()
	}
	wg.Wait()
	t.Logf("%d rounds: Cancel won %d, flashing won %d", len(rounds), cancelWon.Load(), flashWon.Load())
	assert.EqualValues(t, len(rounds), cancelWon.Load()+flashWon.Load(), "one winner per round")
}

// TestMultiEngineCancelReachesOtherEngineMidUpload cancels, through engine
// B, an operation whose upload engine A is running (slowly: it would take
// about eight seconds). A's attempt learns of it at its next lease renewal
// (or its next cancel checkpoint, whichever comes first) and stops the
// upload: the operation ends cancelled and the device is never flashed.
func TestMultiEngineCancelReachesOtherEngineMidUpload(t *testing.T) {
	t.Parallel()
	const lease = 300 * time.Millisecond
	const size = 2 << 20
	c := newCluster(t, clusterOpts{lease: lease, imageSize: size, reboot: 100 * time.Millisecond, relay: true})
	c.net.throttle("engine-a", 256<<10)
	a := c.spawn(t, "engine-a")
	b := c.spawn(t, "engine-b")
	d, dev := c.device(t, openwrttest.Config{})
	ctx := ctxT(t)
	op, err := c.host.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: c.image.ID})
	require.NoError(t, err)
	done := make(chan store.Operation, 1)
	go func() {
		end, _ := a.eng.Run(ctx, op.ID)
		done <- end
	}()
	waitUploadProgress(t, a, op.ID)
	time.Sleep(50 * time.Millisecond) // past A's checkpoint of that report: the next one is 200 ms away
	_, err = b.eng.Cancel(ctx, op.ID)
	require.NoError(t, err)
	cancelled := time.Now()
	var end store.Operation
	select {
	case end = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("engine A's attempt did not end")
	}
	returned := time.Since(cancelled)
	assert.Equal(t, status.Cancelled, end.State)

	var upload spanView // the connection that carried the upload
	for _, s := range c.net.spansOf(d.ID) {
		if s.engine == "engine-a" && s.start.Before(cancelled) && s.sent > upload.sent {
			upload = s
		}
	}
	bound := 5 * (lease/3 + 100*time.Millisecond)
	stopped := upload.lastSent.Sub(cancelled)
	t.Logf("cancelled through B; A sent its last byte %s later and its Run returned after %s (bound %s); %d of %d bytes sent",
		stopped.Round(time.Millisecond), returned.Round(time.Millisecond), bound, upload.sent, size)
	assert.Less(t, stopped, bound, "the cancel reached engine A's attempt within about one lease renewal")
	assert.Less(t, returned, bound, "engine A's attempt ended within about one lease renewal")
	assert.Less(t, upload.sent, int64(size), "the upload was cut short")
	assert.False(t, didFlash(dev))
	assert.Equal(t, openwrttest.DefaultRelease, dev.Release())
}

// waitUploadProgress waits for p's first progress report of op's upload.
func waitUploadProgress(t *testing.T, p *proc, opID string) {
	t.Helper()
	waitEvent(t, p, func(ev upgrader.Event) bool {
		return ev.OperationID == opID && ev.Kind == upgrader.EventOperationProgress &&
			ev.Progress > status.ProgressChecksum && ev.Progress < status.ProgressUploaded
	})
}

// waitEvent waits for an event of p that ok accepts.
func waitEvent(t *testing.T, p *proc, ok func(upgrader.Event) bool) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, open := <-p.events:
			require.True(t, open, "engine %s stopped", p.name)
			if ok(ev) {
				return
			}
		case <-timeout:
			t.Fatalf("the event awaited from engine %s never came", p.name)
		}
	}
}

// TestMultiEngineCancelFromOtherEngineRestartsServices cancels, through
// engine B, an operation engine A is uploading to a device short of memory
// (A stopped its services to make room), at the moment A's attempt reaches a
// cancel checkpoint (a progress report): A sees the cancel there, before
// its next lease renewal, the usual order with production leases (renewals
// every 10 s, progress reports every 250 ms). Its cleanup must then start
// the services again and remove the partial image, as it does when the
// cancel comes through A itself (TestEngineCancelWhileUploading). Here the
// device answers A's cleanup slowly (a slow link) until A's next renewal
// has reported the cancel too, so that renewal comes while the cleanup runs.
func TestMultiEngineCancelFromOtherEngineRestartsServices(t *testing.T) {
	t.Parallel()
	const lease = 450 * time.Millisecond
	c := newCluster(t, clusterOpts{lease: lease, imageSize: 16 << 20, reboot: 100 * time.Millisecond, relay: true})
	a := c.spawn(t, "engine-a")
	g := newGate()
	a.st.gate = g
	var armed, renewed atomic.Bool
	a.st.onLog = func(lines []string) {
		for _, l := range lines {
			if armed.Load() && strings.Contains(l, "Upload stopped: the operation was cancelled") {
				c.net.slow("engine-a", 400*time.Millisecond)
				a.st.renewFails.Store(false)
			}
		}
	}
	a.st.onRenew = func(rs []store.Renewal) {
		for _, r := range rs {
			if armed.Load() && r.Status == store.LeaseCancelRequested && renewed.CompareAndSwap(false, true) {
				c.net.slow("engine-a", 0)
			}
		}
	}
	b := c.spawn(t, "engine-b")
	d, dev := c.device(t, openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}})
	ctx := ctxT(t)
	op, err := c.host.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: c.image.ID})
	require.NoError(t, err)
	done := make(chan store.Operation, 1)
	go func() {
		end, _ := a.eng.Run(ctx, op.ID)
		done <- end
	}()
	waitUploadProgress(t, a, op.ID)
	stopped := 0
	for _, running := range dev.Services() {
		if !running {
			stopped++
		}
	}
	require.NotZero(t, stopped, "engine A stopped services to make room for the image")

	// Hold A's next progress report, cancel through B meanwhile, let it go:
	// A's checkpoint right after the report sees the cancel. A's renewals
	// fail (well within a lease: it is not lost) until its attempt logged
	// that the upload stopped; from then on the device answers A slowly, so
	// the next renewal reports the cancel again while the device's first
	// answer to the cleanup is on its way.
	h := g.arm("progress:" + op.ID)
	select {
	case <-h.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no second progress report")
	}
	a.st.renewFails.Store(true)
	resume := time.AfterFunc(200*time.Millisecond, func() { a.st.renewFails.Store(false) })
	defer resume.Stop()
	armed.Store(true)
	_, err = b.eng.Cancel(ctx, op.ID)
	require.NoError(t, err)
	close(h.release)

	var end store.Operation
	select {
	case end = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("engine A's attempt did not end")
	}
	logs := c.logText(t, op.ID)
	assert.Equal(t, status.Cancelled, end.State)
	assert.True(t, renewed.Load(), "a renewal reported the cancel while the attempt ran")
	assert.False(t, didFlash(dev))
	for svc, running := range dev.Services() {
		assert.True(t, running, "service %s started again after the cancel", svc)
	}
	_, left := dev.File("/tmp/" + c.image.Name)
	assert.False(t, left, "the partial image is removed from the device's RAM")
	assert.NotContains(t, logs, "Cannot reconnect to start the stopped services again", "the cleanup ran:\n%s", logs)
}

// ---------------------------------------------------------------------------
// Wait across engines.

// TestMultiEngineWaitSeesOtherEngine waits, in engine B (not started), for
// operations that engine A runs and ends: Wait returns each outcome, and
// when it is success the device's firmware record already names the new
// image in B's view of the store.
func TestMultiEngineWaitSeesOtherEngine(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{lease: 500 * time.Millisecond, workers: 4, imageSize: 64 << 10, reboot: 100 * time.Millisecond})
	a := c.spawn(t, "engine-a")
	b := c.spawn(t, "engine-b")
	ctx := ctxT(t)

	type item struct {
		d    store.Device
		dev  *openwrttest.Device
		want status.State
		op   store.Operation
	}
	var items []*item
	for range 8 {
		d, dev := c.device(t, openwrttest.Config{})
		items = append(items, &item{d: d, dev: dev, want: status.Success})
	}
	d, dev := c.device(t, openwrttest.Config{UUID: uuid.NewString()}) // another device answers: aborted
	items = append(items, &item{d: d, dev: dev, want: status.Aborted})
	for _, it := range items {
		var err error
		it.op, err = b.eng.Create(ctx, upgrader.Request{DeviceID: it.d.ID, ImageID: c.image.ID})
		require.NoError(t, err)
	}
	require.NoError(t, a.eng.Start(ctx))

	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			end, err := b.eng.Wait(wctx, it.op.ID)
			if !assert.NoError(t, err, "B's Wait for %s", it.op.ID) {
				return
			}
			// Read B's view first: Wait returned, so it must already hold.
			df, dferr := b.eng.Store().DeviceFirmware(ctx, it.d.ID)
			assert.Equal(t, it.want, end.State, "operation %s (reason %s)", end.ID, end.Reason)
			assert.Equal(t, "engine-a", end.LeaseOwner, "engine A ended it")
			if it.want != status.Success {
				assert.Equal(t, status.ReasonIdentityMismatch, end.Reason)
				assert.Equal(t, 0, it.dev.Flashed())
				return
			}
			if assert.NoError(t, dferr, "the firmware record exists when Wait returns success") {
				assert.Equal(t, c.image.ID, df.ImageID, "the firmware record names the new image when Wait returns")
				assert.True(t, df.Installed)
			}
			assert.Equal(t, 1, it.dev.Flashed())
			assert.Equal(t, e2eRelease, it.dev.Release())
		}()
	}
	wg.Wait()
}

// ---------------------------------------------------------------------------
// An engine cut off from the store.

// TestMultiEnginePartitionedHolderStopsBeforeTakeover cuts engine A off
// from the store (every call hangs, then fails) in the middle of a slow
// upload, while A can still reach the device. A's lease expires in the
// store and engine B claims the operation; by then A must have stopped
// touching the device, or two attempts of one operation run at once on it
// (A's upload goes on into the file B uploads, and A's cleanup removes it).
func TestMultiEnginePartitionedHolderStopsBeforeTakeover(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	c := newCluster(t, clusterOpts{lease: lease, workers: 1, imageSize: 2 << 20, reboot: 100 * time.Millisecond,
		relay: true, ledger: true})
	c.net.throttle("engine-a", 128<<10) // A's upload would take 16 s
	a := c.spawn(t, "engine-a")
	b := c.spawn(t, "engine-b")
	d, _ := c.device(t, openwrttest.Config{})
	ctx := ctxT(t)
	op, err := c.host.Create(ctx, upgrader.Request{DeviceID: d.ID, ImageID: c.image.ID})
	require.NoError(t, err)
	require.NoError(t, a.eng.Start(ctx))
	waitEvent(t, a, func(ev upgrader.Event) bool {
		return ev.OperationID == op.ID && ev.Kind == upgrader.EventOperationPhase && ev.Phase == status.PhaseUpload
	})
	a.st.partitioned.Store(true)
	partitioned := time.Now()
	require.NoError(t, b.eng.Start(ctx))

	end := func() store.Operation {
		deadline := time.Now().Add(30 * time.Second)
		for {
			o, err := c.st.Operation(ctx, op.ID)
			require.NoError(t, err)
			if o.State.Terminal() || time.Now().After(deadline) {
				return o
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for _, p := range []*proc{a, b} {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = p.eng.Stop(sctx)
		cancel()
	}
	c.net.close()
	logs := c.logText(t, op.ID)

	claimedByB, ok := c.led.firstClaimBy(op.ID, "engine-b")
	require.True(t, ok, "engine B took the operation over (it ended %s)", end.State)
	var lastA time.Time // when A last sent something to the device
	for _, s := range c.net.spansOf(d.ID) {
		if s.engine == "engine-a" && s.lastSent.After(lastA) {
			lastA = s.lastSent
		}
	}
	t.Logf("A cut off from the store at +0; B claimed at +%s; A last sent to the device at +%s; the operation ended %s (%s)",
		claimedByB.Sub(partitioned).Round(time.Millisecond), lastA.Sub(partitioned).Round(time.Millisecond), end.State, end.Reason)
	assert.False(t, lastA.After(claimedByB),
		"engine A, whose lease had expired, was still sending to the device %s after engine B claimed the operation: two attempts ran at once; the operation's log:\n%s",
		lastA.Sub(claimedByB).Round(time.Millisecond), logs)
}
