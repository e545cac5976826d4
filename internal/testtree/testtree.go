// Package testtree makes small root filesystems for tests: files and
// symbolic links under a temporary directory.
package testtree

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Make creates a directory, removed when the test ends, holding entries:
// "path" is an executable file holding "x", "path -> target" a symbolic
// link; parent directories are created as needed. It returns the
// directory.
func Make(t testing.TB, entries ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, e := range entries {
		name, target, link := strings.Cut(e, " -> ")
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if link {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte("x"), 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}
