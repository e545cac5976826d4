package nspawn

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/racker-postroj/racker/internal/rootfs"
	"golang.org/x/sys/unix"
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

// MaskUnits masks units in the tree tree (a test image), as systemctl mask
// does; racker masks at boot time instead (Options.MaskUnits).
func MaskUnits(tree string, units []string) error {
	root, err := rootfs.Open(tree)
	if err != nil {
		return err
	}
	defer root.Close()
	const dir = "/etc/systemd/system"
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("masking units: %w", err)
	}
	d, err := root.Open(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("masking units: %w", err)
	}
	defer d.Close()
	dfd := int(d.Fd())
	for _, u := range units {
		if !validUnitName(u) {
			return fmt.Errorf("masking %q: not a unit name", u)
		}
		if target, err := readlinkat(dfd, u); err == nil && target == "/dev/null" {
			continue
		}
		// Symlink under a temporary name, then rename over the unit:
		// renameat replaces a file or symlink without following it.
		tmp := "." + u + ".racker-mask"
		unix.Unlinkat(dfd, tmp, 0)
		if err := unix.Symlinkat("/dev/null", dfd, tmp); err != nil {
			return fmt.Errorf("masking %s: %w", u, err)
		}
		if err := unix.Renameat(dfd, tmp, dfd, u); err != nil {
			unix.Unlinkat(dfd, tmp, 0)
			return fmt.Errorf("masking %s: %w", u, err)
		}
	}
	return nil
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
