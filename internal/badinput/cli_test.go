package badinput_test

// Rows of the operator CLI, examples/fwupgrade, run as a process built by
// TestMain, against simulated devices reached with a key of the row's own
// and verified with a known_hosts file.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/store"
)

// Exit codes of fwupgrade (go doc ./examples/fwupgrade).
const (
	exitAborted = 2
	exitUsage   = 64
)

// cliDevice is a simulated device and its inventory entry.
type cliDevice struct {
	sim
	entry map[string]any
}

// cliWorld is a CLI row's world: its directory (key, known_hosts,
// inventory, images), the TMPDIR the command gets, and its devices.
type cliWorld struct {
	t          *testing.T
	dir, tmp   string
	key        string // identity file
	knownHosts string
	devices    []*cliDevice
	inventory  string
	image      string // a 23.05 image for the C7, with fwtool metadata
}

// devSpec is what a device of a CLI world is.
type devSpec struct{ model, board string }

var c7Spec = devSpec{c7Model, c7Board}

func newCLIWorld(t *testing.T, specs ...devSpec) *cliWorld {
	t.Helper()
	requireCommands(t)
	if len(specs) == 0 {
		specs = []devSpec{c7Spec, c7Spec}
	}
	w := &cliWorld{t: t, dir: t.TempDir(), tmp: t.TempDir()}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	sshPub, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	w.key = filepath.Join(w.dir, "id_ed25519")
	require.NoError(t, os.WriteFile(w.key, pem.EncodeToMemory(block), 0o600))

	var known []byte
	var entries []any
	for i, sp := range specs {
		id := uuid.NewString()
		dev, err := openwrttest.New(openwrttest.Config{UUID: id, Model: sp.model, BoardName: sp.board,
			Password: "unused-" + uuid.NewString(), AuthorizedKeys: []ssh.PublicKey{sshPub},
			RebootDelay: 100 * time.Millisecond})
		require.NoError(t, err)
		require.NoError(t, dev.Start())
		t.Cleanup(func() { dev.Close() })
		known = append(known, dev.KnownHosts()...)
		host, port, _ := strings.Cut(dev.Addr(), ":")
		entry := map[string]any{"id": id, "name": "ap-" + string(rune('a'+i)), "host": host, "port": json.Number(port),
			"model": sp.model, "board_name": sp.board, "location": "lab"}
		entries = append(entries, entry)
		w.devices = append(w.devices, &cliDevice{sim: sim{dev: dev, rec: store.Device{ID: id, Name: entry["name"].(string),
			BoardName: sp.board}}, entry: entry})
	}
	w.knownHosts = filepath.Join(w.dir, "known_hosts")
	require.NoError(t, os.WriteFile(w.knownHosts, known, 0o600))
	w.inventory = w.writeJSON("inventory.json", map[string]any{
		"defaults": map[string]any{"identity_file": "id_ed25519", "known_hosts": "known_hosts"},
		"devices":  entries,
	})
	w.image = w.writeImage(openwrttest.NewImage(newSeries, c7Board, 0).FileName(), c7Sim(imageSize))
	return w
}

// writeJSON writes v as JSON in the world's directory.
func (w *cliWorld) writeJSON(name string, v any) string {
	w.t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	require.NoError(w.t, err)
	return w.writeFile(name, b)
}

func (w *cliWorld) writeFile(name string, b []byte) string {
	w.t.Helper()
	p := filepath.Join(w.dir, name)
	require.NoError(w.t, os.WriteFile(p, b, 0o600))
	return p
}

func (w *cliWorld) writeImage(name string, im openwrttest.Image) string {
	w.t.Helper()
	p := filepath.Join(w.dir, name)
	f, err := os.Create(p)
	require.NoError(w.t, err)
	_, err = io.Copy(f, im.Reader())
	require.NoError(w.t, err)
	require.NoError(w.t, f.Close())
	return p
}

// inventoryWith writes an inventory whose devices are the world's entries
// changed by edit (which may also change the top level).
func (w *cliWorld) inventoryWith(edit func(top map[string]any, devs []map[string]any)) string {
	w.t.Helper()
	var devs []map[string]any
	var list []any
	for _, d := range w.devices {
		e := map[string]any{}
		for k, v := range d.entry {
			e[k] = v
		}
		devs = append(devs, e)
		list = append(list, e)
	}
	top := map[string]any{"defaults": map[string]any{"identity_file": "id_ed25519", "known_hosts": "known_hosts"}, "devices": list}
	edit(top, devs)
	return w.writeJSON("inventory-"+uuid.NewString()[:8]+".json", top)
}

// contradicting writes, under the C7 image's file name in a directory of
// its own, an image whose fwtool metadata names only the GL-AR300M, and
// returns its path.
func (w *cliWorld) contradicting() string {
	w.t.Helper()
	dir := filepath.Join(w.dir, "contradicting")
	require.NoError(w.t, os.Mkdir(dir, 0o700))
	im := c7Sim(imageSize)
	im.Boards, im.Metadata = []string{glBoard}, metadataFor(glBoard)
	p := filepath.Join(dir, filepath.Base(w.image))
	require.NoError(w.t, os.WriteFile(p, im.Bytes(), 0o600))
	return p
}

// batch returns a batch command line for the world, then extra.
func (w *cliWorld) batch(extra ...string) []string {
	a := []string{"batch", "--inventory", w.inventory, "--image", w.image,
		"--reconnect-delay", "100ms", "--reconnect-retry-delay", "100ms", "--reconnect-max-retries", "50",
		"--upgrade-timeout", "10s", "--retries", "0"}
	return append(a, extra...)
}

// batchWith is batch with --inventory inv.
func (w *cliWorld) batchWith(inv string, extra ...string) []string {
	a := w.batch(extra...)
	a[2] = inv
	return a
}

// upgrade returns an upgrade command line for the world's first device,
// then extra (a flag given again overrides the first).
func (w *cliWorld) upgrade(extra ...string) []string {
	d := w.devices[0]
	host, port, _ := strings.Cut(d.dev.Addr(), ":")
	a := []string{"upgrade", "--host", host, "--port", port, "--identity", w.key, "--known-hosts", w.knownHosts,
		"--image", w.image, "--uuid", d.rec.ID,
		"--reconnect-delay", "100ms", "--reconnect-retry-delay", "100ms", "--reconnect-max-retries", "50",
		"--upgrade-timeout", "10s", "--retries", "0"}
	return append(a, extra...)
}

// cliResult is what a run of the command gave.
type cliResult struct {
	code           int
	stdout, stderr string
}

func (w *cliWorld) run(args []string) cliResult {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rowTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.fwupgrade, args...)
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), "TMPDIR="+w.tmp)
	dieWithTest(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		w.t.Fatalf("fwupgrade did not run: %v", err)
	}
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// cliCase is a CLI row. The harness requires the exit code; for exit 64 an
// empty standard output and one line on standard error that says every
// word of says; the devices untouched (or only read, as contact allows);
// and nothing left in the command's TMPDIR.
type cliCase struct {
	name, input, want, proves, defect string

	specs   []devSpec                       // the world's devices (two C7 by default)
	args    func(w *cliWorld) []string      // the command line
	code    int                             // the exit code wanted
	says    []string                        // words of the one stderr line (exit 64)
	result  func(t *testing.T, r cliResult) // more checks of the output
	contact contact
	// orUsage also accepts exit 64 (bad usage, with its one line), for
	// inputs the command may refuse up front or at planning.
	orUsage bool
}

func (c cliCase) row() row {
	return row{surface: surfaceCLI, name: c.name, input: c.input, want: c.want, proves: c.proves, defect: c.defect,
		run: func(t *testing.T) { c.run(t) }}
}

func (c cliCase) run(t *testing.T) {
	w := newCLIWorld(t, c.specs...)
	marks := make([]deviceMark, len(w.devices))
	sims := make([]*sim, len(w.devices))
	for i, d := range w.devices {
		sims[i] = &d.sim
		marks[i] = deviceMark{commands: len(d.dev.Commands()), files: d.dev.Files()}
	}
	args := c.args(w)
	r := w.run(args)
	if c.orUsage && r.code == exitUsage {
		c.code, c.result = exitUsage, nil
	}
	require.Equalf(t, c.code, r.code, "exit code of fwupgrade %s\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.stdout, r.stderr)
	if c.code == exitUsage {
		assert.Empty(t, r.stdout, "nothing on standard output")
		line := strings.TrimSuffix(r.stderr, "\n")
		assert.NotContains(t, line, "\n", "one line on standard error: %q", r.stderr)
		assert.NotEmpty(t, line, "a line on standard error")
		for _, s := range c.says {
			assert.Containsf(t, line, s, "the error line does not say %q", s)
		}
	}
	if c.result != nil {
		c.result(t, r)
	}
	requireUntouched(t, sims, marks, c.contact)
	left, err := os.ReadDir(w.tmp)
	require.NoError(t, err)
	assert.Empty(t, left, "the command left files in its TMPDIR")
}

func usageRow(name, input string, args func(w *cliWorld) []string, says ...string) cliCase {
	return cliCase{name: name, input: input, args: args, code: exitUsage, says: says,
		want:   "exit 64, one line on stderr naming the problem (" + strings.Join(says, ", ") + ")",
		proves: "refused before anything starts: no device receives a command, nothing is left behind"}
}

func cliInventoryRows() []cliCase {
	inv := func(name, input string, edit func(w *cliWorld, top map[string]any, devs []map[string]any), says ...string) cliCase {
		return usageRow("inventory/"+name, "batch --inventory: "+input, func(w *cliWorld) []string {
			return w.batchWith(w.inventoryWith(func(top map[string]any, devs []map[string]any) { edit(w, top, devs) }))
		}, says...)
	}
	raw := func(name, input, content string, says ...string) cliCase {
		return usageRow("inventory/"+name, "batch --inventory: "+input, func(w *cliWorld) []string {
			return w.batchWith(w.writeFile("raw.json", []byte(content)))
		}, says...)
	}
	return []cliCase{
		raw("malformed-json", "JSON cut short", `{"devices": [{"id": "x",`, "not valid JSON"),
		raw("syntax-error-position", "a stray comma on line 3", "{\n \"devices\": [\n  {\"id\": \"x\",},\n ]}", "line 3"),
		raw("no-devices", `{"devices": []}`, `{"devices": []}`, "no devices"),
		raw("not-an-object", "a JSON list at the top", `[{"id": "x"}]`, "inventory"),
		inv("duplicate-id", "two devices with one id", func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			d[1]["id"] = d[0]["id"]
		}, "device 2", "also device 1's"),
		inv("missing-id", `a device without "id"`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			delete(d[1], "id")
		}, "device 2", `"id" is missing`),
		inv("missing-host", `a device without "host"`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			delete(d[0], "host")
		}, "device 1", `"host" is missing`),
		inv("missing-model-and-board", `a device with neither "model" nor "board_name"`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			delete(d[0], "model")
			delete(d[0], "board_name")
		}, `"model" or "board_name"`),
		inv("missing-known-hosts", `no "known_hosts" anywhere`, func(_ *cliWorld, top map[string]any, _ []map[string]any) {
			top["defaults"] = map[string]any{"identity_file": "id_ed25519"}
		}, `"known_hosts" is missing`),
		inv("missing-credentials", `neither "identity_file" nor "password_env"`, func(_ *cliWorld, top map[string]any, _ []map[string]any) {
			top["defaults"] = map[string]any{"known_hosts": "known_hosts"}
		}, "no credentials"),
		inv("both-credentials", `"identity_file" and "password_env" on one device`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			d[0]["identity_file"], d[0]["password_env"] = "id_ed25519", "HOME"
		}, `"identity_file" and "password_env"`),
		inv("unknown-field", `a device with "colour": "red"`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			d[0]["colour"] = "red"
		}, `unknown field "colour"`),
		inv("wrong-type-port", `"port": "22" (a string)`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			d[0]["port"] = "22"
		}, `"port" must be a number`),
		inv("port-out-of-range", `"port": 70000`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			d[0]["port"] = 70000
		}, `"port" 70000`),
		inv("two-at-one-address", "two devices at one host:port", func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			d[1]["host"], d[1]["port"] = d[0]["host"], d[0]["port"]
		}, "also device 1's address"),
		inv("host-with-shell", `"host": "192.0.2.1; reboot"`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			d[0]["host"] = "192.0.2.1; reboot"
		}, `"host"`, "not an address"),
		inv("id-not-uuid", `"id": "ap-lobby" with the identity check on`, func(_ *cliWorld, _ map[string]any, d []map[string]any) {
			d[0]["id"] = "ap-lobby"
		}, "not a UUID"),
		inv("unknown-host-key", "a known_hosts file without the second device's key", func(w *cliWorld, _ map[string]any, d []map[string]any) {
			d[1]["known_hosts"] = filepath.Base(w.writeFile("known_hosts_first", w.devices[0].dev.KnownHosts()))
		}, "unknown host key"),
		inv("missing-key-file", `"identity_file" that does not exist`, func(_ *cliWorld, top map[string]any, _ []map[string]any) {
			top["defaults"] = map[string]any{"identity_file": "no_such_key", "known_hosts": "known_hosts"}
		}, "no_such_key"),
		usageRow("inventory/missing-file", "batch --inventory naming no file", func(w *cliWorld) []string {
			return w.batchWith(filepath.Join(w.dir, "no-such-inventory.json"))
		}, "--inventory", "no-such-inventory.json"),
	}
}

func cliRolloutRows() []cliCase {
	flag := func(name string, extra []string, says ...string) cliCase {
		c := usageRow("rollout/"+name, "batch "+strings.Join(extra, " "), func(w *cliWorld) []string { return w.batch(extra...) }, says...)
		c.proves = "the rollout is checked before the store is opened or a device contacted"
		return c
	}
	return []cliCase{
		flag("waves-over-100", []string{"--waves", "1,150%"}, "--waves", "150%"),
		flag("waves-not-a-list", []string{"--waves", "one,two"}, "--waves", `"one"`),
		flag("failure-threshold-over-100", []string{"--failure-threshold", "120%"}, "--failure-threshold", "120%"),
		flag("failure-threshold-nan", []string{"--failure-threshold", "NaN"}, "--failure-threshold", "NaN"),
		flag("window-empty", []string{"--window", "05:00-05:00"}, "--window", "05:00-05:00"),
		flag("window-bad-zone", []string{"--window", "01:00-05:00 Mars/Olympus"}, "--window", "Mars/Olympus"),
		flag("rate-zero-period", []string{"--rate", "5/0s"}, "--rate", "period"),
		flag("rate-zero-count", []string{"--rate", "0/min"}, "--rate"),
		flag("group-by-unknown", []string{"--group-limit", "1", "--group-by", "colour"}, "--group-by", "colour"),
		flag("concurrency-zero", []string{"--concurrency", "0"}, "--concurrency"),
		flag("wave-wait-negative", []string{"--wave-wait", "-1s"}, "--wave-wait"),
		flag("option-unknown-letter", []string{"--option", "c,x"}, "--option", `"x"`),
		flag("option-conflicting", []string{"--option", "n,c"}, "--option", "contradicts"),
		flag("check-without-dry-run", []string{"--check"}, "--check needs --dry-run"),
		flag("hold-without-store", []string{"--hold"}, "--hold needs --store"),
	}
}

func cliImageRows() []cliCase {
	c7Name := openwrttest.NewImage(newSeries, c7Board, 0).FileName()
	image := func(name, input string, file string, content func() []byte, says ...string) cliCase {
		c := usageRow("image/"+name, "batch --image "+input, func(w *cliWorld) []string {
			p := w.writeFile(file, content())
			a := w.batch()
			a[4] = p
			return a
		}, says...)
		c.proves = "the image is checked before any device is contacted; nothing is left in TMPDIR"
		return c
	}
	corrupt := c7Sim(imageSize)
	corrupt.Metadata = &imagemap.Metadata{Raw: []byte(`{"supported_devices": [`)}
	crc := c7Sim(imageSize)
	crc.BadCRC = true
	noMeta := openwrttest.Image{Boards: []string{c7Board}, Release: openwrttest.ReleaseDescription(newSeries), Size: imageSize}
	return []cliCase{
		image("empty", "an empty file", c7Name, func() []byte { return nil }, "empty"),
		image("corrupt-metadata", "fwtool metadata cut short", c7Name, corrupt.Bytes, "metadata"),
		image("bad-crc", "fwtool metadata with a wrong CRC", c7Name, crc.Bytes, "CRC"),
		image("unknown-type", "firmware.bin without metadata (a type in no image map)", "firmware.bin", noMeta.Bytes,
			"firmware.bin", "--image-map"),
		usageRow("image/directory", "batch --image naming a directory", func(w *cliWorld) []string {
			a := w.batch()
			a[4] = w.dir
			return a
		}, "not a regular file"),
		usageRow("image/missing-file", "batch --image naming no file", func(w *cliWorld) []string {
			a := w.batch()
			a[4] = filepath.Join(w.dir, "nope.bin")
			return a
		}, "--image", "nope.bin"),
		usageRow("image/two-of-one-type", "batch --image A --image B where A and B are of one image type", func(w *cliWorld) []string {
			other := w.writeImage("openwrt-23.05.2-"+imagemap.TypeFromFileName(c7Name), c7Sim(imageSize))
			return w.batch("--image", other)
		}, "image type"),
		{name: "image/metadata-contradicts-name",
			input: "batch of a file named for the C7 whose fwtool metadata names only the GL-AR300M, for an inventory of C7s",
			args: func(w *cliWorld) []string {
				a := w.batch("--json")
				a[4] = w.contradicting()
				return a
			},
			code:    exitAborted,
			orUsage: true,
			want:    `exit 64 naming the image, or exit 2 with state "nothing-selected" (every C7 skipped no-image-for-board)`,
			proves:  "no C7 is contacted for an image its metadata excludes",
			result: func(t *testing.T, r cliResult) {
				var out struct{ State string }
				require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), "stdout: %s", r.stdout)
				assert.Equal(t, "nothing-selected", out.State)
			}},
		{name: "image/wrong-board-batch", input: "batch of a C7 image for an inventory of GL-AR300M devices only",
			specs:  []devSpec{{glModel, glBoard}, {glModel, glBoard}},
			args:   func(w *cliWorld) []string { return w.batch("--json") },
			code:   exitAborted,
			want:   `exit 2; --json says state "nothing-selected", every device skipped no-image-for-board`,
			proves: "devices of another board are refused at planning: none is contacted, nothing is left behind",
			result: func(t *testing.T, r cliResult) {
				var out struct {
					State   string `json:"state"`
					Skipped []struct {
						Reason string `json:"reason"`
					} `json:"skipped"`
				}
				require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), "stdout: %s", r.stdout)
				assert.Equal(t, "nothing-selected", out.State)
				require.Len(t, out.Skipped, 2)
				for _, s := range out.Skipped {
					assert.Equal(t, "no-image-for-board", s.Reason)
				}
			}},
	}
}

func cliUpgradeRows() []cliCase {
	c7Name := openwrttest.NewImage(newSeries, c7Board, 0).FileName()
	up := func(name, input string, extra []string, says ...string) cliCase {
		return usageRow("upgrade/"+name, "upgrade "+input, func(w *cliWorld) []string { return w.upgrade(extra...) }, says...)
	}
	badImage := func(name, input string, content func() []byte, says ...string) cliCase {
		c := usageRow("upgrade/"+name, "upgrade --image "+input, func(w *cliWorld) []string {
			return w.upgrade("--image", w.writeFile(c7Name, content()))
		}, says...)
		return c
	}
	corrupt := c7Sim(imageSize)
	corrupt.Metadata = &imagemap.Metadata{Raw: []byte(`{"supported_devices": [`)}
	return []cliCase{
		up("uuid-malformed", "--uuid not-a-uuid", []string{"--uuid", "not-a-uuid"}, "--uuid", "not a UUID"),
		up("negative-retries", "--retries -1", []string{"--retries", "-1"}, "--retries"),
		up("negative-timeout", "--upgrade-timeout -5s", []string{"--upgrade-timeout", "-5s"}, "negative"),
		up("bad-duration", "--reconnect-delay soon", []string{"--reconnect-delay", "soon"}, "reconnect-delay"),
		up("port-out-of-range", "--port 70000", []string{"--port", "70000"}, "--port 70000"),
		up("missing-known-hosts-file", "--known-hosts naming no file", []string{"--known-hosts", "/nonexistent/known_hosts"}, "--known-hosts"),
		up("unknown-flag", "--insecure (there is no way to skip the host key check)", []string{"--insecure"}, "unknown flag", "insecure"),
		up("option-conflicting", "--option n,c", []string{"--option", "n,c"}, "--option"),
		badImage("empty-image", "an empty file", func() []byte { return nil }, "empty"),
		badImage("corrupt-metadata", "fwtool metadata cut short", corrupt.Bytes, "metadata"),
		{name: "upgrade/wrong-board", input: "upgrade of a GL-AR300M with a C7 image",
			specs:  []devSpec{{glModel, glBoard}},
			args:   func(w *cliWorld) []string { return w.upgrade("--json") },
			code:   exitAborted,
			want:   `exit 2; --json says state "aborted", reason "no-image-for-board"`,
			proves: "the device is only read (its board) and never gets the image: no upload, no flash, no operation run",
			result: func(t *testing.T, r cliResult) {
				var out struct{ State, Reason string }
				require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), "stdout: %s", r.stdout)
				assert.Equal(t, "aborted", out.State)
				assert.Equal(t, "no-image-for-board", out.Reason)
			},
			contact: contactReadOnly},
	}
}

func cliRows() []row {
	var cases []cliCase
	cases = append(cases, cliInventoryRows()...)
	cases = append(cases, cliRolloutRows()...)
	cases = append(cases, cliImageRows()...)
	cases = append(cases, cliUpgradeRows()...)
	cases = append(cases, usageRow("usage/no-command", "fwupgrade with no command", func(*cliWorld) []string { return nil }, "no command"),
		usageRow("usage/unknown-command", "fwupgrade flash", func(*cliWorld) []string { return []string{"flash"} }, `unknown command "flash"`))
	rows := make([]row, len(cases))
	for i, c := range cases {
		rows[i] = c.row()
	}
	return rows
}
