package memory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

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

// Store is the in-memory store. Create it with New; the zero value is not
// usable. All methods are safe for concurrent use.
type Store struct {
	mu sync.RWMutex

	categories   map[string]store.Category
	categoryName map[[2]string]string // (organization, name) -> ID

	builds       map[string]store.Build
	buildVersion map[[2]string]string // (category, version) -> ID
	buildOS      map[[2]string]string // (organization, OS identifier) -> ID

	images    map[string]store.Image
	imageType map[[2]string]string // (build, type) -> ID

	devices  map[string]store.Device
	firmware map[string]store.DeviceFirmware // by device ID

	batches map[string]*batchRec
	// live holds the batches that have not ended, for AdvanceBatches.
	live map[string]*batchRec
	ops  map[string]*opRec
	// deviceOps lists every operation of a device; activeOp holds the
	// device's non-terminal operation, if any.
	deviceOps map[string][]string
	activeOp  map[string]string

	// The claim path's queues (see claims.go and lanes.go).
	lanes     [2]*laneHeap // lanes of ready operations, by their longest due: started, then pending
	laneByKey map[laneKey]*lane
	leased    *opQueue // live lease, by its end
}

type batchRec struct {
	b   store.Batch // with its Counts and WaveTallies kept up to date
	ops []string
	// running counts the operations holding a live lease, in all and by
	// group (Rollout.GroupBy); for the start rate, inflight holds the
	// operations claimed whose attempt has not reached its device yet, and
	// starts the times (sorted) of recent contacts.
	running      int
	groupRunning map[string]int
	starts       []time.Time
	inflight     map[string]struct{}
}

type opRec struct {
	op    store.Operation
	logs  []store.LogEntry
	queue int   // queueNone, queueReady or queueLeased
	idx   int   // index in that queue
	lane  *lane // when queueReady
	// runBatch and runGroup: where the operation counts as running while
	// it is in the lease queue.
	runBatch *batchRec
	runGroup string
}

// New returns an empty store.
func New() *Store {
	return &Store{
		categories:   map[string]store.Category{},
		categoryName: map[[2]string]string{},
		builds:       map[string]store.Build{},
		buildVersion: map[[2]string]string{},
		buildOS:      map[[2]string]string{},
		images:       map[string]store.Image{},
		imageType:    map[[2]string]string{},
		devices:      map[string]store.Device{},
		firmware:     map[string]store.DeviceFirmware{},
		batches:      map[string]*batchRec{},
		live:         map[string]*batchRec{},
		ops:          map[string]*opRec{},
		deviceOps:    map[string][]string{},
		activeOp:     map[string]string{},
		lanes:        [2]*laneHeap{{}, {}},
		laneByKey:    map[laneKey]*lane{},
		leased:       &opQueue{less: leaseEndsFirst},
	}
}

func now() time.Time { return time.Now().UTC() }

func notFound(kind, id string) error {
	return fmt.Errorf("%w: %s %q", store.ErrNotFound, kind, id)
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store/memory: %w", err)
	}
	return nil
}

// ---- copies ----

func cloneImage(im store.Image) store.Image {
	im.Boards = slices.Clone(im.Boards)
	return im
}

func cloneOp(op store.Operation) store.Operation {
	op.Options = slices.Clone(op.Options)
	return op
}

func (r *batchRec) out() store.Batch {
	b := r.b
	b.Options = slices.Clone(b.Options)
	b.Counts = maps.Clone(r.b.Counts)
	b.Rollout = cloneRollout(b.Rollout)
	b.WaveTallies = slices.Clone(b.WaveTallies)
	for i := range b.WaveTallies {
		b.WaveTallies[i].Counts = maps.Clone(b.WaveTallies[i].Counts)
	}
	return b
}

func cloneRollout(r store.Rollout) store.Rollout {
	r.Waves = slices.Clone(r.Waves)
	r.Windows = slices.Clone(r.Windows)
	if r.FailureThreshold != nil {
		r.FailureThreshold = store.Ptr(*r.FailureThreshold)
	}
	if r.SuccessThreshold != nil {
		r.SuccessThreshold = store.Ptr(*r.SuccessThreshold)
	}
	return r
}

// ---- listing helpers ----

// paginate sorts items by ID and applies p.
func paginate[T any](items []T, id func(T) string, p store.Page) []T {
	cmpID := func(a, b T) int { return strings.Compare(id(a), id(b)) }
	if !slices.IsSortedFunc(items, cmpID) { // indexes are mostly in ID order already
		slices.SortFunc(items, cmpID)
	}
	if p.After != "" {
		i, _ := slices.BinarySearchFunc(items, p.After, func(it T, after string) int {
			if id(it) <= after {
				return -1
			}
			return 1
		})
		items = items[i:]
	}
	if p.Limit > 0 && len(items) > p.Limit {
		items = items[:p.Limit]
	}
	if items == nil {
		items = []T{}
	}
	return items
}

// get returns m[id] under the read lock, or ErrNotFound naming kind.
func get[T any](s *Store, ctx context.Context, m map[string]T, kind, id string) (T, error) {
	var zero T
	if err := ctxErr(ctx); err != nil {
		return zero, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := m[id]
	if !ok {
		return zero, notFound(kind, id)
	}
	return v, nil
}

// list returns the values of m that keep accepts, as one page of p.
func list[T any](s *Store, ctx context.Context, p store.Page, m map[string]T, keep func(T) bool, id func(T) string) ([]T, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []T
	for _, v := range m {
		if keep(v) {
			out = append(out, v)
		}
	}
	return paginate(out, id, p), nil
}

func orgMatches(org string, includeShared bool, recordOrg string) bool {
	return org == "" || recordOrg == org || (includeShared && recordOrg == "")
}

// ---- categories ----

// CreateCategory implements store.Categories.
func (s *Store) CreateCategory(ctx context.Context, c store.Category) (store.Category, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Category{}, err
	}
	if err := c.Validate(); err != nil {
		return store.Category{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.ID == "" {
		c.ID = store.NewID()
	} else if _, ok := s.categories[c.ID]; ok {
		return store.Category{}, fmt.Errorf("%w: category %q exists", store.ErrConflict, c.ID)
	}
	key := [2]string{c.Organization, c.Name}
	if _, ok := s.categoryName[key]; ok {
		return store.Category{}, fmt.Errorf("%w: category %q exists in organization %q", store.ErrConflict, c.Name, c.Organization)
	}
	t := now()
	c.CreatedAt, c.UpdatedAt = t, t
	s.categories[c.ID] = c
	s.categoryName[key] = c.ID
	return c, nil
}

// Category implements store.Categories.
func (s *Store) Category(ctx context.Context, id string) (store.Category, error) {
	return get(s, ctx, s.categories, "category", id)
}

// ListCategories implements store.Categories.
func (s *Store) ListCategories(ctx context.Context, f store.CategoryFilter) ([]store.Category, error) {
	return list(s, ctx, f.Page, s.categories, func(c store.Category) bool {
		return orgMatches(f.Organization, f.IncludeShared, c.Organization) && (f.Name == "" || c.Name == f.Name)
	}, func(c store.Category) string { return c.ID })
}

// ---- builds ----

// CreateBuild implements store.Builds.
func (s *Store) CreateBuild(ctx context.Context, b store.Build) (store.Build, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Build{}, err
	}
	if err := b.Validate(); err != nil {
		return store.Build{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.categories[b.CategoryID]
	if !ok {
		return store.Build{}, notFound("category", b.CategoryID)
	}
	b.Organization = c.Organization
	if b.ID == "" {
		b.ID = store.NewID()
	} else if _, ok := s.builds[b.ID]; ok {
		return store.Build{}, fmt.Errorf("%w: build %q exists", store.ErrConflict, b.ID)
	}
	vkey := [2]string{b.CategoryID, b.Version}
	if _, ok := s.buildVersion[vkey]; ok {
		return store.Build{}, fmt.Errorf("%w: category %q already has version %q", store.ErrConflict, b.CategoryID, b.Version)
	}
	okey := [2]string{b.Organization, b.OSIdentifier}
	if b.OSIdentifier != "" {
		if _, ok := s.buildOS[okey]; ok {
			return store.Build{}, fmt.Errorf("%w: OS identifier %q is used by another build of organization %q",
				store.ErrConflict, b.OSIdentifier, b.Organization)
		}
	}
	t := now()
	b.CreatedAt, b.UpdatedAt = t, t
	s.builds[b.ID] = b
	s.buildVersion[vkey] = b.ID
	if b.OSIdentifier != "" {
		s.buildOS[okey] = b.ID
	}
	return b, nil
}

// Build implements store.Builds.
func (s *Store) Build(ctx context.Context, id string) (store.Build, error) {
	return get(s, ctx, s.builds, "build", id)
}

// ListBuilds implements store.Builds.
func (s *Store) ListBuilds(ctx context.Context, f store.BuildFilter) ([]store.Build, error) {
	return list(s, ctx, f.Page, s.builds, func(b store.Build) bool {
		return orgMatches(f.Organization, f.IncludeShared, b.Organization) &&
			(f.CategoryID == "" || b.CategoryID == f.CategoryID) &&
			(f.OSIdentifier == "" || b.OSIdentifier == f.OSIdentifier)
	}, func(b store.Build) string { return b.ID })
}

// ---- images ----

// CreateImage implements store.Images.
func (s *Store) CreateImage(ctx context.Context, im store.Image) (store.Image, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Image{}, err
	}
	if err := im.Validate(); err != nil {
		return store.Image{}, err
	}
	im = cloneImage(im)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.builds[im.BuildID]
	if !ok {
		return store.Image{}, notFound("build", im.BuildID)
	}
	im.Organization = b.Organization
	if im.ID == "" {
		im.ID = store.NewID()
	} else if _, ok := s.images[im.ID]; ok {
		return store.Image{}, fmt.Errorf("%w: image %q exists", store.ErrConflict, im.ID)
	}
	key := [2]string{im.BuildID, im.Type}
	if _, ok := s.imageType[key]; ok {
		return store.Image{}, fmt.Errorf("%w: build %q already has an image of type %q", store.ErrConflict, im.BuildID, im.Type)
	}
	im.CreatedAt = now()
	s.images[im.ID] = im
	s.imageType[key] = im.ID
	return cloneImage(im), nil
}

// Image implements store.Images.
func (s *Store) Image(ctx context.Context, id string) (store.Image, error) {
	im, err := get(s, ctx, s.images, "image", id)
	return cloneImage(im), err
}

// ListImages implements store.Images.
func (s *Store) ListImages(ctx context.Context, f store.ImageFilter) ([]store.Image, error) {
	out, err := list(s, ctx, f.Page, s.images, func(im store.Image) bool {
		return orgMatches(f.Organization, f.IncludeShared, im.Organization) &&
			(f.BuildID == "" || im.BuildID == f.BuildID) &&
			(f.Type == "" || im.Type == f.Type)
	}, func(im store.Image) string { return im.ID })
	for i := range out {
		out[i] = cloneImage(out[i])
	}
	return out, err
}

// ---- devices ----

// PutDevice implements store.Devices.
func (s *Store) PutDevice(ctx context.Context, d store.Device) (store.Device, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Device{}, err
	}
	if err := d.Validate(); err != nil {
		return store.Device{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now()
	if old, ok := s.devices[d.ID]; ok {
		if old.Organization != d.Organization {
			if opID, busy := s.activeOp[d.ID]; busy {
				return store.Device{}, fmt.Errorf("%w: device %q has operation %s in progress and cannot move from organization %q to %q",
					store.ErrOrganizationMismatch, d.ID, opID, old.Organization, d.Organization)
			}
			if _, ok := s.firmware[d.ID]; ok {
				return store.Device{}, fmt.Errorf("%w: device %q has a firmware record and cannot move from organization %q to %q",
					store.ErrOrganizationMismatch, d.ID, old.Organization, d.Organization)
			}
		}
		d.CreatedAt = old.CreatedAt
	} else {
		d.CreatedAt = t
	}
	d.UpdatedAt = t
	s.devices[d.ID] = d
	if opID, ok := s.activeOp[d.ID]; ok {
		s.regroupOp(s.ops[opID]) // its location or group may have changed
	}
	return d, nil
}

// Device implements store.Devices.
func (s *Store) Device(ctx context.Context, id string) (store.Device, error) {
	return get(s, ctx, s.devices, "device", id)
}

// ListDevices implements store.Devices.
func (s *Store) ListDevices(ctx context.Context, f store.DeviceFilter) ([]store.Device, error) {
	return list(s, ctx, f.Page, s.devices, func(d store.Device) bool {
		return (f.Organization == "" || d.Organization == f.Organization) &&
			(f.Group == "" || d.Group == f.Group) &&
			(f.Location == "" || d.Location == f.Location) &&
			(f.OSIdentifier == "" || d.OSIdentifier == f.OSIdentifier)
	}, func(d store.Device) string { return d.ID })
}

// ---- device firmware ----

// PutDeviceFirmware implements store.DeviceFirmwares.
func (s *Store) PutDeviceFirmware(ctx context.Context, df store.DeviceFirmware) (store.DeviceFirmware, error) {
	if err := ctxErr(ctx); err != nil {
		return store.DeviceFirmware{}, err
	}
	if err := df.Validate(); err != nil {
		return store.DeviceFirmware{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[df.DeviceID]
	if !ok {
		return store.DeviceFirmware{}, notFound("device", df.DeviceID)
	}
	im, ok := s.images[df.ImageID]
	if !ok {
		return store.DeviceFirmware{}, notFound("image", df.ImageID)
	}
	if !store.ImageFitsOrganization(im.Organization, d.Organization) {
		return store.DeviceFirmware{}, fmt.Errorf("%w: image %s of organization %q, device %q of organization %q",
			store.ErrOrganizationMismatch, im.ID, im.Organization, d.ID, d.Organization)
	}
	df.UpdatedAt = now()
	s.firmware[df.DeviceID] = df
	return df, nil
}

// DeviceFirmware implements store.DeviceFirmwares.
func (s *Store) DeviceFirmware(ctx context.Context, deviceID string) (store.DeviceFirmware, error) {
	return get(s, ctx, s.firmware, "device firmware", deviceID)
}

// ListDeviceFirmware implements store.DeviceFirmwareLister.
func (s *Store) ListDeviceFirmware(ctx context.Context, deviceIDs []string) ([]store.DeviceFirmware, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := store.CheckDeviceFirmwareList(deviceIDs); err != nil {
		return nil, err
	}
	s.mu.RLock()
	out := make([]store.DeviceFirmware, 0, len(deviceIDs))
	for _, id := range deviceIDs {
		if df, ok := s.firmware[id]; ok {
			out = append(out, df)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b store.DeviceFirmware) int { return strings.Compare(a.DeviceID, b.DeviceID) })
	return slices.CompactFunc(out, func(a, b store.DeviceFirmware) bool { return a.DeviceID == b.DeviceID }), nil
}
