package upgrader_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
	"github.com/fwupgrader/fwupgrader/upgrader/upgradertest"
)

// noop succeeds at once, reporting no phase: the engine's own cost.
type noop struct{}

func (noop) Upgrade(context.Context, *upgrader.Job) error { return nil }

// BenchmarkOperations runs b.N operations, each on its own device, with a
// no-op upgrader through the engine's workers and the memory store. Run it
// with -benchtime=100000x for the 100,000 operations.
func BenchmarkOperations(b *testing.B) {
	bd := setup(b, &upgradertest.Fake{}, func(c *upgrader.Config) { c.Workers = 8 })
	require.NoError(b, bd.reg.Register("noop", noop{}))
	ctx := context.Background()
	ids := make([]string, b.N)
	for i := range b.N {
		d := bd.device
		d.ID, d.Connection = fmt.Sprintf("bench-%d", i), "noop"
		_, err := bd.st.PutDevice(ctx, d)
		require.NoError(b, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	require.NoError(b, bd.eng.Start(ctx))
	for i := range b.N {
		op, err := bd.eng.Enqueue(ctx, upgrader.Request{DeviceID: fmt.Sprintf("bench-%d", i), ImageID: bd.image.ID})
		require.NoError(b, err)
		ids[i] = op.ID
	}
	for _, id := range ids {
		_, err := bd.eng.Wait(ctx, id)
		require.NoError(b, err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	require.NoError(b, bd.eng.Stop(ctx))
	ops, err := bd.st.ListOperations(ctx, store.OperationFilter{States: []status.State{status.Success}})
	require.NoError(b, err)
	require.Len(b, ops, b.N)
	b.ReportMetric(float64(elapsed.Milliseconds()), "total-ms")
}
