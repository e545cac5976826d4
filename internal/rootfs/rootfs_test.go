package rootfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// tree makes a root with a file, and links that try to leave it.
func tree(t *testing.T) (root, outside string) {
	t.Helper()
	parent := t.TempDir()
	root, outside = filepath.Join(parent, "root"), filepath.Join(parent, "outside")
	for _, d := range []string{root + "/etc", root + "/usr/lib", outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "usr/lib/os-release"), []byte("ID=inside\n"), 0o644)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret\n"), 0o600)
	os.Symlink("../usr/lib/os-release", filepath.Join(root, "etc/os-release"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "etc/abs"))
	os.Symlink("../../../../../../../../"+outside+"/secret", filepath.Join(root, "etc/climb"))
	os.Symlink("/", filepath.Join(root, "hostroot"))
	return root, outside
}

func TestReadsStayInside(t *testing.T) {
	dir, _ := tree(t)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, err := r.ReadFile("/etc/os-release", 1<<10); err != nil || string(b) != "ID=inside\n" {
		t.Errorf("relative link: %q, %v", b, err)
	}
	for _, name := range []string{"/etc/abs", "/etc/climb", "hostroot" + dir + "/../outside/secret", "../outside/secret"} {
		if b, err := r.ReadFile(name, 1<<10); err == nil {
			t.Errorf("%s read %q from outside the root", name, b)
		} else if !errors.Is(err, unix.ENOENT) {
			t.Errorf("%s: %v, want ENOENT (resolved inside the root)", name, err)
		}
	}
	if !r.IsRegular("usr/lib/os-release") || r.IsRegular("/etc/abs") || r.IsRegular("/usr") {
		t.Error("IsRegular wrong")
	}
	if b, err := r.ReadFile("/usr/lib/os-release", 3); err != nil || string(b) != "ID=" {
		t.Errorf("limit: %q, %v", b, err)
	}
}

func TestMkdirAllStaysInside(t *testing.T) {
	dir, outside := tree(t)
	os.Symlink(outside, filepath.Join(dir, "escape"))
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The link resolves to a directory the root does not have: refused,
	// and nothing is made outside.
	if err := r.MkdirAll("/escape/made/here", 0o755); err == nil {
		t.Error("MkdirAll through a dangling in-root link succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "made")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("MkdirAll followed a link out of the root: %v", err)
	}
	if err := r.MkdirAll("/var/lib/x", 0o755); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "var/lib/x")); err != nil || !fi.IsDir() {
		t.Errorf("not created: %v", err)
	}
	names, err := r.ReadDirNames("/etc")
	if err != nil || len(names) != 3 {
		t.Errorf("ReadDirNames = %v, %v", names, err)
	}
}
