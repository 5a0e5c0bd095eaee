package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
)

const (
	x1Model, x1Board = "ACME X1", "acme,x1"
	x2Model, x2Board = "ACME X2", "acme,x2"
	glModel, glBoard = "GL.iNet GL-AR300M", "glinet,gl-ar300m"
	// x1Image is not in the built-in map: its fwtool metadata names its
	// board. x2Image has no metadata: --image-map names its board.
	x1Image = "acme-x1-squashfs-sysupgrade.bin"
	x2Image = "acme-x2-squashfs-sysupgrade.bin"
)

// fleetDevice is one simulated device of a fleet and what the inventory
// says about it.
type fleetDevice struct {
	dev   *openwrttest.Device
	id    string
	name  string
	entry map[string]any
}

// fleet is simulated devices, reached with one key, and the files the
// commands take: inventory, known_hosts, images, image map.
type fleet struct {
	dir       string
	devices   []*fleetDevice
	inventory string
	c7Image   string
	x1Image   string
	x2Image   string
	imageMap  string
	meter     *openwrttest.Meter
}

// spec describes a device of a fleet: what it is, and what the inventory
// says it is (claimModel/claimBoard, when they differ).
type spec struct {
	name                   string
	model, board           string
	claimModel, claimBoard string
	cfg                    openwrttest.Config
}

func newFleet(t *testing.T, specs ...spec) *fleet {
	t.Helper()
	f := &fleet{dir: t.TempDir(), meter: openwrttest.NewMeter()}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	sshPub, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "id_ed25519"), pem.EncodeToMemory(block), 0o600))

	var knownHosts []byte
	var entries []map[string]any
	// IDs in the specs' order: batches take devices in ID order.
	ids := make([]string, len(specs))
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	slices.Sort(ids)
	for i, sp := range specs {
		cfg := sp.cfg
		id := ids[i]
		cfg.Model, cfg.BoardName, cfg.UUID, cfg.Release = sp.model, sp.board, id, oldRelease
		cfg.Password = "not-used-" + uuid.NewString()
		cfg.AuthorizedKeys = []ssh.PublicKey{sshPub}
		cfg.Meter = f.meter
		if cfg.RebootDelay == 0 {
			cfg.RebootDelay = 200 * time.Millisecond
		}
		dev, err := openwrttest.New(cfg)
		require.NoError(t, err)
		require.NoError(t, dev.Start())
		t.Cleanup(func() { dev.Close() })
		knownHosts = append(knownHosts, dev.KnownHosts()...)
		host, port, _ := strings.Cut(dev.Addr(), ":")
		entry := map[string]any{"id": id, "name": sp.name, "host": host, "port": json.Number(port),
			"model": sp.model, "board_name": sp.board, "location": "lab"}
		if sp.claimModel != "" || sp.claimBoard != "" {
			entry["model"], entry["board_name"] = sp.claimModel, sp.claimBoard
		}
		entries = append(entries, entry)
		f.devices = append(f.devices, &fleetDevice{dev: dev, id: id, name: sp.name, entry: entry})
	}
	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "known_hosts"), knownHosts, 0o600))
	f.inventory = f.writeInventory(t, "inventory.json", map[string]any{
		"defaults": map[string]any{"identity_file": "id_ed25519", "known_hosts": "known_hosts"},
		"devices":  entries,
	})

	f.c7Image = writeImage(t, f.dir, "openwrt-23.05.3-"+c7Type, openwrttest.Image{Boards: []string{c7Board}, Release: newRelease, Size: 256 << 10})
	f.x1Image = writeImage(t, f.dir, x1Image, openwrttest.Image{Boards: []string{x1Board}, Release: newRelease, Size: 256 << 10, Fwtool: true})
	f.x2Image = writeImage(t, f.dir, x2Image, openwrttest.Image{Boards: []string{x2Board}, Release: newRelease, Size: 256 << 10})
	f.imageMap = filepath.Join(f.dir, "imagemap.json")
	require.NoError(t, os.WriteFile(f.imageMap,
		[]byte(`{"`+x2Image+`": {"label": "ACME X2", "boards": ["`+x2Model+`"], "board_names": ["`+x2Board+`"]}}`), 0o600))
	return f
}

func writeImage(t *testing.T, dir, name string, im openwrttest.Image) string {
	t.Helper()
	path := filepath.Join(dir, name)
	out, err := os.Create(path)
	require.NoError(t, err)
	_, err = io.Copy(out, im.Reader())
	require.NoError(t, err)
	require.NoError(t, out.Close())
	return path
}

// writeInventory writes v as JSON in the fleet's directory.
func (f *fleet) writeInventory(t *testing.T, name string, v any) string {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	path := filepath.Join(f.dir, name)
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

// args returns a batch command line for the fleet's inventory, with short
// reconnection delays, and extra.
func (f *fleet) args(cmd string, extra ...string) []string {
	a := []string{cmd, "--inventory", f.inventory,
		"--reconnect-delay", "100ms", "--reconnect-retry-delay", "100ms", "--reconnect-max-retries", "50",
		"--upgrade-timeout", "5s", "--retries", "0"}
	return append(a, extra...)
}

// contacted returns the names of the devices that received any command.
func (f *fleet) contacted() []string {
	var names []string
	for _, d := range f.devices {
		if len(d.dev.Commands()) > 0 {
			names = append(names, d.name)
		}
	}
	return names
}

func (f *fleet) byName(name string) *fleetDevice {
	for _, d := range f.devices {
		if d.name == name {
			return d
		}
	}
	return nil
}

// cli runs the command and returns its exit code and outputs.
func cli(t *testing.T, args []string, sig chan os.Signal) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if sig == nil {
		sig = make(chan os.Signal)
	}
	code := run(ctx, args, &stdout, &stderr, sig)
	return code, stdout.String(), stderr.String()
}

// eventually polls cond until it holds, and gives up after a minute (a
// guard against a hung test, not a measure of speed).
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

func decode[T any](t *testing.T, stdout, stderr string) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal([]byte(stdout), &v), "stdout: %s\nstderr: %s", stdout, stderr)
	return v
}

func opsByName(sum batchSummary) map[string]opSummary {
	out := map[string]opSummary{}
	for _, o := range sum.Operations {
		out[o.Name] = o
	}
	return out
}

func TestBatchDryRun(t *testing.T) {
	t.Parallel()
	f := newFleet(t,
		spec{name: "c7", model: c7Model, board: c7Board},
		spec{name: "x1", model: x1Model, board: x1Board},
		spec{name: "x2", model: x2Model, board: x2Board},
		spec{name: "gl", model: glModel, board: glBoard},
	)
	images := []string{"--image", f.c7Image, "--image", f.x1Image, "--image", f.x2Image, "--image-map", f.imageMap}

	t.Run("Plan", func(t *testing.T) {
		code, stdout, stderr := cli(t, f.args("batch", append(images, "--dry-run", "--waves", "1,100%", "--json")...), nil)
		assert.Equal(t, exitAborted, code, "a skipped device makes the dry run exit 2: %s", stderr)
		plan := decode[dryRunOutput](t, stdout, stderr)
		assert.True(t, plan.DryRun)
		got := map[string]string{}
		for _, d := range plan.Selected {
			got[d.Name] = d.Image
			assert.Nil(t, d.Check, "no checks without --check")
		}
		assert.Equal(t, map[string]string{"c7": filepath.Base(f.c7Image), "x1": x1Image, "x2": x2Image}, got,
			"built-in map, fwtool metadata and --image-map each choose an image")
		assert.Equal(t, []int{1, 2}, plan.WaveSizes)
		require.Len(t, plan.Skipped, 1)
		assert.Equal(t, "gl", plan.Skipped[0].Name)
		assert.Equal(t, "no-image-for-board", plan.Skipped[0].Reason)
		assert.Contains(t, stderr, "skip    gl", "the human plan names the skipped device")
		assert.Empty(t, f.contacted(), "a dry run without --check contacts no device")
	})

	t.Run("Check", func(t *testing.T) {
		code, stdout, stderr := cli(t, f.args("batch", append(images, "--dry-run", "--check", "--json")...), nil)
		assert.Equal(t, exitAborted, code, stderr)
		plan := decode[dryRunOutput](t, stdout, stderr)
		require.Len(t, plan.Selected, 3)
		for _, d := range plan.Selected {
			require.NotNil(t, d.Check, d.Name)
			assert.Equal(t, "ready", string(d.Check.Verdict), "%s: %+v", d.Name, d.Check)
		}
		for _, d := range f.devices {
			assert.Zero(t, d.dev.Flashed(), d.name)
			assert.Equal(t, oldRelease, d.dev.Release(), d.name)
			assert.Empty(t, d.dev.Files(), "%s: nothing written to the device", d.name)
			for _, argv := range d.dev.Executed() {
				assert.NotEqual(t, "sysupgrade", argv[0], "%s: %v", d.name, argv)
			}
		}
		assert.ElementsMatch(t, []string{"c7", "x1", "x2"}, f.contacted(), "--check connects to the selected devices only")
	})

	t.Run("HumanCheckWithoutJSON", func(t *testing.T) {
		code, stdout, stderr := cli(t, f.args("batch", append(images, "--dry-run", "--check")...), nil)
		assert.Equal(t, exitAborted, code, stderr)
		assert.Contains(t, stdout, "dry run: 3 devices would be upgraded")
		assert.Contains(t, stdout, "[ready]")
		assert.Contains(t, stdout, "skip    gl")
	})
}

func TestBatchRunsWavesWithConcurrency(t *testing.T) {
	t.Parallel()
	f := newFleet(t,
		spec{name: "c7-a", model: c7Model, board: c7Board},
		spec{name: "c7-b", model: c7Model, board: c7Board},
		spec{name: "c7-c", model: c7Model, board: c7Board},
		spec{name: "x1", model: x1Model, board: x1Board},
	)
	code, stdout, stderr := cli(t, f.args("batch", "--image", f.c7Image, "--image", f.x1Image,
		"--waves", "1,50%,100%", "--concurrency", "2", "--failure-threshold", "20%", "--rate", "100/min", "--json"), nil)
	require.Equal(t, exitSuccess, code, "stdout: %s\nstderr: %s", stdout, stderr)
	sum := decode[batchSummary](t, stdout, stderr)
	assert.NotEmpty(t, sum.BatchID)
	assert.Equal(t, "success", sum.State)
	assert.Equal(t, "memory", sum.Store)
	assert.Equal(t, 3, sum.Waves)
	assert.Equal(t, summaryCounts{Total: 4, Success: 4}, sum.Counts)
	assert.Empty(t, sum.Skipped)
	ops := opsByName(sum)
	require.Len(t, ops, 4)
	waves := map[int]int{}
	for _, d := range f.devices {
		o := ops[d.name]
		assert.Equal(t, d.id, o.Device)
		assert.Equal(t, "success", o.State, d.name)
		assert.Equal(t, 100, o.Progress, d.name)
		assert.NotEmpty(t, o.ID)
		waves[o.Wave]++
		assert.Equal(t, newRelease, d.dev.Release(), d.name)
		assert.Equal(t, 1, d.dev.Flashed(), d.name)
	}
	assert.Equal(t, map[int]int{1: 1, 2: 1, 3: 2}, waves, "waves 1,50%,100% of 4 devices")
	assert.Equal(t, x1Image, ops["x1"].Image)
	assert.LessOrEqual(t, f.meter.MaxBusy(), 2, "--concurrency 2")
	assert.Contains(t, stderr, "c7-a", "progress lines name the devices (on stderr with --json)")
}

func TestBatchWrongBoardIsNotSuccess(t *testing.T) {
	t.Parallel()
	f := newFleet(t,
		spec{name: "good", model: c7Model, board: c7Board},
		// The inventory says C7; the device is another board.
		spec{name: "liar", model: glModel, board: glBoard, claimModel: c7Model, claimBoard: c7Board},
		spec{name: "other", model: glModel, board: glBoard},
	)
	code, stdout, stderr := cli(t, f.args("batch", "--image", f.c7Image, "--json"), nil)
	assert.Equal(t, exitAborted, code, "stdout: %s\nstderr: %s", stdout, stderr)
	sum := decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, "failed", sum.State, "a batch with an aborted device ends failed")
	ops := opsByName(sum)
	assert.Equal(t, "success", ops["good"].State)
	assert.Equal(t, "aborted", ops["liar"].State)
	assert.NotEmpty(t, ops["liar"].Reason)
	assert.NotEmpty(t, ops["liar"].LastLog, "the summary says why")
	require.Len(t, sum.Skipped, 1)
	assert.Equal(t, "other", sum.Skipped[0].Name)
	assert.Equal(t, 0, f.byName("liar").dev.Flashed())
	assert.Equal(t, oldRelease, f.byName("liar").dev.Release())
	assert.Empty(t, f.byName("other").dev.Commands(), "a skipped device is not contacted")
}

func TestBatchFailedDeviceExitsOne(t *testing.T) {
	t.Parallel()
	f := newFleet(t,
		spec{name: "good", model: c7Model, board: c7Board},
		spec{name: "gone", model: c7Model, board: c7Board, cfg: openwrttest.Config{Faults: openwrttest.Faults{NeverComeBack: true}}},
	)
	args := f.args("batch", "--image", f.c7Image, "--json")
	for i, a := range args {
		if a == "--reconnect-max-retries" {
			args[i+1] = "3"
		}
	}
	code, stdout, stderr := cli(t, args, nil)
	assert.Equal(t, exitFailed, code, stderr)
	sum := decode[batchSummary](t, stdout, stderr)
	ops := opsByName(sum)
	assert.Equal(t, "success", ops["good"].State)
	assert.Equal(t, "failed", ops["gone"].State)
	assert.Equal(t, "unreachable-after-flash", ops["gone"].Reason)
}

func TestBatchCtrlCPausesAndLetsRunningFinish(t *testing.T) {
	t.Parallel()
	f := newFleet(t,
		spec{name: "a", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
		spec{name: "b", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
		spec{name: "c", model: c7Model, board: c7Board, cfg: openwrttest.Config{RebootDelay: time.Second}},
	)
	sig := make(chan os.Signal, 1)
	go func() {
		// Ctrl-C once the first device is being upgraded.
		if eventually(func() bool { return len(f.contacted()) > 0 }) {
			sig <- os.Interrupt
		}
	}()
	code, stdout, stderr := cli(t, f.args("batch", "--image", f.c7Image, "--concurrency", "1", "--json"), sig)
	assert.Equal(t, exitCancelled, code, "stdout: %s\nstderr: %s", stdout, stderr)
	sum := decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, "paused", sum.State)
	assert.Equal(t, "operator", sum.PauseReason)
	assert.Equal(t, 1, sum.Counts.Success, "the running device finished")
	assert.Equal(t, 2, sum.Counts.Pending, "nothing else started")
	assert.Len(t, f.contacted(), 1)
	flashed := 0
	for _, d := range f.devices {
		flashed += d.dev.Flashed()
	}
	assert.Equal(t, 1, flashed)
	assert.Contains(t, stderr, "pausing batch "+sum.BatchID)
	assert.Contains(t, stderr, "lived only in this process")
	assert.Contains(t, stderr, "2 devices were not upgraded")
}

func TestBatchBadInventory(t *testing.T) {
	t.Parallel()
	f := newFleet(t,
		spec{name: "a", model: c7Model, board: c7Board},
		spec{name: "b", model: c7Model, board: c7Board},
	)
	a, b := f.devices[0].entry, f.devices[1].entry
	with := func(e map[string]any, k string, v any) map[string]any {
		c := map[string]any{}
		for key, val := range e {
			c[key] = val
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	defaults := map[string]any{"identity_file": "id_ed25519", "known_hosts": "known_hosts"}
	inv := func(devs ...map[string]any) map[string]any {
		return map[string]any{"defaults": defaults, "devices": devs}
	}
	otherKnownHosts := filepath.Join(f.dir, "other_known_hosts")
	require.NoError(t, os.WriteFile(otherKnownHosts, f.devices[0].dev.KnownHosts(), 0o600))
	encrypted := filepath.Join(f.dir, "encrypted_key")
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(encrypted, pem.EncodeToMemory(block), 0o600))

	for _, tc := range []struct {
		name string
		inv  any // a JSON value, or a string written as is
		want []string
	}{
		{"BadJSON", "{\"devices\": [\n  {\"id\": \"x\",}\n]}", []string{"bad-json.json", "line 2", "not valid JSON"}},
		{"NotAnObject", `[1, 2]`, []string{"not-an-object.json", "array"}},
		{"NoDevices", map[string]any{"devices": []any{}}, []string{"no devices"}},
		{"UnknownField", inv(a, with(b, "hots", "x")), []string{"device 2", `unknown field "hots"`}},
		{"UnknownTopLevelField", map[string]any{"devices": []any{a}, "default": defaults}, []string{`unknown field "default"`}},
		{"WrongType", inv(with(a, "port", "22")), []string{"device 1", `"port" must be a number`}},
		{"DuplicateID", inv(a, with(b, "id", a["id"])), []string{"device 2", a["id"].(string), "also device 1's"}},
		{"MissingID", inv(with(a, "id", nil)), []string{"device 1", `"id" is missing`}},
		{"MissingHost", inv(a, with(b, "host", nil)), []string{"device 2", b["id"].(string), `"host" is missing`}},
		{"NoBoard", inv(with(with(a, "model", nil), "board_name", nil)), []string{"device 1", "board_name"}},
		{"NotAUUID", inv(with(a, "id", "ap-lobby")), []string{"ap-lobby", "not a UUID", "--no-identity-check"}},
		{"SameAddress", inv(a, with(with(b, "host", a["host"]), "port", a["port"])), []string{"device 2", "also device 1's address"}},
		{"BadPort", inv(with(a, "port", 70000)), []string{"device 1", "70000"}},
		{"UnknownIdentityFile", inv(with(a, "identity_file", "missing_key")), []string{"device 1", "missing_key", "no such file"}},
		{"KeyIsNotAKey", inv(with(a, "identity_file", "known_hosts")), []string{"device 1", "not a private key"}},
		{"PassphraseKey", inv(with(a, "identity_file", encrypted)), []string{"device 1", "passphrase"}},
		{"BothCredentials", inv(with(with(a, "password_env", "FWUPGRADE_TEST_PASSWORD"), "identity_file", "id_ed25519")), []string{"device 1", "not both"}},
		{"EmptyPasswordEnv", map[string]any{"devices": []any{with(with(a, "password_env", "FWUPGRADE_UNSET_VARIABLE"), "known_hosts", "known_hosts")}},
			[]string{"device 1", "FWUPGRADE_UNSET_VARIABLE"}},
		{"NoKnownHosts", map[string]any{"defaults": map[string]any{"identity_file": "id_ed25519"}, "devices": []any{a}},
			[]string{"device 1", `"known_hosts" is missing`}},
		{"MissingKnownHostsFile", inv(with(a, "known_hosts", "nowhere")), []string{"device 1", "nowhere"}},
		{"UnknownHostKey", inv(a, with(b, "known_hosts", otherKnownHosts)), []string{"device 2", b["id"].(string), "unknown host key", "other_known_hosts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ToLower(strings.Join(splitCamel(tc.name), "-")) + ".json"
			path := filepath.Join(f.dir, name)
			if s, ok := tc.inv.(string); ok {
				require.NoError(t, os.WriteFile(path, []byte(s), 0o600))
			} else {
				path = f.writeInventory(t, name, tc.inv)
			}
			args := f.args("batch", "--image", f.c7Image, "--json")
			args[2] = path
			code, stdout, stderr := cli(t, args, nil)
			assert.Equal(t, exitUsage, code, stderr)
			assert.Empty(t, stdout)
			msg := strings.TrimSpace(stderr)
			assert.NotContains(t, msg, "\n", "one line")
			assert.Contains(t, msg, "inventory")
			assert.Contains(t, msg, "--help")
			for _, w := range tc.want {
				assert.Contains(t, msg, w)
			}
		})
	}
	assert.Empty(t, f.contacted(), "a bad inventory contacts no device")
}

// splitCamel splits "BadJSON" into "Bad", "JSON".
func splitCamel(s string) []string {
	var parts []string
	start := 0
	for i := 1; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' && s[i-1] >= 'a' && s[i-1] <= 'z' {
			parts = append(parts, s[start:i])
			start = i
		}
	}
	return append(parts, s[start:])
}

func TestBatchBadUsage(t *testing.T) {
	t.Parallel()
	f := newFleet(t, spec{name: "a", model: c7Model, board: c7Board})
	unknownType := writeImage(t, f.dir, "mystery.bin", openwrttest.Image{Boards: []string{c7Board}, Release: newRelease, Size: 64 << 10})
	badMap := filepath.Join(f.dir, "bad-map.json")
	require.NoError(t, os.WriteFile(badMap, []byte(`{"x.bin": {"boards": []}}`), 0o600))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"NoImage", f.args("batch"), "--image is required"},
		{"NoInventory", []string{"batch", "--image", f.c7Image}, "--inventory is required"},
		{"MissingInventory", append(f.args("batch", "--image", f.c7Image), "--inventory", "/nonexistent.json"), "/nonexistent.json"},
		{"MissingImage", f.args("batch", "--image", "/nonexistent.bin"), "/nonexistent.bin"},
		{"SameImageTypeTwice", f.args("batch", "--image", f.c7Image, "--image", f.c7Image), "one image per type"},
		{"UnknownImageType", f.args("batch", "--image", unknownType), "--image-map"},
		{"ImageNeedsMap", f.args("batch", "--image", f.x2Image), x2Image},
		{"BadImageMap", f.args("batch", "--image", f.c7Image, "--image-map", badMap), "bad-map.json"},
		{"CheckWithoutDryRun", f.args("batch", "--image", f.c7Image, "--check"), "--check needs --dry-run"},
		{"HoldWithoutStore", f.args("batch", "--image", f.c7Image, "--hold"), "--hold needs --store"},
		{"WaitPausedWithoutStore", f.args("batch", "--image", f.c7Image, "--wait-paused"), "--wait-paused needs --store"},
		{"BadWaves", f.args("batch", "--image", f.c7Image, "--waves", "1,x"), "--waves"},
		{"BadRate", f.args("batch", "--image", f.c7Image, "--rate", "fast"), "--rate"},
		{"BadRatePeriod", f.args("batch", "--image", f.c7Image, "--rate", "5/fortnight"), "fortnight"},
		{"BadThreshold", f.args("batch", "--image", f.c7Image, "--failure-threshold", "120%"), "--failure-threshold"},
		{"BadWindow", f.args("batch", "--image", f.c7Image, "--window", "25:00-26:00"), "--window"},
		{"BadTimeZone", f.args("batch", "--image", f.c7Image, "--window", "01:00-05:00 Mars/Olympus"), "Mars/Olympus"},
		{"BadGroupBy", f.args("batch", "--image", f.c7Image, "--group-limit", "1", "--group-by", "floor"), "--group-by"},
		{"ZeroConcurrency", f.args("batch", "--image", f.c7Image, "--concurrency", "0"), "--concurrency"},
		{"BadOption", f.args("batch", "--image", f.c7Image, "--option", "c,z"), "--option"},
		{"NotPostgres", f.args("batch", "--image", f.c7Image, "--store", "mysql://db/x"), "postgres://"},
		{"BadSchema", f.args("batch", "--image", f.c7Image, "--store", "postgres://u@h/db", "--schema", "a;b"), "schema"},
		{"UnknownFlag", f.args("batch", "--image", f.c7Image, "--insecure"), "unknown flag --insecure"},
		{"MissingValue", append(f.args("batch"), "--image"), "flag --image needs a value"},
		{"StrayArgument", f.args("batch", "--image", f.c7Image, "now"), `unexpected argument "now"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, tc.args, nil)
			assert.Equal(t, exitUsage, code, stderr)
			assert.Empty(t, stdout)
			msg := strings.TrimSpace(stderr)
			assert.NotContains(t, msg, "\n", "one line")
			assert.True(t, strings.HasPrefix(msg, "fwupgrade batch: "), msg)
			assert.Contains(t, msg, "(see 'fwupgrade batch --help')")
			assert.Contains(t, msg, tc.want)
		})
	}
	assert.Empty(t, f.contacted(), "bad usage contacts no device")
}

func TestBatchWithoutMatchingDeviceExitsTwo(t *testing.T) {
	t.Parallel()
	f := newFleet(t, spec{name: "gl", model: glModel, board: glBoard})
	code, stdout, stderr := cli(t, f.args("batch", "--image", f.c7Image, "--json"), nil)
	assert.Equal(t, exitAborted, code, stderr)
	sum := decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, "nothing-selected", sum.State)
	require.Len(t, sum.Skipped, 1)
	assert.Equal(t, "no-image-for-board", sum.Skipped[0].Reason)
	assert.Contains(t, stderr, "nothing to upgrade")
	assert.Empty(t, f.contacted())
	assert.True(t, slices.ContainsFunc(sum.Skipped, func(s skipSummary) bool { return s.Name == "gl" }))
}

func TestBatchFailureThresholdPauses(t *testing.T) {
	t.Parallel()
	f := newFleet(t,
		spec{name: "liar", model: glModel, board: glBoard, claimModel: c7Model, claimBoard: c7Board},
		spec{name: "good-1", model: c7Model, board: c7Board},
		spec{name: "good-2", model: c7Model, board: c7Board},
	)
	// One device at a time, the liar first: when it aborts (1 of 3 > 20 %)
	// the batch pauses and the others do not start.
	code, stdout, stderr := cli(t, f.args("batch", "--image", f.c7Image, "--concurrency", "1", "--failure-threshold", "20%", "--json"), nil)
	assert.Equal(t, exitCancelled, code, "stdout: %s\nstderr: %s", stdout, stderr)
	sum := decode[batchSummary](t, stdout, stderr)
	assert.Equal(t, "paused", sum.State)
	assert.Equal(t, "failure-threshold", sum.PauseReason)
	assert.Equal(t, summaryCounts{Total: 3, Aborted: 1, Pending: 2}, sum.Counts)
	assert.Equal(t, "aborted", opsByName(sum)["liar"].State)
	assert.Contains(t, stderr, "lived only in this process")
	assert.Equal(t, []string{"liar"}, f.contacted(), "nothing started after the pause")
}
