package upgrader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
)

// Files stores the bytes of firmware images, keyed by image ID. Hosts plug
// in their own (object storage, a shared volume); MemFiles and DirFiles are
// provided.
type Files interface {
	// Put stores everything r yields under key, replacing nothing: a key
	// that exists is an error. It returns the number of bytes stored. On
	// error nothing stays stored.
	Put(ctx context.Context, key string, r io.Reader) (int64, error)
	// Open returns a reader of the bytes stored under key. Readers that
	// also implement io.ReaderAt let the engine read image metadata without
	// reading the whole file.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// Remove deletes key. Removing a missing key is not an error.
	Remove(ctx context.Context, key string) error
}

// ErrFileNotFound is returned by Files.Open for a missing key.
var ErrFileNotFound = errors.New("upgrader: image file not found")

var keyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func checkKey(key string) error {
	if !keyRE.MatchString(key) {
		return fmt.Errorf("upgrader: invalid file key %q", key)
	}
	return nil
}

// MemFiles keeps images in memory. It is safe for concurrent use.
type MemFiles struct {
	mu sync.RWMutex
	m  map[string][]byte
}

// NewMemFiles returns an empty MemFiles.
func NewMemFiles() *MemFiles { return &MemFiles{m: map[string][]byte{}} }

// Put implements Files.
func (f *MemFiles) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, ctxReader{ctx, r})
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.m[key]; dup {
		return 0, fmt.Errorf("upgrader: file %q exists", key)
	}
	// Keep exactly the bytes read: the buffer grew by doubling, and a
	// 32 MiB image would otherwise hold up to 64 MiB for as long as it is
	// stored.
	b := buf.Bytes()
	if cap(b) > len(b)+len(b)/8 {
		b = bytes.Clone(b)
	}
	f.m[key] = b
	return n, nil
}

// Open implements Files. The reader implements io.ReaderAt.
func (f *MemFiles) Open(_ context.Context, key string) (io.ReadCloser, error) {
	f.mu.RLock()
	b, ok := f.m[key]
	f.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrFileNotFound, key)
	}
	return memReader{bytes.NewReader(b)}, nil
}

// Remove implements Files.
func (f *MemFiles) Remove(_ context.Context, key string) error {
	f.mu.Lock()
	delete(f.m, key)
	f.mu.Unlock()
	return nil
}

type memReader struct{ *bytes.Reader }

func (memReader) Close() error { return nil }

// DirFiles keeps images as files in a directory.
type DirFiles struct{ dir string }

// NewDirFiles returns a DirFiles storing into dir, which must exist.
func NewDirFiles(dir string) (*DirFiles, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("upgrader: image directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("upgrader: image directory %s is not a directory", dir)
	}
	return &DirFiles{dir: dir}, nil
}

// Put implements Files: it writes to a temporary file and renames it into
// place, so a failed Put leaves nothing behind.
func (d *DirFiles) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	dst := filepath.Join(d.dir, key)
	if _, err := os.Stat(dst); err == nil {
		return 0, fmt.Errorf("upgrader: file %q exists", key)
	}
	tmp, err := os.CreateTemp(d.dir, ".put-*")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(tmp, ctxReader{ctx, r})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	return n, nil
}

// Open implements Files. The reader is an *os.File (an io.ReaderAt).
func (d *DirFiles) Open(_ context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(d.dir, key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrFileNotFound, key)
	}
	return f, err
}

// Remove implements Files.
func (d *DirFiles) Remove(_ context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(d.dir, key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
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
