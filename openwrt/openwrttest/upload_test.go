package openwrttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"

	"github.com/pkg/sftp"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

type uploadMethod struct {
	name   string
	upload func(c *ssh.Client, dst string, im Image) error
}

var uploadMethods = []uploadMethod{
	{"sftp", func(c *ssh.Client, dst string, im Image) error { return sftpUpload(c, dst, im.Reader()) }},
	{"sftp-concurrent", func(c *ssh.Client, dst string, im Image) error {
		return sftpUpload(c, dst, im.Reader(), sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(64))
	}},
	{"scp", func(c *ssh.Client, dst string, im Image) error { return scpUpload(c, dst, im.Reader(), im.Len()) }},
	{"cat", func(c *ssh.Client, dst string, im Image) error { return catUpload(c, dst, im.Reader()) }},
}

func TestImage(t *testing.T) {
	t.Parallel()
	im := Image{Boards: []string{"a", "b"}, Release: "OpenWrt 23.05.3 r23809-234f1a2efa", Size: 100000}
	b1, err := io.ReadAll(im.Reader())
	require.NoError(t, err)
	require.Len(t, b1, 100000)
	require.True(t, bytes.HasPrefix(b1, []byte(`FWSIM1 {"boards":["a","b"],"release":"OpenWrt 23.05.3 r23809-234f1a2efa"}`+"\n")))
	// Deterministic whatever the read sizes.
	var b2 bytes.Buffer
	r := im.Reader()
	buf := make([]byte, 7)
	for {
		n, err := r.Read(buf)
		b2.Write(buf[:n])
		if err == io.EOF {
			break
		}
	}
	require.Equal(t, b1, b2.Bytes())
	require.Equal(t, im.SHA256(), im.SHA256())
	small := Image{Boards: []string{"a"}, Size: 1}
	require.Equal(t, small.Len(), int64(len(small.Header())))
}

func TestUploads(t *testing.T) {
	t.Parallel()
	for _, m := range uploadMethods {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			d := setup(t, Config{SFTP: true, SCP: true})
			c := dial(t, d)
			for _, size := range []int64{0, 10, 5000, 200 << 10, 3<<20 + 17} {
				im := testImage
				im.Size = size
				dst := "/tmp/fw.bin"
				require.NoError(t, m.upload(c, dst, im), "size %d", size)
				fi, ok := d.File(dst)
				require.True(t, ok)
				require.Equal(t, im.Len(), fi.Size)
				require.Equal(t, im.SHA256(), fi.SHA256)
				require.Equal(t, im.SHA256()+"  "+dst+"\n", run(t, c, "sha256sum "+quote(dst), nil).stdout)
				if im.Len() < smallFileSize {
					require.Len(t, fi.Content, int(im.Len()))
				} else {
					require.Nil(t, fi.Content)
					require.Len(t, fi.Head, headSize)
				}
			}
			switch m.name {
			case "sftp":
				require.Contains(t, d.Commands(), "subsystem:sftp")
				require.Contains(t, d.Commands(), "sftp:put /tmp/fw.bin")
			case "scp":
				require.Contains(t, d.Commands(), "scp -t '/tmp'")
			}
		})
	}
}

func TestSFTPDisabled(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	_, err := sftp.NewClient(dial(t, d))
	require.Error(t, err)
	require.Contains(t, d.Commands(), "subsystem:sftp")
}

func TestSFTPOperations(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{SFTP: true})
	sc, err := sftp.NewClient(dial(t, d))
	require.NoError(t, err)
	defer sc.Close()
	require.NoError(t, sc.Mkdir("/tmp/d"))
	f, err := sc.Create("/tmp/d/a")
	require.NoError(t, err)
	_, err = f.Write([]byte("hello"))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	st, err := sc.Stat("/tmp/d/a")
	require.NoError(t, err)
	require.Equal(t, int64(5), st.Size())
	ls, err := sc.ReadDir("/tmp/d")
	require.NoError(t, err)
	require.Len(t, ls, 1)
	rf, err := sc.Open("/tmp/d/a")
	require.NoError(t, err)
	b, err := io.ReadAll(rf)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
	rf.Close()
	rf, err = sc.Open("/etc/openwrt_release")
	require.NoError(t, err)
	b, _ = io.ReadAll(rf)
	rf.Close()
	require.Contains(t, string(b), "DISTRIB_RELEASE='22.03.5'")
	require.NoError(t, sc.Rename("/tmp/d/a", "/tmp/d/b"))
	require.NoError(t, sc.Remove("/tmp/d/b"))
	_, err = sc.Stat("/tmp/d/b")
	require.Error(t, err)
	_, err = sc.Create("/nodir/x")
	require.Error(t, err)
	require.Contains(t, d.Commands(), "sftp:remove /tmp/d/b")
}

func TestSCPErrors(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{SCP: true})
	c := dial(t, d)
	err := scpUpload(c, "/nodir/sub/x.bin", strings.NewReader("abc"), 3)
	require.Error(t, err)
	require.Contains(t, err.Error(), "nonexistent directory")
	r := run(t, c, "scp -t /tmp", strings.NewReader("Xgarbage\n"))
	require.Equal(t, 1, r.status)
	r = run(t, c, "scp -t /tmp", strings.NewReader("C0644 -5 x\n"))
	require.Equal(t, 1, r.status)
	r = run(t, c, "scp -t /tmp", strings.NewReader("C0644 3 ../x\n"))
	require.Equal(t, 1, r.status)
	r = run(t, c, "scp -t /tmp", strings.NewReader(""))
	require.Equal(t, 0, r.status)
}

func TestWriteAtOutOfOrder(t *testing.T) {
	t.Parallel()
	d := setup(t, Config{})
	data, err := io.ReadAll(Image{Boards: []string{"x"}, Size: 200 << 10}.Reader())
	require.NoError(t, err)
	d.mu.Lock()
	w, err := d.createLocked("/tmp/o", false)
	d.mu.Unlock()
	require.NoError(t, err)
	const chunk = 32 << 10
	var offs []int
	for off := 0; off < len(data); off += chunk {
		offs = append(offs, off)
	}
	// Reverse order: everything waits for offset 0.
	for i := len(offs) - 1; i >= 0; i-- {
		off := offs[i]
		n, err := w.WriteAt(data[off:min(off+chunk, len(data))], int64(off))
		require.NoError(t, err)
		require.Equal(t, min(chunk, len(data)-off), n)
	}
	require.NoError(t, w.Close())
	fi, ok := d.File("/tmp/o")
	require.True(t, ok)
	want := sha256.Sum256(data)
	require.Equal(t, hex.EncodeToString(want[:]), fi.SHA256)

	// A hole is an error.
	d.mu.Lock()
	w, _ = d.createLocked("/tmp/h", false)
	d.mu.Unlock()
	_, err = w.WriteAt([]byte("x"), 10)
	require.NoError(t, err)
	require.Error(t, w.Close())
}
