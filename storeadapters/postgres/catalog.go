package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fwupgrader/fwupgrader/store"
)

// get runs a query that returns one record, scanned by scan; no row is
// ErrNotFound naming kind and id.
func get[T any](s *Store, ctx context.Context, kind, id, q string, scan func(pgx.Row) (T, error)) (T, error) {
	var zero T
	if err := ctxErr(ctx); err != nil {
		return zero, err
	}
	v, err := scan(s.pool.QueryRow(ctx, s.sql(q), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return zero, notFound(kind, id)
	}
	if err != nil {
		return zero, translate(err)
	}
	return v, nil
}

// list runs a listing query and scans every row.
func list[T any](s *Store, ctx context.Context, p store.Page, q string, w *where, idCol string, scan func(pgx.Row) (T, error)) ([]T, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	tail := w.page(idCol, p)
	rows, err := s.pool.Query(ctx, s.sql(q+w.String()+tail), w.args...)
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
	if err != nil {
		return nil, translate(err)
	}
	if out == nil {
		out = []T{}
	}
	return out, nil
}

// ---- categories ----

const categoryCols = `id, organization, name, description, created_at, updated_at`

func scanCategory(r pgx.Row) (store.Category, error) {
	var c store.Category
	err := r.Scan(&c.ID, &c.Organization, &c.Name, &c.Description, &c.CreatedAt, &c.UpdatedAt)
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, err
}

// CreateCategory implements store.Categories.
func (s *Store) CreateCategory(ctx context.Context, c store.Category) (store.Category, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Category{}, err
	}
	if err := c.Validate(); err != nil {
		return store.Category{}, err
	}
	if c.ID == "" {
		c.ID = store.NewID()
	}
	err := s.pool.QueryRow(ctx, s.sql(`INSERT INTO {{schema}}.categories (id, organization, name, description, created_at, updated_at)
		VALUES ($1, $2, $3, $4, statement_timestamp(), statement_timestamp()) RETURNING created_at`),
		c.ID, c.Organization, c.Name, c.Description).Scan(&c.CreatedAt)
	if err != nil {
		return store.Category{}, translate(err)
	}
	c.CreatedAt = c.CreatedAt.UTC()
	c.UpdatedAt = c.CreatedAt
	return c, nil
}

// Category implements store.Categories.
func (s *Store) Category(ctx context.Context, id string) (store.Category, error) {
	return get(s, ctx, "category", id, `SELECT `+categoryCols+` FROM {{schema}}.categories WHERE id = $1`, scanCategory)
}

// ListCategories implements store.Categories.
func (s *Store) ListCategories(ctx context.Context, f store.CategoryFilter) ([]store.Category, error) {
	w := &where{}
	w.org("organization", f.Organization, f.IncludeShared)
	if f.Name != "" {
		w.add("name = " + w.arg(f.Name))
	}
	return list(s, ctx, f.Page, `SELECT `+categoryCols+` FROM {{schema}}.categories`, w, "id", scanCategory)
}

// ---- builds ----

const buildCols = `id, category_id, organization, version, os_identifier, changelog, created_at, updated_at`

func scanBuild(r pgx.Row) (store.Build, error) {
	var b store.Build
	err := r.Scan(&b.ID, &b.CategoryID, &b.Organization, &b.Version, &b.OSIdentifier, &b.Changelog, &b.CreatedAt, &b.UpdatedAt)
	b.CreatedAt, b.UpdatedAt = b.CreatedAt.UTC(), b.UpdatedAt.UTC()
	return b, err
}

// CreateBuild implements store.Builds. The build takes its category's
// organization.
func (s *Store) CreateBuild(ctx context.Context, b store.Build) (store.Build, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Build{}, err
	}
	if err := b.Validate(); err != nil {
		return store.Build{}, err
	}
	if b.ID == "" {
		b.ID = store.NewID()
	}
	err := s.pool.QueryRow(ctx, s.sql(`INSERT INTO {{schema}}.builds
		(id, category_id, organization, version, os_identifier, changelog, created_at, updated_at)
		SELECT $1, c.id, c.organization, $3, $4, $5, statement_timestamp(), statement_timestamp()
		FROM {{schema}}.categories c WHERE c.id = $2
		RETURNING organization, created_at`),
		b.ID, b.CategoryID, b.Version, b.OSIdentifier, b.Changelog).Scan(&b.Organization, &b.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Build{}, notFound("category", b.CategoryID)
	}
	if err != nil {
		return store.Build{}, translate(err)
	}
	b.CreatedAt = b.CreatedAt.UTC()
	b.UpdatedAt = b.CreatedAt
	return b, nil
}

// Build implements store.Builds.
func (s *Store) Build(ctx context.Context, id string) (store.Build, error) {
	return get(s, ctx, "build", id, `SELECT `+buildCols+` FROM {{schema}}.builds WHERE id = $1`, scanBuild)
}

// ListBuilds implements store.Builds.
func (s *Store) ListBuilds(ctx context.Context, f store.BuildFilter) ([]store.Build, error) {
	w := &where{}
	w.org("organization", f.Organization, f.IncludeShared)
	if f.CategoryID != "" {
		w.add("category_id = " + w.arg(f.CategoryID))
	}
	if f.OSIdentifier != "" {
		w.add("os_identifier = " + w.arg(f.OSIdentifier))
	}
	return list(s, ctx, f.Page, `SELECT `+buildCols+` FROM {{schema}}.builds`, w, "id", scanBuild)
}

// ---- images ----

const imageCols = `id, build_id, organization, type, name, size, sha256, boards, created_at`

func scanImage(r pgx.Row) (store.Image, error) {
	var im store.Image
	err := r.Scan(&im.ID, &im.BuildID, &im.Organization, &im.Type, &im.Name, &im.Size, &im.SHA256, &im.Boards, &im.CreatedAt)
	im.CreatedAt = im.CreatedAt.UTC()
	if len(im.Boards) == 0 {
		im.Boards = nil
	}
	return im, err
}

// CreateImage implements store.Images. The image takes its build's
// organization.
func (s *Store) CreateImage(ctx context.Context, im store.Image) (store.Image, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Image{}, err
	}
	if err := im.Validate(); err != nil {
		return store.Image{}, err
	}
	im.Boards = slices.Clone(im.Boards)
	if im.ID == "" {
		im.ID = store.NewID()
	}
	boards := im.Boards
	if boards == nil {
		boards = []string{}
	}
	err := s.pool.QueryRow(ctx, s.sql(`INSERT INTO {{schema}}.images
		(id, build_id, organization, type, name, size, sha256, boards, created_at)
		SELECT $1, b.id, b.organization, $3, $4, $5, $6, $7, statement_timestamp()
		FROM {{schema}}.builds b WHERE b.id = $2
		RETURNING organization, created_at`),
		im.ID, im.BuildID, im.Type, im.Name, im.Size, im.SHA256, boards).Scan(&im.Organization, &im.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Image{}, notFound("build", im.BuildID)
	}
	if err != nil {
		return store.Image{}, translate(err)
	}
	im.CreatedAt = im.CreatedAt.UTC()
	return im, nil
}

// Image implements store.Images.
func (s *Store) Image(ctx context.Context, id string) (store.Image, error) {
	return get(s, ctx, "image", id, `SELECT `+imageCols+` FROM {{schema}}.images WHERE id = $1`, scanImage)
}

// ListImages implements store.Images.
func (s *Store) ListImages(ctx context.Context, f store.ImageFilter) ([]store.Image, error) {
	w := &where{}
	w.org("organization", f.Organization, f.IncludeShared)
	if f.BuildID != "" {
		w.add("build_id = " + w.arg(f.BuildID))
	}
	if f.Type != "" {
		w.add("type = " + w.arg(f.Type))
	}
	return list(s, ctx, f.Page, `SELECT `+imageCols+` FROM {{schema}}.images`, w, "id", scanImage)
}

// ---- devices ----

const deviceCols = `id, organization, name, group_name, location, model, board_name, os_identifier, connection, address,
	active, created_at, updated_at`

func scanDevice(r pgx.Row) (store.Device, error) {
	var d store.Device
	err := r.Scan(&d.ID, &d.Organization, &d.Name, &d.Group, &d.Location, &d.Model, &d.BoardName, &d.OSIdentifier,
		&d.Connection, &d.Address, &d.Active, &d.CreatedAt, &d.UpdatedAt)
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return d, err
}

// PutDevice implements store.Devices. A move to another organization locks
// the device's row FOR UPDATE, which waits for every transaction creating
// an operation or a firmware record of the device (they hold it FOR KEY
// SHARE), so the check that it has neither cannot race them.
func (s *Store) PutDevice(ctx context.Context, d store.Device) (store.Device, error) {
	if err := ctxErr(ctx); err != nil {
		return store.Device{}, err
	}
	if err := d.Validate(); err != nil {
		return store.Device{}, err
	}
	var out store.Device
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var oldOrg string
		err := tx.QueryRow(ctx, s.sql(`SELECT organization FROM {{schema}}.devices WHERE id = $1 FOR NO KEY UPDATE`), d.ID).Scan(&oldOrg)
		exists := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if exists && oldOrg != d.Organization {
			if _, err := tx.Exec(ctx, s.sql(`SELECT 1 FROM {{schema}}.devices WHERE id = $1 FOR UPDATE`), d.ID); err != nil {
				return err
			}
			var opID string
			err := tx.QueryRow(ctx, s.sql(`SELECT id FROM {{schema}}.operations
				WHERE device_id = $1 AND state IN ('pending', 'in-progress')`), d.ID).Scan(&opID)
			if err == nil {
				return fmt.Errorf("%w: device %q has operation %s in progress and cannot move from organization %q to %q",
					store.ErrOrganizationMismatch, d.ID, opID, oldOrg, d.Organization)
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			var has bool
			if err := tx.QueryRow(ctx, s.sql(`SELECT EXISTS (SELECT 1 FROM {{schema}}.device_firmware WHERE device_id = $1)`),
				d.ID).Scan(&has); err != nil {
				return err
			}
			if has {
				return fmt.Errorf("%w: device %q has a firmware record and cannot move from organization %q to %q",
					store.ErrOrganizationMismatch, d.ID, oldOrg, d.Organization)
			}
		}
		args := []any{d.ID, d.Organization, d.Name, d.Group, d.Location, d.Model, d.BoardName, d.OSIdentifier,
			d.Connection, d.Address, d.Active}
		if exists {
			out, err = scanDevice(tx.QueryRow(ctx, s.sql(`UPDATE {{schema}}.devices SET organization = $2, name = $3,
				group_name = $4, location = $5, model = $6, board_name = $7, os_identifier = $8, connection = $9,
				address = $10, active = $11, updated_at = statement_timestamp()
				WHERE id = $1 RETURNING `+deviceCols), args...))
			return err
		}
		// A new device; if another call created it since the SELECT above,
		// run again to take the path of an existing one.
		row := tx.QueryRow(ctx, s.sql(`INSERT INTO {{schema}}.devices (`+deviceCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, statement_timestamp(), statement_timestamp())
			ON CONFLICT (id) DO NOTHING
			RETURNING `+deviceCols), args...)
		out, err = scanDevice(row)
		if errors.Is(err, pgx.ErrNoRows) {
			return errRetry
		}
		return err
	})
	if err != nil {
		return store.Device{}, err
	}
	return out, nil
}

// Device implements store.Devices.
func (s *Store) Device(ctx context.Context, id string) (store.Device, error) {
	return get(s, ctx, "device", id, `SELECT `+deviceCols+` FROM {{schema}}.devices WHERE id = $1`, scanDevice)
}

// ListDevices implements store.Devices.
func (s *Store) ListDevices(ctx context.Context, f store.DeviceFilter) ([]store.Device, error) {
	w := &where{}
	if f.Organization != "" {
		w.add("organization = " + w.arg(f.Organization))
	}
	if f.Group != "" {
		w.add("group_name = " + w.arg(f.Group))
	}
	if f.Location != "" {
		w.add("location = " + w.arg(f.Location))
	}
	if f.OSIdentifier != "" {
		w.add("os_identifier = " + w.arg(f.OSIdentifier))
	}
	return list(s, ctx, f.Page, `SELECT `+deviceCols+` FROM {{schema}}.devices`, w, "id", scanDevice)
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
	var out store.DeviceFirmware
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var devOrg, imOrg string
		err := tx.QueryRow(ctx, s.sql(`SELECT organization FROM {{schema}}.devices WHERE id = $1 FOR KEY SHARE`), df.DeviceID).Scan(&devOrg)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("device", df.DeviceID)
		}
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, s.sql(`SELECT organization FROM {{schema}}.images WHERE id = $1`), df.ImageID).Scan(&imOrg)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("image", df.ImageID)
		}
		if err != nil {
			return err
		}
		if !store.ImageFitsOrganization(imOrg, devOrg) {
			return fmt.Errorf("%w: image %s of organization %q, device %q of organization %q",
				store.ErrOrganizationMismatch, df.ImageID, imOrg, df.DeviceID, devOrg)
		}
		out = df
		err = tx.QueryRow(ctx, s.sql(`INSERT INTO {{schema}}.device_firmware (device_id, image_id, installed, updated_at)
			VALUES ($1, $2, $3, statement_timestamp())
			ON CONFLICT (device_id) DO UPDATE SET image_id = EXCLUDED.image_id, installed = EXCLUDED.installed,
				updated_at = EXCLUDED.updated_at
			RETURNING updated_at`), df.DeviceID, df.ImageID, df.Installed).Scan(&out.UpdatedAt)
		out.UpdatedAt = out.UpdatedAt.UTC()
		return err
	})
	if err != nil {
		return store.DeviceFirmware{}, err
	}
	return out, nil
}

// DeviceFirmware implements store.DeviceFirmwares.
func (s *Store) DeviceFirmware(ctx context.Context, deviceID string) (store.DeviceFirmware, error) {
	return get(s, ctx, "device firmware", deviceID,
		`SELECT device_id, image_id, installed, updated_at FROM {{schema}}.device_firmware WHERE device_id = $1`,
		scanDeviceFirmware)
}

func scanDeviceFirmware(r pgx.Row) (store.DeviceFirmware, error) {
	var df store.DeviceFirmware
	var t time.Time
	err := r.Scan(&df.DeviceID, &df.ImageID, &df.Installed, &t)
	df.UpdatedAt = t.UTC()
	return df, err
}

// ListDeviceFirmware implements store.DeviceFirmwareLister, in one query.
func (s *Store) ListDeviceFirmware(ctx context.Context, deviceIDs []string) ([]store.DeviceFirmware, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if err := store.CheckDeviceFirmwareList(deviceIDs); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT device_id, image_id, installed, updated_at
		FROM {{schema}}.device_firmware WHERE device_id = ANY($1) ORDER BY device_id`), deviceIDs)
	if err != nil {
		return nil, translate(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.DeviceFirmware, error) { return scanDeviceFirmware(r) })
	if err != nil {
		return nil, translate(err)
	}
	return out, nil
}
