package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

// pageRow is what the status page shows of one operation.
type pageRow struct {
	Operation string `json:"operation"`
	Device    string `json:"device"`
	State     string `json:"state"`
	Progress  string `json:"progress"`
	Percent   string `json:"percent"`
	Bar       int    `json:"bar"`
	Phases    string `json:"phases"`
}

// TestStatusPageFollowsBatch opens the status page in headless Chromium as
// organization acme, starts a batch upgrade of four simulated devices with
// the page's button, and waits until the page shows every device at 100 %
// and success, from the events stream alone (the page never reloads). Then
// the counts the page shows must be the store's.
func TestStatusPageFollowsBatch(t *testing.T) {
	t.Parallel()
	chrome := requireChromium(t)
	// Reboots long enough that every device is still rebooting when the
	// page's stream has connected, whatever the machine's load: the phases
	// after it are seen live.
	r := setup(t, 4, []string{"acme"}, func(o *options) { o.RebootDelay = 1500 * time.Millisecond })

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	// The first action starts the browser, which lives as long as that
	// action's context: the whole test.
	ctx, cancel := context.WithTimeout(browser, 55*time.Second)
	defer cancel()

	newBuild := r.app.seed.NewBuild.ID
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(r.srv.URL+"/?organization=acme"),
		chromedp.Poll[chromedp.Void](`document.body.dataset.ready === "true" && document.getElementById("build-select").options.length === 2`),
		chromedp.SetValue(chromedp.ID("build-select"), newBuild),
		chromedp.Click(chromedp.ID("start-batch")),
	), "the page did not load or start a batch")
	batchID, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById("batch-id").dataset.batch`))
	require.NoError(t, err, "the page did not follow a batch")

	batches, err := r.app.st.ListBatches(context.Background(), store.BatchFilter{})
	require.NoError(t, err)
	require.Len(t, batches, 1, "the button created one batch")
	require.Equal(t, batches[0].ID, batchID, "the page follows the batch it started")
	assert.Equal(t, "acme", batches[0].Organization, "the page asked as its organization")
	assert.Equal(t, newBuild, batches[0].BuildID)

	const allDone = `document.querySelectorAll('tr.op[data-state="success"][data-progress="100"]').length === 4 &&
		document.getElementById("batch-state").dataset.state === "success" &&
		document.getElementById("count-success").dataset.count === "4"`
	_, err = chromedp.Run(ctx, chromedp.Poll[chromedp.Void](allDone, chromedp.WithPollingTimeout(45*time.Second)))
	require.NoError(t, err, "the page never showed every device done")

	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]pageRow](`[...document.querySelectorAll("tr.op")].map(tr => ({
		operation: tr.dataset.operation, device: tr.dataset.device, state: tr.dataset.state,
		progress: tr.dataset.progress, percent: tr.querySelector(".percent").textContent,
		bar: tr.querySelector(".bar").value, phases: tr.dataset.phases}))`))
	require.NoError(t, err)
	counts, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]int](`Object.fromEntries(
		[...document.querySelectorAll("#counts dd")].map(dd => [dd.id.replace("count-", ""), Number(dd.dataset.count)]))`))
	require.NoError(t, err)
	snapshots, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.snapshots`))
	require.NoError(t, err)

	// The page's counts are the store's.
	b, err := r.app.st.Batch(context.Background(), batchID)
	require.NoError(t, err)
	st := upgrader.StatusOf(b, time.Now())
	require.Equal(t, status.BatchSuccess, st.State)
	for _, s := range status.States() {
		assert.Equal(t, st.Counts[s], counts[string(s)], "count of %s", s)
	}
	assert.Equal(t, st.Total, counts["total"])

	// Every device shows 100 % and success, reached live.
	require.Len(t, rows, 4)
	devices := map[string]bool{}
	for _, id := range r.app.fleet.ids() {
		devices[id] = true
	}
	for _, row := range rows {
		assert.True(t, devices[row.Device], "row of an unknown device %s", row.Device)
		delete(devices, row.Device)
		assert.Equal(t, "success", row.State)
		assert.Equal(t, "100", row.Progress)
		assert.Equal(t, "100 %", row.Percent)
		assert.Equal(t, 100, row.Bar)
		assert.Contains(t, strings.Split(row.Phases, ","), string(status.PhaseVerifying),
			"device %s: phases seen live %q", row.Device, row.Phases)
		op, err := r.app.st.Operation(context.Background(), row.Operation)
		require.NoError(t, err)
		assert.Equal(t, status.Success, op.State)
		assert.Equal(t, row.Device, op.DeviceID)
	}
	assert.Empty(t, devices, "every device has its row")
	assert.NotEqual(t, "0", snapshots, "the stream started with a snapshot")
}
