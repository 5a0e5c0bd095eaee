package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzInventory loads arbitrary inventory files: no panic; a refusal is a
// usage error of one line naming the inventory; an inventory accepted has
// devices with an id, a host and a TCP port, each id once.
func FuzzInventory(f *testing.F) {
	for _, seed := range []string{
		`{"devices": [{"id": "ap-1", "host": "192.0.2.1", "model": "TP-Link Archer C7 v2", "password_env": "PW", "known_hosts": "kh"}]}`,
		`{"defaults": {"user": "root", "port": 2222, "password_env": "PW", "known_hosts": "kh"},
		  "devices": [{"id": "a", "host": "h1", "board_name": "tplink,archer-c7-v2"}, {"id": "b", "host": "h2", "model": "m"}]}`,
		`{"devices": [{"id": "a", "host": "h", "model": "m", "identity_file": "../../etc/shadow", "known_hosts": "kh"}]}`,
		`{"devices": [{"id": "a", "host": "h;reboot", "model": "m", "password_env": "PW", "known_hosts": "kh"}]}`,
		`{"devices": [{"id": "a", "host": "h", "port": 70000}]}`,
		`{"devices": [{"id": "a"}, {"id": "a"}]}`,
		`{"devices": []}`, `[]`, `{`, ``, `{"devices": [null]}`, `{"defaults": null, "devices": [{}]}`,
	} {
		f.Add([]byte(seed), false)
	}
	dir := f.TempDir()
	known := filepath.Join(dir, "kh")
	if err := os.WriteFile(known, []byte("# no hosts\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Setenv("PW", "secret")
	f.Fuzz(func(t *testing.T, data []byte, identityCheck bool) {
		if len(data) > 1<<16 {
			return
		}
		path := filepath.Join(t.TempDir(), "inventory.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		// Relative file names in the inventory are relative to it: point
		// "kh" at the known_hosts file above.
		if err := os.Symlink(known, filepath.Join(filepath.Dir(path), "kh")); err != nil {
			t.Fatal(err)
		}
		inv, err := loadInventory(path, identityCheck)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("a refusal is bad usage: %T %v", err, err)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || msg == "" {
				t.Fatalf("a refusal is one line: %q", msg)
			}
			return
		}
		seen := map[string]bool{}
		for _, id := range inv.ids() {
			d := inv.byID[id]
			if id == "" || d == nil || seen[id] {
				t.Fatalf("device id %q empty, missing or twice", id)
			}
			seen[id] = true
		}
		if len(seen) == 0 {
			t.Fatal("an inventory accepted without devices")
		}
	})
}
