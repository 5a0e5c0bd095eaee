package openwrttest

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// serveSFTP serves the sftp subsystem on ch with pkg/sftp's request server
// over the device's in-memory file store.
func (d *Device) serveSFTP(c *sconn, ch ssh.Channel) {
	defer d.wg.Done()
	h := &sftpHandler{d: d, c: c}
	srv := sftp.NewRequestServer(ch, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h})
	_ = srv.Serve()
	_ = srv.Close()
	ch.Close()
}

type sftpHandler struct {
	d *Device
	c *sconn
}

func (h *sftpHandler) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	p := cleanPath(r.Filepath)
	h.d.record("sftp:put " + p)
	h.d.mu.Lock()
	w, err := h.d.createLocked(p, r.Pflags().Append)
	h.d.mu.Unlock()
	if err != nil {
		return nil, pathErr("open", p, err)
	}
	w.markUpload(h.c)
	return &sftpWriter{w}, nil
}

// sftpWriter adds TransferError to fileWriter: an interrupted upload keeps
// what was received, as a real file system does.
type sftpWriter struct{ *fileWriter }

func (w *sftpWriter) TransferError(error) { _ = w.Close() }

func (h *sftpHandler) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	p := cleanPath(r.Filepath)
	h.d.record("sftp:get " + p)
	h.d.mu.Lock()
	b, exists, full := h.d.readLocked(p)
	isDir := h.d.isDirLocked(p)
	h.d.mu.Unlock()
	switch {
	case isDir:
		return nil, pathErr("open", p, errors.New("is a directory"))
	case !exists:
		return nil, os.ErrNotExist
	case !full:
		return nil, pathErr("read", p, errors.New("content not kept by the simulator"))
	}
	return bytes.NewReader(b), nil
}

func (h *sftpHandler) Filecmd(r *sftp.Request) error {
	p := cleanPath(r.Filepath)
	switch r.Method {
	case "Setstat":
		h.d.record("sftp:setstat " + p)
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		if !h.d.existsLocked(p) {
			return os.ErrNotExist
		}
		return nil
	case "Remove":
		h.d.record("sftp:remove " + p)
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		if h.d.isDirLocked(p) {
			return pathErr("remove", p, errors.New("is a directory"))
		}
		existed, err := h.d.removeLocked(p, false)
		if err != nil {
			return sftp.ErrSSHFxPermissionDenied
		}
		if !existed {
			return os.ErrNotExist
		}
		return nil
	case "Mkdir":
		h.d.record("sftp:mkdir " + p)
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		if h.d.existsLocked(p) {
			return sftp.ErrSSHFxFailure
		}
		if !h.d.isDirLocked(pathDir(p)) {
			return os.ErrNotExist
		}
		h.d.mkdirLocked(p)
		return nil
	case "Rmdir":
		h.d.record("sftp:rmdir " + p)
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		if !h.d.isDirLocked(p) || builtinDirs[p] {
			return sftp.ErrSSHFxFailure
		}
		if len(h.d.listLocked(p)) > 0 {
			return sftp.ErrSSHFxFailure
		}
		delete(h.d.dirs, p)
		return nil
	case "Rename", "PosixRename":
		t := cleanPath(r.Target)
		h.d.record("sftp:rename " + p + " " + t)
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		f, ok := h.d.files[p]
		if !ok {
			return os.ErrNotExist
		}
		if h.d.isDirLocked(t) || !h.d.isDirLocked(pathDir(t)) {
			return sftp.ErrSSHFxFailure
		}
		delete(h.d.files, p)
		h.d.files[t] = f
		return nil
	}
	return sftp.ErrSSHFxOpUnsupported
}

func (h *sftpHandler) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	p := cleanPath(r.Filepath)
	h.d.mu.Lock()
	defer h.d.mu.Unlock()
	switch r.Method {
	case "List":
		if !h.d.isDirLocked(p) {
			return nil, os.ErrNotExist
		}
		var out listerAt
		for _, n := range h.d.listLocked(p) {
			if fi, ok := h.d.statLocked(path.Join(p, n)); ok {
				out = append(out, fi)
			}
		}
		return out, nil
	case "Stat", "Lstat":
		fi, ok := h.d.statLocked(p)
		if !ok {
			return nil, os.ErrNotExist
		}
		return listerAt{fi}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

func (d *Device) statLocked(p string) (os.FileInfo, bool) {
	if d.isDirLocked(p) {
		return fileStat{name: path.Base(p), mode: fs.ModeDir | 0o755, mtime: d.bootTime}, true
	}
	if f, ok := d.files[p]; ok {
		return fileStat{name: path.Base(p), size: f.size, mode: 0o644, mtime: f.mtime}, true
	}
	if b, ok := d.virtualLocked(p); ok {
		return fileStat{name: path.Base(p), size: int64(len(b)), mode: 0o644, mtime: d.bootTime}, true
	}
	return nil, false
}

type listerAt []os.FileInfo

func (l listerAt) ListAt(dst []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(dst, l[off:])
	if off+int64(n) >= int64(len(l)) {
		return n, io.EOF
	}
	return n, nil
}

type fileStat struct {
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

func (f fileStat) Name() string       { return f.name }
func (f fileStat) Size() int64        { return f.size }
func (f fileStat) Mode() fs.FileMode  { return f.mode }
func (f fileStat) ModTime() time.Time { return f.mtime }
func (f fileStat) IsDir() bool        { return f.mode.IsDir() }
func (f fileStat) Sys() any           { return nil }

func pathErr(op, p string, err error) error { return &fs.PathError{Op: op, Path: p, Err: err} }
