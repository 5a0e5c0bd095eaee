package openwrt

import (
	"context"
	"errors"
	"strings"

	"github.com/fwupgrader/fwupgrader/store"
)

// DeviceInfo is what Probe reads from a device.
type DeviceInfo struct {
	Model     string // /tmp/sysinfo/model
	BoardName string // /tmp/sysinfo/board_name
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
		return strings.TrimSpace(out), err
	}
	var info DeviceInfo
	if info.Model, err = read("cat", "/tmp/sysinfo/model"); err != nil {
		return info, transportError(ctx, "reading the model", err)
	}
	if info.BoardName, err = read("cat", "/tmp/sysinfo/board_name"); err != nil {
		return info, transportError(ctx, "reading the board name", err)
	}
	rel, err := read("cat", releaseFile)
	if err != nil {
		return info, transportError(ctx, "reading the release", err)
	}
	info.Release, _ = parseRelease(rel)
	uuid, err := read("uci", "get", "openwisp.http.uuid")
	var ce *CommandError
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
