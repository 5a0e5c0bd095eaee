package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// FileChunkSize is the size of the chunks Files stores an image's bytes in
// (the last chunk of an image may be shorter). A file records the chunk
// size it was written with, so a later version may change it.
const FileChunkSize = 512 << 10

// maxFileKeyLen bounds a file's key, in bytes.
const maxFileKeyLen = 255

// Files keeps the bytes of firmware images in PostgreSQL (upgrader.Files),
// in the schema of a Store, so that engines on several machines need
// nothing but the database:
//
//	files, err := postgres.NewFiles(pool, postgres.WithSchema("fwupgrader"))
//	eng, err := upgrader.NewEngine(s, reg, &upgrader.Config{Files: files})
//
// An image is a header row (image_files: its size) and chunks of
// FileChunkSize bytes (image_chunks, bytea stored uncompressed out of
// line), created by migration 0002 (Store.Migrate, or Migrate here). Put
// streams: it reads one chunk at a time and inserts it, all in one
// transaction, so a failed Put leaves nothing and its memory does not grow
// with the image. Open reads the header only; its reader fetches chunks as
// they are read (one query per chunk, the last chunk fetched kept), and
// implements io.ReaderAt, io.Seeker and Size. It is safe for concurrent use.
type Files struct {
	s *Store
}

var _ upgrader.Files = (*Files)(nil)

// NewFiles returns the image store of pool, in the schema the options name
// (the options of New: WithSchema; DefaultSchema otherwise). The pool is the
// host's; NewFiles does not close it. Migrate the schema (Store.Migrate or
// Files.Migrate) before use.
func NewFiles(pool *pgxpool.Pool, opts ...Option) (*Files, error) {
	s, err := New(pool, opts...)
	if err != nil {
		return nil, err
	}
	return &Files{s: s}, nil
}

// Schema returns the schema the files are kept in.
func (f *Files) Schema() string { return f.s.schema }

// Migrate applies the store's migrations to the schema, as Store.Migrate
// does (the files' tables are part of them).
func (f *Files) Migrate(ctx context.Context) error { return f.s.Migrate(ctx) }

func checkFileKey(key string) error {
	if key == "" || len(key) > maxFileKeyLen || !utf8.ValidString(key) || strings.ContainsRune(key, 0) {
		return fmt.Errorf("store/postgres: invalid file key %q (1 to %d bytes of UTF-8, no NUL)", key, maxFileKeyLen)
	}
	return nil
}

// Put implements upgrader.Files: the header and every chunk in one
// transaction, reading r one chunk at a time. A key that exists (or that a
// Put in progress is writing) is an error matching store.ErrConflict; on
// any error nothing stays stored.
func (f *Files) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := checkFileKey(key); err != nil {
		return 0, err
	}
	if err := ctxErr(ctx); err != nil {
		return 0, err
	}
	tx, err := f.s.pool.BeginTx(ctx, txOptions)
	if err != nil {
		return 0, fmt.Errorf("store/postgres: file %q: %w", key, err)
	}
	defer func() {
		// A no-op once committed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx)
	}()
	if _, err := tx.Exec(ctx, f.s.sql(`INSERT INTO {{schema}}.image_files (key, size, chunk_size, created_at)
		VALUES ($1, 0, $2, clock_timestamp())`), key, FileChunkSize); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return 0, fmt.Errorf("%w: file %q exists", store.ErrConflict, key)
		}
		return 0, fmt.Errorf("store/postgres: file %q: %w", key, err)
	}
	insert := f.s.sql(`INSERT INTO {{schema}}.image_chunks (key, seq, data) VALUES ($1, $2, $3)`)
	buf := make([]byte, FileChunkSize)
	src := ctxReader{ctx, r}
	var n int64
	for seq := int32(0); ; seq++ {
		m, rerr := io.ReadFull(src, buf)
		if m > 0 {
			if _, err := tx.Exec(ctx, insert, key, seq, buf[:m]); err != nil {
				return 0, fmt.Errorf("store/postgres: file %q: chunk %d: %w", key, seq, err)
			}
			n += int64(m)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return 0, fmt.Errorf("store/postgres: file %q: reading: %w", key, rerr)
		}
	}
	if _, err := tx.Exec(ctx, f.s.sql(`UPDATE {{schema}}.image_files SET size = $2 WHERE key = $1`), key, n); err != nil {
		return 0, fmt.Errorf("store/postgres: file %q: %w", key, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("store/postgres: file %q: %w", key, err)
	}
	return n, nil
}

// Open implements upgrader.Files: a missing key (or one a Put in progress
// is writing) is upgrader.ErrFileNotFound. The reader (a *FileReader) runs
// its queries under ctx, one per chunk read, each on any connection of the
// pool: it holds none between reads.
func (f *Files) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkFileKey(key); err != nil {
		return nil, err
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var size int64
	var chunk int32
	err := f.s.pool.QueryRow(ctx, f.s.sql(`SELECT size, chunk_size FROM {{schema}}.image_files WHERE key = $1`), key).
		Scan(&size, &chunk)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", upgrader.ErrFileNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("store/postgres: file %q: %w", key, err)
	}
	return &FileReader{f: f, ctx: ctx, key: key, size: size, chunk: int64(chunk), seq: -1}, nil
}

// Remove implements upgrader.Files: it deletes the header and, with it,
// the chunks. A missing key is not an error. A reader open on the file
// fails at its next chunk.
func (f *Files) Remove(ctx context.Context, key string) error {
	if err := checkFileKey(key); err != nil {
		return err
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if _, err := f.s.pool.Exec(ctx, f.s.sql(`DELETE FROM {{schema}}.image_files WHERE key = $1`), key); err != nil {
		return fmt.Errorf("store/postgres: file %q: %w", key, err)
	}
	return nil
}

// FileReader reads a file of Files, fetching its chunks as they are read.
// It is safe for concurrent use (calls run one at a time).
type FileReader struct {
	f     *Files
	ctx   context.Context
	key   string
	size  int64
	chunk int64

	mu     sync.Mutex
	off    int64  // of Read and Seek
	seq    int64  // the chunk in buf, -1 for none
	buf    []byte // the last chunk fetched
	closed bool
}

var (
	_ io.ReaderAt   = (*FileReader)(nil)
	_ io.ReadSeeker = (*FileReader)(nil)
)

var errFileClosed = errors.New("store/postgres: file reader closed")

// Size returns the file's size in bytes.
func (r *FileReader) Size() int64 { return r.size }

// Read implements io.Reader.
func (r *FileReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errFileClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := r.readAt(p, r.off)
	r.off += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

// ReadAt implements io.ReaderAt: it fetches the chunks that cover the range
// (none when the last one fetched does).
func (r *FileReader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errFileClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("store/postgres: file %q: negative offset %d", r.key, off)
	}
	return r.readAt(p, off)
}

// Seek implements io.Seeker.
func (r *FileReader) Seek(offset int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errFileClosed
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, fmt.Errorf("store/postgres: file %q: invalid whence %d", r.key, whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("store/postgres: file %q: negative position %d", r.key, offset)
	}
	r.off = offset
	return offset, nil
}

// Close implements io.Closer. The reader holds no connection: Close only
// lets its buffer go.
func (r *FileReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed, r.buf = true, nil
	return nil
}

// readAt reads at off, with r.mu held.
func (r *FileReader) readAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < r.size {
		seq := off / r.chunk
		data, err := r.fetch(seq)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], data[off-seq*r.chunk:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fetch returns chunk seq, from the database unless it is the one in buf.
func (r *FileReader) fetch(seq int64) ([]byte, error) {
	if r.seq == seq {
		return r.buf, nil
	}
	want := min(r.chunk, r.size-seq*r.chunk)
	if r.buf == nil {
		r.buf = make([]byte, min(r.chunk, r.size))
	}
	r.seq = -1
	b := pgtype.PreallocBytes(r.buf[:cap(r.buf)])
	err := r.f.s.pool.QueryRow(r.ctx, r.f.s.sql(`SELECT data FROM {{schema}}.image_chunks WHERE key = $1 AND seq = $2`),
		r.key, int32(seq)).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q: chunk %d is gone (removed while read)", upgrader.ErrFileNotFound, r.key, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("store/postgres: file %q: chunk %d: %w", r.key, seq, err)
	}
	if int64(len(b)) != want {
		return nil, fmt.Errorf("store/postgres: file %q: chunk %d has %d bytes, want %d", r.key, seq, len(b), want)
	}
	r.buf, r.seq = b, seq
	return b, nil
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
