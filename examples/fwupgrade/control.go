package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/store"
	"github.com/fwupgrader/fwupgrader/storeadapters/postgres"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

const defaultSchema = postgres.DefaultSchema

// controlDetails is shared by the help of status, pause, resume and cancel.
const controlDetails = `The batch lives in the PostgreSQL store given to 'fwupgrade batch --store'
(--schema too, if it was given), so this works from any machine that reaches
the database, while other processes run the batch. It prints the batch's
summary afterwards; with --json one JSON object on standard output, the
shape 'fwupgrade batch --help' documents.

`

// controlFlags are the flags of status, pause, cancel.
type controlFlags struct {
	store storeFlags
	batch string
	json  bool
}

func (cf *controlFlags) define(f *flagSet) {
	cf.store.define(f, true)
	batchFlag(f, &cf.batch)
	f.Bool(&cf.json, "json", "--json", "Print the batch's summary as one JSON object on standard output.")
}

func batchFlag(f *flagSet, v *string) {
	f.String(v, "batch", "ID", "", "--batch 0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f",
		"The batch's id, as 'fwupgrade batch' printed it. Required.")
}

// open opens the store and reads the batch; it returns the engine to
// act with, and an exit code other than -1 when it failed.
func (cf *controlFlags) open(ctx context.Context, s *streams, cmd string) (*pgStore, *upgrader.Engine, store.Batch, int) {
	if err := cf.store.check(true); err != nil {
		return nil, nil, store.Batch{}, usage(s, cmd, err)
	}
	if cf.batch == "" {
		return nil, nil, store.Batch{}, usage(s, cmd, usagef("--batch is required"))
	}
	pg, err := cf.store.open(ctx, false, 2)
	if err != nil {
		return nil, nil, store.Batch{}, fail(s, cmd, exitError, err)
	}
	eng, err := upgrader.NewEngine(pg.store, upgrader.NewRegistry(), &upgrader.Config{Logger: quietLogger(), Files: pg.files})
	if err != nil {
		pg.close()
		return nil, nil, store.Batch{}, fail(s, cmd, exitError, err)
	}
	b, err := pg.store.Batch(ctx, cf.batch)
	if err != nil {
		pg.close()
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("batch %s not found in schema %s of %s", cf.batch, cf.store.schema, redactURL(cf.store.url))
		}
		return nil, nil, store.Batch{}, fail(s, cmd, exitError, cf.store.storeProblem(err))
	}
	return pg, eng, b, -1
}

// report prints what a control command did and the batch's summary.
func (cf *controlFlags) report(ctx context.Context, s *streams, cmd string, st store.Store, note string) int {
	human := s.stdout
	if cf.json {
		human = s.stderr
	}
	sum, err := summarize(ctx, st, cf.batch, nil, nil, "postgres")
	if err != nil {
		return fail(s, cmd, exitError, cf.store.storeProblem(err))
	}
	if note != "" {
		fmt.Fprintln(human, note)
	}
	if cf.json {
		writeJSON(s.stdout, sum)
	} else {
		writeSummary(human, sum)
	}
	return exitSuccess
}

// controlAction is what a control command does to batch b; it returns the
// note printed before the batch's summary.
type controlAction func(ctx context.Context, cf *controlFlags, eng *upgrader.Engine, b store.Batch) (note string, err error)

// run opens the store and reads the batch, does act, and reports the
// batch's summary after act's note; an error of act fails the command.
func (cf *controlFlags) run(ctx context.Context, s *streams, cmd string, act controlAction) int {
	pg, eng, b, code := cf.open(ctx, s, cmd)
	if code >= 0 {
		return code
	}
	defer pg.close()
	note, err := act(ctx, cf, eng, b)
	if err != nil {
		return fail(s, cmd, exitError, err)
	}
	return cf.report(ctx, s, cmd, pg.store, note)
}

// defineControl is the define of control command cmd, which does act.
func defineControl(cmd string, act controlAction) func(*flagSet) func(context.Context, *streams) int {
	return func(f *flagSet) func(context.Context, *streams) int {
		cf := &controlFlags{}
		cf.define(f)
		return func(ctx context.Context, s *streams) int { return cf.run(ctx, s, cmd, act) }
	}
}

func statusCommand() *command {
	return &command{
		name:     "status",
		summary:  "show a batch kept in PostgreSQL",
		synopsis: "fwupgrade status --store postgres://... [--schema NAME] --batch ID [--json]",
		details:  controlDetails + "The exit code is 0 when the batch could be read, whatever its state.\n",
		example:  "  fwupgrade status --store postgres://fw@db.example.net/fleet --batch 0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f --json\n",
		define: defineControl("status", func(context.Context, *controlFlags, *upgrader.Engine, store.Batch) (string, error) {
			return "", nil
		}),
	}
}

func pauseCommand() *command {
	return &command{
		name:     "pause",
		summary:  "pause a batch kept in PostgreSQL: no new device starts",
		synopsis: "fwupgrade pause --store postgres://... [--schema NAME] --batch ID [--json]",
		details: controlDetails + `Devices already running finish (a device cannot be stopped safely once
flashing); nothing else starts until 'fwupgrade resume'. Pausing a paused
batch is no error.
`,
		example: "  fwupgrade pause --store postgres://fw@db.example.net/fleet --batch 0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f\n",
		define:  defineControl("pause", pauseBatch),
	}
}

// pauseBatch pauses a running batch; pausing a paused one is no error.
func pauseBatch(ctx context.Context, cf *controlFlags, eng *upgrader.Engine, b store.Batch) (string, error) {
	switch {
	case b.State.Terminal():
		return "", fmt.Errorf("batch %s already ended (%s): nothing to pause", b.ID, b.State)
	case b.CancelRequested:
		return "", fmt.Errorf("batch %s is being cancelled: nothing to pause", b.ID)
	case b.State == status.BatchIdle:
		return "", fmt.Errorf("batch %s was never started (held): nothing to pause; start it with 'fwupgrade resume' or cancel it", b.ID)
	case b.State == status.BatchPaused:
		return fmt.Sprintf("batch %s is already paused (%s)", b.ID, b.PauseReason), nil
	}
	if _, err := eng.PauseBatch(ctx, b.ID); err != nil && !errors.Is(err, store.ErrInvalidTransition) {
		return "", cf.store.storeProblem(err)
	}
	return fmt.Sprintf("batch %s paused: no new device starts; devices already running finish. Resume it with: %s",
		b.ID, controlLine("resume", &cf.store, b.ID)), nil
}

func cancelCommand() *command {
	return &command{
		name:     "cancel",
		summary:  "cancel a batch kept in PostgreSQL",
		synopsis: "fwupgrade cancel --store postgres://... [--schema NAME] --batch ID [--json]",
		details: controlDetails + `Devices not started yet, and those running but not yet flashing, are
cancelled (the process running them restarts the services it stopped);
devices already flashing finish and are verified. A cancelled batch cannot
be resumed.
`,
		example: "  fwupgrade cancel --store postgres://fw@db.example.net/fleet --batch 0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f\n",
		define:  defineControl("cancel", cancelBatch),
	}
}

// cancelBatch cancels a batch that has not ended.
func cancelBatch(ctx context.Context, cf *controlFlags, eng *upgrader.Engine, b store.Batch) (string, error) {
	if b.State.Terminal() {
		return "", fmt.Errorf("batch %s already ended (%s): nothing to cancel", b.ID, b.State)
	}
	if _, err := eng.CancelBatch(ctx, b.ID); err != nil {
		return "", cf.store.storeProblem(err)
	}
	return fmt.Sprintf("batch %s cancelled: devices not yet flashing are cancelled; devices flashing finish and are verified", b.ID), nil
}

// resumeFlags are the resume command's flags.
type resumeFlags struct {
	run   runFlags
	batch string
}

func resumeCommand() *command {
	return &command{
		name:    "resume",
		summary: "resume (or start) a batch kept in PostgreSQL, and with --inventory run it here",
		synopsis: `fwupgrade resume --store postgres://... [--schema NAME] --batch ID [--json]
  fwupgrade resume --store postgres://... [--schema NAME] --batch ID --inventory FILE.json
      [--image-map FILE.json] [--no-identity-check] [--concurrency N] [--offline-max-wait D]
      [--wait-paused] [--json] [--reconnect-delay D] [--reconnect-retry-delay D]
      [--reconnect-max-retries N] [--upgrade-timeout D] [--retries N] [--retry-delay D]`,
		details: controlDetails + `A paused batch goes on (one paused by its success threshold goes on with
its next wave); a batch created with --hold starts. Without --inventory the
batch is only marked so: the processes running it (batch or resume with
--wait-paused) carry on. With --inventory this process also runs the batch's
devices, as 'fwupgrade batch' does (same display, summary and exit codes,
Ctrl-C pauses), next to any other process doing the same; the inventory
must list every device of the batch, and --image-map and
--no-identity-check should be those the batch was created with. Resuming a
batch that runs is no error: with --inventory this process joins it.
`,
		example: "  fwupgrade resume --store postgres://fw@db.example.net/fleet --batch 0190c3e2-7c1a-7b3e-9d6f-2a4b5c6d7e8f --inventory fleet.json\n",
		define: func(f *flagSet) func(context.Context, *streams) int {
			r := &resumeFlags{}
			batchFlag(f, &r.batch)
			f.String(&r.run.inventory, "inventory", "FILE", "", "--inventory fleet.json",
				"JSON file listing the devices and how to reach them (the format of 'fwupgrade batch --help'). With it, this process also runs the batch's devices; without it, the batch is only marked resumed.")
			r.run.define(f, true)
			return func(ctx context.Context, s *streams) int { return r.execute(ctx, s) }
		},
	}
}

func (r *resumeFlags) execute(ctx context.Context, s *streams) int {
	rf := &r.run
	if r.batch == "" {
		return usage(s, "resume", usagef("--batch is required"))
	}
	if rf.inventory == "" {
		cf := &controlFlags{store: rf.store, batch: r.batch, json: rf.p.json}
		return cf.run(ctx, s, "resume", func(ctx context.Context, cf *controlFlags, eng *upgrader.Engine, b store.Batch) (string, error) {
			note, err := resumeBatch(ctx, eng, b)
			if err != nil {
				return "", cf.store.storeProblem(err)
			}
			return note + ". Its devices run in the processes attached to it (fwupgrade batch or resume --wait-paused); to run them here: " +
				controlLine("resume", &cf.store, b.ID) + " --inventory FILE", nil
		})
	}
	if err := rf.checkFlags(true); err != nil {
		return usage(s, "resume", err)
	}
	m, err := rf.loadImageMap()
	if err != nil {
		return usage(s, "resume", err)
	}
	inv, err := loadInventory(rf.inventory, !rf.noIdentity)
	if err != nil {
		return usage(s, "resume", err)
	}
	pg, err := rf.store.open(ctx, true, rf.concurrency+4)
	if err != nil {
		return fail(s, "resume", exitError, err)
	}
	defer pg.close()
	b, err := pg.store.Batch(ctx, r.batch)
	if errors.Is(err, store.ErrNotFound) {
		return fail(s, "resume", exitError, fmt.Errorf("batch %s not found in schema %s of %s", r.batch, rf.store.schema, redactURL(rf.store.url)))
	}
	if err != nil {
		return fail(s, "resume", exitError, rf.store.storeProblem(err))
	}
	if b.State.Terminal() || b.CancelRequested {
		return fail(s, "resume", exitError, fmt.Errorf("batch %s ended (%s) or is being cancelled: nothing to resume", b.ID, b.State))
	}
	ops, err := pg.store.ListOperations(ctx, store.OperationFilter{BatchID: b.ID})
	if err != nil {
		return fail(s, "resume", exitError, rf.store.storeProblem(err))
	}
	var missing []string
	for _, op := range ops {
		if _, ok := inv.byID[op.DeviceID]; !ok && !op.State.Terminal() && !slices.Contains(missing, op.DeviceID) {
			missing = append(missing, op.DeviceID)
		}
	}
	if len(missing) > 0 {
		return usage(s, "resume", usagef("inventory %s lacks %d devices of batch %s (%s): nothing was resumed",
			inv.path, len(missing), b.ID, listSome(missing, 3)))
	}
	eng, err := rf.newEngine(pg.store, pg.files, inv, m)
	if err != nil {
		return fail(s, "resume", exitUsage, err)
	}
	run := &runner{s: s, cmd: "resume", eng: eng, inv: inv, flags: rf, batchID: b.ID, skipped: []skipSummary{}}
	return run.run(ctx, func(ctx context.Context) error {
		cur, err := eng.Batch(ctx, b.ID)
		if err != nil {
			return err
		}
		note, err := resumeBatch(ctx, eng, cur.Batch)
		if err == nil {
			fmt.Fprintln(run.human(), note)
		}
		return err
	})
}

// resumeBatch starts a held batch, resumes a paused one, and leaves a
// running one alone; it says which.
func resumeBatch(ctx context.Context, eng *upgrader.Engine, b store.Batch) (string, error) {
	var err error
	switch {
	case b.State.Terminal() || b.CancelRequested:
		return "", fmt.Errorf("batch %s ended (%s) or is being cancelled: nothing to resume", b.ID, b.State)
	case b.State == status.BatchIdle:
		_, err = eng.StartBatch(ctx, b.ID)
		return fmt.Sprintf("batch %s started", b.ID), err
	case b.State == status.BatchPaused:
		_, err = eng.ResumeBatch(ctx, b.ID)
		return fmt.Sprintf("batch %s resumed (it was paused: %s)", b.ID, b.PauseReason), err
	}
	return fmt.Sprintf("batch %s is already running", b.ID), nil
}

func listSome(items []string, n int) string {
	if len(items) <= n {
		return fmt.Sprint(items)
	}
	return fmt.Sprintf("%v and %d more", items[:n], len(items)-n)
}
