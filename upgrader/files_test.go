package upgrader_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/upgrader"
)

// failAfter yields n bytes of 'x', then fails.
type failAfter struct{ n int }

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("source broke")
	}
	k := min(len(p), f.n)
	for i := range k {
		p[i] = 'x'
	}
	f.n -= k
	return k, nil
}

func TestFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		files func(t *testing.T) upgrader.Files
	}{
		{"Mem", func(*testing.T) upgrader.Files { return upgrader.NewMemFiles() }},
		{"Dir", func(t *testing.T) upgrader.Files {
			d, err := upgrader.NewDirFiles(t.TempDir())
			require.NoError(t, err)
			return d
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := tc.files(t)

			n, err := f.Put(ctx, "img-1", strings.NewReader("hello firmware"))
			require.NoError(t, err)
			assert.Equal(t, int64(14), n)
			rc, err := f.Open(ctx, "img-1")
			require.NoError(t, err)
			ra, ok := rc.(io.ReaderAt)
			require.True(t, ok, "readers allow random access, for the metadata trailer")
			buf := make([]byte, 8)
			_, err = ra.ReadAt(buf, 6)
			require.NoError(t, err)
			assert.Equal(t, "firmware", string(buf))
			require.NoError(t, rc.Close())

			_, err = f.Put(ctx, "img-1", strings.NewReader("again"))
			assert.Error(t, err, "an existing key is never replaced")

			_, err = f.Put(ctx, "img-2", &failAfter{n: 1000})
			assert.ErrorContains(t, err, "source broke")
			_, err = f.Open(ctx, "img-2")
			assert.ErrorIs(t, err, upgrader.ErrFileNotFound, "a failed Put leaves nothing")

			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err = f.Put(cctx, "img-3", strings.NewReader("x"))
			assert.ErrorIs(t, err, context.Canceled)

			for _, bad := range []string{"", "../etc/passwd", "a/b", ".hidden", strings.Repeat("k", 200)} {
				_, err := f.Put(ctx, bad, strings.NewReader("x"))
				assert.Error(t, err, "key %q", bad)
			}

			require.NoError(t, f.Remove(ctx, "img-1"))
			require.NoError(t, f.Remove(ctx, "img-1"), "removing a missing key is fine")
			_, err = f.Open(ctx, "img-1")
			assert.ErrorIs(t, err, upgrader.ErrFileNotFound)
		})
	}
}

func TestDirFilesLeavesNoTemporaryFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, err := upgrader.NewDirFiles(dir)
	require.NoError(t, err)
	_, err = f.Put(context.Background(), "img", &failAfter{n: 100 << 10})
	require.Error(t, err)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)

	_, err = upgrader.NewDirFiles(dir + "/missing")
	assert.Error(t, err)
}
