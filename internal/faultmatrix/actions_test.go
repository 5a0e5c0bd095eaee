package faultmatrix_test

// What the rows do: upgrade a device start to end, cancel at a chosen
// moment, run a batch through a pause, a closing window, an offline device
// or a cancel, kill an engine process, restart PostgreSQL.

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// request is the upgrade of n's device to the row's image.
func (h *harness) request(n *node) upgrader.Request {
	return upgrader.Request{DeviceID: n.d.ID, ImageID: h.image.ID, Options: h.row.requestOptions()}
}

// only is the row's one device.
func (h *harness) only() *node {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(h.t, h.nodes, 1)
	return h.nodes[0]
}

// upgradeAction creates the operation and runs it in this goroutine until
// it ends (Engine.Upgrade in two halves, so the events of the operation can
// be told apart from its ID).
func upgradeAction(h *harness) result {
	n := h.only()
	op, err := h.eng.Create(h.ctx, h.request(n))
	require.NoError(h.t, err)
	_, err = h.eng.Run(h.ctx, op.ID)
	require.NoError(h.t, err)
	return result{outs: []outcome{{node: n, opID: op.ID}}}
}

// runAsync runs an existing operation in another goroutine; the returned
// function waits for its end.
func (h *harness) runAsync(id string) func() {
	done := make(chan error, 1)
	go func() {
		_, err := h.eng.Run(h.ctx, id)
		done <- err
	}()
	return func() {
		h.t.Helper()
		require.NoError(h.t, <-done)
	}
}

// cancel asks for a cancel and records the answer in o.
func (h *harness) cancel(o *outcome) {
	o.cancelAt = len(o.node.sim().Executed())
	_, o.cancelErr = h.eng.Cancel(h.ctx, o.opID)
	o.cancelled = true
}

var actCancelPending = action{name: "cancel while pending", run: func(h *harness) result {
	n := h.only()
	op, err := h.eng.Create(h.ctx, h.request(n))
	require.NoError(h.t, err)
	o := outcome{node: n, opID: op.ID}
	h.cancel(&o)
	_, err = h.eng.Run(h.ctx, op.ID) // nothing left to run
	require.NoError(h.t, err)
	return result{outs: []outcome{o}}
}}

// actCancelUploading cancels at the first progress report of the upload.
var actCancelUploading = action{name: "cancel while uploading", run: func(h *harness) result {
	n := h.only()
	op, err := h.eng.Create(h.ctx, h.request(n))
	require.NoError(h.t, err)
	wait := h.runAsync(op.ID)
	_, err = h.rec.wait(h.ctx, func(ev upgrader.Event) bool {
		return ev.OperationID == op.ID && ev.Kind == upgrader.EventOperationProgress &&
			ev.Progress > status.ProgressChecksum && ev.Progress < status.ProgressUploaded
	})
	require.NoError(h.t, err)
	o := outcome{node: n, opID: op.ID}
	h.cancel(&o)
	wait()
	return result{outs: []outcome{o}}
}}

// actCancelRebooting cancels once the operation reports the reboot.
var actCancelRebooting = action{name: "cancel while rebooting", run: func(h *harness) result {
	n := h.only()
	op, err := h.eng.Create(h.ctx, h.request(n))
	require.NoError(h.t, err)
	wait := h.runAsync(op.ID)
	_, err = h.rec.wait(h.ctx, func(ev upgrader.Event) bool {
		return ev.OperationID == op.ID && ev.Kind == upgrader.EventOperationPhase && ev.Phase == status.PhaseRebooting
	})
	require.NoError(h.t, err)
	o := outcome{node: n, opID: op.ID}
	h.cancel(&o)
	wait()
	return result{outs: []outcome{o}}
}}

// actImpostor upgrades the device; after its flash another device answers
// at its address (host.impostor). That device must be left alone.
var actImpostor = action{name: "another device at the address", run: func(h *harness) result {
	res := upgradeAction(h)
	other := h.only().other
	assert.Zero(h.t, other.Flashed(), "the other device was flashed")
	_, recorded := other.File(openwrt.ChecksumFile)
	assert.False(h.t, recorded, "the image was recorded on the other device")
	return res
}}

// actDropThenRefuse cuts the connection during the upload and refuses the
// next connection (the one the upgrader opens to undo what it changed), as
// a link that goes down for a moment does.
var actDropThenRefuse = action{name: "drop the upload, refuse the cleanup's connection", run: func(h *harness) result {
	n := h.only()
	op, err := h.eng.Create(h.ctx, h.request(n))
	require.NoError(h.t, err)
	wait := h.runAsync(op.ID)
	_, err = h.rec.wait(h.ctx, func(ev upgrader.Event) bool {
		return ev.OperationID == op.ID && ev.Kind == upgrader.EventOperationPhase && ev.Phase == status.PhaseUpload
	})
	require.NoError(h.t, err)
	f := n.cfg.Faults
	f.DropUploadAfter, f.RefuseConnections = 64<<10, 1
	n.sim().SetFaults(f)
	wait()
	return result{outs: []outcome{{node: n, opID: op.ID}}}
}}

// actCancelStopping cancels as soon as the device stopped its first service
// to free memory, while the upgrader still waits for the stop command's
// answer (the row's link delays the device's answers).
var actCancelStopping = action{name: "cancel while stopping services", run: func(h *harness) result {
	n := h.only()
	op, err := h.eng.Create(h.ctx, h.request(n))
	require.NoError(h.t, err)
	wait := h.runAsync(op.ID)
	h.eventually("the device to stop a service", func() bool {
		for _, running := range n.sim().Services() {
			if !running {
				return true
			}
		}
		return false
	})
	o := outcome{node: n, opID: op.ID}
	h.cancel(&o)
	wait()
	return result{outs: []outcome{o}}
}}

// raceOrder is who reaches the store first when a cancel meets the move
// into flashing.
type raceOrder int

const (
	cancelFirst raceOrder = iota // the cancel lands, then the move is tried
	flashFirst                   // the move lands, then the cancel is tried
	together                     // both at once: the store decides
)

// actCancelAtFlash cancels exactly when the upgrader asks the store to
// move the operation into flashing (the compare-and-set that decides
// between the flash and a cancel).
func actCancelAtFlash(order raceOrder) action {
	return action{name: "cancel at the move into flashing", hook: true, run: func(h *harness) result {
		n := h.only()
		op, err := h.eng.Create(h.ctx, h.request(n))
		require.NoError(h.t, err)
		o := outcome{node: n, opID: op.ID}
		var wg sync.WaitGroup
		h.hooks.armFlash(func(id string, forward func() (store.Operation, error)) (store.Operation, error) {
			switch order {
			case cancelFirst:
				h.cancel(&o)
				return forward()
			case flashFirst:
				op, err := forward()
				h.cancel(&o)
				return op, err
			default:
				o.cancelAt = len(n.sim().Executed())
				o.cancelled = true
				start := make(chan struct{})
				wg.Go(func() {
					<-start
					_, o.cancelErr = h.eng.Cancel(h.ctx, o.opID)
				})
				close(start)
				return forward()
			}
		})
		_, err = h.eng.Run(h.ctx, op.ID)
		require.NoError(h.t, err)
		wg.Wait()
		require.True(h.t, o.cancelled, "the operation never tried to move into flashing")
		return result{outs: []outcome{o}}
	}}
}

// ---------------------------------------------------------------------------
// Batches.

// startEngine starts the row's engine (stopped by the checker).
func (h *harness) startEngine() {
	h.t.Helper()
	require.NoError(h.t, h.eng.Start(context.Background()))
}

// createBatch creates a started batch of every device of the row, in the
// order of the row's fleet (its roles), with rollout r.
func (h *harness) createBatch(r store.Rollout) store.Batch {
	h.t.Helper()
	rank := map[string]int{}
	h.mu.Lock()
	for i, n := range h.nodes {
		rank[n.d.ID] = i
	}
	h.mu.Unlock()
	b, plan, err := h.eng.CreateBatch(h.ctx, upgrader.BatchRequest{
		BuildID: h.build.ID, Name: h.row.name, Firmwareless: true, Options: h.row.requestOptions(),
		Order:   func(a, b store.Device) int { return cmp.Compare(rank[a.ID], rank[b.ID]) },
		Rollout: r,
	})
	require.NoError(h.t, err)
	require.Len(h.t, plan.Selected, len(rank), "skipped: %+v", plan.Skipped)
	return b
}

func (h *harness) batchStatus(id string) upgrader.BatchStatus {
	h.t.Helper()
	s, err := h.eng.Batch(context.Background(), id)
	require.NoError(h.t, err)
	return s
}

// waitBatch waits for the batch to end, reading the store until it can
// (the store may be restarting).
func (h *harness) waitBatch(id string) *upgrader.BatchStatus {
	h.t.Helper()
	var s upgrader.BatchStatus
	var err error
	h.eventually("the batch to end", func() bool {
		s, err = h.eng.Batch(context.Background(), id)
		return err == nil && s.State.Terminal()
	})
	return &s
}

// batchOutcomes returns one outcome per operation of the batch.
func (h *harness) batchOutcomes(id string) []outcome {
	h.t.Helper()
	ops, err := h.st.ListOperations(context.Background(), store.OperationFilter{BatchID: id})
	require.NoError(h.t, err)
	var out []outcome
	for _, op := range ops {
		n := h.node(op.DeviceID)
		require.NotNil(h.t, n)
		out = append(out, outcome{node: n, opID: op.ID})
	}
	return out
}

// opOf returns the operation of n's device in the batch.
func (h *harness) opOf(batchID string, n *node) store.Operation {
	h.t.Helper()
	ops, err := h.st.ListOperations(context.Background(), store.OperationFilter{BatchID: batchID, DeviceID: n.d.ID})
	require.NoError(h.t, err)
	require.Len(h.t, ops, 1)
	return ops[0]
}

// settle gives a held batch the time to (wrongly) start something. It is
// no timing assertion: what is asserted afterwards must hold at any time.
func settle() { time.Sleep(500 * time.Millisecond) }

// actFailureThreshold runs a batch of one wave, one device at a time, with
// a failure threshold of 25 % once one device finished: the first failure
// (1 of 4) is not over it, the second is. The batch is looked at once it
// paused, then cancelled.
var actFailureThreshold = action{name: "failure threshold", run: func(h *harness) result {
	h.startEngine()
	b := h.createBatch(store.Rollout{MaxConcurrent: 1, FailureThreshold: store.Ptr(25.0), MinFinished: 1})
	h.eventually("the batch to pause", func() bool { return h.batchStatus(b.ID).State == status.BatchPaused })
	settle()
	mid := h.batchStatus(b.ID)
	assert.Equal(h.t, status.BatchPaused, mid.State, "the pause holds: %s", mid.Summary)
	_, err := h.eng.CancelBatch(h.ctx, b.ID)
	require.NoError(h.t, err)
	return result{outs: h.batchOutcomes(b.ID), mid: &mid, end: h.waitBatch(b.ID)}
}}

// window is a daily UTC window from now+from to now+to seconds.
func window(now time.Time, from, to int) store.Window {
	hh, mm, ss := now.UTC().Clock()
	s := hh*3600 + mm*60 + ss
	wrap := func(v int) store.TimeOfDay { return store.TimeOfDay(((v % 86400) + 86400) % 86400) }
	return store.Window{Start: wrap(s + from), End: wrap(s + to)}
}

// actWindowCloses runs a batch one device at a time inside a window, and
// makes the window end now once the first device is being upgraded: that
// one finishes, the others wait. The batch is then cancelled.
var actWindowCloses = action{name: "window closes", run: func(h *harness) result {
	h.startEngine()
	b := h.createBatch(store.Rollout{MaxConcurrent: 1, Windows: []store.Window{window(time.Now(), -3600, 3600)}})
	running := h.nodesOf("running")[0]
	h.eventually("the first device to be contacted", func() bool {
		op := h.opOf(b.ID, running)
		return op.State == status.InProgress && op.Phase.Order() > status.PhaseConnecting.Order()
	})
	cur := h.batchStatus(b.ID)
	r := cur.Rollout
	r.Windows = []store.Window{window(time.Now(), -3600, 0)} // it ends now
	_, err := h.eng.SetRollout(h.ctx, b.ID, r)
	require.NoError(h.t, err)
	h.eventually("the running device's operation to end", func() bool { return h.opOf(b.ID, running).State.Terminal() })
	settle()
	mid := h.batchStatus(b.ID)
	for _, n := range h.nodesOf("waiting") {
		assert.Equal(h.t, status.Pending, h.opOf(b.ID, n).State, "a device waits for the next window")
	}
	_, err = h.eng.CancelBatch(h.ctx, b.ID)
	require.NoError(h.t, err)
	return result{outs: h.batchOutcomes(b.ID), mid: &mid, end: h.waitBatch(b.ID)}
}}

// actOfflineBack runs a batch whose offline device waits as pending, then
// comes back and is upgraded.
var actOfflineBack = action{name: "offline device back", run: func(h *harness) result {
	h.startEngine()
	b := h.createBatch(store.Rollout{})
	offline := h.nodesOf("offline")[0]
	mid := h.waitOffline(b.ID)
	op := h.opOf(b.ID, offline)
	assert.Equal(h.t, status.ReasonConnectionFailed, op.Reason, "the offline device's operation says why it waits")
	h.bringBack(offline)
	return result{outs: h.batchOutcomes(b.ID), mid: &mid, end: h.waitBatch(b.ID)}
}}

// waitOffline waits until the batch's other devices are done and one
// waits for its device (pending, counted in Waiting), and returns the
// batch's status at that moment.
func (h *harness) waitOffline(id string) upgrader.BatchStatus {
	h.t.Helper()
	var s upgrader.BatchStatus
	h.eventually("a device to wait as offline", func() bool {
		s = h.batchStatus(id)
		return s.Waiting == 1 && s.Done == s.Total-1
	})
	return s
}

// actOfflineThenCancel runs a batch until its one unreachable device waits
// as pending, then cancels the batch.
var actOfflineThenCancel = action{name: "offline device, batch cancelled", run: func(h *harness) result {
	h.startEngine()
	b := h.createBatch(store.Rollout{})
	mid := h.waitOffline(b.ID)
	_, err := h.eng.CancelBatch(h.ctx, b.ID)
	require.NoError(h.t, err)
	return result{outs: h.batchOutcomes(b.ID), mid: &mid, end: h.waitBatch(b.ID)}
}}

// actBatchToEnd runs a batch to its end.
var actBatchToEnd = action{name: "batch", run: func(h *harness) result {
	h.startEngine()
	b := h.createBatch(store.Rollout{})
	return result{outs: h.batchOutcomes(b.ID), end: h.waitBatch(b.ID)}
}}

// actCancelMidWave runs a batch in two waves (2 devices, then the rest),
// two at a time, and cancels it once the second wave runs.
var actCancelMidWave = action{name: "cancel mid-wave", run: func(h *harness) result {
	h.startEngine()
	b := h.createBatch(store.Rollout{MaxConcurrent: 2, Waves: []store.WaveSize{{Count: 2}, {Percent: 100}}})
	h.eventually("the second wave to run", func() bool {
		ops, err := h.st.ListOperations(context.Background(), store.OperationFilter{BatchID: b.ID})
		require.NoError(h.t, err)
		return slices.ContainsFunc(ops, func(op store.Operation) bool {
			return op.Wave == 1 && op.State == status.InProgress && op.Phase != status.PhaseNone
		})
	})
	_, err := h.eng.CancelBatch(h.ctx, b.ID)
	require.NoError(h.t, err)
	return result{outs: h.batchOutcomes(b.ID), end: h.waitBatch(b.ID)}
}}

// ---------------------------------------------------------------------------
// PostgreSQL restarted.

// actPostgresRestart runs a batch two devices at a time on a PostgreSQL of
// its own and crashes the server (SIGKILL of every server process, half a
// second down) once some operations ended and others run. The batch must
// complete, and nothing the store held before the crash may be lost.
var actPostgresRestart = action{name: "PostgreSQL restart", run: func(h *harness) result {
	h.startEngine()
	b := h.createBatch(store.Rollout{MaxConcurrent: 2})
	var before []store.Operation
	h.eventually("operations ended and others running", func() bool {
		ops, err := h.st.ListOperations(context.Background(), store.OperationFilter{BatchID: b.ID})
		require.NoError(h.t, err)
		before = ops
		ended := slices.ContainsFunc(ops, func(op store.Operation) bool { return op.State.Terminal() })
		running := slices.ContainsFunc(ops, func(op store.Operation) bool {
			return op.State == status.InProgress && op.Phase != status.PhaseNone
		})
		return ended && running
	})
	logs := map[string][]store.LogEntry{}
	for _, op := range before {
		l, err := h.st.Logs(context.Background(), op.ID, 0, 0)
		require.NoError(h.t, err)
		logs[op.ID] = l
	}
	h.cluster.Restart(syscall.SIGKILL, 500*time.Millisecond)
	end := h.waitBatch(b.ID)
	// Nothing recorded before the crash is lost.
	for _, was := range before {
		now := h.operation(was.ID)
		assert.GreaterOrEqual(h.t, now.Version, was.Version, "operation %s went back", was.ID)
		if was.State.Terminal() {
			assert.Equal(h.t, was, now, "operation %s ended before the crash", was.ID)
		}
		l, err := h.st.Logs(context.Background(), was.ID, 0, 0)
		require.NoError(h.t, err)
		if assert.GreaterOrEqual(h.t, len(l), len(logs[was.ID]), "operation %s lost log lines", was.ID) {
			assert.Equal(h.t, logs[was.ID], l[:len(logs[was.ID])], "operation %s: its log before the crash", was.ID)
		}
	}
	return result{outs: h.batchOutcomes(b.ID), end: end}
}}
