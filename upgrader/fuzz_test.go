package upgrader_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/openwrt/openwrttest"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// Fuzz targets for what a host hands the engine: an operation's options
// (FuzzCreateOptions), the retry and offline policies of its Config
// (FuzzPolicies), and the keys images are stored under (FuzzFileKey).

// fzShort is s for a failure message: its start when it is long (the
// fuzzer writes the whole input to testdata).
func fzShort[T ~string | ~[]byte](s T) string {
	const keep = 256
	if len(s) <= keep {
		return string(s)
	}
	return string(s[:keep]) + fmt.Sprintf("…(%d bytes)", len(s))
}

// FuzzCreateOptions creates an upgrade of an OpenWrt device with the
// options a host gives: Create refuses them (invalid for the store, or for
// the openwrt upgrader) with one clear error and stores nothing, or stores
// a pending operation holding exactly those options, which the upgrader
// reads. It is then cancelled, so that the next input may create one.
func FuzzCreateOptions(f *testing.F) {
	for _, s := range []string{``, `{}`, `null`, `{"sysupgrade":"c,F"}`, `{"c":false,"n":true}`, `{"n":true}`,
		`{"sysupgrade":"x"}`, `{"sysupgrade":"c","ignore_minor_compat_version":true}`, `[]`, `{"a":"\u0000"}`,
		`{"rollout":{"max_failures":3},"sysupgrade":"-c -p"}`, "{\"k\":\"\xff\"}", ` {"F": true} `} {
		f.Add([]byte(s))
	}
	ctx := context.Background()
	eng, st, dev, img := fzOpenWrtEngine(f)
	f.Fuzz(func(t *testing.T, options []byte) {
		if len(options) > store.MaxOptionsLen+1024 {
			return
		}
		_, parseErr := openwrt.ParseOptions(options)
		storeErr := (store.Operation{DeviceID: dev.ID, ImageID: img.ID, Options: options}).Validate()
		op, err := eng.Create(ctx, upgrader.Request{DeviceID: dev.ID, ImageID: img.ID, Options: options})
		if err != nil {
			var re *upgrader.RefusedError
			switch {
			case errors.As(err, &re) && re.Reason == status.ReasonInvalidOptions && parseErr != nil:
			case errors.Is(err, store.ErrInvalid) && storeErr != nil:
			default:
				t.Fatalf("Create with options %q: %v (the upgrader reads them: %v; the store: %v)", fzShort(options), err, parseErr, storeErr)
			}
			ops, err := st.ListOperations(ctx, store.OperationFilter{DeviceID: dev.ID})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range ops {
				if !o.State.Terminal() {
					t.Fatalf("Create with options %q refused (%v), yet operation %s is %s", fzShort(options), err, o.ID, o.State)
				}
			}
			return
		}
		if parseErr != nil || storeErr != nil {
			t.Fatalf("Create accepted options %q that the upgrader (%v) or the store (%v) refuses", fzShort(options), parseErr, storeErr)
		}
		if op.State != status.Pending || !bytes.Equal(op.Options, options) {
			t.Fatalf("Create with options %q stored %s options %q", fzShort(options), op.State, fzShort(op.Options))
		}
		if _, err := openwrt.ParseOptions(op.Options); err != nil {
			t.Fatalf("stored options %q do not read: %v", fzShort(op.Options), err)
		}
		if op, err = eng.Cancel(ctx, op.ID); err != nil || op.State != status.Cancelled {
			t.Fatalf("cancel %s: %s, %v", op.ID, op.State, err)
		}
	})
}

// fzOpenWrtEngine returns an engine (not started) on a memory store, with
// the openwrt upgrader registered, an OpenWrt device and an image for it.
func fzOpenWrtEngine(tb testing.TB) (*upgrader.Engine, *memory.Store, store.Device, store.Image) {
	tb.Helper()
	ctx := context.Background()
	ow, err := openwrt.New(&openwrt.Config{
		CredentialsFunc: func(context.Context, store.Device) (openwrt.Credentials, error) {
			return openwrt.Credentials{}, errors.New("no device in a fuzz target")
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	reg := upgrader.NewRegistry()
	if err := reg.Register(openwrt.Connection, ow); err != nil {
		tb.Fatal(err)
	}
	st := memory.New()
	eng, err := upgrader.NewEngine(st, reg, &upgrader.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	cat, err := eng.CreateCategory(ctx, store.Category{Name: "routers"})
	if err != nil {
		tb.Fatal(err)
	}
	sim := openwrttest.NewImage("23.05", "tplink,archer-c7-v2", 4096)
	build, err := eng.CreateBuild(ctx, store.Build{CategoryID: cat.ID, Version: "23.05", OSIdentifier: sim.Release})
	if err != nil {
		tb.Fatal(err)
	}
	img, err := eng.UploadImage(ctx, store.Image{BuildID: build.ID, Name: sim.FileName()}, bytes.NewReader(sim.Bytes()))
	if err != nil {
		tb.Fatal(err)
	}
	dev, err := eng.RegisterDevice(ctx, store.Device{ID: "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e", BoardName: "tplink,archer-c7-v2",
		Model: "TP-Link Archer C7 v2", Connection: openwrt.Connection, Active: true})
	if err != nil {
		tb.Fatal(err)
	}
	return eng, st, dev, img
}

// FuzzPolicies: a retry or offline policy a host configures is refused by
// NewEngine exactly when Validate refuses it, and its waits are never
// negative and never longer than its longest interval spread by its
// randomization, whatever the durations. The fuzzer moves integers in
// small steps: shift scales the durations up to reach large ones.
func FuzzPolicies(f *testing.F) {
	f.Add(4, int64(time.Minute), int64(10*time.Minute), 2.0, 0.5, uint8(4), int64(time.Hour), int64(10*time.Minute), int64(12*time.Hour), int64(0), 0.25, uint8(0))
	f.Add(0, int64(0), int64(0), 0.0, 0.0, uint8(1), int64(0), int64(0), int64(0), int64(0), 0.0, uint8(0))
	f.Add(-1, int64(5*time.Millisecond), int64(20*time.Millisecond), 1.0, -1.0, uint8(10), int64(-1), int64(-1), int64(1), int64(-1), -1.0, uint8(3))
	f.Add(3, int64(1), int64(1), 1.5, 1.0, uint8(30), int64(1), int64(1), int64(2), int64(1), 1.0, uint8(30))
	f.Add(1, int64(time.Second), int64(time.Millisecond), math.Inf(1), math.NaN(), uint8(2), int64(time.Second), int64(time.Hour), int64(time.Minute), int64(0), 2.0, uint8(0))
	f.Fuzz(func(t *testing.T, maxRetries int, initial, maxInterval int64, multiplier, randomization float64, n uint8,
		offline, offInitial, offMax, offMaxWait int64, offRandomization float64, shift uint8) {
		s := shift % 64
		scale := func(d int64) time.Duration {
			if d<<s>>s != d {
				return time.Duration(d)
			}
			return time.Duration(d << s)
		}
		rp := upgrader.RetryPolicy{MaxRetries: maxRetries, InitialInterval: scale(initial), MaxInterval: scale(maxInterval),
			Multiplier: multiplier, RandomizationFactor: randomization}
		op := upgrader.OfflinePolicy{InitialInterval: scale(offInitial), MaxInterval: scale(offMax), MaxWait: scale(offMaxWait),
			RandomizationFactor: offRandomization}
		_, err := upgrader.NewEngine(memory.New(), upgrader.NewRegistry(), &upgrader.Config{Retry: rp, Offline: op,
			Logger: slog.New(slog.DiscardHandler)})
		if want := errors.Join(rp.Validate(), op.Validate()); (err == nil) != (want == nil) {
			t.Fatalf("NewEngine with %+v and %+v: %v, but Validate says %v", rp, op, err, want)
		}

		// The wait before retry k, after the defaults (see RetryPolicy).
		limit := fzRetryLimit(rp)
		for k := 0; k <= int(n%40); k++ {
			d := rp.Delay(k)
			if d < 0 || float64(d) > limit {
				t.Fatalf("%+v: Delay(%d) = %s, want 0 to %s", rp, k, d, fzDuration(limit))
			}
		}
		off := scale(offline)
		d := op.Delay(off)
		if d < 0 || float64(d) > fzOfflineLimit(op) {
			t.Fatalf("%+v: Delay(%s) = %s, want 0 to %s", op, off, d, fzDuration(fzOfflineLimit(op)))
		}
	})
}

// fzDuration prints a limit computed in float64 nanoseconds.
func fzDuration(ns float64) string {
	if ns >= math.MaxInt64 {
		return fmt.Sprintf("%.3gns (past the longest Duration)", ns)
	}
	return time.Duration(ns).String()
}

// fzRetryLimit is the longest wait p allows, as RetryPolicy documents its
// defaults; an invalid policy gets the default policy's.
func fzRetryLimit(p upgrader.RetryPolicy) float64 {
	if p.Validate() != nil {
		p = upgrader.RetryPolicy{}
	}
	initial, longest, rf := p.InitialInterval, p.MaxInterval, p.RandomizationFactor
	if initial <= 0 {
		initial = upgrader.DefaultRetryInitial
	}
	if longest <= 0 {
		longest = upgrader.DefaultRetryMax
	}
	longest = max(longest, initial)
	switch {
	case rf == 0:
		rf = upgrader.DefaultRetryRandomization
	case rf < 0:
		rf = 0
	}
	return float64(longest)*(1+rf) + 1
}

// fzOfflineLimit is the longest wait p allows, as OfflinePolicy documents
// its defaults; an invalid policy gets the default policy's.
func fzOfflineLimit(p upgrader.OfflinePolicy) float64 {
	if p.Validate() != nil {
		p = upgrader.OfflinePolicy{}
	}
	initial, longest, rf := p.InitialInterval, p.MaxInterval, p.RandomizationFactor
	if initial == 0 {
		initial = upgrader.DefaultOfflineInitial
	}
	if longest == 0 {
		longest = upgrader.DefaultOfflineMax
	}
	longest = max(longest, initial)
	switch {
	case rf == 0:
		rf = upgrader.DefaultOfflineRandomization
	case rf < 0:
		rf = 0
	}
	return float64(longest)*(1+rf) + 1
}

// FuzzFileKey stores bytes under the key a host gives (an image ID) in
// MemFiles and in DirFiles: both accept the same keys, an accepted key is
// one file directly inside DirFiles' directory (never a path out of it),
// reads back what was stored, and leaves nothing behind once removed; a
// refused key creates nothing.
func FuzzFileKey(f *testing.F) {
	for _, k := range []string{"0195f7a2-7c1e-7b5e-9a51-3f0c2d9b8e11", "a", "a.b_c-d", "../etc/passwd", "/abs", ".hidden", "a/b",
		`a\b`, "", "a\x00", strings.Repeat("k", 128), strings.Repeat("k", 129), "é", "CON", "a..b"} {
		f.Add(k, []byte("firmware bytes"))
	}
	dir := f.TempDir()
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		mem := upgrader.NewMemFiles()
		_, memErr := mem.Put(ctx, key, bytes.NewReader(data))
		df, err := upgrader.NewDirFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		n, dirErr := df.Put(ctx, key, bytes.NewReader(data))
		if (memErr == nil) != (dirErr == nil) {
			t.Fatalf("key %q: MemFiles.Put %v, DirFiles.Put %v", fzShort(key), memErr, dirErr)
		}
		if dirErr != nil {
			fzCheckEmpty(t, dir, key)
			return
		}
		if n != int64(len(data)) || strings.ContainsAny(key, `/\`) || !filepath.IsLocal(key) {
			t.Fatalf("key %q accepted (%d bytes stored)", fzShort(key), n)
		}
		if got, err := os.ReadFile(filepath.Join(dir, key)); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("key %q: the file holds %q, %v", fzShort(key), fzShort(got), err)
		}
		if _, err := df.Put(ctx, key, bytes.NewReader(data)); err == nil {
			t.Fatalf("key %q stored twice", fzShort(key))
		}
		for _, files := range []upgrader.Files{mem, df} {
			rc, err := files.Open(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			_ = rc.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("key %q reads %q, %v", fzShort(key), fzShort(got), err)
			}
			if err := files.Remove(ctx, key); err != nil {
				t.Fatal(err)
			}
			if _, err := files.Open(ctx, key); !errors.Is(err, upgrader.ErrFileNotFound) {
				t.Fatalf("key %q removed, Open: %v", fzShort(key), err)
			}
		}
		fzCheckEmpty(t, dir, key)
	})
}

func fzCheckEmpty(t *testing.T, dir, key string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("key %q: %s left in the directory", fzShort(key), left[0].Name())
	}
	if parent, err := os.ReadDir(filepath.Dir(dir)); err != nil || len(parent) != 1 {
		t.Fatalf("key %q: the directory's parent holds %v (%v)", fzShort(key), parent, err)
	}
}
