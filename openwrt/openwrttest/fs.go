package openwrttest

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	// headSize is how much of every file is kept.
	headSize = 4 << 10
	// smallFileSize: files below this size are kept whole.
	smallFileSize = 64 << 10
	// corruptOffset is where CorruptUploads flips a byte in large files;
	// it is past the kept head, so an image header stays readable.
	corruptOffset = headSize
	// maxPending bounds the out-of-order SFTP data kept per upload.
	maxPending = 16 << 20
)

var errNoSpace = errors.New("No space left on device")

// file is one regular file of the in-memory store.
type file struct {
	size    int64
	sum     [sha256.Size]byte
	md5     [md5.Size]byte
	head    []byte // the first headSize bytes
	tail    []byte // the last tailSize bytes
	tailCRC uint32 // CRC-32 (IEEE) of the bytes before tail
	data    []byte // whole content, when full
	full    bool
	mtime   time.Time
	noMD5   bool // written with Config.NoMD5: md5 is unknown
}

func newFileFromBytes(b []byte) *file {
	f := &file{size: int64(len(b)), sum: sha256.Sum256(b), md5: md5.Sum(b), mtime: time.Now()}
	f.head = append([]byte(nil), b[:min(len(b), headSize)]...)
	var t tailWriter
	_, _ = t.Write(b)
	f.tail, f.tailCRC = t.tail, t.crc
	if len(b) < smallFileSize {
		f.data = append([]byte(nil), b...)
		f.full = true
	}
	return f
}

// FileInfo describes a file of a device.
type FileInfo struct {
	// Path is the absolute path.
	Path string
	// Size in bytes.
	Size int64
	// SHA256 is the hex digest of the content.
	SHA256 string
	// MD5 is the hex MD5 digest of the content.
	MD5 string
	// Head is the first 4 KiB of the content.
	Head []byte
	// Content is the whole content for files smaller than 64 KiB, else nil.
	Content []byte
}

// File returns the file at path p: a regular file of the store or a
// generated one such as /etc/openwrt_release or /proc/meminfo.
func (d *Device) File(p string) (FileInfo, bool) {
	p = cleanPath(p)
	d.mu.Lock()
	defer d.mu.Unlock()
	if b, ok := d.virtualLocked(p); ok {
		f := newFileFromBytes(b)
		return f.info(p), true
	}
	f, ok := d.files[p]
	if !ok {
		return FileInfo{}, false
	}
	return f.info(p), true
}

// Files returns the paths of the regular files in the store, sorted.
func (d *Device) Files() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.files))
	for p := range d.files {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func (f *file) info(p string) FileInfo {
	fi := FileInfo{Path: p, Size: f.size, SHA256: hex.EncodeToString(f.sum[:]), MD5: hex.EncodeToString(f.md5[:]), Head: append([]byte(nil), f.head...)}
	if f.full {
		fi.Content = append([]byte(nil), f.data...)
	}
	return fi
}

// noPath is what an empty path argument resolves to: a path no file can
// have (a NUL byte), so that, as on a real system, an empty argument names
// nothing and "rm -rf" of it removes nothing.
const noPath = "/\x00"

func cleanPath(p string) string {
	if p == "" {
		return noPath
	}
	if !strings.HasPrefix(p, "/") {
		p = "/root/" + p
	}
	return path.Clean(p)
}

func pathDir(p string) string { return path.Dir(p) }

// builtinDirs always exist.
var builtinDirs = map[string]bool{
	"/": true, "/bin": true, "/sbin": true, "/usr": true, "/usr/bin": true, "/usr/sbin": true,
	"/etc": true, "/etc/init.d": true, "/etc/config": true, "/etc/openwisp": true,
	"/tmp": true, "/tmp/sysinfo": true, "/proc": true, "/proc/sys": true, "/proc/sys/vm": true,
	"/proc/sys/kernel": true, "/proc/sys/kernel/random": true, "/root": true, "/dev": true,
	"/lib": true, "/lib/upgrade": true, "/var": true,
}

// overlayDirs exist on a squashfs root only.
var overlayDirs = map[string]bool{"/overlay": true, "/overlay/upper": true, "/overlay/upper/etc": true, "/rom": true}

func (d *Device) isDirLocked(p string) bool {
	if builtinDirs[p] || d.dirs[p] {
		return p != "/tmp/sysinfo" || d.sysInfoLocked()
	}
	if overlayDirs[p] {
		return d.cfg.RootFS == RootFSSquashfs
	}
	if p == "/tmp/opkg-lists" {
		return !d.opkgGone
	}
	return false
}

func (d *Device) mkdirLocked(p string) {
	if builtinDirs[p] || (overlayDirs[p] && d.cfg.RootFS == RootFSSquashfs) {
		return
	}
	if d.dirs == nil {
		d.dirs = make(map[string]bool)
	}
	d.dirs[p] = true
}

// existsLocked reports whether p is a file or a directory.
func (d *Device) existsLocked(p string) bool {
	if d.isDirLocked(p) {
		return true
	}
	if _, ok := d.virtualLocked(p); ok {
		return true
	}
	_, ok := d.files[p]
	return ok
}

// readLocked returns the whole content of a file. full is false when the
// file exists but its content was not kept.
func (d *Device) readLocked(p string) (b []byte, exists, full bool) {
	if b, ok := d.virtualLocked(p); ok {
		return b, true, true
	}
	f, ok := d.files[p]
	if !ok {
		return nil, false, false
	}
	return f.data, true, f.full
}

// virtualLocked generates the content of the files computed from state.
func (d *Device) virtualLocked(p string) ([]byte, bool) {
	switch p {
	case "/etc/openwrt_release":
		if _, ok := d.files[p]; ok {
			return nil, false
		}
		return []byte(openwrtRelease(d.prof, d.release, d.cfg.Target, d.cfg.Arch)), true
	case "/proc/meminfo":
		return []byte(d.meminfoLocked()), true
	case "/proc/cpuinfo":
		return []byte(d.cpuinfoLocked()), true
	case "/proc/sys/kernel/random/boot_id":
		return []byte(d.bootID + "\n"), true
	case "/tmp/sysinfo/model":
		if !d.sysInfoLocked() {
			return nil, false
		}
		return []byte(d.cfg.Model + "\n"), true
	case "/tmp/sysinfo/board_name":
		if !d.sysInfoLocked() {
			return nil, false
		}
		return []byte(d.cfg.BoardName + "\n"), true
	case "/etc/board.json":
		if _, ok := d.files[p]; ok || !d.prof.atLeast("15.05") {
			return nil, false
		}
		return []byte(d.boardJSONLocked()), true
	case "/proc/sys/vm/drop_caches":
		return []byte("0\n"), true
	case "/proc/uptime":
		up := time.Since(d.bootTime).Seconds()
		return fmt.Appendf(nil, "%.2f %.2f\n", up, up*0.9), true
	case "/dev/null":
		return nil, true
	}
	if dir, name := path.Split(p); dir == "/etc/init.d/" && d.hasService(name) {
		return []byte("#!/bin/sh /etc/rc.common\n\nSTART=50\nUSE_PROCD=1\n"), true
	}
	return nil, false
}

func (d *Device) hasService(name string) bool {
	for _, s := range d.cfg.Services {
		if s == name {
			return true
		}
	}
	return false
}

// boardJSONLocked renders /etc/board.json: the model and, from 21.02, the
// board's compat_version.
func (d *Device) boardJSONLocked() string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\t\"model\": {\n\t\t\"id\": %s,\n\t\t\"name\": %s\n\t}", q(d.cfg.BoardName), q(d.cfg.Model))
	if d.prof.Compat {
		fmt.Fprintf(&b, ",\n\t\"system\": {\n\t\t\"compat_version\": %s\n\t}", q(d.compat))
	}
	b.WriteString("\n}\n")
	return b.String()
}

// cpuinfoLocked renders /proc/cpuinfo of a MIPS router: on 12.09 without
// /tmp/sysinfo, the "machine" line is where the model is found.
func (d *Device) cpuinfoLocked() string {
	return fmt.Sprintf("system type\t\t: %s\nmachine\t\t\t: %s\nprocessor\t\t: 0\ncpu model\t\t: MIPS 74Kc V5.0\nBogoMIPS\t\t: 358.80\n\n",
		d.cfg.Target, d.cfg.Model)
}

// memAvailableLocked computes MemAvailable from what was freed and what
// /tmp (a tmpfs, so RAM) holds.
func (d *Device) memAvailableLocked() int64 {
	avail := d.cfg.MemAvailable
	if d.faults.LowMemoryUntilServicesStopped && !d.nonCriticalStoppedLocked() {
		avail = min(avail, DefaultLowMemory)
	} else {
		for _, s := range d.cfg.Services {
			if d.stopped[s] {
				avail += d.cfg.ServiceMemory
			}
		}
		if d.opkgGone {
			avail += d.cfg.OpkgListsMemory
		}
		if d.dropCaches {
			avail += d.cfg.DropCachesMemory
		}
	}
	avail -= d.tmpUsageLocked()
	return max(0, min(avail, d.cfg.MemTotal))
}

// tmpSizeLocked is the size of the /tmp tmpfs: half the RAM.
func (d *Device) tmpSizeLocked() int64 { return d.cfg.MemTotal / 2 }

// tmpFreeLocked is what /tmp can still take, as df reports it.
func (d *Device) tmpFreeLocked() int64 { return max(0, d.tmpSizeLocked()-d.tmpUsageLocked()) }

func (d *Device) tmpUsageLocked() int64 {
	var n int64
	for p, f := range d.files {
		if strings.HasPrefix(p, "/tmp/") {
			n += f.size
		}
	}
	return n
}

func (d *Device) nonCriticalStoppedLocked() bool {
	for _, s := range d.cfg.Services {
		critical := false
		for _, c := range d.cfg.CriticalServices {
			if c == s {
				critical = true
				break
			}
		}
		if !critical && !d.stopped[s] {
			return false
		}
	}
	return true
}

func (d *Device) meminfoLocked() string {
	kb := func(n int64) int64 { return n / 1024 }
	avail := d.memAvailableLocked()
	cached := min(avail/4, 8<<20)
	buffers := min(avail/32, 1<<20)
	free := max(0, avail-cached-buffers)
	var b strings.Builder
	fmt.Fprintf(&b, "MemTotal:       %8d kB\n", kb(d.cfg.MemTotal))
	fmt.Fprintf(&b, "MemFree:        %8d kB\n", kb(free))
	if !d.cfg.NoMemAvailable && d.prof.MemAvailable {
		fmt.Fprintf(&b, "MemAvailable:   %8d kB\n", kb(avail))
	}
	fmt.Fprintf(&b, "Buffers:        %8d kB\n", kb(buffers))
	fmt.Fprintf(&b, "Cached:         %8d kB\n", kb(cached))
	fmt.Fprintf(&b, "SwapCached:     %8d kB\n", 0)
	fmt.Fprintf(&b, "Shmem:          %8d kB\n", kb(d.tmpUsageLocked()))
	fmt.Fprintf(&b, "SwapTotal:      %8d kB\n", 0)
	fmt.Fprintf(&b, "SwapFree:       %8d kB\n", 0)
	return b.String()
}

// removeLocked removes p (recursively when recursive) and reports whether
// anything existed.
func (d *Device) removeLocked(p string, recursive bool) (existed bool, err error) {
	if d.isDirLocked(p) {
		if !recursive {
			return true, fmt.Errorf("'%s' is a directory", p)
		}
		prefix := strings.TrimSuffix(p, "/") + "/"
		for fp := range d.files {
			if strings.HasPrefix(fp, prefix) {
				delete(d.files, fp)
			}
		}
		for dp := range d.dirs {
			if dp == p || strings.HasPrefix(dp, prefix) {
				delete(d.dirs, dp)
			}
		}
		if p == "/tmp/opkg-lists" || p == "/tmp" || p == "/" {
			d.opkgGone = true
		}
		return true, nil
	}
	if _, ok := d.files[p]; ok {
		delete(d.files, p)
		return true, nil
	}
	if _, ok := d.virtualLocked(p); ok {
		return true, errors.New("Operation not permitted")
	}
	return false, nil
}

// fileWriter streams content into the store. Write is for sequential
// writers; WriteAt reorders SFTP packets that arrive out of order.
type fileWriter struct {
	d    *Device
	path string
	boot string // boot id at creation: a reboot loses the upload

	mu      sync.Mutex
	h       hash.Hash
	md5     hash.Hash
	tail    tailWriter
	size    int64
	head    []byte
	data    []byte
	full    bool
	corrupt bool   // flip a byte of this upload
	upload  bool   // faults apply
	c       *sconn // connection to cut on DropUploadAfter
	// entry is the file created for this writer: the content is committed
	// only while it is still the one at path (an "rm" or a new writer in
	// between unlinks it, as on a POSIX file system).
	entry   *file
	failed  error
	closed  bool
	pending map[int64][]byte
	pendN   int64
	// special targets
	discard    bool
	dropCaches bool
}

// createLocked truncates or creates p and returns a writer for it. The
// parent directory must exist.
func (d *Device) createLocked(p string, appendTo bool) (*fileWriter, error) {
	w := &fileWriter{d: d, path: p, boot: d.bootID, h: sha256.New(), full: true}
	if !d.cfg.NoMD5 {
		w.md5 = md5.New()
	}
	switch {
	case p == "/dev/null":
		w.discard = true
		return w, nil
	case p == "/proc/sys/vm/drop_caches":
		w.dropCaches = true
		return w, nil
	case strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/sys/") || strings.HasPrefix(p, "/dev/"):
		return nil, errors.New("Permission denied")
	case d.isDirLocked(p):
		return nil, errors.New("Is a directory")
	case !d.isDirLocked(pathDir(p)):
		return nil, errors.New("nonexistent directory")
	}
	if old, ok := d.files[p]; ok && appendTo {
		if !old.full {
			return nil, errors.New("Input/output error")
		}
		w.add(old.data) // d.mu is held: no checks
	}
	w.entry = &file{mtime: time.Now(), full: true, sum: sha256.Sum256(nil), md5: md5.Sum(nil)}
	d.files[p] = w.entry
	return w, nil
}

// markUpload makes the upload faults apply to w.
func (w *fileWriter) markUpload(c *sconn) {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	w.upload, w.c = true, c
	if w.d.faults.CorruptUploads > 0 {
		w.d.faults.CorruptUploads--
		w.corrupt = true
	}
}

func (w *fileWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.write(p)
}

func (w *fileWriter) write(p []byte) (int, error) {
	if w.failed != nil {
		return 0, w.failed
	}
	if w.closed {
		return 0, errors.New("write after close")
	}
	if w.discard {
		return len(p), nil
	}
	if w.dropCaches {
		w.d.mu.Lock()
		w.d.dropCaches = true
		w.d.mu.Unlock()
		return len(p), nil
	}
	n := len(p)
	cut := false
	if w.upload {
		w.d.mu.Lock()
		if k := w.d.faults.DropUploadAfter; k > 0 && !w.d.dropped && w.size+int64(n) >= k {
			w.d.dropped = true
			n = int(max(0, k-w.size))
			cut = true
		}
		w.d.mu.Unlock()
	}
	p = p[:n]
	if strings.HasPrefix(w.path, "/tmp/") {
		// /tmp is a tmpfs: it can hold only what MemAvailable allows.
		w.d.mu.Lock()
		avail := min(w.d.memAvailableLocked(), w.d.tmpFreeLocked())
		w.d.mu.Unlock()
		if w.size+int64(n) > avail {
			w.failed = errNoSpace
			return 0, w.failed
		}
	}
	if w.corrupt && w.size <= corruptOffset && w.size+int64(n) > corruptOffset {
		q := append([]byte(nil), p...)
		q[corruptOffset-w.size] ^= 0x01
		p = q
		w.corrupt = false
	}
	w.add(p)
	if cut {
		w.failed = errors.New("connection cut")
		w.commitLocked()
		if w.c != nil {
			w.c.kill()
		}
		return n, w.failed
	}
	return n, nil
}

// add appends p to the content, with no checks and no lock.
func (w *fileWriter) add(p []byte) {
	w.h.Write(p)
	if w.md5 != nil {
		w.md5.Write(p)
	}
	_, _ = w.tail.Write(p)
	if len(w.head) < headSize {
		w.head = append(w.head, p[:min(len(p), headSize-len(w.head))]...)
	}
	if w.full {
		if w.size+int64(len(p)) < smallFileSize {
			w.data = append(w.data, p...)
		} else {
			w.full, w.data = false, nil
		}
	}
	w.size += int64(len(p))
}

// WriteAt accepts out-of-order writes and feeds them in order.
func (w *fileWriter) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != nil {
		return 0, w.failed
	}
	switch {
	case off == w.size:
		if _, err := w.write(p); err != nil {
			return 0, err
		}
		for {
			q, ok := w.pending[w.size]
			if !ok {
				break
			}
			delete(w.pending, w.size)
			w.pendN -= int64(len(q))
			if _, err := w.write(q); err != nil {
				return 0, err
			}
		}
	case off > w.size:
		if w.pendN+int64(len(p)) > maxPending {
			return 0, errors.New("too much out-of-order data")
		}
		if w.pending == nil {
			w.pending = make(map[int64][]byte)
		}
		if _, dup := w.pending[off]; !dup {
			w.pending[off] = append([]byte(nil), p...)
			w.pendN += int64(len(p))
		}
	default:
		return 0, errors.New("overwriting is not supported")
	}
	return len(p), nil
}

// Close commits the content to the store.
func (w *fileWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	if w.failed == nil && len(w.pending) > 0 {
		w.failed = errors.New("upload has holes")
	}
	w.commitLocked()
	return w.failed
}

func (w *fileWriter) commitLocked() {
	if w.closed {
		return
	}
	w.closed = true
	if w.discard || w.dropCaches {
		return
	}
	f := &file{size: w.size, head: w.head, tail: w.tail.tail, tailCRC: w.tail.crc, data: w.data, full: w.full, mtime: time.Now()}
	if w.corrupt && w.size > 0 && w.full {
		// A small upload never reached corruptOffset: flip its last byte.
		w.data[len(w.data)-1] ^= 0x01
		f = newFileFromBytes(w.data)
	} else {
		copy(f.sum[:], w.h.Sum(nil))
		if w.md5 != nil {
			copy(f.md5[:], w.md5.Sum(nil))
		} else {
			f.noMD5 = true
		}
	}
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	if w.d.bootID == w.boot && w.d.files[w.path] == w.entry {
		w.d.files[w.path] = f
	}
}
