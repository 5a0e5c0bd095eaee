package openwrttest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

const maxSCPLine = 4096

// scp implements the sink side of the legacy SCP protocol (`scp -t PATH`),
// the way dropbear's scp does.
func (e *env) scp(s *stdio, args []string) int {
	sink := false
	target := ""
	for _, a := range args {
		switch {
		case a == "-t":
			sink = true
		case a == "-f":
			e.fprintf(s.err, "scp: source mode is not supported\n")
			return 1
		case strings.HasPrefix(a, "-") && len(a) > 1:
			// -v -p -d -r -q: accepted and ignored.
		default:
			target = a
		}
	}
	if !sink || target == "" {
		e.fprintf(s.err, "usage: scp [-pqrv] [-P port] [[user@]host1:]file1 [...] [[user@]host2:]file2\n")
		return 1
	}
	target = cleanPath(target)
	r := bufio.NewReaderSize(s.in, 32<<10)
	ack := func() bool { _, err := s.out.Write([]byte{0}); return err == nil }
	fail := func(msg string) int {
		_, _ = fmt.Fprintf(s.out, "\x01scp: %s\n", msg)
		return 1
	}
	if !ack() {
		return 1
	}
	for {
		kind, err := r.ReadByte()
		if err != nil {
			return 0 // EOF: the client is done
		}
		line, err := readSCPLine(r)
		if err != nil {
			return 1
		}
		switch kind {
		case 'T', 'E':
			if !ack() {
				return 1
			}
		case 'D':
			return fail("directories are not supported")
		case 1, 2:
			e.fprintf(s.err, "scp: %s\n", line)
			return 1
		case 'C':
			mode, size, name, perr := parseSCPFile(line)
			_ = mode
			if perr != nil {
				return fail("protocol error: " + perr.Error())
			}
			dst := target
			e.d.mu.Lock()
			if e.d.isDirLocked(target) {
				dst = path.Join(target, name)
			}
			w, cerr := e.d.createLocked(dst, false)
			e.d.mu.Unlock()
			if cerr != nil {
				return fail(fmt.Sprintf("%s: %v", dst, cerr))
			}
			w.markUpload(e.c)
			if !ack() {
				_ = w.Close()
				return 1
			}
			_, cpErr := io.CopyN(w, r, size)
			closeErr := w.Close()
			if cpErr != nil {
				return 1
			}
			if b, err := r.ReadByte(); err != nil || b != 0 {
				return 1
			}
			if closeErr != nil {
				return fail(fmt.Sprintf("%s: %v", dst, closeErr))
			}
			if !ack() {
				return 1
			}
		default:
			return fail("protocol error: unexpected <" + strconv.Quote(string(kind)) + ">")
		}
	}
}

func readSCPLine(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for b.Len() < maxSCPLine {
		c, err := r.ReadByte()
		if err != nil {
			return "", err
		}
		if c == '\n' {
			return b.String(), nil
		}
		b.WriteByte(c)
	}
	return "", errors.New("line too long")
}

// parseSCPFile parses "0644 <size> <name>" (the part after 'C').
func parseSCPFile(line string) (mode uint32, size int64, name string, err error) {
	parts := strings.SplitN(line, " ", 3)
	if len(parts) != 3 {
		return 0, 0, "", errors.New("bad file line")
	}
	m, err := strconv.ParseUint(parts[0], 8, 32)
	if err != nil {
		return 0, 0, "", errors.New("bad mode")
	}
	size, err = strconv.ParseInt(parts[1], 10, 64)
	if err != nil || size < 0 {
		return 0, 0, "", errors.New("bad size")
	}
	name = parts[2]
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return 0, 0, "", errors.New("bad file name")
	}
	return uint32(m), size, name, nil
}
