package memory_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/memory"
)

// setupBatch fills a store with one batch of n pending operations.
func setupBatch(b *testing.B, n int) (*memory.Store, store.Batch, []store.Operation) {
	b.Helper()
	ctx := b.Context()
	s := memory.New()
	c, err := s.CreateCategory(ctx, store.Category{Organization: "org", Name: "c"})
	require.NoError(b, err)
	bu, err := s.CreateBuild(ctx, store.Build{CategoryID: c.ID, Version: "1"})
	require.NoError(b, err)
	im, err := s.CreateImage(ctx, store.Image{BuildID: bu.ID, Type: "t", Name: "fw.bin",
		SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"})
	require.NoError(b, err)
	ops := make([]store.Operation, n)
	for i := range ops {
		d, err := s.PutDevice(ctx, store.Device{ID: fmt.Sprintf("dev-%06d", i), Organization: "org"})
		require.NoError(b, err)
		ops[i] = store.Operation{DeviceID: d.ID, ImageID: im.ID}
	}
	bt, out, err := s.CreateBatch(ctx, store.Batch{Organization: "org", BuildID: bu.ID, State: status.BatchInProgress}, ops)
	require.NoError(b, err)
	return s, bt, out
}

// BenchmarkHotPath measures what the engine does per step of one operation
// in a batch of 10,000: a phase change (UpdateOperation), a progress report
// and a log line.
func BenchmarkHotPath(b *testing.B) {
	const n = 10000
	s, _, ops := setupBatch(b, n)
	ctx := b.Context()
	for _, op := range ops {
		_, err := s.UpdateOperation(ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress})
		require.NoError(b, err)
	}
	phases := []status.Phase{status.PhaseConnecting, status.PhaseUpload}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := ops[i%n].ID
		p := phases[i%2]
		if _, err := s.UpdateOperation(ctx, id, store.OperationUpdate{From: status.InProgress, Phase: &p}); err != nil {
			b.Fatal(err)
		}
		if err := s.SetProgress(ctx, id, 0, i%100); err != nil {
			b.Fatal(err)
		}
		if err := s.AppendLog(ctx, id, 0, "uploading firmware"); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkListBatchOperations lists the first page (500) of the
// operations of a batch of 10,000.
func BenchmarkListBatchOperations(b *testing.B) {
	s, bt, _ := setupBatch(b, 10000)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		ops, err := s.ListOperations(ctx, store.OperationFilter{BatchID: bt.ID, Page: store.Page{Limit: 500}})
		if err != nil || len(ops) != 500 {
			b.Fatal(err, len(ops))
		}
	}
}

// BenchmarkClaim claims operations 8 at a time (one producer with 8 free
// workers) from a batch of 100,000 pending ones, and reports claims per
// second. When the batch runs dry a new one is made, off the clock.
func BenchmarkClaim(b *testing.B) {
	const n = 100000
	s, _, _ := setupBatch(b, n)
	ctx := b.Context()
	claimed := 0
	b.ReportAllocs()
	for b.Loop() {
		ops, err := s.ClaimOperations(ctx, "bench-engine", 8, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if len(ops) == 0 {
			b.StopTimer()
			s, _, _ = setupBatch(b, n)
			b.StartTimer()
			continue
		}
		claimed += len(ops)
	}
	b.ReportMetric(float64(claimed)/b.Elapsed().Seconds(), "claims/s")
}
