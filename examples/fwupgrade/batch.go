package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fwupgrader/fwupgrader/imagemap"
	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// defaultOfflineMaxWait bounds the wait for a device that cannot be
// reached: a command should end (the library's default is to wait as long
// as the batch lasts).
const defaultOfflineMaxWait = time.Hour

// categoryName is the catalog category of every build fwupgrade creates.
const categoryName = "fwupgrade"

// batchFlags are the batch command's flags.
type batchFlags struct {
	run        runFlags
	images     stringList
	name       string
	option     string
	rate       string
	waves      string
	waveWait   time.Duration
	failure    string
	windows    stringList
	groupLimit int
	groupBy    string
	dryRun     bool
	checks     bool
	hold       bool
}

// runFlags are the flags of every command that runs a batch's operations
// in this process: batch, and resume with --inventory.
type runFlags struct {
	p              params // device tuning, --json
	inventory      string
	imageMap       string
	noIdentity     bool
	concurrency    int
	offlineMaxWait time.Duration
	waitPaused     bool
	store          storeFlags
}

// define registers the runFlags but --inventory, which each command
// words its own way, first; forResume words them for resume.
func (rf *runFlags) define(f *flagSet, forResume bool) {
	f.String(&rf.imageMap, "image-map", "FILE", "", "--image-map acme-boards.json",
		`JSON file mapping image types to the boards they fit, merged over the built-in OpenWrt map: {"TYPE": {"boards": ["Model"], "board_names": ["vendor,board"]}} (see go doc imagemap.ParseJSON). Images with fwtool metadata name their boards themselves.`)
	f.Bool(&rf.noIdentity, "no-identity-check", "--no-identity-check",
		"Do not compare each device's OpenWISP UUID (uci get openwisp.http.uuid) with its inventory id; ids need not be UUIDs then.")
	concUsage := "At most N devices upgrade at once, counted over every process working on the batch."
	if forResume {
		concUsage = "At most N devices upgrade at once in this process (the cap the batch was created with still holds over every process)."
	}
	f.Int(&rf.concurrency, "concurrency", "N", upgrader.DefaultWorkers, "--concurrency 20", concUsage)
	f.Duration(&rf.offlineMaxWait, "offline-max-wait", defaultOfflineMaxWait, "--offline-max-wait 6h",
		"A device that cannot be reached before flashing (down, or refusing the login) is tried again later, after 10 minutes, then as long again each time, without failing the batch; once it has been unreachable this long it fails (connection-failed). 0: it waits as long as the batch lasts.")
	f.Bool(&rf.waitPaused, "wait-paused", "--wait-paused",
		"When the batch is paused by an operator (fwupgrade pause) or a failure threshold, keep running and wait for 'fwupgrade resume' instead of ending with exit 3. Needs --store.")
	rf.store.define(f, forResume)
	deviceFlags(f, &rf.p)
	f.Bool(&rf.p.json, "json", "--json",
		"Print the result (the summary, or the dry run's plan) as one JSON object on standard output; the progress goes to standard error.")
}

// checkFlags validates the flags that need no file.
func (rf *runFlags) checkFlags(storeRequired bool) error {
	if rf.concurrency < 1 {
		return usagef("--concurrency must be at least 1")
	}
	if rf.offlineMaxWait < 0 {
		return usagef("--offline-max-wait must not be negative")
	}
	if err := checkDeviceFlags(&rf.p); err != nil {
		return err
	}
	if err := rf.store.check(storeRequired); err != nil {
		return err
	}
	if rf.waitPaused && rf.store.url == "" {
		return usagef("--wait-paused needs --store: nobody else can resume a batch of the memory store")
	}
	return nil
}

// loadImageMap reads --image-map and merges it over the built-in map.
func (rf *runFlags) loadImageMap() (*imagemap.Map, error) {
	if rf.imageMap == "" {
		return imagemap.OpenWrt(), nil
	}
	f, err := os.Open(rf.imageMap)
	if err != nil {
		return nil, usagef("--image-map: %v", err)
	}
	defer f.Close()
	m, err := imagemap.LoadJSON(f)
	if err != nil {
		return nil, usagef("--image-map %s: %v", rf.imageMap, err)
	}
	return imagemap.OpenWrt().Merge(m), nil
}

// newEngine returns an engine over st for the inventory's devices.
func (rf *runFlags) newEngine(st store.Store, files upgrader.Files, inv *inventory, m *imagemap.Map) (*upgrader.Engine, error) {
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc:     inv.credentials,
		SkipIdentityCheck:   rf.noIdentity,
		ReconnectDelay:      rf.p.reconnectDelay,
		ReconnectRetryDelay: rf.p.reconnectRetry,
		ReconnectMaxRetries: rf.p.reconnectMax,
		UpgradeTimeout:      rf.p.upgradeTimeout,
		Logger:              quietLogger(),
	})
	if err != nil {
		return nil, err
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		return nil, err
	}
	return upgrader.NewEngine(st, reg, &upgrader.Config{
		Logger: quietLogger(), Files: files, MaxImageSize: upgrader.NoImageSizeLimit, ImageMap: m,
		Workers: rf.concurrency, Retry: retryPolicy(&rf.p),
		Offline: upgrader.OfflinePolicy{MaxWait: rf.offlineMaxWait},
	})
}

func batchCommand() *command {
	return &command{
		name:    "batch",
		summary: "upgrade the devices of an inventory, in a rollout",
		synopsis: `fwupgrade batch --inventory FILE.json --image FILE [--image FILE ...]
      [--image-map FILE.json] [--name NAME] [--option c,F,...] [--no-identity-check]
      [--concurrency N] [--rate N/min] [--waves 1,10%,100%] [--wave-wait D]
      [--failure-threshold 20%] [--window 01:00-05:00 ...] [--group-limit N --group-by location|group]
      [--offline-max-wait D] [--dry-run [--check]] [--hold] [--wait-paused]
      [--store postgres://... [--schema NAME]] [--json]
      [--reconnect-delay D] [--reconnect-retry-delay D] [--reconnect-max-retries N]
      [--upgrade-timeout D] [--retries N] [--retry-delay D]`,
		details: `Each device gets the image that fits its model and board: by the image's
OpenWrt file name in the built-in map (or --image-map), or by the boards the
image's own fwtool metadata names. Devices no image fits are skipped and
listed with the reason. Every device is then upgraded as 'fwupgrade upgrade'
does (identity, memory, upload, sysupgrade --test, flash, proof of the new
firmware), under the rollout: waves (a canary first), at most --concurrency
at once, at most --rate starts, a pause when a wave's failures go over
--failure-threshold, only inside --window.

--dry-run prints the plan (which device gets which image, which are skipped
and why) and changes nothing; with --check it also connects to every device
and runs the read-only checks (host key, identity, board, free memory,
options, compat_version, already installed), changing nothing on them.

On a terminal a table shows each device's phase and progress; otherwise one
line per change. Then a summary; with --json one JSON object on standard
output:
  {"batch_id": "...", "name": "...", "state": "success", "summary": "4 of 4 done, 0 pending",
   "wave": 3, "waves": 3, "store": "memory",
   "counts": {"total": 4, "pending": 0, "in_progress": 0, "success": 4, "failed": 0,
              "aborted": 0, "cancelled": 0, "skipped": 1},
   "operations": [{"id": "...", "device": "...", "name": "ap-lobby", "image": "...",
                   "wave": 1, "state": "success", "progress": 100, "attempts": 1}],
   "skipped": [{"device": "...", "name": "ap-roof", "reason": "no-image-for-board",
                "detail": "..."}]}
(waves count from 1; "last_log" holds the last log line of a device that did
not succeed; "state" is "nothing-selected" when every device was skipped; a
dry run prints {"dry_run": true, "wave_sizes": [...], "selected": [{"device",
"name", "image", "wave", "check": {"verdict", "reason", "checks"}}],
"skipped": [...]}).

Ctrl-C pauses the batch: no new device starts, devices already running
finish (a device cannot be stopped safely once flashing), then the command
says how to resume or cancel it and exits 3. A second Ctrl-C cancels the
batch: devices not yet flashing are cancelled, flashing ones finish.
With the memory store the batch lives only in this process; with --store it
is kept in PostgreSQL, where 'fwupgrade status|pause|resume|cancel' reach it
from any machine, and 'fwupgrade resume --inventory' runs it again. --hold
(with --store) creates the batch without starting it.
`,
		after: inventoryHelp,
		example: `  fwupgrade batch --inventory fleet.json \
      --image openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin \
      --image openwrt-23.05.3-ath79-generic-glinet_gl-ar300m16-squashfs-sysupgrade.bin \
      --waves 1,10%,100% --concurrency 10 --rate 30/min --failure-threshold 20% \
      --window "01:00-05:00 Europe/Rome" --store postgres://fw@db.example.net/fleet
`,
		define: func(f *flagSet) func(context.Context, *streams) int {
			b := &batchFlags{}
			f.String(&b.run.inventory, "inventory", "FILE", "", "--inventory fleet.json",
				"JSON file listing the devices and how to reach them (see Inventory below). Required.")
			f.Var(&b.images, "image", "FILE", "", "--image openwrt-23.05.3-ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin",
				"A sysupgrade image; repeat it for several boards (one image per image type). At least one is required.")
			f.showDefault("image", "none (at least one required)")
			f.String(&b.name, "name", "NAME", "", `--name "23.05.3 spring rollout"`,
				"The batch's name, for people.")
			f.showDefault("name", "the first image's file name and the date")
			optionFlag(f, &b.option)
			f.String(&b.rate, "rate", "N/PERIOD", "", "--rate 30/min",
				"At most N devices contacted per period: N/s, N/min, N/h or N/DURATION such as 10/30s.")
			f.showDefault("rate", "no limit")
			f.String(&b.waves, "waves", "LIST", "", "--waves 1,10%,100%",
				"Waves as cumulative sizes, counts or percentages of the batch: 1,10%,100% is one canary device, then up to a tenth, then the rest. A wave starts when the previous one settled.")
			f.showDefault("waves", "one wave")
			f.Duration(&b.waveWait, "wave-wait", 0, "--wave-wait 10m", "How long to wait after a wave settled before the next one starts.")
			f.String(&b.failure, "failure-threshold", "PERCENT", "", "--failure-threshold 20%",
				"Pause the batch when the failed and aborted devices of a wave go over this share of the wave.")
			f.showDefault("failure-threshold", "never")
			f.Var(&b.windows, "window", "HH:MM-HH:MM[ TZ]", "", `--window "01:00-05:00 Europe/Rome"`,
				"Daily maintenance window (time zone name optional, UTC by default; may span midnight): new devices start only inside one. Repeat it for several windows.")
			f.showDefault("window", "any time")
			f.Int(&b.groupLimit, "group-limit", "N", 0, "--group-limit 1",
				"At most N devices upgrade at once per location (or per group, see --group-by); 0: no limit.")
			f.String(&b.groupBy, "group-by", "FIELD", string(store.GroupByLocation), "--group-by group",
				`The inventory field --group-limit counts by: "location" or "group".`)
			f.Bool(&b.dryRun, "dry-run", "--dry-run", "Print the plan and exit; nothing is created and no device is contacted.")
			f.Bool(&b.checks, "check", "--dry-run --check",
				"With --dry-run: also connect to every device and run the read-only checks, changing nothing on it.")
			f.Bool(&b.hold, "hold", "--hold --store postgres://fw@db.example.net/fleet",
				"Create the batch in the store without starting it, print its id and exit 0; start it later with 'fwupgrade resume --inventory'. Needs --store.")
			b.run.define(f, false)
			return func(ctx context.Context, s *streams) int { return b.execute(ctx, s) }
		},
	}
}

// batchSetup is what the batch command validated before starting anything.
type batchSetup struct {
	inv      *inventory
	imageMap *imagemap.Map
	options  openwrt.Options
	rollout  store.Rollout
	images   []string
}

// check validates every flag and file; nothing is started.
func (b *batchFlags) check() (*batchSetup, error) {
	rf := &b.run
	switch {
	case rf.inventory == "":
		return nil, usagef("--inventory is required")
	case len(b.images) == 0:
		return nil, usagef("--image is required (repeat it for several boards)")
	case b.checks && !b.dryRun:
		return nil, usagef("--check needs --dry-run")
	case b.hold && b.dryRun:
		return nil, usagef("--hold and --dry-run exclude each other")
	case b.hold && rf.store.url == "":
		return nil, usagef("--hold needs --store: a held batch of the memory store would vanish with this process")
	case rf.waitPaused && b.dryRun:
		return nil, usagef("--wait-paused and --dry-run exclude each other")
	}
	if err := rf.checkFlags(false); err != nil {
		return nil, err
	}
	setup := &batchSetup{}
	var err error
	if setup.options, err = parseOptions(b.option); err != nil {
		return nil, err
	}
	if setup.rollout, err = b.rollout(); err != nil {
		return nil, err
	}
	types := map[string]string{}
	for _, path := range b.images {
		if err := checkImageFile("--image", path); err != nil {
			return nil, err
		}
		t := imagemap.TypeFromFileName(filepath.Base(path))
		if other, ok := types[t]; ok {
			return nil, usagef("--image %s and --image %s are both of image type %q: give one image per type", other, path, t)
		}
		types[t] = path
		setup.images = append(setup.images, path)
	}
	if setup.imageMap, err = rf.loadImageMap(); err != nil {
		return nil, err
	}
	if setup.inv, err = loadInventory(rf.inventory, !rf.noIdentity); err != nil {
		return nil, err
	}
	return setup, nil
}

// rollout builds the batch's rollout from the flags.
func (b *batchFlags) rollout() (store.Rollout, error) {
	r := store.Rollout{MaxConcurrent: b.run.concurrency, WaveWait: b.waveWait}
	var err error
	if b.rate != "" {
		if r.StartRate, err = parseRate(b.rate); err != nil {
			return r, usagef("--rate %q: %v", b.rate, err)
		}
	}
	if b.waves != "" {
		if r.Waves, err = store.ParseWaves(b.waves); err != nil {
			return r, usagef("--waves %q: %v", b.waves, err)
		}
	}
	if b.failure != "" {
		pct, err := parsePercent(b.failure)
		if err != nil {
			return r, usagef("--failure-threshold %q: %v", b.failure, err)
		}
		r.FailureThreshold = &pct
	}
	for _, w := range b.windows {
		win, err := store.ParseWindow(w)
		if err != nil {
			return r, usagef("--window %q: %v", w, err)
		}
		r.Windows = append(r.Windows, win)
	}
	if b.waveWait < 0 {
		return r, usagef("--wave-wait must not be negative")
	}
	if b.groupLimit < 0 {
		return r, usagef("--group-limit must not be negative")
	}
	if b.groupLimit > 0 {
		switch store.GroupKey(b.groupBy) {
		case store.GroupByLocation, store.GroupByGroup:
			r.GroupLimit, r.GroupBy = b.groupLimit, store.GroupKey(b.groupBy)
		default:
			return r, usagef(`--group-by %q: give "location" or "group"`, b.groupBy)
		}
	}
	if err := r.Validate(); err != nil {
		return r, usagef("rollout: %v", err)
	}
	return r, nil
}

// parseRate reads N/min, N/s, N/h, N/DURATION or N (per minute).
func parseRate(s string) (store.Rate, error) {
	count, per, found := strings.Cut(strings.TrimSpace(s), "/")
	n, err := strconv.Atoi(strings.TrimSpace(count))
	if err != nil || n < 1 {
		return store.Rate{}, errors.New("want a positive number of devices, then /min, /s, /h or /DURATION (30/min)")
	}
	r := store.Rate{Count: n, Per: time.Minute}
	if !found {
		return r, nil
	}
	switch strings.ToLower(strings.TrimSpace(per)) {
	case "s", "sec", "second":
		r.Per = time.Second
	case "m", "min", "minute":
		r.Per = time.Minute
	case "h", "hour":
		r.Per = time.Hour
	default:
		d, err := time.ParseDuration(strings.TrimSpace(per))
		if err != nil || d <= 0 {
			return r, fmt.Errorf("period %q: want min, s, h or a duration such as 30s", per)
		}
		r.Per = d
	}
	if r.Per > store.MaxRatePeriod {
		return r, fmt.Errorf("the period is at most %s", store.MaxRatePeriod)
	}
	return r, nil
}

// parsePercent reads "20%" or "20", from 0 to 100.
func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || !(v >= 0 && v <= 100) { // NaN fails both
		return 0, errors.New("want a percentage from 0 to 100, such as 20%")
	}
	return v, nil
}

func (b *batchFlags) execute(ctx context.Context, s *streams) int {
	setup, err := b.check()
	if err != nil {
		return usage(s, "batch", err)
	}
	rf := &b.run
	human := s.stdout
	if rf.p.json {
		human = s.stderr
	}
	// The plan is made in a private memory store first: it checks the
	// images (type known, metadata sound) and shows the plan before
	// anything is created in a shared store.
	dir, err := os.MkdirTemp("", "fwupgrade-")
	if err != nil {
		return fail(s, "batch", exitError, err)
	}
	defer os.RemoveAll(dir)
	files, err := upgrader.NewDirFiles(dir)
	if err != nil {
		return fail(s, "batch", exitError, err)
	}
	mem, err := rf.newEngine(memory.New(), files, setup.inv, setup.imageMap)
	if err != nil {
		return fail(s, "batch", exitUsage, err)
	}
	build, err := prepareCatalog(ctx, mem, setup.images, false)
	if err != nil {
		return fail(s, "batch", exitError, err)
	}
	if err := registerDevices(ctx, mem, setup.inv); err != nil {
		return fail(s, "batch", exitError, err)
	}
	req := upgrader.BatchRequest{
		BuildID: build.ID, Name: b.batchName(setup), DeviceIDs: setup.inv.ids(), Firmwareless: true,
		Options: setup.options.JSON(), Rollout: setup.rollout, Hold: true,
	}
	if b.dryRun {
		return b.dryRunPlan(ctx, s, mem, req, setup)
	}

	eng := mem
	if rf.store.url != "" {
		pg, err := rf.store.open(ctx, true, rf.concurrency+4)
		if err != nil {
			return fail(s, "batch", exitError, err)
		}
		defer pg.close()
		if eng, err = rf.newEngine(pg.store, pg.files, setup.inv, setup.imageMap); err != nil {
			return fail(s, "batch", exitUsage, err)
		}
		if build, err = prepareCatalog(ctx, eng, setup.images, true); err != nil {
			return fail(s, "batch", exitError, rf.store.storeProblem(err))
		}
		if err := registerDevices(ctx, eng, setup.inv); err != nil {
			return fail(s, "batch", exitError, rf.store.storeProblem(err))
		}
		req.BuildID = build.ID
	}
	batch, plan, err := eng.CreateBatch(ctx, req)
	skipped := skippedOf(plan, setup.inv)
	if errors.Is(err, upgrader.ErrNothingSelected) {
		fmt.Fprintf(human, "nothing to upgrade: every device of %s is skipped\n", setup.inv.path)
		writePlan(human, plan, setup.inv, skipped)
		sum := batchSummary{State: "nothing-selected", Store: storeKind(rf.store.url), Skipped: skipped, Operations: []opSummary{}}
		sum.Counts.Skipped = len(skipped)
		if rf.p.json {
			writeJSON(s.stdout, sum)
		}
		return sum.exitCode()
	}
	if err != nil {
		return fail(s, "batch", exitError, rf.store.storeProblem(err))
	}
	fmt.Fprintf(human, "batch %s %q: %d devices in %d waves %v, %d skipped\n",
		batch.ID, batch.Name, len(plan.Selected), len(plan.WaveSizes), plan.WaveSizes, len(skipped))
	writePlan(human, plan, setup.inv, skipped)
	r := &runner{s: s, cmd: "batch", eng: eng, inv: setup.inv, flags: rf, batchID: batch.ID, skipped: skipped}
	if b.hold {
		fmt.Fprintf(human, "batch %s is held: nothing starts until %s\n", batch.ID, r.resumeHint())
		return r.finish(ctx, false)
	}
	return r.run(ctx, func(ctx context.Context) error {
		_, err := eng.StartBatch(ctx, batch.ID)
		return err
	})
}

func (b *batchFlags) batchName(setup *batchSetup) string {
	if b.name != "" {
		return b.name
	}
	name := filepath.Base(setup.images[0])
	if len(setup.images) > 1 {
		name += fmt.Sprintf(" (+%d)", len(setup.images)-1)
	}
	name += " " + time.Now().Format("2006-01-02 15:04")
	if len(name) > store.MaxNameLen {
		name = name[len(name)-store.MaxNameLen:]
	}
	return name
}

// prepareCatalog finds or creates fwupgrade's category and a build holding
// the images. With reuse, a build of the category that holds exactly these
// images (same types and SHA-256) is used again, so that the devices a
// previous batch upgraded are known to run it.
func prepareCatalog(ctx context.Context, eng *upgrader.Engine, images []string, reuse bool) (store.Build, error) {
	st := eng.Store()
	cat, err := findCategory(ctx, st)
	if errors.Is(err, store.ErrNotFound) {
		cat, err = eng.CreateCategory(ctx, store.Category{Name: categoryName,
			Description: "builds of the images given to fwupgrade batch"})
		if errors.Is(err, store.ErrConflict) { // another process created it meanwhile
			cat, err = findCategory(ctx, st)
		}
	}
	if err != nil {
		return store.Build{}, err
	}
	if reuse {
		want := map[string]string{}
		for _, path := range images {
			sum, err := fileSHA256(path)
			if err != nil {
				return store.Build{}, usagef("--image: %v", err)
			}
			want[imagemap.TypeFromFileName(filepath.Base(path))] = sum
		}
		builds, err := st.ListBuilds(ctx, store.BuildFilter{CategoryID: cat.ID})
		if err != nil {
			return store.Build{}, err
		}
		for _, bd := range slices.Backward(builds) {
			ims, err := st.ListImages(ctx, store.ImageFilter{BuildID: bd.ID})
			if err != nil {
				return store.Build{}, err
			}
			same := len(ims) == len(want)
			for _, im := range ims {
				same = same && want[im.Type] == im.SHA256
			}
			if same {
				return bd, nil
			}
		}
	}
	version := time.Now().UTC().Format("20060102-150405.000")
	build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: version,
		Changelog: "images: " + strings.Join(baseNames(images), ", ")})
	if err != nil {
		return store.Build{}, err
	}
	for _, path := range images {
		if err := uploadImage(ctx, eng, build.ID, path); err != nil {
			return store.Build{}, err
		}
	}
	return build, nil
}

func findCategory(ctx context.Context, st store.Store) (store.Category, error) {
	cats, err := st.ListCategories(ctx, store.CategoryFilter{Name: categoryName})
	if err != nil {
		return store.Category{}, err
	}
	for _, c := range cats {
		if c.Organization == "" {
			return c, nil
		}
	}
	return store.Category{}, store.ErrNotFound
}

func uploadImage(ctx context.Context, eng *upgrader.Engine, buildID, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return usagef("--image: %v", err)
	}
	defer f.Close()
	name := filepath.Base(path)
	_, err = eng.UploadImage(ctx, store.Image{BuildID: buildID, Name: name}, f)
	switch {
	case errors.Is(err, upgrader.ErrUnknownImageType):
		return usagef("--image %s: image type %q is not in the image map and the image has no fwtool metadata naming its boards; map the type to its boards with --image-map",
			path, imagemap.TypeFromFileName(name))
	case errors.Is(err, upgrader.ErrImageInvalid), errors.Is(err, store.ErrInvalid):
		return usagef("--image %s: %v", path, err)
	case err != nil:
		return fmt.Errorf("storing image %s: %w", path, err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func baseNames(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = filepath.Base(p)
	}
	return out
}

// registerDevices stores the inventory's devices.
func registerDevices(ctx context.Context, eng *upgrader.Engine, inv *inventory) error {
	for _, d := range inv.devices {
		if _, err := eng.RegisterDevice(ctx, d.device); err != nil {
			return fmt.Errorf("device %s: %w", d.device.ID, err)
		}
	}
	return nil
}

// skippedOf lists the plan's skipped devices, and the inventory's devices
// the plan does not name at all (their firmware record, in a shared store,
// is of another catalog category).
func skippedOf(plan upgrader.Plan, inv *inventory) []skipSummary {
	named := map[string]bool{}
	out := []skipSummary{}
	for _, e := range plan.Selected {
		named[e.Device.ID] = true
	}
	for _, e := range plan.Skipped {
		named[e.Device.ID] = true
		out = append(out, skipSummary{Device: e.Device.ID, Name: inv.name(e.Device.ID), Reason: string(e.Skip), Detail: e.Detail})
	}
	for _, id := range inv.ids() {
		if !named[id] {
			out = append(out, skipSummary{Device: id, Name: inv.name(id), Reason: "not-in-fleet",
				Detail: "the store records a firmware of another catalog category for it"})
		}
	}
	return out
}

// dryRunPlan prints the plan (and the checks) and changes nothing.
func (b *batchFlags) dryRunPlan(ctx context.Context, s *streams, eng *upgrader.Engine, req upgrader.BatchRequest, setup *batchSetup) int {
	rf := &b.run
	human := s.stdout
	if rf.p.json {
		human = s.stderr
	}
	if b.checks {
		fmt.Fprintf(human, "checking %d devices (read-only)...\n", len(setup.inv.devices))
	}
	// Ctrl-C stops the checks: they change nothing, there is nothing to
	// wait for.
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.sig:
			cancel()
		case <-dctx.Done():
		}
	}()
	plan, err := eng.DryRunBatch(dctx, req, upgrader.DryRunOptions{Check: b.checks})
	if err != nil && dctx.Err() != nil && ctx.Err() == nil {
		fmt.Fprintln(s.stderr, "fwupgrade batch: interrupted: the dry run changed nothing")
		return exitCancelled
	}
	if err != nil {
		return fail(s, "batch", exitError, err)
	}
	skipped := skippedOf(plan, setup.inv)
	if rf.store.url != "" {
		plan, skipped = busyInStore(ctx, s, rf, plan, skipped, setup.inv)
	}
	out := dryRunOutput{DryRun: true, WaveSizes: plan.WaveSizes, Selected: []plannedDevice{}, Skipped: skipped}
	ready := len(skipped) == 0
	for _, e := range plan.Selected {
		pd := plannedDevice{Device: e.Device.ID, Name: setup.inv.name(e.Device.ID), Image: e.Image.Name, Wave: e.Wave + 1, Check: e.Check}
		if e.Check != nil && e.Check.Verdict != upgrader.VerdictReady && e.Check.Verdict != upgrader.VerdictNotNeeded {
			ready = false
		}
		out.Selected = append(out.Selected, pd)
	}
	fmt.Fprintf(human, "dry run: %d devices would be upgraded in %d waves %v, %d skipped; nothing was changed\n",
		len(plan.Selected), len(plan.WaveSizes), plan.WaveSizes, len(skipped))
	writePlan(human, plan, setup.inv, skipped)
	if rf.p.json {
		writeJSON(s.stdout, out)
	}
	if ready {
		return exitSuccess
	}
	return exitAborted
}

// busyInStore moves to the skipped list the selected devices that have an
// unfinished operation in the store, read without changing it.
func busyInStore(ctx context.Context, s *streams, rf *runFlags, plan upgrader.Plan, skipped []skipSummary, inv *inventory) (upgrader.Plan, []skipSummary) {
	pg, err := rf.store.open(ctx, false, 2)
	if err == nil {
		defer pg.close()
	}
	var keep []upgrader.PlanEntry
	for _, e := range plan.Selected {
		if err != nil {
			keep = append(keep, e)
			continue
		}
		var ops []store.Operation
		ops, err = pg.store.ListOperations(ctx, store.OperationFilter{DeviceID: e.Device.ID,
			States: []status.State{status.Pending, status.InProgress}, Page: store.Page{Limit: 1}})
		if err == nil && len(ops) > 0 {
			detail := "operation " + ops[0].ID + " is not finished"
			reason := string(upgrader.SkipUpgradeRunning)
			if ops[0].BatchID != "" {
				detail, reason = "operation "+ops[0].ID+" of batch "+ops[0].BatchID+" is not finished", string(upgrader.SkipInAnotherBatch)
			}
			skipped = append(skipped, skipSummary{Device: e.Device.ID, Name: inv.name(e.Device.ID), Reason: reason, Detail: detail})
			continue
		}
		keep = append(keep, e)
	}
	if err != nil {
		fmt.Fprintf(s.stderr, "fwupgrade batch: warning: could not read the store (%v): devices busy there are not shown\n", rf.store.storeProblem(err))
	}
	plan.Selected = keep
	return plan, skipped
}

// dryRunOutput is what batch --dry-run --json prints.
type dryRunOutput struct {
	DryRun    bool            `json:"dry_run"`
	WaveSizes []int           `json:"wave_sizes"`
	Selected  []plannedDevice `json:"selected"`
	Skipped   []skipSummary   `json:"skipped"`
}

type plannedDevice struct {
	Device string                `json:"device"`
	Name   string                `json:"name,omitempty"`
	Image  string                `json:"image"`
	Wave   int                   `json:"wave"`
	Check  *upgrader.DeviceCheck `json:"check,omitempty"`
}
