package postgres_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres/pgtest"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

const fileChunk = postgres.FileChunkSize

// filesNew returns a Files in a new migrated schema of pool.
func filesNew(t testing.TB, pool *pgxpool.Pool) *postgres.Files {
	t.Helper()
	s := newStore(t, pool)
	f, err := postgres.NewFiles(pool, postgres.WithSchema(s.Schema()))
	require.NoError(t, err)
	require.Equal(t, s.Schema(), f.Schema())
	return f
}

// filesRows counts the header and chunk rows of key.
func filesRows(t testing.TB, pool *pgxpool.Pool, f *postgres.Files, key string) (headers, chunks int) {
	t.Helper()
	q := pgx.Identifier{f.Schema()}.Sanitize()
	require.NoError(t, pool.QueryRow(t.Context(), fmt.Sprintf(`SELECT
		(SELECT count(*) FROM %[1]s.image_files WHERE key = $1), (SELECT count(*) FROM %[1]s.image_chunks WHERE key = $1)`, q),
		key).Scan(&headers, &chunks))
	return headers, chunks
}

func filesRandom(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestFilesRoundTrip(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	files := filesNew(t, pool)
	ctx := t.Context()
	for i, size := range []int{0, 1, fileChunk - 1, fileChunk, fileChunk + 1, 5*fileChunk + 17} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := filesRandom(uint64(i), size)
			key := fmt.Sprintf("image-%d", size)
			n, err := files.Put(ctx, key, bytes.NewReader(data))
			require.NoError(t, err)
			assert.Equal(t, int64(size), n)
			headers, chunks := filesRows(t, pool, files, key)
			assert.Equal(t, 1, headers)
			assert.Equal(t, (size+fileChunk-1)/fileChunk, chunks)

			rc, err := files.Open(ctx, key)
			require.NoError(t, err)
			defer rc.Close()
			fr, ok := rc.(*postgres.FileReader)
			require.True(t, ok)
			assert.Equal(t, int64(size), fr.Size())
			got, err := io.ReadAll(rc)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(data, got), "the bytes read back")

			// ReadAt anywhere, within and across chunks and past the end,
			// answers as a bytes.Reader does.
			ra, ok := rc.(io.ReaderAt)
			require.True(t, ok, "the reader implements io.ReaderAt")
			want := bytes.NewReader(data)
			r := rand.New(rand.NewPCG(uint64(size), 1))
			for range 60 {
				off := r.Int64N(int64(size) + 10)
				p := make([]byte, r.IntN(2*fileChunk+3))
				if r.IntN(4) == 0 { // at a fileChunk boundary
					off = min(int64(r.IntN(6))*fileChunk, int64(size))
				}
				n, err := ra.ReadAt(p, off)
				q := make([]byte, len(p))
				wn, werr := want.ReadAt(q, off)
				require.Equal(t, wn, n, "ReadAt(%d bytes, %d)", len(p), off)
				require.Equal(t, werr, err, "ReadAt(%d bytes, %d)", len(p), off)
				require.True(t, bytes.Equal(q[:wn], p[:n]), "ReadAt(%d bytes, %d)", len(p), off)
			}
			_, err = ra.ReadAt(make([]byte, 1), -1)
			assert.Error(t, err)

			// Seek then Read.
			if size > 2 {
				sk := rc.(io.Seeker)
				pos, err := sk.Seek(-2, io.SeekEnd)
				require.NoError(t, err)
				assert.Equal(t, int64(size-2), pos)
				tail, err := io.ReadAll(rc)
				require.NoError(t, err)
				assert.Equal(t, data[size-2:], tail)
			}
			require.NoError(t, rc.Close())
			_, err = rc.Read(make([]byte, 1))
			assert.Error(t, err, "read after Close")
		})
	}
}

// filesFailingReader yields n bytes, then fails.
type filesFailingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *filesFailingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	p = p[:min(len(p), f.n)]
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestFilesPutFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	files := filesNew(t, pool)
	ctx := t.Context()
	boom := errors.New("boom")
	_, err := files.Put(ctx, "broken", &filesFailingReader{r: bytes.NewReader(filesRandom(1, 3*fileChunk)), n: fileChunk + fileChunk/2, err: boom})
	require.ErrorIs(t, err, boom)
	_, err = files.Open(ctx, "broken")
	assert.ErrorIs(t, err, upgrader.ErrFileNotFound)
	headers, chunks := filesRows(t, pool, files, "broken")
	assert.Equal(t, 0, headers)
	assert.Equal(t, 0, chunks)

	// A context that ends half-way does the same.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(filesRandom(3, fileChunk+10))
		cancel()
		_ = pw.CloseWithError(context.Canceled)
	}()
	_, err = files.Put(cctx, "cancelled", pr)
	require.Error(t, err)
	headers, chunks = filesRows(t, pool, files, "cancelled")
	assert.Equal(t, 0, headers+chunks)

	// The key is free: a Put of it works.
	n, err := files.Put(ctx, "broken", bytes.NewReader([]byte("fine")))
	require.NoError(t, err)
	assert.Equal(t, int64(4), n)
}

func TestFilesDuplicatePutKeepsTheFirst(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	files := filesNew(t, pool)
	ctx := t.Context()
	first := filesRandom(1, fileChunk+5)
	_, err := files.Put(ctx, "k", bytes.NewReader(first))
	require.NoError(t, err)
	_, err = files.Put(ctx, "k", bytes.NewReader(filesRandom(2, 10)))
	require.ErrorIs(t, err, store.ErrConflict)
	rc, err := files.Open(ctx, "k")
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(first, got))

	// A Put racing one in progress on the same key waits for it, then
	// fails; the first one's bytes stay.
	pr, pw := io.Pipe()
	firstDone := make(chan error, 1)
	go func() {
		_, err := files.Put(ctx, "race", pr)
		firstDone <- err
	}()
	_, err = pw.Write(filesRandom(3, fileChunk+1)) // the first Put inserted its header and a fileChunk
	require.NoError(t, err)
	secondDone := make(chan error, 1)
	go func() {
		_, err := files.Put(ctx, "race", bytes.NewReader([]byte("second")))
		secondDone <- err
	}()
	_, err = files.Open(ctx, "race")
	assert.ErrorIs(t, err, upgrader.ErrFileNotFound, "not there before the Put commits")
	require.NoError(t, pw.Close())
	require.NoError(t, <-firstDone)
	assert.ErrorIs(t, <-secondDone, store.ErrConflict)
	rc, err = files.Open(ctx, "race")
	require.NoError(t, err)
	assert.Equal(t, int64(fileChunk+1), rc.(*postgres.FileReader).Size())
}

func TestFilesRemove(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	files := filesNew(t, pool)
	ctx := t.Context()
	_, err := files.Put(ctx, "gone", bytes.NewReader(filesRandom(1, 2*fileChunk+1)))
	require.NoError(t, err)
	open, err := files.Open(ctx, "gone")
	require.NoError(t, err)
	_, err = open.Read(make([]byte, 10)) // fetches fileChunk 0
	require.NoError(t, err)

	require.NoError(t, files.Remove(ctx, "gone"))
	_, err = files.Open(ctx, "gone")
	assert.ErrorIs(t, err, upgrader.ErrFileNotFound)
	headers, chunks := filesRows(t, pool, files, "gone")
	assert.Equal(t, 0, headers+chunks)
	require.NoError(t, files.Remove(ctx, "gone"), "removing a missing key is no error")
	require.NoError(t, files.Remove(ctx, "never-there"))

	// A reader open on it fails at its next fileChunk.
	_, err = io.ReadAll(open)
	assert.ErrorIs(t, err, upgrader.ErrFileNotFound)

	for _, bad := range []string{"", "a\x00b", string([]byte{0xff}), string(make([]byte, 256))} {
		_, err := files.Put(ctx, bad, bytes.NewReader(nil))
		assert.Error(t, err, "%q", bad)
	}
}

// filesStream yields n deterministic pseudo-random bytes without holding them.
func filesStream(seed byte, n int64) io.Reader {
	var s [32]byte
	s[0] = seed
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// TestFilesMemoryBounded puts and reads a 32 MiB image and measures how far
// the process's heap grows meanwhile: a few chunks, never the image. Not
// parallel: it measures the whole process.
func TestFilesMemoryBounded(t *testing.T) {
	pool := pgtest.Start(t)
	files := filesNew(t, pool)
	ctx := t.Context()
	const size = 32 << 20
	// Warm the pool's connections and statements up.
	_, err := files.Put(ctx, "warm", filesStream(9, 2*fileChunk))
	require.NoError(t, err)
	rc, err := files.Open(ctx, "warm")
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, rc)
	require.NoError(t, err)

	// A low GC target, so the heap measured is what is live, not garbage
	// waiting for a collection.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var mu sync.Mutex
	peak := base
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapAlloc)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	measure := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		growth := int64(peak) - int64(base)
		t.Logf("%s: the heap grew by at most %.1f MiB", what, float64(growth)/(1<<20))
		assert.Less(t, growth, int64(8<<20), "%s of a %d MiB image", what, size>>20)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		base, peak = ms.HeapAlloc, ms.HeapAlloc
	}

	in := sha256.New()
	n, err := files.Put(ctx, "big", io.TeeReader(filesStream(1, size), in))
	require.NoError(t, err)
	require.Equal(t, int64(size), n)
	measure("Put")

	rc, err = files.Open(ctx, "big")
	require.NoError(t, err)
	out := sha256.New()
	read, err := io.Copy(out, rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Equal(t, int64(size), read)
	assert.Equal(t, in.Sum(nil), out.Sum(nil))
	measure("Open and read")
	close(stop)
	<-stopped
}

// TestFilesWithEngine: an engine keeps its images in PostgreSQL. CreateImage
// reads the image's fwtool metadata (its boards: the image type is in no
// image map) through ReaderAt, and an upgrade reads the whole image.
func TestFilesWithEngine(t *testing.T) {
	t.Parallel()
	pool := pgtest.Start(t)
	s := newStore(t, pool)
	files, err := postgres.NewFiles(pool, postgres.WithSchema(s.Schema()))
	require.NoError(t, err)
	reg := upgrader.NewRegistry()
	fake := &upgradertest.Fake{ReadImage: true}
	require.NoError(t, reg.Register("fake", fake))
	eng, err := upgrader.NewEngine(s, reg, &upgrader.Config{Files: files, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ctx := t.Context()
	cat := must(eng.CreateCategory(ctx, store.Category{Organization: "org", Name: "routers"}))
	build := must(eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05.3"}))
	// The metadata block (at the end) straddles the last two chunks.
	img := openwrttest.Image{Boards: []string{"acme,router-x"}, Release: "OpenWrt 23.05.3 r23809-234f1a2efa", Fwtool: true,
		Size: 2*fileChunk + 100}
	im, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: "acme-router-x-squashfs-sysupgrade.bin"}, img.Reader())
	require.NoError(t, err)
	assert.Equal(t, []string{"acme,router-x"}, im.Boards, "read from the image's metadata")
	assert.Equal(t, img.Len(), im.Size)
	assert.Equal(t, img.SHA256(), im.SHA256)

	d := must(eng.RegisterDevice(ctx, store.Device{ID: "acme-1", Organization: "org", Model: "ACME Router X",
		BoardName: "acme,router-x", Connection: "fake", Active: true}))
	op, err := eng.Upgrade(ctx, upgrader.Request{DeviceID: d.ID, ImageID: im.ID})
	require.NoError(t, err)
	assert.Equal(t, status.Success, op.State)
	assert.Equal(t, 100, op.Progress)
	assert.Equal(t, 1, fake.Flashed(op.ID))

	rc, err := files.Open(ctx, im.ID)
	require.NoError(t, err)
	defer rc.Close()
	h := sha256.New()
	_, err = io.Copy(h, rc)
	require.NoError(t, err)
	assert.Equal(t, im.SHA256, fmt.Sprintf("%x", h.Sum(nil)))

	// A refused image leaves no file behind.
	_, err = eng.UploadImage(ctx, store.Image{BuildID: build.ID, Type: "mystery-sysupgrade.bin"}, bytes.NewReader([]byte("abc")))
	require.ErrorIs(t, err, upgrader.ErrUnknownImageType)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{s.Schema()}.Sanitize()+`.image_files`).Scan(&n))
	assert.Equal(t, 1, n)
}
