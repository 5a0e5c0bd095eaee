package openwrt

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

func TestFaults(t *testing.T) {
	t.Parallel()
	big := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 2 << 20}
	t.Run("refused connection", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{RefuseConnections: 1}}})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindRecoverable, status.ReasonConnectionFailed)
		require.Empty(t, b.dev.Commands())
		require.NoError(t, b.upgrade(t), "the retry works")
	})
	t.Run("drop during upload", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: &big, sim: openwrttest.Config{
			Faults: openwrttest.Faults{DropUploadAfter: 512 << 10, LowMemoryUntilServicesStopped: true},
		}})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindRecoverable, status.ReasonUploadFailed)
		// The services were started again over a new connection.
		require.True(t, ran(b.dev, "/etc/init.d/uhttpd", "start"))
		require.True(t, ran(b.dev, "wifi", "up"))
		allRunning(t, b.dev)
		require.Empty(t, flashCommands(b.dev))
		_, ok := b.dev.File("/tmp/" + b.job.Image.Name)
		require.False(t, ok, "the partial image was not removed")
	})
	t.Run("corrupt upload", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Faults: openwrttest.Faults{CorruptUploads: 1}}})
		err := b.upgrade(t)
		requireKind(t, err, upgrader.KindRecoverable, status.ReasonUploadCorrupt)
		require.True(t, ran(b.dev, "sha256sum", "/tmp/"+b.job.Image.Name))
		require.Empty(t, flashCommands(b.dev))
		require.Empty(t, executed(b.dev, "sysupgrade"))
		_, ok := b.dev.File("/tmp/" + b.job.Image.Name)
		require.False(t, ok, "the corrupt image was not removed")
	})
}

func TestUploadMethods(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		sftp, scp bool
		want      UploadMethod
		command   string
	}{
		{"sftp", true, true, UploadSFTP, "sftp:put /tmp/"},
		{"scp", false, true, UploadSCP, "'scp' '-t' '/tmp/"},
		{"cat", false, false, UploadCat, "'cat' > '/tmp/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOpts{sim: openwrttest.Config{SFTP: tc.sftp, SCP: tc.scp}})
			require.NoError(t, b.upgrade(t))
			var found bool
			for _, c := range b.dev.Commands() {
				found = found || strings.HasPrefix(c, tc.command)
			}
			require.True(t, found, "no %q in %q", tc.command, b.dev.Commands())
			require.Contains(t, b.rep.Logs(), "via "+string(tc.want))
			require.Equal(t, tc.want, b.u.methodOrder(b.dev.Addr())[0], "method remembered")
		})
	}
	t.Run("remembered", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{SCP: true}})
		b.u.rememberMethod(b.dev.Addr(), UploadCat)
		require.NoError(t, b.upgrade(t))
		require.NotContains(t, b.dev.Commands(), "subsystem:sftp", "the remembered method goes first")
		require.Contains(t, b.rep.Logs(), "via cat")
	})
}

func TestCancel(t *testing.T) {
	t.Parallel()
	big := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 2 << 20}
	t.Run("before flashing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: &big, sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}})
		b.rep.onPhase = func(p status.Phase) {
			if p == status.PhaseImageTest {
				require.True(t, b.rep.cancel())
			}
		}
		err := b.upgrade(t)
		require.ErrorIs(t, err, upgrader.ErrCancelled)
		requireKind(t, err, upgrader.KindCancelled, status.ReasonCancelledByUser)
		require.True(t, ran(b.dev, "/etc/init.d/uhttpd", "start"))
		allRunning(t, b.dev)
		require.Empty(t, flashCommands(b.dev))
		require.Empty(t, executed(b.dev, "sysupgrade"))
	})
	t.Run("during upload", func(t *testing.T) {
		t.Parallel()
		for _, sim := range []openwrttest.Config{{SFTP: true}, {SCP: true}, {}} {
			t.Run("", func(t *testing.T) {
				t.Parallel()
				huge := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: 24 << 20}
				b := setup(t, setupOpts{img: &huge, sim: sim})
				b.rep.onProgress = func(pct int) {
					if pct > status.ProgressChecksum && pct < status.ProgressUploaded {
						b.rep.cancel()
					}
				}
				err := b.upgrade(t)
				require.ErrorIs(t, err, upgrader.ErrCancelled)
				require.Empty(t, executed(b.dev, "sha256sum"), "the upload was not stopped")
				require.Empty(t, executed(b.dev, "sysupgrade"))
				_, ok := b.dev.File("/tmp/" + b.job.Image.Name)
				require.False(t, ok, "the partial image was not removed")
			})
		}
	})
	t.Run("ctx ends", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{img: &big, sim: openwrttest.Config{Faults: openwrttest.Faults{LowMemoryUntilServicesStopped: true}}})
		ctx, cancel := context.WithCancel(context.Background())
		b.rep.onPhase = func(p status.Phase) {
			if p == status.PhaseUpload {
				cancel()
			}
		}
		err := b.u.Upgrade(ctx, b.job)
		require.ErrorIs(t, err, context.Canceled)
		allRunning(t, b.dev) // restarted with a fresh context
		require.Empty(t, flashCommands(b.dev))
	})
	t.Run("race with flashing", func(t *testing.T) {
		t.Parallel()
		for i := range 8 {
			t.Run("", func(t *testing.T) {
				t.Parallel()
				b := setup(t, setupOpts{})
				var (
					once sync.Once
					won  = make(chan bool, 1)
				)
				b.rep.onPhase = func(p status.Phase) {
					if p == status.PhaseImageTest {
						once.Do(func() {
							go func() {
								time.Sleep(time.Duration(i) * time.Millisecond)
								won <- b.rep.cancel()
							}()
						})
					}
				}
				err := b.upgrade(t)
				if <-won {
					require.ErrorIs(t, err, upgrader.ErrCancelled)
					require.Empty(t, flashCommands(b.dev))
					require.NotContains(t, b.rep.Phases(), status.PhaseFlashing)
				} else {
					require.NoError(t, err)
					require.Len(t, flashCommands(b.dev), 1)
					require.Contains(t, b.rep.Phases(), status.PhaseFlashing)
				}
			})
		}
	})
}

func TestHostKey(t *testing.T) {
	t.Parallel()
	_, other, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	otherSigner, err := ssh.NewSignerFromKey(other)
	require.NoError(t, err)
	knownHostsFile := func(t *testing.T, line string) string {
		p := filepath.Join(t.TempDir(), "known_hosts")
		require.NoError(t, os.WriteFile(p, []byte(line), 0o600))
		return p
	}
	for _, tc := range []struct {
		name string
		cb   func(t *testing.T, b *bundle) ssh.HostKeyCallback
		msg  string
	}{
		{"wrong pinned key", func(t *testing.T, b *bundle) ssh.HostKeyCallback {
			return PinnedKey(otherSigner.PublicKey())
		}, "does not match"},
		{"known_hosts mismatch", func(t *testing.T, b *bundle) ssh.HostKeyCallback {
			cb, err := KnownHosts(knownHostsFile(t, knownhosts.Line([]string{knownhosts.Normalize(b.dev.Addr())}, otherSigner.PublicKey())+"\n"))
			require.NoError(t, err)
			return cb
		}, "does not match"},
		{"unknown host", func(t *testing.T, b *bundle) ssh.HostKeyCallback {
			cb, err := KnownHosts(knownHostsFile(t, knownhosts.Line([]string{"[10.9.9.9]:2222"}, b.dev.HostKey())+"\n"))
			require.NoError(t, err)
			return cb
		}, "unknown host"},
		{"no check", func(t *testing.T, b *bundle) ssh.HostKeyCallback { return nil }, "no host key check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cb ssh.HostKeyCallback
			b := setup(t, setupOpts{creds: func(b *bundle, c *Credentials) { c.HostKeyCallback = cb }})
			cb = tc.cb(t, b)
			err := b.upgrade(t)
			requireKind(t, err, upgrader.KindAborted, status.ReasonHostKeyMismatch)
			require.ErrorContains(t, err, tc.msg)
			require.Empty(t, b.dev.Commands(), "something ran on the device")
		})
	}
	t.Run("known_hosts ok", func(t *testing.T) {
		t.Parallel()
		var cb ssh.HostKeyCallback
		b := setup(t, setupOpts{creds: func(b *bundle, c *Credentials) { c.HostKeyCallback = cb }})
		cb, err = KnownHosts(knownHostsFile(t, string(b.dev.KnownHosts())))
		require.NoError(t, err)
		require.NoError(t, b.upgrade(t))
	})
}

func TestHostileFileNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"x;reboot;.bin",
		"$(reboot).bin",
		"`reboot`.bin",
		"a'b\"c $HOME && reboot || reboot.bin",
		"x\nreboot\n.bin",
		"-rf.bin",
		"$(rm -rf /).bin", // base name ").bin"
	} {
		for _, sim := range []openwrttest.Config{{SFTP: true}, {SCP: true}, {}} {
			t.Run("", func(t *testing.T) {
				t.Parallel()
				b := setup(t, setupOpts{name: name, sim: sim})
				remote := defaultRemotePath(b.job.Image)
				require.True(t, strings.HasPrefix(remote, "/tmp/"))
				require.NoError(t, b.upgrade(t))
				require.True(t, ran(b.dev, "sha256sum", remote), "the path was not one word: %q", b.dev.Executed())
				require.True(t, ran(b.dev, "sysupgrade", "--test", "-c", remote))
				require.Equal(t, remote, b.dev.Flashes()[0].Path)
				for _, argv := range b.dev.Executed() {
					require.NotEqual(t, "reboot", argv[0])
					require.NotContains(t, argv, "/")
				}
			})
		}
	}
	t.Run("slash inside the remote path", func(t *testing.T) {
		t.Parallel()
		const remote = "/root/$(rm -rf /).bin"
		b := setup(t, setupOpts{
			sim:    openwrttest.Config{Files: map[string][]byte{"/root/$(rm -rf /seed": nil}},
			config: func(c *Config) { c.RemotePathFunc = func(upgrader.Image) string { return remote } },
		})
		require.NoError(t, b.upgrade(t))
		require.True(t, ran(b.dev, "sha256sum", remote))
		require.Equal(t, remote, b.dev.Flashes()[0].Path)
	})
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{options: json.RawMessage(`{"sysupgrade":"n,c"}`)})
	err := b.upgrade(t)
	requireKind(t, err, upgrader.KindAborted, status.ReasonInvalidOptions)
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.Empty(t, b.dev.Commands())
	require.Empty(t, b.rep.Phases())
}

func TestNoConfigOption(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{options: json.RawMessage(`{"sysupgrade":"n"}`)})
	require.NoError(t, b.upgrade(t))
	f := b.dev.Flashes()[0]
	require.False(t, f.KeepConfig)
	require.Equal(t, []string{"-v", "-n", "/tmp/" + b.job.Image.Name}, f.Args)
	_, ok := b.dev.UCI("openwisp.http.uuid")
	require.False(t, ok, "the device kept its configuration")
}

func TestVerify(t *testing.T) {
	t.Parallel()
	img := openwrttest.Image{Boards: []string{openwrttest.DefaultBoardName}, Release: newRelease, Size: testImgSize}
	verify := func(b *bundle) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return b.u.Verify(ctx, b.job)
	}
	t.Run("checksum file", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Files: map[string][]byte{ChecksumFile: []byte(img.SHA256() + "\n")}}})
		require.NoError(t, verify(b))
		require.Empty(t, executed(b.dev, "sysupgrade"))
		require.Equal(t, []status.Phase{status.PhaseVerifying}, b.rep.Phases())
	})
	t.Run("release matches", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Release: newRelease}})
		require.NoError(t, verify(b))
		f, ok := b.dev.File(ChecksumFile)
		require.True(t, ok)
		require.Equal(t, img.SHA256()+"\n", string(f.Content))
		require.Empty(t, executed(b.dev, "sysupgrade"))
	})
	t.Run("old release", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{})
		requireKind(t, verify(b), upgrader.KindFailed, status.ReasonOldFirmwareAfterReboot)
		require.Empty(t, executed(b.dev, "sysupgrade"))
	})
	t.Run("no OS identifier", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{Release: newRelease}})
		b.job.Image.Build.OSIdentifier = ""
		requireKind(t, verify(b), upgrader.KindFailed, status.ReasonOldFirmwareAfterReboot)
	})
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{config: func(c *Config) { c.ReconnectMaxRetries = 3 }})
		addr := b.dev.Addr()
		b.addr = func() string { return addr }
		require.NoError(t, b.dev.Close())
		requireKind(t, verify(b), upgrader.KindFailed, status.ReasonUnreachableAfterFlash)
	})
	t.Run("after a crash mid-reboot", func(t *testing.T) {
		t.Parallel()
		b := setup(t, setupOpts{sim: openwrttest.Config{RebootDelay: 300 * time.Millisecond}})
		// Flash by hand, as an earlier worker would have, then verify.
		b.rep.onPhase = func(p status.Phase) {
			if p == status.PhaseRebooting {
				panic(errCrash)
			}
		}
		func() {
			defer func() { require.Equal(t, errCrash, recover()) }()
			_ = b.upgrade(t)
		}()
		b.rep.onPhase = nil
		require.NoError(t, verify(b))
		require.Equal(t, newRelease, b.dev.Release())
		require.Len(t, flashCommands(b.dev), 1)
	})
}

var errCrash = errors.New("crash")

func TestPasswordNeverLogged(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-Pa55"
	b := setup(t, setupOpts{sim: openwrttest.Config{Password: secret}, creds: func(b *bundle, c *Credentials) { c.Password = secret }})
	require.NoError(t, b.upgrade(t))
	require.NotContains(t, b.rep.Logs(), secret)
	c := Credentials{Address: "h", User: "root", Password: secret}
	for _, s := range []string{c.String(), c.GoString(), c.LogValue().String()} {
		require.NotContains(t, s, secret)
	}
	// A wrong password aborts (the same one will not do better later),
	// without showing it.
	b2 := setup(t, setupOpts{creds: func(b *bundle, c *Credentials) { c.Password = secret }})
	err := b2.upgrade(t)
	requireKind(t, err, upgrader.KindAborted, status.ReasonAuthFailed)
	require.NotContains(t, err.Error(), secret)
	require.NotContains(t, b2.rep.Logs(), secret)
}

func TestKeyAuth(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := ssh.NewSignerFromKey(priv)
	require.NoError(t, err)
	b := setup(t, setupOpts{
		sim:   openwrttest.Config{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}},
		creds: func(b *bundle, c *Credentials) { c.Password = ""; c.Signers = []ssh.Signer{signer} },
	})
	require.NoError(t, b.upgrade(t))
}

// keep imports used by helpers in this file.
var _ = slices.Contains[[]string]
