package storetest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/store"
)

func categoryTests() []test {
	return []test{
		{"CreateAndGet", func(t *testing.T, f *fixture) {
			c, err := f.s.CreateCategory(f.ctx, store.Category{Organization: "org-a", Name: "Archer C7", Description: "TP-Link"})
			require.NoError(t, err)
			assert.NotEmpty(t, c.ID, "store assigns an ID")
			assert.False(t, c.CreatedAt.IsZero(), "CreatedAt set")
			assert.False(t, c.UpdatedAt.IsZero(), "UpdatedAt set")
			requireSame(t, store.Category{ID: c.ID, Organization: "org-a", Name: "Archer C7", Description: "TP-Link",
				CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}, c)
			got, err := f.s.Category(f.ctx, c.ID)
			require.NoError(t, err)
			requireSame(t, c, got)
		}},
		{"KeepsGivenID", func(t *testing.T, f *fixture) {
			c, err := f.s.CreateCategory(f.ctx, store.Category{ID: "my-category", Name: "x"})
			require.NoError(t, err)
			assert.Equal(t, "my-category", c.ID)
			_, err = f.s.Category(f.ctx, "my-category")
			require.NoError(t, err)
		}},
		{"DuplicateID", func(t *testing.T, f *fixture) {
			_, err := f.s.CreateCategory(f.ctx, store.Category{ID: "dup", Name: "one"})
			require.NoError(t, err)
			_, err = f.s.CreateCategory(f.ctx, store.Category{ID: "dup", Name: "two"})
			require.ErrorIs(t, err, store.ErrConflict)
		}},
		{"DuplicateNameSameOrganization", func(t *testing.T, f *fixture) {
			_, err := f.s.CreateCategory(f.ctx, store.Category{Organization: "org-a", Name: "same"})
			require.NoError(t, err)
			_, err = f.s.CreateCategory(f.ctx, store.Category{Organization: "org-a", Name: "same"})
			require.ErrorIs(t, err, store.ErrConflict)
			_, err = f.s.CreateCategory(f.ctx, store.Category{Name: "shared"})
			require.NoError(t, err)
			_, err = f.s.CreateCategory(f.ctx, store.Category{Name: "shared"})
			require.ErrorIs(t, err, store.ErrConflict, "shared categories are unique among shared ones")
		}},
		{"SameNameOtherOrganization", func(t *testing.T, f *fixture) {
			_, err := f.s.CreateCategory(f.ctx, store.Category{Organization: "org-a", Name: "same"})
			require.NoError(t, err)
			_, err = f.s.CreateCategory(f.ctx, store.Category{Organization: "org-b", Name: "same"})
			require.NoError(t, err)
		}},
		{"SameNameSharedAndOrganization", func(t *testing.T, f *fixture) {
			_, err := f.s.CreateCategory(f.ctx, store.Category{Name: "same"})
			require.NoError(t, err)
			_, err = f.s.CreateCategory(f.ctx, store.Category{Organization: "org-a", Name: "same"})
			require.NoError(t, err)
		}},
		{"UnknownID", func(t *testing.T, f *fixture) {
			_, err := f.s.Category(f.ctx, store.NewID())
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
	}
}

func buildTests() []test {
	return []test{
		{"CreateAndGet", func(t *testing.T, f *fixture) {
			c := f.category("org-a")
			b, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: c.ID, Version: "23.05.3",
				OSIdentifier: "OpenWrt 23.05.3 r23809-234f1a2efa", Changelog: "fixes"})
			require.NoError(t, err)
			assert.NotEmpty(t, b.ID)
			assert.False(t, b.CreatedAt.IsZero())
			requireSame(t, store.Build{ID: b.ID, CategoryID: c.ID, Organization: "org-a", Version: "23.05.3",
				OSIdentifier: "OpenWrt 23.05.3 r23809-234f1a2efa", Changelog: "fixes",
				CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt}, b)
			got, err := f.s.Build(f.ctx, b.ID)
			require.NoError(t, err)
			requireSame(t, b, got)
		}},
		{"OrganizationFromCategory", func(t *testing.T, f *fixture) {
			c := f.category("org-a")
			b, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: c.ID, Organization: "org-b", Version: "1"})
			require.NoError(t, err)
			assert.Equal(t, "org-a", b.Organization, "the category's organization wins over the caller's")
			shared := f.category("")
			b, err = f.s.CreateBuild(f.ctx, store.Build{CategoryID: shared.ID, Organization: "org-b", Version: "1"})
			require.NoError(t, err)
			assert.Empty(t, b.Organization, "a build of a shared category is shared")
		}},
		{"UnknownCategory", func(t *testing.T, f *fixture) {
			_, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: store.NewID(), Version: "1"})
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"DuplicateVersionSameCategory", func(t *testing.T, f *fixture) {
			c := f.category("org-a")
			_, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: c.ID, Version: "1.0"})
			require.NoError(t, err)
			_, err = f.s.CreateBuild(f.ctx, store.Build{CategoryID: c.ID, Version: "1.0"})
			require.ErrorIs(t, err, store.ErrConflict)
		}},
		{"SameVersionOtherCategory", func(t *testing.T, f *fixture) {
			for _, c := range []store.Category{f.category("org-a"), f.category("org-a"), f.category("")} {
				_, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: c.ID, Version: "1.0"})
				require.NoError(t, err)
			}
		}},
		{"DuplicateOSIdentifierSameOrganization", func(t *testing.T, f *fixture) {
			c1, c2 := f.category("org-a"), f.category("org-a")
			_, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: c1.ID, Version: "1", OSIdentifier: "OpenWrt 23.05.3"})
			require.NoError(t, err)
			_, err = f.s.CreateBuild(f.ctx, store.Build{CategoryID: c2.ID, Version: "2", OSIdentifier: "OpenWrt 23.05.3"})
			require.ErrorIs(t, err, store.ErrConflict, "OS identifier unique across the organization's categories")
		}},
		{"EmptyOSIdentifierRepeats", func(t *testing.T, f *fixture) {
			c := f.category("org-a")
			for _, v := range []string{"1", "2", "3"} {
				_, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: c.ID, Version: v})
				require.NoError(t, err)
			}
		}},
		{"SameOSIdentifierOtherOrganization", func(t *testing.T, f *fixture) {
			for _, org := range []string{"org-a", "org-b", ""} {
				_, err := f.s.CreateBuild(f.ctx, store.Build{CategoryID: f.category(org).ID, Version: "1", OSIdentifier: "OpenWrt 23.05.3"})
				require.NoError(t, err, "organization %q", org)
			}
		}},
		{"UnknownID", func(t *testing.T, f *fixture) {
			_, err := f.s.Build(f.ctx, store.NewID())
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
	}
}

func imageTests() []test {
	return []test{
		{"CreateAndGet", func(t *testing.T, f *fixture) {
			b := f.build(f.category("org-a").ID)
			in := store.Image{BuildID: b.ID, Type: "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
				Name: "openwrt.bin", Size: 4096, SHA256: sha("x"), Boards: []string{"tplink,archer-c7-v2"}}
			im, err := f.s.CreateImage(f.ctx, in)
			require.NoError(t, err)
			assert.NotEmpty(t, im.ID)
			assert.False(t, im.CreatedAt.IsZero())
			want := in
			want.ID, want.Organization, want.CreatedAt = im.ID, "org-a", im.CreatedAt
			requireSame(t, want, im)
			got, err := f.s.Image(f.ctx, im.ID)
			require.NoError(t, err)
			requireSame(t, im, got)
		}},
		{"OrganizationFromBuild", func(t *testing.T, f *fixture) {
			b := f.build(f.category("org-a").ID)
			im, err := f.s.CreateImage(f.ctx, store.Image{BuildID: b.ID, Organization: "org-b", Type: "t", Name: "n", SHA256: sha("1")})
			require.NoError(t, err)
			assert.Equal(t, "org-a", im.Organization)
			shared := f.build(f.category("").ID)
			im, err = f.s.CreateImage(f.ctx, store.Image{BuildID: shared.ID, Organization: "org-b", Type: "t", Name: "n", SHA256: sha("1")})
			require.NoError(t, err)
			assert.Empty(t, im.Organization, "an image of a shared category is shared")
		}},
		{"UnknownBuild", func(t *testing.T, f *fixture) {
			_, err := f.s.CreateImage(f.ctx, store.Image{BuildID: store.NewID(), Type: "t", Name: "n", SHA256: sha("1")})
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{"DuplicateTypeSameBuild", func(t *testing.T, f *fixture) {
			b := f.build(f.category("org-a").ID)
			_, err := f.s.CreateImage(f.ctx, store.Image{BuildID: b.ID, Type: "t", Name: "a", SHA256: sha("1")})
			require.NoError(t, err)
			_, err = f.s.CreateImage(f.ctx, store.Image{BuildID: b.ID, Type: "t", Name: "b", SHA256: sha("2")})
			require.ErrorIs(t, err, store.ErrConflict)
		}},
		{"SameTypeOtherBuild", func(t *testing.T, f *fixture) {
			c := f.category("org-a")
			for range 2 {
				_, err := f.s.CreateImage(f.ctx, store.Image{BuildID: f.build(c.ID).ID, Type: "t", Name: "a", SHA256: sha("1")})
				require.NoError(t, err)
			}
		}},
		{"UnknownID", func(t *testing.T, f *fixture) {
			_, err := f.s.Image(f.ctx, store.NewID())
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
	}
}
