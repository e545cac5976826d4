package testtree

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMake(t *testing.T) {
	root := Make(t, "usr/bin/apt-get", "bin -> usr/bin")
	if b, err := os.ReadFile(filepath.Join(root, "bin/apt-get")); err != nil || string(b) != "x" {
		t.Errorf("bin/apt-get through the link: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "usr/bin/apt-get")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("usr/bin/apt-get: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(root, "bin")); err != nil || target != "usr/bin" {
		t.Errorf("bin -> %q, %v", target, err)
	}
}
