package openwrttest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// env is the execution environment of one exec request.
type env struct {
	d      *Device
	c      *sconn
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	noExit bool   // the connection is being killed: send no exit-status
	after  func() // runs after the exit-status was sent
}

// io is the streams of one simple command.
type stdio struct {
	in       io.Reader
	out, err io.Writer
	outFile  *fileWriter
}

type builtin func(e *env, s *stdio, args []string) int

var builtins map[string]builtin

func init() {
	builtins = map[string]builtin{
		"cat":        (*env).cat,
		"echo":       (*env).echo,
		"printf":     (*env).printf,
		"rm":         (*env).rm,
		"mkdir":      (*env).mkdir,
		"test":       (*env).test,
		"[":          (*env).test,
		"sha256sum":  (*env).sha256sum,
		"md5sum":     (*env).md5sum,
		"df":         (*env).df,
		"free":       (*env).free,
		"sync":       func(*env, *stdio, []string) int { return 0 },
		"true":       func(*env, *stdio, []string) int { return 0 },
		"false":      func(*env, *stdio, []string) int { return 1 },
		":":          func(*env, *stdio, []string) int { return 0 },
		"uci":        (*env).uci,
		"wifi":       (*env).wifi,
		"sysupgrade": (*env).sysupgrade,
		"scp":        (*env).scp,
		"uptime":     (*env).uptime,
		"ubus":       (*env).ubus,
		"reboot":     (*env).reboot,
		"sleep":      (*env).sleep,
		"command":    (*env).command,
		"which":      (*env).which,
		"ls":         (*env).ls,
	}
}

// binDirs are where builtins may be called by absolute path.
var binDirs = map[string]bool{"/bin": true, "/sbin": true, "/usr/bin": true, "/usr/sbin": true}

// locked runs fn with d.mu held. fn writes to buffers that are copied to
// the command's streams after the lock is released: a stream may be a file
// whose writer takes d.mu.
func (e *env) locked(s *stdio, fn func(b *stdio) int) int {
	var out, errb bytes.Buffer
	e.d.mu.Lock()
	status := fn(&stdio{in: s.in, out: &out, err: &errb})
	e.d.mu.Unlock()
	_, _ = s.out.Write(out.Bytes())
	_, _ = s.err.Write(errb.Bytes())
	return status
}

func (e *env) fprintf(w io.Writer, format string, a ...any) {
	_, _ = fmt.Fprintf(w, format, a...)
}

func (e *env) run(cmdline string) int {
	list, err := parse(cmdline)
	if err != nil {
		e.fprintf(e.stderr, "sh: %v\n", err)
		return 2
	}
	status := 0
	for _, ao := range list {
		if e.ctx.Err() != nil || e.noExit {
			break
		}
		switch {
		case ao.link == tAnd && status != 0:
			continue
		case ao.link == tOr && status == 0:
			continue
		}
		status = e.simple(ao.cmd)
	}
	return status
}

func (e *env) simple(sc simpleCmd) int {
	s := &stdio{in: e.stdin, out: e.stdout, err: e.stderr}
	var opened []*fileWriter
	defer func() {
		for _, w := range opened {
			_ = w.Close()
		}
	}()
	for _, r := range sc.redirs {
		switch r.op {
		case ">&":
			var w io.Writer
			switch r.dup {
			case 1:
				w = s.out
			case 2:
				w = s.err
			default:
				e.fprintf(s.err, "sh: %d: bad file descriptor\n", r.dup)
				return 1
			}
			if r.fd == 2 {
				s.err = w
			} else {
				s.out = w
			}
		case "<":
			p := cleanPath(r.target)
			e.d.mu.Lock()
			b, exists, full := e.d.readLocked(p)
			e.d.mu.Unlock()
			if !exists || !full {
				e.fprintf(s.err, "sh: can't open %s: no such file\n", r.target)
				return 1
			}
			s.in = bytes.NewReader(b)
		default:
			p := cleanPath(r.target)
			e.d.mu.Lock()
			w, err := e.d.createLocked(p, r.op == ">>")
			e.d.mu.Unlock()
			if err != nil {
				e.fprintf(s.err, "sh: can't create %s: %v\n", r.target, err)
				return 1
			}
			opened = append(opened, w)
			if r.fd == 2 {
				s.err = w
			} else {
				s.out = w
				s.outFile = w
			}
		}
	}
	if len(sc.argv) == 0 {
		return 0
	}
	e.d.mu.Lock()
	e.d.executed = append(e.d.executed, slices.Clone(sc.argv))
	e.d.mu.Unlock()
	name := sc.argv[0]
	args := sc.argv[1:]
	if dir, base := path.Split(name); dir != "" {
		dir = path.Clean(dir)
		switch {
		case dir == "/etc/init.d" && e.d.hasService(base):
			return e.service(s, base, args)
		case binDirs[dir] && e.exists(base):
			name = base
		default:
			return e.notFound(s, sc.argv[0])
		}
	}
	if !e.exists(name) {
		return e.notFound(s, name)
	}
	return builtins[name](e, s, args)
}

// exists reports whether command name exists on the device: a builtin the
// running release has.
func (e *env) exists(name string) bool {
	if builtins[name] == nil || (name == "scp" && !e.d.cfg.SCP) {
		return false
	}
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	return e.d.prof.HasApplet(name)
}

// notFound prints what busybox ash prints for a command it cannot find when
// dropbear runs it with "ash -c": "ash: NAME: not found", exit status 127.
func (e *env) notFound(s *stdio, name string) int {
	e.fprintf(s.err, "ash: %s: not found\n", name)
	return 127
}

// busybox returns the "BusyBox vX multi-call binary." banner of usage
// messages.
func (e *env) busybox() string {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	return "BusyBox v" + e.d.prof.BusyBox + " multi-call binary."
}

// cat FILE... ; with no FILE it copies stdin (an upload when redirected).
func (e *env) cat(s *stdio, args []string) int {
	if len(args) == 0 || (len(args) == 1 && args[0] == "-") {
		if s.outFile != nil && s.in == e.stdin {
			s.outFile.markUpload(e.c)
		}
		if _, err := io.Copy(s.out, s.in); err != nil {
			e.fprintf(s.err, "cat: write error: %v\n", err)
			return 1
		}
		return 0
	}
	status := 0
	for _, a := range args {
		p := cleanPath(a)
		e.d.mu.Lock()
		isDir := e.d.isDirLocked(p)
		b, exists, full := e.d.readLocked(p)
		e.d.mu.Unlock()
		switch {
		case isDir:
			e.fprintf(s.err, "cat: read error: Is a directory\n")
			status = 1
		case !exists:
			e.fprintf(s.err, "cat: can't open '%s': No such file or directory\n", a)
			status = 1
		case !full:
			e.fprintf(s.err, "cat: read error: Input/output error\n")
			status = 1
		default:
			if _, err := s.out.Write(b); err != nil {
				return 1
			}
		}
	}
	return status
}

func (e *env) echo(s *stdio, args []string) int {
	nl := true
	if len(args) > 0 && args[0] == "-n" {
		nl, args = false, args[1:]
	}
	out := strings.Join(args, " ")
	if nl {
		out += "\n"
	}
	_, _ = io.WriteString(s.out, out)
	return 0
}

// printf FORMAT [ARG]... with %s, %d, %b, %% and backslash escapes; the
// format is reused while arguments remain.
func (e *env) printf(s *stdio, args []string) int {
	if len(args) == 0 {
		e.fprintf(s.err, "printf: usage: printf FORMAT [ARGUMENT...]\n")
		return 1
	}
	format, args := args[0], args[1:]
	var b strings.Builder
	for {
		used := 0
		for i := 0; i < len(format); i++ {
			c := format[i]
			switch {
			case c == '\\' && i+1 < len(format):
				i++
				switch format[i] {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				case '\\':
					b.WriteByte('\\')
				default:
					b.WriteByte('\\')
					b.WriteByte(format[i])
				}
			case c == '%' && i+1 < len(format):
				i++
				arg := ""
				if format[i] != '%' && used < len(args) {
					arg = args[used]
					used++
				}
				switch format[i] {
				case '%':
					b.WriteByte('%')
				case 's', 'b':
					b.WriteString(arg)
				case 'd':
					n, _ := strconv.ParseInt(arg, 10, 64)
					b.WriteString(strconv.FormatInt(n, 10))
				default:
					b.WriteByte('%')
					b.WriteByte(format[i])
				}
			default:
				b.WriteByte(c)
			}
		}
		args = args[used:]
		if used == 0 || len(args) == 0 {
			break
		}
	}
	_, _ = io.WriteString(s.out, b.String())
	return 0
}

func (e *env) rm(s *stdio, args []string) int {
	force, recursive := false, false
	var paths []string
	for i, a := range args {
		if a == "--" {
			paths = append(paths, args[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			for _, f := range a[1:] {
				switch f {
				case 'f':
					force = true
				case 'r', 'R':
					recursive = true
				default:
					e.fprintf(s.err, "rm: unrecognized option: %c\n", f)
					return 1
				}
			}
			continue
		}
		paths = append(paths, a)
	}
	if len(paths) == 0 && !force {
		e.fprintf(s.err, "%s\n\nUsage: rm [-irf] FILE...\n", e.busybox())
		return 1
	}
	status := 0
	for _, a := range paths {
		e.d.mu.Lock()
		existed, err := e.d.removeLocked(cleanPath(a), recursive)
		e.d.mu.Unlock()
		switch {
		case err != nil:
			e.fprintf(s.err, "rm: can't remove '%s': %v\n", a, err)
			status = 1
		case !existed && !force:
			e.fprintf(s.err, "rm: can't remove '%s': No such file or directory\n", a)
			status = 1
		}
	}
	return status
}

func (e *env) mkdir(s *stdio, args []string) int {
	return e.locked(s, func(s *stdio) int { return e.mkdirLocked(s, args) })
}

func (e *env) mkdirLocked(s *stdio, args []string) int {
	parents := false
	status := 0
	for _, a := range args {
		if a == "-p" {
			parents = true
			continue
		}
		p := cleanPath(a)
		switch {
		case e.d.isDirLocked(p):
			if !parents {
				e.fprintf(s.err, "mkdir: can't create directory '%s': File exists\n", a)
				status = 1
			}
		case e.d.existsLocked(p):
			e.fprintf(s.err, "mkdir: can't create directory '%s': File exists\n", a)
			status = 1
		case !parents && !e.d.isDirLocked(pathDir(p)):
			e.fprintf(s.err, "mkdir: can't create directory '%s': No such file or directory\n", a)
			status = 1
		default:
			var chain []string
			for q := p; !e.d.isDirLocked(q); q = pathDir(q) {
				if e.d.existsLocked(q) {
					chain = nil
					e.fprintf(s.err, "mkdir: can't create directory '%s': Not a directory\n", a)
					status = 1
					break
				}
				chain = append(chain, q)
			}
			for _, q := range chain {
				e.d.mkdirLocked(q)
			}
		}
	}
	return status
}

// test / [ with -f -e -d -s -n -z, = and !=.
func (e *env) test(s *stdio, args []string) int {
	if len(args) > 0 && args[len(args)-1] == "]" {
		args = args[:len(args)-1]
	}
	neg := false
	if len(args) > 0 && args[0] == "!" {
		neg, args = true, args[1:]
	}
	ok := false
	switch {
	case len(args) == 0:
		ok = false
	case len(args) == 1:
		ok = args[0] != ""
	case len(args) == 2:
		p := cleanPath(args[1])
		e.d.mu.Lock()
		isDir := e.d.isDirLocked(p)
		exists := e.d.existsLocked(p)
		var size int64
		if f, found := e.d.files[p]; found {
			size = f.size
		} else if b, found := e.d.virtualLocked(p); found {
			size = int64(len(b))
		}
		e.d.mu.Unlock()
		switch args[0] {
		case "-f":
			ok = exists && !isDir
		case "-e":
			ok = exists
		case "-d":
			ok = isDir
		case "-s":
			ok = exists && !isDir && size > 0
		case "-x":
			ok = exists && !isDir && strings.HasPrefix(p, "/etc/init.d/")
		case "-n":
			ok = args[1] != ""
		case "-z":
			ok = args[1] == ""
		default:
			e.fprintf(s.err, "sh: %s: unknown operand\n", args[0])
			return 2
		}
	case len(args) == 3 && args[1] == "=":
		ok = args[0] == args[2]
	case len(args) == 3 && args[1] == "!=":
		ok = args[0] != args[2]
	default:
		e.fprintf(s.err, "sh: syntax error\n")
		return 2
	}
	if ok != neg {
		return 0
	}
	return 1
}

func (e *env) sha256sum(s *stdio, args []string) int {
	return e.checksum(s, "sha256sum", args, func(f *file) []byte { return f.sum[:] })
}

func (e *env) md5sum(s *stdio, args []string) int {
	return e.checksum(s, "md5sum", args, func(f *file) []byte {
		if f.noMD5 {
			return nil // Config.NoMD5
		}
		return f.md5[:]
	})
}

// checksum prints the digest of each file as busybox's sha256sum and md5sum
// do.
func (e *env) checksum(s *stdio, name string, args []string, digest func(*file) []byte) int {
	status := 0
	for _, a := range args {
		p := cleanPath(a)
		e.d.mu.Lock()
		var sum string
		found := false
		if b, ok := e.d.virtualLocked(p); ok {
			sum, found = hex.EncodeToString(digest(newFileFromBytes(b))), true
		} else if f, ok := e.d.files[p]; ok {
			sum, found = hex.EncodeToString(digest(f)), true
		}
		isDir := e.d.isDirLocked(p)
		e.d.mu.Unlock()
		switch {
		case isDir:
			e.fprintf(s.err, "%s: read error: Is a directory\n", name)
			status = 1
		case found && sum == "":
			e.fprintf(s.err, "%s: %s: not hashed (the simulator's Config.NoMD5)\n", name, a)
			status = 1
		case !found:
			e.fprintf(s.err, "%s: can't open '%s': No such file or directory\n", name, a)
			status = 1
		default:
			e.fprintf(s.out, "%s  %s\n", sum, a)
		}
	}
	return status
}

// df [-k] [PATH...] prints the file systems holding each path (all of
// them when none is given) in busybox's format.
func (e *env) df(s *stdio, args []string) int {
	e.d.mu.Lock()
	type fs struct {
		dev, mount       string
		size, used, free int64
	}
	// A tmpfs reports its size limit, whatever the memory left.
	tmp := fs{"tmpfs", "/tmp", e.d.tmpSizeLocked(), e.d.tmpUsageLocked(), e.d.tmpFreeLocked()}
	all := []fs{{"/dev/root", "/", 64 << 20, 24 << 20, 40 << 20}, tmp}
	switch e.d.cfg.RootFS {
	case RootFSSquashfs:
		all = []fs{{"/dev/root", "/rom", 8 << 20, 8 << 20, 0}, tmp,
			{"/dev/mtdblock5", "/overlay", 6 << 20, 1 << 20, 5 << 20}, {"overlayfs:/overlay", "/", 6 << 20, 1 << 20, 5 << 20}}
	case RootFSInitramfs:
		all = []fs{tmp}
	}
	e.d.mu.Unlock()
	var pick []fs
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			continue
		}
		p := cleanPath(a)
		best := -1
		for i, f := range all {
			if (p == f.mount || strings.HasPrefix(p, strings.TrimSuffix(f.mount, "/")+"/")) &&
				(best < 0 || len(f.mount) >= len(all[best].mount)) {
				best = i
			}
		}
		if best >= 0 {
			pick = append(pick, all[best])
		}
	}
	if len(pick) == 0 {
		pick = all
	}
	e.fprintf(s.out, "Filesystem           1K-blocks      Used Available Use%% Mounted on\n")
	for _, f := range pick {
		pct := int64(0)
		if f.size > 0 {
			pct = (f.used*100 + f.size - 1) / f.size
		}
		e.fprintf(s.out, "%-20s %9d %9d %9d %3d%% %s\n", f.dev, f.size/1024, f.used/1024, f.free/1024, pct, f.mount)
	}
	return 0
}

// free prints the memory summary in the format of the release's busybox:
// "buffers" up to 1.28, "buff/cache" and "available" from 1.30 (19.07).
func (e *env) free(s *stdio, _ []string) int {
	e.d.mu.Lock()
	kb := func(n int64) int64 { return n / 1024 }
	avail := e.d.memAvailableLocked()
	total := e.d.cfg.MemTotal
	cached := min(avail/4, 8<<20)
	buffers := min(avail/32, 1<<20)
	freeMem := max(0, avail-cached-buffers)
	shared := e.d.tmpUsageLocked()
	newFormat := e.d.prof.atLeast("19.07")
	e.d.mu.Unlock()
	used := total - freeMem
	if newFormat {
		e.fprintf(s.out, "       %12s%12s%12s%12s%12s%12s\n", "total", "used", "free", "shared", "buff/cache", "available")
		e.fprintf(s.out, "Mem:   %12d%12d%12d%12d%12d%12d\n", kb(total), kb(used-cached-buffers), kb(freeMem), kb(shared), kb(cached+buffers), kb(avail))
		e.fprintf(s.out, "Swap:  %12d%12d%12d\n", 0, 0, 0)
		return 0
	}
	e.fprintf(s.out, "     %13s%13s%13s%13s%13s\n", "total", "used", "free", "shared", "buffers")
	e.fprintf(s.out, "Mem: %13d%13d%13d%13d%13d\n", kb(total), kb(used), kb(freeMem), kb(shared), kb(buffers))
	e.fprintf(s.out, "-/+ buffers:      %13d%13d\n", kb(used-buffers), kb(freeMem+buffers))
	e.fprintf(s.out, "Swap:%13d%13d%13d\n", 0, 0, 0)
	return 0
}

func (e *env) uci(s *stdio, args []string) int {
	quiet := false
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		if args[0] == "-q" {
			quiet = true
		}
		args = args[1:]
	}
	if len(args) == 0 {
		e.fprintf(s.err, "Usage: uci [<options>] <command> [<arguments>]\n")
		return 1
	}
	return e.locked(s, func(s *stdio) int { return e.uciLocked(s, args, quiet) })
}

func (e *env) uciLocked(s *stdio, args []string, quiet bool) int {
	notFound := func() int {
		if !quiet {
			e.fprintf(s.err, "uci: Entry not found\n")
		}
		return 1
	}
	switch args[0] {
	case "get":
		if len(args) != 2 {
			return notFound()
		}
		v, ok := e.d.uci[args[1]]
		if !ok {
			return notFound()
		}
		e.fprintf(s.out, "%s\n", v)
	case "set":
		if len(args) != 2 {
			return notFound()
		}
		k, v, ok := strings.Cut(args[1], "=")
		if !ok || strings.Count(k, ".") != 2 {
			if !quiet {
				e.fprintf(s.err, "uci: Invalid argument\n")
			}
			return 1
		}
		e.d.uci[k] = v
	case "delete":
		if len(args) != 2 {
			return notFound()
		}
		if _, ok := e.d.uci[args[1]]; !ok {
			return notFound()
		}
		delete(e.d.uci, args[1])
	case "commit", "revert":
	case "show":
		keys := make([]string, 0, len(e.d.uci))
		for k := range e.d.uci {
			if len(args) < 2 || strings.HasPrefix(k, args[1]) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			e.fprintf(s.out, "%s='%s'\n", k, e.d.uci[k])
		}
	default:
		e.fprintf(s.err, "uci: Invalid command\n")
		return 1
	}
	return 0
}

func (e *env) service(s *stdio, name string, args []string) int {
	if len(args) == 0 {
		e.fprintf(s.err, "Syntax: /etc/init.d/%s [command]\n", name)
		return 1
	}
	return e.locked(s, func(s *stdio) int { return e.serviceLocked(s, name, args) })
}

func (e *env) serviceLocked(s *stdio, name string, args []string) int {
	switch args[0] {
	case "stop":
		if e.d.stopped == nil {
			e.d.stopped = make(map[string]bool)
		}
		e.d.stopped[name] = true
	case "start", "restart", "reload":
		delete(e.d.stopped, name)
	case "enable", "disable", "enabled":
	case "running":
		if e.d.stopped[name] {
			return 1
		}
	case "status":
		if e.d.stopped[name] {
			e.fprintf(s.out, "inactive\n")
			return 1
		}
		e.fprintf(s.out, "running\n")
	default:
		e.fprintf(s.err, "Syntax: /etc/init.d/%s [command]\n", name)
		return 1
	}
	return 0
}

func (e *env) wifi(s *stdio, args []string) int {
	return e.locked(s, func(s *stdio) int { return e.wifiLocked(s, args) })
}

func (e *env) wifiLocked(s *stdio, args []string) int {
	switch {
	case len(args) == 0 || args[0] == "up" || args[0] == "reload":
		e.d.wifiDown = false
	case args[0] == "down":
		e.d.wifiDown = true
	default:
		e.fprintf(s.err, "Usage: /sbin/wifi [config|up|down|reconf|reload|status|isup]\n")
		return 1
	}
	return 0
}

func (e *env) uptime(s *stdio, _ []string) int {
	e.d.mu.Lock()
	up := time.Since(e.d.bootTime)
	e.d.mu.Unlock()
	e.fprintf(s.out, " %s up %d min,  load average: 0.08, 0.03, 0.01\n", time.Now().UTC().Format("15:04:05"), int(up.Minutes()))
	return 0
}

func (e *env) ubus(s *stdio, args []string) int {
	e.d.mu.Lock()
	p := e.d.prof
	e.d.mu.Unlock()
	if len(args) < 3 || args[0] != "call" || args[1] != "system" || args[2] != "board" || !p.UbusBoard {
		// Without procd (12.09) there is no "system" object at all.
		e.fprintf(s.err, "Command failed: Not found\n")
		return 4
	}
	_, _ = io.WriteString(s.out, e.boardJSON())
	return 0
}

// boardJSON is procd's answer to "ubus call system board" as the ubus
// client prints it: kernel, hostname, system, model, board_name (17.01 and
// later), rootfs_type (22.03 and later) and release, read from
// /etc/openwrt_release in the order of its lines.
func (e *env) boardJSON() string {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	d := e.d
	p := d.prof
	q := func(v string) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v)
		return strings.TrimSuffix(b.String(), "\n")
	}
	var b strings.Builder
	kv := func(indent, k, v string, last bool) {
		b.WriteString(indent + q(k) + ": " + q(v))
		if !last {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("{\n")
	kv("\t", "kernel", p.Kernel, false)
	kv("\t", "hostname", "OpenWrt", false)
	kv("\t", "system", "MIPS 74Kc V5.0", false)
	kv("\t", "model", d.cfg.Model, false)
	if p.BoardName {
		kv("\t", "board_name", d.cfg.BoardName, false)
	}
	if p.atLeast("22.03") {
		rootfs := d.cfg.RootFS
		if rootfs == RootFSInitramfs {
			rootfs = "initramfs"
		}
		kv("\t", "rootfs_type", rootfs, false)
	}
	b.WriteString("\t\"release\": {\n")
	var rel [][2]string
	for _, line := range strings.Split(openwrtRelease(p, d.release, d.cfg.Target, d.cfg.Arch), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		names := map[string]string{"DISTRIB_ID": "distribution", "DISTRIB_RELEASE": "version", "DISTRIB_REVISION": "revision",
			"DISTRIB_CODENAME": "codename", "DISTRIB_TARGET": "target", "DISTRIB_DESCRIPTION": "description"}
		if name := names[k]; name != "" {
			rel = append(rel, [2]string{name, strings.Trim(v, `"'`)})
		}
	}
	for i, kvp := range rel {
		kv("\t\t", kvp[0], kvp[1], i == len(rel)-1)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// reboot takes the device down and brings it back on the same firmware.
func (e *env) reboot(_ *stdio, _ []string) int {
	e.after = func() { e.d.goDown(nil, true, nil) }
	return 0
}

func (e *env) sleep(s *stdio, args []string) int {
	if len(args) != 1 {
		e.fprintf(s.err, "Usage: sleep N\n")
		return 1
	}
	f, err := strconv.ParseFloat(args[0], 64)
	if err != nil || f < 0 {
		e.fprintf(s.err, "sleep: invalid number '%s'\n", args[0])
		return 1
	}
	t := time.NewTimer(time.Duration(f * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return 0
	case <-e.ctx.Done():
		return 1
	}
}

func (e *env) lookPath(name string) (string, bool) {
	if !e.exists(name) {
		return "", false
	}
	switch name {
	case "sysupgrade", "uci", "wifi", "reboot":
		return "/sbin/" + name, true
	}
	return "/usr/bin/" + name, true
}

// command -v NAME
func (e *env) command(s *stdio, args []string) int {
	if len(args) != 2 || args[0] != "-v" {
		e.fprintf(s.err, "sh: command: only 'command -v NAME' is supported\n")
		return 2
	}
	p, ok := e.lookPath(args[1])
	if !ok {
		return 127
	}
	e.fprintf(s.out, "%s\n", p)
	return 0
}

func (e *env) which(s *stdio, args []string) int {
	status := 0
	for _, a := range args {
		if p, ok := e.lookPath(a); ok {
			e.fprintf(s.out, "%s\n", p)
		} else {
			status = 1
		}
	}
	return status
}

func (e *env) ls(s *stdio, args []string) int {
	return e.locked(s, func(s *stdio) int { return e.lsLocked(s, args) })
}

func (e *env) lsLocked(s *stdio, args []string) int {
	if len(args) == 0 {
		args = []string{"/root"}
	}
	status := 0
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			continue
		}
		p := cleanPath(a)
		var names []string
		switch {
		case e.d.isDirLocked(p):
			names = e.d.listLocked(p)
		case e.d.existsLocked(p):
			names = []string{a}
		default:
			status = 1
			e.fprintf(s.err, "ls: %s: No such file or directory\n", a)
		}
		for _, n := range names {
			e.fprintf(s.out, "%s\n", n)
		}
	}
	return status
}

// listLocked returns the names directly under directory p.
func (d *Device) listLocked(p string) []string {
	prefix := strings.TrimSuffix(p, "/") + "/"
	seen := map[string]bool{}
	add := func(full string) {
		if rest, ok := strings.CutPrefix(full, prefix); ok && rest != "" {
			name, _, _ := strings.Cut(rest, "/")
			seen[name] = true
		}
	}
	for f := range d.files {
		add(f)
	}
	for dir := range d.dirs {
		add(dir)
	}
	for dir := range builtinDirs {
		if d.isDirLocked(dir) {
			add(dir)
		}
	}
	for _, v := range []string{"/etc/openwrt_release", "/etc/board.json", "/proc/meminfo", "/proc/cpuinfo", "/tmp/sysinfo/model", "/tmp/sysinfo/board_name", "/proc/uptime"} {
		if d.existsLocked(v) {
			add(v)
		}
	}
	for dir := range overlayDirs {
		if d.isDirLocked(dir) {
			add(dir)
		}
	}
	if !d.opkgGone {
		add("/tmp/opkg-lists")
	}
	if p == "/etc/init.d" {
		for _, s := range d.cfg.Services {
			seen[s] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
