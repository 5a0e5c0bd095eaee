package openwrt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fwupgrader/fwupgrader/status"
	"github.com/fwupgrader/fwupgrader/upgrader"
)

var _ upgrader.Restorer = (*Upgrader)(nil)

// undoRecord is what an attempt records (upgrader.UndoRecorder) before it
// changes the device in a way that must be undone when it ends before
// flashing, as a JSON object: the init.d services it stops, whether it
// brings the wireless down, the file it uploads the image to. An attempt
// records each change before making it, so that the engine that runs the
// operation next can undo it even if this attempt dies before its cleanup
// (upgrader.Job.Undo, upgrader.Restorer).
type undoRecord struct {
	Services []string `json:"services,omitempty"`
	Wifi     bool     `json:"wifi,omitempty"`
	Image    string   `json:"image,omitempty"`
}

func (r undoRecord) empty() bool { return len(r.Services) == 0 && !r.Wifi && r.Image == "" }

// merge returns r with o's changes added.
func (r undoRecord) merge(o undoRecord) undoRecord {
	out := undoRecord{Services: slices.Clone(r.Services), Wifi: r.Wifi || o.Wifi, Image: r.Image}
	for _, s := range o.Services {
		if !slices.Contains(out.Services, s) {
			out.Services = append(out.Services, s)
		}
	}
	if out.Image == "" {
		out.Image = o.Image
	}
	return out
}

// commands are the device commands that undo r, in order: remove the image,
// start the services, bring the wireless up (each one idempotent).
func (r undoRecord) commands() []string {
	var cmds []string
	if r.Image != "" {
		cmds = append(cmds, command("rm", "-f", r.Image))
	}
	for _, svc := range r.Services {
		cmds = append(cmds, command(initScript(svc), "start"))
	}
	if r.Wifi {
		cmds = append(cmds, command("wifi", "up"))
	}
	return cmds
}

// String says what undoing r does, for the operation's log.
func (r undoRecord) String() string {
	var parts []string
	if r.Image != "" {
		parts = append(parts, "removed "+r.Image)
	}
	if len(r.Services) > 0 {
		parts = append(parts, "started "+strings.Join(r.Services, ", "))
	}
	if r.Wifi {
		parts = append(parts, "brought the wireless up")
	}
	return strings.Join(parts, "; ")
}

// validService reports whether name can be an init.d script of the device:
// one file name of letters, digits and ._+@- (never a path).
func validService(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '.' {
		return false
	}
	for _, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._+@-", c)
		if !ok {
			return false
		}
	}
	return true
}

// parseUndo merges the undo records recs (upgrader.Job.Undo) of an
// operation whose image this upgrader puts at imagePath. What a record asks
// for is only done when it is something this package would have changed:
// a service name (never a path), the image's own file (never another file).
// A record that cannot be read is taken at its worst: every service of
// services stopped, the wireless down (unless keepWireless), the image
// uploaded. problems says, for the log, what was set aside or assumed.
func parseUndo(recs []string, imagePath string, services []string, keepWireless bool) (undoRecord, []string) {
	var out undoRecord
	var problems []string
	for _, raw := range recs {
		var r undoRecord
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			problems = append(problems, fmt.Sprintf("Undo record %q not understood (%v): undoing everything an attempt may change", raw, err))
			out = out.merge(undoRecord{Services: services, Wifi: !keepWireless, Image: imagePath})
			continue
		}
		clean := undoRecord{Wifi: r.Wifi}
		for _, s := range r.Services {
			if validService(s) {
				clean.Services = append(clean.Services, s)
			} else {
				problems = append(problems, fmt.Sprintf("Undo record names %q, which is no service name: not started", s))
			}
		}
		switch {
		case r.Image == "":
		case r.Image == imagePath:
			clean.Image = r.Image
		default:
			problems = append(problems, fmt.Sprintf("Undo record names the file %q, not where this upgrader puts the image (%s): not removed", r.Image, imagePath))
		}
		out = out.merge(clean)
	}
	return out, problems
}

// imagePath is where the job's image goes on the device (as prepare
// decides, without reading the options: a restore needs no options).
func (a *attempt) imagePath() string {
	if a.cfg.RemotePathFunc != nil {
		return a.cfg.RemotePathFunc(a.job.Image)
	}
	return defaultRemotePath(a.job.Image)
}

// recordUndo keeps rec with the operation before the change it describes
// (when the engine's Reporter can: upgrader.UndoRecorder). An error means
// that the change must not be made.
func (a *attempt) recordUndo(ctx context.Context, rec undoRecord) error {
	r, ok := a.job.Report.(upgrader.UndoRecorder)
	if !ok || rec.empty() {
		return nil
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return upgrader.Aborted(status.ReasonUpgraderError, fmt.Errorf("openwrt: encode an undo record: %w", err))
	}
	if err := r.RecordUndo(ctx, string(b)); err != nil {
		if ctx.Err() != nil && !errors.Is(err, upgrader.ErrCancelled) {
			return ctx.Err()
		}
		var ue *upgrader.Error
		if errors.Is(err, upgrader.ErrCancelled) || errors.Is(err, upgrader.ErrLeaseLost) || errors.As(err, &ue) {
			return err
		}
		return upgrader.Recoverable(status.ReasonUpgraderError,
			fmt.Errorf("openwrt: cannot record what to undo, so the device is left as it is: %w", err))
	}
	return nil
}

// undone tells the engine that nothing recorded is left to undo.
func (a *attempt) undone(ctx context.Context) {
	r, ok := a.job.Report.(upgrader.UndoRecorder)
	if !ok {
		return
	}
	if err := r.Undone(context.WithoutCancel(ctx)); err != nil {
		a.log.Warn("openwrt: cannot clear the undo records", "error", err)
	}
}

// adopted returns what the operation's earlier attempts left to undo
// (upgrader.Job.Undo), logging what it sets aside.
func (a *attempt) adopted(ctx context.Context) undoRecord {
	rec, problems := parseUndo(a.job.Undo, a.remotePath, a.cfg.Services, a.cfg.KeepWireless)
	for _, p := range problems {
		a.logf(ctx, "%s", p)
	}
	return rec
}

// runUndo runs cmds on c, or on new connections when c is nil or breaks,
// until they all ran or ctx (the undo's budget) ends, ReconnectRetryDelay
// between connections; once keepTrying says no, a connection that fails
// is not made again. A command that exits with a status counts as run
// (127: the service or tool is not on the device); one cut off by a broken
// connection runs again on the next (each is idempotent). logCtx is for
// log lines.
func (a *attempt) runUndo(ctx, logCtx context.Context, c *conn, cmds []string, keepTrying func() bool) error {
	var lastErr error
	told := false
	for len(cmds) > 0 {
		if c == nil {
			nc, err := a.connect(ctx)
			if err != nil {
				if lastErr == nil || ctx.Err() == nil {
					lastErr = err
				}
				if kind, _ := upgrader.Classify(err); kind != upgrader.KindRecoverable || ctx.Err() != nil || !keepTrying() {
					return lastErr
				}
				if !told {
					a.logf(logCtx, "Cannot reconnect to undo the attempt's changes (%v): trying again", plain(err))
					told = true
				}
				if sleep(ctx, a.cfg.ReconnectRetryDelay) != nil {
					return lastErr
				}
				continue
			}
			c = nc
			defer nc.Close()
		}
		_, err := c.run(ctx, a.cfg.CommandTimeout, cmds[0])
		var ce *CommandError
		switch {
		case err == nil:
		case errors.As(err, &ce):
			if ce.ExitStatus != 127 {
				a.logf(logCtx, "Cleanup command failed: %v", plain(err))
			}
		default:
			lastErr = err
			if ctx.Err() != nil {
				return lastErr
			}
			c = nil // broken: the rest on a new connection
			if !keepTrying() || sleep(ctx, a.cfg.ReconnectRetryDelay) != nil {
				return lastErr
			}
			continue
		}
		cmds = cmds[1:]
	}
	return nil
}

// Restore implements upgrader.Restorer: it undoes what the operation's
// attempts recorded and left undone (job.Undo) — stopped services started,
// the wireless brought up, the image removed from the device's RAM — on a
// connection of its own, trying again until ConnectTimeout plus twice
// CommandTimeout have passed (or ctx ends). It reads nothing from the
// device and runs nothing but these commands, each idempotent; it never
// flashes. Records that name something this package would not have
// changed (a path as a service, another file than the image's) are set
// aside and logged.
func (u *Upgrader) Restore(ctx context.Context, job *upgrader.Job) error {
	a, err := u.newAttempt(job)
	if err != nil {
		return err
	}
	defer a.close()
	a.remotePath = a.imagePath()
	rec := a.adopted(ctx)
	if rec.empty() {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.ConnectTimeout+2*a.cfg.CommandTimeout)
	defer cancel()
	if err := a.runUndo(rctx, ctx, nil, rec.commands(), func() bool { return true }); err != nil {
		a.log.Error("openwrt: changes of an interrupted attempt left on the device", "undo", rec.String(), "error", err)
		return a.result(describe(err, "openwrt: could not undo on the device (%s): %s", rec.String(), plain(err)))
	}
	a.logf(ctx, "Device put back as the interrupted attempt found it: %s", rec.String())
	return nil
}
