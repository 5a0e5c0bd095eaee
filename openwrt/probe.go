package openwrt

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/fwupgrader/fwupgrader/store"
)

// DeviceInfo is what Probe reads from a device.
type DeviceInfo struct {
	// Model and BoardName come from /tmp/sysinfo, else from "ubus call
	// system board", else (model only) from the "machine" line of
	// /proc/cpuinfo; "" when the device cannot tell.
	Model     string
	BoardName string
	Release   string // DISTRIB_DESCRIPTION of /etc/openwrt_release
	// UUID is "uci get openwisp.http.uuid", "" when the option is not set.
	UUID string
}

// Probe connects to the device with the credentials the host gives for d and
// reads its model, board name, release and OpenWISP UUID, changing nothing.
// Hosts (and the fwupgrade command) use it to learn the board of a device
// before choosing an image. Its errors are classified like Upgrade's: a
// refused host key is aborted with status.ReasonHostKeyMismatch, other
// connection failures are recoverable.
func (u *Upgrader) Probe(ctx context.Context, d store.Device) (DeviceInfo, error) {
	creds, err := u.cfg.CredentialsFunc(ctx, d)
	if err != nil {
		return DeviceInfo{}, err
	}
	c, err := dial(ctx, creds, u.cfg.ConnectTimeout)
	if err != nil {
		return DeviceInfo{}, err
	}
	defer c.Close()
	read := func(args ...string) (string, error) {
		out, err := c.run(ctx, u.cfg.CommandTimeout, command(args...))
		if err != nil {
			return "", err // the output of a failed command is its error text, not a value
		}
		return strings.TrimSpace(out), nil
	}
	var info DeviceInfo
	var ce *CommandError
	// /tmp/sysinfo is absent on most 12.09 targets: ubus (procd, 14.07 on),
	// then the CPU information, stand in for it.
	info.Model, err = read("cat", "/tmp/sysinfo/model")
	if err != nil && !errors.As(err, &ce) {
		return info, transportError(ctx, "reading the model", err)
	}
	info.BoardName, err = read("cat", boardNameFile)
	if err != nil && !errors.As(err, &ce) {
		return info, transportError(ctx, "reading the board name", err)
	}
	if info.Model == "" || info.BoardName == "" {
		if out, err := read("ubus", "call", "system", "board"); err == nil {
			var b struct {
				Model     string `json:"model"`
				BoardName string `json:"board_name"`
			}
			if json.Unmarshal([]byte(out), &b) == nil {
				info.Model = cmp.Or(info.Model, strings.TrimSpace(b.Model))
				info.BoardName = cmp.Or(info.BoardName, strings.TrimSpace(b.BoardName))
			}
		} else if !errors.As(err, &ce) {
			return info, transportError(ctx, "reading the board", err)
		}
	}
	if info.Model == "" {
		if out, err := read("cat", "/proc/cpuinfo"); err == nil {
			info.Model = cpuinfoModel(out)
		}
	}
	rel, err := read("cat", releaseFile)
	if err != nil {
		return info, transportError(ctx, "reading the release", err)
	}
	info.Release, _ = parseRelease(rel)
	uuid, err := read("uci", "get", "openwisp.http.uuid")
	switch {
	case err == nil:
		info.UUID = uuid
	case errors.As(err, &ce):
		// not set: not an OpenWISP-managed device
	default:
		return info, transportError(ctx, "reading the UUID", err)
	}
	return info, nil
}

// cpuinfoModel returns the "machine" (MIPS) or "Hardware" (ARM) line of
// /proc/cpuinfo.
func cpuinfoModel(s string) string {
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "machine", "Hardware":
			return strings.TrimSpace(v)
		}
	}
	return ""
}
