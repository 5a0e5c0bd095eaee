package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fwupgrader/fwupgrader/openwrt"
	"github.com/fwupgrader/fwupgrader/store"
)

// inventoryHelp documents the inventory format in the batch and resume
// help pages.
const inventoryHelp = `Inventory (--inventory FILE.json): one JSON object with the devices, and
optional defaults for their connection fields:
  {
    "defaults": {"user": "root", "port": 22,
                 "identity_file": "keys/fleet_ed25519",
                 "known_hosts": "known_hosts"},
    "devices": [
      {"id": "5a4c7d8e-1f2a-4b3c-9d8e-7f6a5b4c3d2e", "name": "ap-lobby",
       "host": "192.0.2.10", "model": "TP-Link Archer C7 v2",
       "board_name": "tplink,archer-c7-v2", "group": "floor-1",
       "location": "rome"},
      {"id": "0b9f3a52-6c1d-4e8f-a7b2-3c4d5e6f7a8b", "name": "ap-roof",
       "host": "192.0.2.11", "port": 2222,
       "board_name": "glinet,gl-ar300m", "password_env": "ROOF_PASSWORD"}
    ]
  }
Device fields:
  id             required, unique: the device's ID; with the identity check
                 (the default) its OpenWISP UUID, compared with
                 'uci get openwisp.http.uuid' before anything is changed
  host           required: IP address or host name
  port           SSH port (default 22)
  user           SSH user (default root)
  identity_file  private key file (not protected by a passphrase)
  password_env   name of the environment variable holding the password
                 (exactly one of identity_file and password_env)
  known_hosts    OpenSSH known_hosts file; required, and it must hold the
                 device's host key (host, or [host]:port when port is not 22)
  model          /tmp/sysinfo/model, e.g. "TP-Link Archer C7 v2"
  board_name     /tmp/sysinfo/board_name, e.g. "tplink,archer-c7-v2"
                 (at least one of model and board_name: they choose the
                 image; the device's own board is checked again before upload)
  name, group, location   for people, and for --group-limit
"defaults" may hold port, user, identity_file, password_env and known_hosts.
Relative file names are relative to the inventory's directory; ~/ is the
home directory. Unknown fields, duplicate ids and two devices at one
host:port are refused.
`

// inventory is a validated inventory file.
type inventory struct {
	path    string
	devices []*invDevice // in the file's order
	byID    map[string]*invDevice
}

// invDevice is one device of the inventory with its credentials.
type invDevice struct {
	index  int // 1-based position in the file
	device store.Device
	creds  openwrt.Credentials
}

// connFields are the connection fields a device may take from the defaults.
type connFields struct {
	Port         *int   `json:"port"`
	User         string `json:"user"`
	IdentityFile string `json:"identity_file"`
	PasswordEnv  string `json:"password_env"`
	KnownHosts   string `json:"known_hosts"`
}

type inventoryDevice struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Host      string `json:"host"`
	Model     string `json:"model"`
	BoardName string `json:"board_name"`
	Group     string `json:"group"`
	Location  string `json:"location"`
	connFields
}

type inventoryFile struct {
	Defaults json.RawMessage   `json:"defaults"`
	Devices  []json.RawMessage `json:"devices"`
}

// inventoryError is a problem with the inventory, found before anything
// is started.
func inventoryError(path string, format string, args ...any) error {
	return usagef("inventory %s: %s", path, fmt.Sprintf(format, args...))
}

// loadInventory reads and validates the inventory at path: every field,
// every key file and known_hosts file, and that each device's host key is
// known. It contacts no device. identityCheck requires UUIDs as IDs.
func loadInventory(path string, identityCheck bool) (*inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("--inventory: %v", err)
	}
	var file inventoryFile
	if err := decodeStrict(data, &file); err != nil {
		return nil, inventoryError(path, "%s", jsonProblem(data, err))
	}
	if len(file.Devices) == 0 {
		return nil, inventoryError(path, `no devices: the file needs a "devices" list (see fwupgrade batch --help)`)
	}
	var defaults connFields
	if len(file.Defaults) > 0 && !bytes.Equal(bytes.TrimSpace(file.Defaults), []byte("null")) {
		if err := decodeStrict(file.Defaults, &defaults); err != nil {
			return nil, inventoryError(path, "defaults: %s", jsonProblem(file.Defaults, err))
		}
	}
	inv := &inventory{path: path, byID: map[string]*invDevice{}}
	byAddr := map[string]int{}
	keys := map[string]ssh.Signer{}
	hostKeys := map[string]ssh.HostKeyCallback{}
	dir := filepath.Dir(path)
	for i, raw := range file.Devices {
		n := i + 1
		var d inventoryDevice
		if err := decodeStrict(raw, &d); err != nil {
			return nil, inventoryError(path, "device %d: %s", n, jsonProblem(raw, err))
		}
		where := fmt.Sprintf("device %d", n)
		if d.ID != "" {
			where = fmt.Sprintf("device %d (id %q)", n, d.ID)
		}
		bad := func(format string, args ...any) error {
			return inventoryError(path, "%s: %s", where, fmt.Sprintf(format, args...))
		}
		c := d.connFields
		if c.Port == nil {
			c.Port = defaults.Port
		}
		if c.User == "" {
			c.User = defaults.User
		}
		if c.IdentityFile == "" && c.PasswordEnv == "" {
			c.IdentityFile, c.PasswordEnv = defaults.IdentityFile, defaults.PasswordEnv
		}
		if c.KnownHosts == "" {
			c.KnownHosts = defaults.KnownHosts
		}
		port := 22
		if c.Port != nil {
			port = *c.Port
		}
		if c.User == "" {
			c.User = "root"
		}
		switch {
		case d.ID == "":
			return nil, bad(`"id" is missing`)
		case inv.byID[d.ID] != nil:
			return nil, bad(`"id" %q is also device %d's`, d.ID, inv.byID[d.ID].index)
		case d.Host == "":
			return nil, bad(`"host" is missing`)
		case strings.ContainsAny(d.Host, " \t/@") || strings.Contains(d.Host, "]:"):
			return nil, bad(`"host" %q is not an address or a host name (give the port in "port")`, d.Host)
		case port < 1 || port > 65535:
			return nil, bad(`"port" %d is not a TCP port`, port)
		case d.Model == "" && d.BoardName == "":
			return nil, bad(`give "model" or "board_name" (or both): they choose the image`)
		case c.IdentityFile != "" && c.PasswordEnv != "":
			return nil, bad(`give one of "identity_file" and "password_env", not both`)
		case c.IdentityFile == "" && c.PasswordEnv == "":
			return nil, bad(`no credentials: give "identity_file" or "password_env" (here or in "defaults")`)
		case c.KnownHosts == "":
			return nil, bad(`"known_hosts" is missing (here or in "defaults"): host keys are always verified`)
		}
		if identityCheck {
			if _, err := uuid.Parse(d.ID); err != nil {
				return nil, bad(`"id" is not a UUID: the identity check compares it with the device's OpenWISP UUID; use the UUID or --no-identity-check`)
			}
		}
		host := strings.Trim(d.Host, "[]")
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		if other, ok := byAddr[addr]; ok {
			return nil, bad("%s is also device %d's address: one device, two entries?", addr, other)
		}
		byAddr[addr] = n
		dev := store.Device{ID: d.ID, Name: d.Name, Group: d.Group, Location: d.Location, Model: d.Model,
			BoardName: d.BoardName, Connection: openwrt.Connection, Address: addr, Active: true}
		if err := dev.Validate(); err != nil {
			return nil, bad("%s", deviceProblem(err))
		}
		creds := openwrt.Credentials{Address: addr, User: c.User}
		if c.IdentityFile != "" {
			keyPath := resolvePath(dir, c.IdentityFile)
			signer, ok := keys[keyPath]
			if !ok {
				if signer, err = readKey(`"identity_file"`, keyPath); err != nil {
					return nil, bad("%v", err)
				}
				keys[keyPath] = signer
			}
			creds.Signers = []ssh.Signer{signer}
		} else {
			creds.Password = os.Getenv(c.PasswordEnv)
			if creds.Password == "" {
				return nil, bad(`"password_env": the environment variable %s is empty or not set`, c.PasswordEnv)
			}
		}
		khPath := resolvePath(dir, c.KnownHosts)
		cb, ok := hostKeys[khPath]
		if !ok {
			if cb, err = openwrt.KnownHosts(khPath); err != nil {
				return nil, bad(`"known_hosts": %v`, err)
			}
			hostKeys[khPath] = cb
		}
		if !hostKnown(cb, addr) {
			return nil, bad("unknown host key: %s has no entry for %s (add the device's key; 'ssh-keyscan -p %d %s' prints it: check its fingerprint before trusting it)",
				khPath, knownhosts.Normalize(addr), port, host)
		}
		creds.HostKeyCallback = cb
		dv := &invDevice{index: n, device: dev, creds: creds}
		inv.devices = append(inv.devices, dv)
		inv.byID[d.ID] = dv
	}
	return inv, nil
}

// credentials is the openwrt upgrader's CredentialsFunc: the inventory's
// address and credentials of d.
func (inv *inventory) credentials(_ context.Context, d store.Device) (openwrt.Credentials, error) {
	dv, ok := inv.byID[d.ID]
	if !ok {
		return openwrt.Credentials{}, fmt.Errorf("device %s is not in the inventory %s", d.ID, inv.path)
	}
	return dv.creds, nil
}

// ids returns the devices' IDs in the file's order.
func (inv *inventory) ids() []string {
	ids := make([]string, len(inv.devices))
	for i, d := range inv.devices {
		ids[i] = d.device.ID
	}
	return ids
}

// name returns a device's name for people: its inventory name, else its ID.
func (inv *inventory) name(id string) string {
	if inv != nil {
		if d, ok := inv.byID[id]; ok && d.device.Name != "" {
			return d.device.Name
		}
	}
	return id
}

// probeKey is a key no known_hosts file holds: checking it tells whether
// the file has an entry for an address at all.
var probeKey = func() ssh.PublicKey {
	k, _ := ssh.NewPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5a}, ed25519.SeedSize)).Public())
	return k
}()

// hostKnown reports whether cb has at least one host key for addr, as the
// SSH connection will look it up (by the address dialled).
func hostKnown(cb ssh.HostKeyCallback, addr string) bool {
	err := cb(addr, fakeAddr(addr), probeKey)
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return len(ke.Want) > 0
	}
	return err == nil
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// resolvePath makes an inventory's file name absolute: relative to the
// inventory's directory, ~/ from the home directory.
func resolvePath(dir, p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// decodeStrict decodes one JSON value, refusing unknown fields and
// anything after the value.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// jsonProblem words a decoding error for a person, with the line and
// column where the decoder can say.
func jsonProblem(data []byte, err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not valid JSON at %s: %v", position(data, syn.Offset), syn)
	case errors.As(err, &typ):
		field := typ.Field
		if i := strings.LastIndex(field, "."); i >= 0 {
			field = field[i+1:] // "connFields.port": the JSON name is the last
		}
		if field == "" {
			return fmt.Sprintf("at %s: a JSON %s where %s belongs", position(data, typ.Offset), typ.Value, jsonType(typ.Type.String()))
		}
		return fmt.Sprintf("%q must be %s, not a JSON %s", field, jsonType(typ.Type.String()), typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "not valid JSON: it ends too early"
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + name
	}
	return strings.TrimPrefix(msg, "json: ")
}

func jsonType(goType string) string {
	switch {
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "int"), goType == "*int":
		return "a number"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	}
	return "an object"
}

// position returns "line L, column C" of a byte offset.
func position(data []byte, offset int64) string {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(offset) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", line, col)
}

// deviceProblem words a store validation error with the inventory's
// field names.
func deviceProblem(err error) string {
	var ve *store.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	names := map[string]string{"ID": "id", "Name": "name", "Group": "group", "Location": "location",
		"Model": "model", "BoardName": "board_name", "Address": "host"}
	field := names[ve.Field]
	if field == "" {
		field = ve.Field
	}
	return fmt.Sprintf("%q: %s", field, ve.Problem)
}
