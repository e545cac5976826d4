package nspawn

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMaskUnits(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc/systemd/system")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "getty@.service"), []byte("[Unit]\n"), 0o644) // an override: replaced
	os.Symlink("/lib/systemd/system/x.timer", filepath.Join(dir, "apt-daily.timer"))
	units := []string{"getty@.service", "apt-daily.timer", "systemd-logind.service"}
	for i := 0; i < 2; i++ { // idempotent
		if err := MaskUnits(root, units); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range units {
		if target, err := os.Readlink(filepath.Join(dir, u)); err != nil || target != "/dev/null" {
			t.Errorf("%s: %q, %v", u, target, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != len(units) {
		t.Errorf("%d entries in %s, want %d", len(entries), dir, len(units))
	}
	for _, bad := range []string{"../x.service", "x", ".service", "a/b.service", "x.conf"} {
		if err := MaskUnits(root, []string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if len(DefaultMaskedUnits()) == 0 {
		t.Error("no default units")
	}
	for _, u := range DefaultMaskedUnits() {
		if !validUnitName(u) {
			t.Errorf("default unit %q is not a unit name", u)
		}
	}
}

func TestMaskUnitsStaysInRoot(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	// etc -> an absolute path on the host: must resolve inside root.
	os.Symlink(outside, filepath.Join(root, "etc"))
	os.MkdirAll(filepath.Join(root, outside), 0o755)
	if err := MaskUnits(root, []string{"a.service"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(outside, "systemd/system/a.service")); err == nil {
		t.Fatal("MaskUnits wrote outside the root filesystem")
	}
	if _, err := os.Lstat(filepath.Join(root, outside, "systemd/system/a.service")); err != nil {
		t.Errorf("not masked inside the root: %v", err)
	}
}
