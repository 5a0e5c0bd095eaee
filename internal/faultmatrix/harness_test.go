package faultmatrix_test

// The harness of one row: its store (memory, or a schema of its own on
// PostgreSQL), its engine and openwrt upgrader wired as a host wires them,
// the catalog (one build, one image), the simulated devices and what the
// host's CredentialsFunc answers for each.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const (
	// newRelease is what the build installs.
	newRelease = "OpenWrt 23.05.3 r23809-234f1a2efa"
	// imageSize is the size of the rows' image unless they say otherwise.
	imageSize = 256 << 10
	// rowTimeout bounds a row's waits, so a broken library fails a row
	// instead of hanging the package (nothing is asserted about time).
	rowTimeout = 2 * time.Minute
)

// otherKey is a host key no simulated device has.
var otherKey = func() ssh.PublicKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		panic(err)
	}
	return s.PublicKey()
}()

// hostKey is what the host's host key check accepts for a device.
type hostKey int

const (
	// keyPinned: the key the device had when it was registered, as a
	// known_hosts entry keeps it.
	keyPinned hostKey = iota
	// keyFollows: the key the device has now (the host learnt a new key).
	keyFollows
	// keyOther: another key (the device's key changed, or another device
	// answers at its address).
	keyOther
	// keyNone: no host key check at all.
	keyNone
)

// host is what the host's CredentialsFunc answers for a device.
type host struct {
	key hostKey
	// staleAddr: the address the device had when it was registered, not
	// the one it has now.
	staleAddr bool
	// password, when set, is given instead of the device's own.
	password string
	// slowLink, when positive, puts the device behind a link carrying this
	// many bytes a second from the upgrader to the device.
	slowLink int
	// slowAnswers, when positive, puts the device behind a link that
	// delays everything the device sends back by this long.
	slowAnswers time.Duration
	// impostor: once the device was flashed, its address leads to another
	// device (another UUID) that has the same host key and already runs
	// the build's release, as when a DHCP lease moved during the reboot
	// and the devices share a factory host key.
	impostor bool
}

// member is one or more devices of a row, by role.
type member struct {
	role string
	n    int // 0 means 1
	sim  openwrttest.Config
	host host
	// down: closed once registered, so nothing listens at its address.
	down bool
}

// node is one device of a row.
type node struct {
	role string
	d    store.Device
	host host
	cfg  openwrttest.Config // as it was started (UUID included)
	addr string             // its address when registered
	key  ssh.PublicKey      // its host key when registered
	link *link
	// other is the device that answers at the address after the flash
	// (host.impostor).
	other *openwrttest.Device

	mu     sync.Mutex
	dev    *openwrttest.Device
	closed bool
}

// sim returns the simulated device that answers for the node now.
func (n *node) sim() *openwrttest.Device {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dev
}

// address is where the device listens now ("" is never returned for a
// registered device: a closed one keeps the address it had).
func (n *node) address() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.host.staleAddr {
		return n.addr
	}
	return n.dev.Addr()
}

type harness struct {
	t   *testing.T
	row *row
	ctx context.Context

	st      store.Store
	hooks   *hookStore // set when the row's action needs it
	pool    *pgxpool.Pool
	cluster *pgtest.Cluster // a cluster of the row's own (pgOwn)
	url     string
	schema  string
	files   upgrader.Files

	ocfg openwrt.Config
	ecfg upgrader.Config
	ow   *openwrt.Upgrader
	eng  *upgrader.Engine
	rec  *recorder

	sim   openwrttest.Image
	build store.Build
	image store.Image

	mu    sync.Mutex
	nodes []*node
	byID  map[string]*node
}

// baseUpgrader is the openwrt configuration of every row: short delays
// between reconnections, as a host's tests use, and timeouts and a
// reconnection window generous enough for a loaded machine (a success
// returns as soon as it is proven; the rows whose device never proves
// anything give it a short window of their own).
func baseUpgrader() openwrt.Config {
	return openwrt.Config{
		ConnectTimeout: 10 * time.Second, CommandTimeout: 10 * time.Second, UpgradeTimeout: 10 * time.Second,
		ReconnectDelay: 50 * time.Millisecond, ReconnectRetryDelay: 50 * time.Millisecond,
		ReconnectWindow: 15 * time.Second,
		Logger:          slog.New(slog.DiscardHandler),
	}
}

// shortWindow gives a device that will never prove the new firmware 3 s to
// do so.
func shortWindow(c *openwrt.Config) { c.ReconnectWindow = 3 * time.Second }

// baseEngine is the engine configuration of every row: retries, polls,
// maintenance and offline waits in milliseconds.
func baseEngine() upgrader.Config {
	return upgrader.Config{
		Logger:              slog.New(slog.DiscardHandler),
		Workers:             16,
		Retry:               upgrader.RetryPolicy{InitialInterval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, RandomizationFactor: upgrader.NoRetryRandomization},
		PollInterval:        50 * time.Millisecond,
		MaintenanceInterval: 50 * time.Millisecond,
		// Long leases: a loaded machine must not make an engine lose a
		// claim it holds (the rows that are about leases set their own).
		LeaseDuration: 10 * time.Second,
		Offline: upgrader.OfflinePolicy{InitialInterval: 200 * time.Millisecond, MaxInterval: time.Second,
			RandomizationFactor: upgrader.NoRetryRandomization},
	}
}

// defaultImage is the build's image: 23.05.3 for the default board, with
// the fwtool metadata its build appends.
func defaultImage() openwrttest.Image {
	return openwrttest.NewImage(newRelease, openwrttest.DefaultBoardName, imageSize)
}

// imageName is the file name the image is stored (and uploaded) under: a
// 23.05.3 image for the default board, whatever the image's content says.
var imageName = defaultImage().FileName()

func newHarness(t *testing.T, r *row) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rowTimeout)
	t.Cleanup(cancel)
	h := &harness{t: t, row: r, ctx: ctx, byID: map[string]*node{}, rec: newRecorder()}

	switch r.pg {
	case pgNone:
		h.st, h.files = memory.New(), upgrader.NewMemFiles()
	case pgShared:
		h.openPostgres(pgtest.URL(t))
	case pgOwn:
		h.cluster = pgtest.NewCluster(t)
		h.openPostgres(h.cluster.URL())
	}
	if r.act.hook {
		h.hooks = &hookStore{Store: h.st}
		h.st = h.hooks
	}

	h.ocfg = baseUpgrader()
	if r.ow != nil {
		r.ow(&h.ocfg)
	}
	h.ocfg.CredentialsFunc = h.credentials
	var err error
	h.ow, err = openwrt.New(&h.ocfg)
	require.NoError(t, err)
	h.ecfg = baseEngine()
	if r.eng != nil {
		r.eng(&h.ecfg)
	}
	h.ecfg.Files = h.files
	h.eng = h.newEngine("faultmatrix-" + uuid.NewString()[:8])
	events, stop := h.eng.Subscribe(1 << 14)
	go h.rec.drain(events)
	t.Cleanup(stop)

	h.sim = defaultImage()
	if r.image != nil {
		h.sim = r.image()
	}
	cat, err := h.eng.CreateCategory(ctx, store.Category{Name: "archer-c7"})
	require.NoError(t, err)
	h.build, err = h.eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3", OSIdentifier: h.sim.Release})
	require.NoError(t, err)
	h.image, err = h.eng.UploadImage(ctx, store.Image{BuildID: h.build.ID, Name: imageName}, h.sim.Reader())
	require.NoError(t, err)

	fleet := r.fleet
	if len(fleet) == 0 {
		fleet = []member{{sim: r.sim, host: r.host, down: r.down}}
	}
	for _, m := range fleet {
		for range max(m.n, 1) {
			h.addNode(m)
		}
	}
	return h
}

// newEngine makes an engine of the row's configuration over the row's
// store, named owner. It is stopped when the test ends.
func (h *harness) newEngine(owner string) *upgrader.Engine {
	h.t.Helper()
	reg := upgrader.NewRegistry()
	require.NoError(h.t, reg.Register(openwrt.Connection, h.ow))
	cfg := h.ecfg
	cfg.Owner = owner
	eng, err := upgrader.NewEngine(h.st, reg, &cfg)
	require.NoError(h.t, err)
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = eng.Stop(ctx)
	})
	return eng
}

func (h *harness) openPostgres(url string) {
	t := h.t
	t.Helper()
	pcfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	pcfg.MaxConns = 6
	pool, err := pgxpool.NewWithConfig(h.ctx, pcfg)
	require.NoError(t, err)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	h.url, h.pool, h.schema = url, pool, "faultmatrix_"+hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{h.schema}.Sanitize()+" CASCADE")
		pool.Close()
	})
	st, err := postgres.New(pool, postgres.WithSchema(h.schema))
	require.NoError(t, err)
	require.NoError(t, st.Migrate(h.ctx))
	files, err := postgres.NewFiles(pool, postgres.WithSchema(h.schema))
	require.NoError(t, err)
	h.st, h.files = st, files
}

// addNode starts a simulated device of m and registers it.
func (h *harness) addNode(m member) *node {
	t := h.t
	t.Helper()
	cfg := m.sim
	cfg.UUID = uuid.NewString()
	if cfg.RebootDelay == 0 {
		cfg.RebootDelay = 150 * time.Millisecond
	}
	dev, err := openwrttest.New(cfg)
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { dev.Close() })
	n := &node{role: m.role, host: m.host, cfg: cfg, dev: dev, addr: dev.Addr(), key: dev.HostKey()}
	if m.host.impostor {
		other, err := openwrttest.New(openwrttest.Config{UUID: uuid.NewString(), Release: newRelease, HostKey: dev.Signer()})
		require.NoError(t, err)
		require.NoError(t, other.Start())
		t.Cleanup(func() { other.Close() })
		n.other = other
	}
	if m.host.slowLink > 0 || m.host.slowAnswers > 0 {
		n.link = newLink(t, dev.Addr, m.host.slowLink, m.host.slowAnswers)
	}
	h.mu.Lock()
	h.nodes = append(h.nodes, n)
	h.byID[cfg.UUID] = n
	h.mu.Unlock()
	n.d, err = h.eng.RegisterDevice(h.ctx, store.Device{ID: cfg.UUID, Name: fmt.Sprintf("%s-%d", cmpOr(m.role, "ap"), len(h.nodes)),
		Model: dev.Config().Model, BoardName: dev.Config().BoardName, OSIdentifier: dev.Release(),
		Connection: openwrt.Connection, Active: true})
	require.NoError(t, err)
	if m.down {
		require.NoError(t, dev.Close())
		n.closed = true
	}
	return n
}

// bringBack starts a device again where n's device was (same address, host
// key and configuration), as a device that was switched off comes back.
func (h *harness) bringBack(n *node) {
	t := h.t
	t.Helper()
	cfg := n.cfg
	cfg.Addr, cfg.HostKey = n.addr, n.sim().Signer()
	dev, err := openwrttest.New(cfg)
	require.NoError(t, err)
	require.NoError(t, dev.Start())
	t.Cleanup(func() { dev.Close() })
	n.mu.Lock()
	n.dev, n.closed = dev, false
	n.mu.Unlock()
}

func (h *harness) node(id string) *node {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byID[id]
}

func (h *harness) nodesOf(role string) []*node {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*node
	for _, n := range h.nodes {
		if n.role == role {
			out = append(out, n)
		}
	}
	return out
}

// credentials is the host's CredentialsFunc: asked on every attempt and
// every reconnection, it reads the device's address again (unless the row
// says the host keeps a stale one).
func (h *harness) credentials(_ context.Context, d store.Device) (openwrt.Credentials, error) {
	n := h.node(d.ID)
	if n == nil {
		return openwrt.Credentials{}, fmt.Errorf("faultmatrix: unknown device %s", d.ID)
	}
	c := openwrt.Credentials{Address: n.address(), User: openwrttest.DefaultUser, Password: openwrttest.DefaultPassword}
	if n.link != nil {
		c.Address = n.link.Addr()
	}
	if n.other != nil && n.sim().Flashed() > 0 {
		c.Address = n.other.Addr()
	}
	if n.host.password != "" {
		c.Password = n.host.password
	}
	switch n.host.key {
	case keyPinned:
		c.HostKeyCallback = openwrt.PinnedKey(n.key)
	case keyFollows:
		c.HostKeyCallback = openwrt.PinnedKey(n.sim().HostKey())
	case keyOther:
		c.HostKeyCallback = openwrt.PinnedKey(otherKey)
	case keyNone:
	}
	return c, nil
}

// ops returns every operation of the row's store.
func (h *harness) ops() []store.Operation {
	h.t.Helper()
	ops, err := h.st.ListOperations(context.Background(), store.OperationFilter{})
	require.NoError(h.t, err)
	return ops
}

// logText is an operation's log, for failure messages.
func (h *harness) logText(id string) string {
	logs, err := h.st.Logs(context.Background(), id, 0, 0)
	if err != nil {
		return err.Error()
	}
	var s string
	for _, l := range logs {
		s += l.Line + "\n"
	}
	return s
}

// eventually polls cond until it holds; the limit only keeps a broken
// library from hanging the row.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	limit := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(limit) {
			h.t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// operation reads an operation.
func (h *harness) operation(id string) store.Operation {
	h.t.Helper()
	op, err := h.st.Operation(context.Background(), id)
	require.NoError(h.t, err)
	return op
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ---------------------------------------------------------------------------
// Events.

// recorder keeps every event of a row's engine, for the actions that act at
// a moment (a phase, the first upload progress) and for the checker.
type recorder struct {
	mu      sync.Mutex
	evs     []upgrader.Event
	changed chan struct{}
	dropped uint64
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) drain(ch <-chan upgrader.Event) {
	for ev := range ch {
		r.mu.Lock()
		r.evs = append(r.evs, ev)
		r.dropped += ev.Dropped
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}
}

// wait returns the first event that ok accepts.
func (r *recorder) wait(ctx context.Context, ok func(upgrader.Event) bool) (upgrader.Event, error) {
	i := 0
	for {
		r.mu.Lock()
		for ; i < len(r.evs); i++ {
			if ok(r.evs[i]) {
				ev := r.evs[i]
				r.mu.Unlock()
				return ev, nil
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return upgrader.Event{}, ctx.Err()
		}
	}
}

// lost returns how many events the recorder missed (its buffer was full).
func (r *recorder) lost() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// uploadProgress returns the progress values an operation reported while
// uploading (strictly between the checksum and upload milestones).
func (r *recorder) uploadProgress(opID string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, ev := range r.evs {
		if ev.OperationID == opID && ev.Kind == upgrader.EventOperationProgress &&
			ev.Progress > status.ProgressChecksum && ev.Progress < status.ProgressUploaded {
			out = append(out, ev.Progress)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// A store hook at the move into flashing.

// hookStore is the row's store with one hook: the next update that moves
// an operation into status.PhaseFlashing (the upgrader's compare-and-set
// against a cancel) runs onFlash, which decides when that update reaches
// the store (forward). Everything else goes to the store as it is.
type hookStore struct {
	store.Store
	mu      sync.Mutex
	onFlash func(id string, forward func() (store.Operation, error)) (store.Operation, error)
}

func (s *hookStore) armFlash(f func(id string, forward func() (store.Operation, error)) (store.Operation, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onFlash = f
}

func (s *hookStore) UpdateOperation(ctx context.Context, id string, u store.OperationUpdate) (store.Operation, error) {
	if u.Phase != nil && *u.Phase == status.PhaseFlashing {
		s.mu.Lock()
		f := s.onFlash
		s.onFlash = nil
		s.mu.Unlock()
		if f != nil {
			return f(id, func() (store.Operation, error) { return s.Store.UpdateOperation(ctx, id, u) })
		}
	}
	return s.Store.UpdateOperation(ctx, id, u)
}
