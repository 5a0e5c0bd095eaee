package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
)

// race runs every fn at once (as near as goroutines allow) and waits.
func race(fns ...func()) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(len(fns))
	done.Add(len(fns))
	for _, fn := range fns {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			fn()
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
}

func concurrencyTests(n int) []test {
	return []test{
		{"CancelRacesFlashing", func(t *testing.T, f *fixture) {
			ops := make([]store.Operation, n)
			for i := range ops {
				ops[i] = f.drive(f.newOp("org-a").ID, status.InProgress, status.PhaseImageTest)
			}
			cancelErr := make([]error, n)
			flashErr := make([]error, n)
			var fns []func()
			for i, op := range ops {
				fns = append(fns,
					func() {
						_, cancelErr[i] = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{
							From: status.InProgress, State: status.Cancelled, Reason: status.ReasonCancelledByUser})
					},
					func() {
						_, flashErr[i] = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{
							From: status.InProgress, Phase: store.Ptr(status.PhaseFlashing), Progress: store.Ptr(status.ProgressFlashing)})
					})
			}
			race(fns...)
			cancels := 0
			for i, op := range ops {
				got := f.get(op.ID)
				switch {
				case cancelErr[i] == nil && flashErr[i] != nil:
					cancels++
					require.ErrorIs(t, flashErr[i], store.ErrInvalidTransition)
					assert.Equal(t, status.Cancelled, got.State, "op %d", i)
					assert.False(t, got.Phase.AfterPointOfNoReturn(), "op %d: cancelled in %s", i, got.Phase)
				case flashErr[i] == nil && cancelErr[i] != nil:
					require.ErrorIs(t, cancelErr[i], store.ErrInvalidTransition)
					assert.Equal(t, status.InProgress, got.State, "op %d", i)
					assert.Equal(t, status.PhaseFlashing, got.Phase, "op %d", i)
				default:
					t.Fatalf("op %d: want exactly one winner, cancel: %v, flash: %v", i, cancelErr[i], flashErr[i])
				}
			}
			t.Logf("%d of %d races won by cancel", cancels, n)
		}},
		{"AppendLogNoneLost", func(t *testing.T, f *fixture) {
			const lines = 100
			goroutines := max(n, lines)
			op := f.newOp("org-a")
			fns := make([]func(), goroutines)
			errs := make([]error, goroutines)
			for i := range fns {
				fns[i] = func() { errs[i] = f.s.AppendLog(f.ctx, op.ID, 0, fmt.Sprintf("line %d", i)) }
			}
			race(fns...)
			for _, err := range errs {
				require.NoError(t, err)
			}
			logs, err := f.s.Logs(f.ctx, op.ID, 0, 0)
			require.NoError(t, err)
			require.Len(t, logs, goroutines)
			seen := map[string]bool{}
			for i, l := range logs {
				assert.Equal(t, int64(i+1), l.Seq, "Seq without gaps or duplicates")
				assert.False(t, seen[l.Line], "line %q twice", l.Line)
				seen[l.Line] = true
			}
			for i := range goroutines {
				assert.True(t, seen[fmt.Sprintf("line %d", i)], "line %d lost", i)
			}
		}},
		{"ProgressRacesTerminal", func(t *testing.T, f *fixture) {
			for _, end := range []status.State{status.Cancelled, status.Success, status.Failed} {
				for range max(n/10, 3) {
					op := f.drive(f.newOp("org-a").ID, status.InProgress, status.PhaseUpload)
					var fns []func()
					var mu sync.Mutex
					var unexpected []error
					for p := range 20 {
						fns = append(fns, func() {
							err := f.s.SetProgress(f.ctx, op.ID, 0, 20+p)
							if err != nil && !errors.Is(err, store.ErrInvalidTransition) {
								mu.Lock()
								unexpected = append(unexpected, err)
								mu.Unlock()
							}
						})
					}
					var endErr error
					fns = append(fns, func() {
						_, endErr = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: end, Reason: reasonFor(end)})
					})
					race(fns...)
					require.NoError(t, endErr)
					require.Empty(t, unexpected)
					got := f.get(op.ID)
					assert.Equal(t, end, got.State, "progress never reverts a terminal state")
					assert.False(t, got.FinishedAt.IsZero())
					require.ErrorIs(t, f.s.SetProgress(f.ctx, op.ID, 0, 99), store.ErrInvalidTransition)
					requireSame(t, got, f.get(op.ID))
				}
			}
		}},
		{"CreateOperationSameDevice", func(t *testing.T, f *fixture) {
			d, im := f.device("org-a"), f.imageOf("org-a")
			errs := make([]error, n)
			fns := make([]func(), n)
			for i := range fns {
				fns[i] = func() {
					_, errs[i] = f.s.CreateOperation(f.ctx, store.Operation{DeviceID: d.ID, ImageID: im.ID})
				}
			}
			race(fns...)
			ok := 0
			for _, err := range errs {
				if err == nil {
					ok++
					continue
				}
				require.ErrorIs(t, err, store.ErrDeviceBusy)
			}
			assert.Equal(t, 1, ok, "exactly one CreateOperation wins")
			ops, err := f.s.ListOperations(f.ctx, store.OperationFilter{DeviceID: d.ID})
			require.NoError(t, err)
			assert.Len(t, ops, 1)
		}},
		{"CreateBatchesOverlapping", func(t *testing.T, f *fixture) {
			im := f.imageOf("org-a")
			shared := f.device("org-a")
			errs := make([]error, n)
			fns := make([]func(), n)
			for i := range fns {
				own := f.device("org-a")
				fns[i] = func() {
					_, _, errs[i] = f.s.CreateBatch(f.ctx, store.Batch{Organization: "org-a", BuildID: im.BuildID},
						[]store.Operation{{DeviceID: own.ID, ImageID: im.ID}, {DeviceID: shared.ID, ImageID: im.ID}})
				}
			}
			race(fns...)
			ok := 0
			for _, err := range errs {
				if err == nil {
					ok++
					continue
				}
				require.ErrorIs(t, err, store.ErrDeviceBusy)
			}
			assert.Equal(t, 1, ok, "exactly one batch takes the shared device")
			bs, err := f.s.ListBatches(f.ctx, store.BatchFilter{})
			require.NoError(t, err)
			assert.Len(t, bs, 1)
			ops, err := f.s.ListOperations(f.ctx, store.OperationFilter{})
			require.NoError(t, err)
			assert.Len(t, ops, 2, "losing batches left no operations behind")
		}},
		{"BatchCountsUnderConcurrentUpdates", func(t *testing.T, f *fixture) {
			b, ops := f.newBatch("org-a", n)
			fns := make([]func(), len(ops))
			errs := make([]error, len(ops))
			for i, op := range ops {
				fns[i] = func() {
					p := status.PhaseConnecting
					if _, errs[i] = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.Pending, State: status.InProgress, Phase: &p}); errs[i] != nil {
						return
					}
					if errs[i] = f.s.SetProgress(f.ctx, op.ID, 0, 50); errs[i] != nil {
						return
					}
					if errs[i] = f.s.AppendLog(f.ctx, op.ID, 0, "done"); errs[i] != nil {
						return
					}
					end := status.Success
					if i%5 == 0 {
						end = status.Failed
					}
					_, errs[i] = f.s.UpdateOperation(f.ctx, op.ID, store.OperationUpdate{From: status.InProgress, State: end})
				}
			}
			race(fns...)
			for _, err := range errs {
				require.NoError(t, err)
			}
			got := f.batch(b.ID)
			failed := (n + 4) / 5
			assert.Equal(t, map[status.State]int{status.Success: n - failed, status.Failed: failed}, nonZero(got.Counts))
			assert.Equal(t, status.BatchFailed, got.State)
		}},
	}
}
