package nspawn

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/racker-postroj/racker/internal/rootfs"
)

// testTree builds a small root filesystem with traps: absolute symlinks
// that must resolve inside it, not on the host.
func testTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	mk := func(p string, mode os.FileMode, data string) {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("usr/bin/tool", 0o755, "#!/bin/sh\n")
	mk("usr/bin/plain", 0o644, "data")
	mk("usr/local/bin/tool", 0o755, "#!/bin/sh\n")
	mk("opt/app/run", 0o755, "#!/bin/sh\n")
	os.MkdirAll(filepath.Join(root, "usr/bin/dir"), 0o755)
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	// Escapes that must stay inside: /usr/bin/hostsh -> /bin/sh means the
	// tree's /bin/sh (missing), never the host's.
	os.Symlink("/bin/sh", filepath.Join(root, "usr/bin/hostsh"))
	os.Symlink("../../../../../../bin/sh", filepath.Join(root, "usr/bin/dotdot"))
	os.Symlink("/usr/bin/tool", filepath.Join(root, "usr/bin/linked"))
	mk("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/bash\n# comment\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbad:x:notanumber:0::/:/bin/sh\n")
	mk("etc/group", 0o644, "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n")
	return root
}

func TestLookPath(t *testing.T) {
	root, err := rootfs.Open(testTree(t))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	const path = "/usr/local/bin:/usr/bin:/bin"
	for _, tc := range []struct {
		arg0, path, dir string
		want            string
		code            int
	}{
		{"tool", path, "/", "/usr/local/bin/tool", 0},
		{"tool", "/usr/bin", "/", "/usr/bin/tool", 0},
		{"tool", "relative:/usr/bin", "/", "/usr/bin/tool", 0},
		{"linked", path, "/", "/usr/bin/linked", 0},
		{"/bin/tool", path, "/", "/bin/tool", 0},
		{"./run", path, "/opt/app", "/opt/app/run", 0},
		{"../app/run", path, "/opt/x", "/opt/app/run", 0},
		{"missing", path, "/", "", 127},
		{"plain", path, "/", "", 127}, // not executable: skipped in PATH, like runc
		{"/usr/bin/plain", path, "/", "", 126},
		{"/usr/bin/dir", path, "/", "", 126},
		{"hostsh", path, "/", "", 127},
		{"/usr/bin/dotdot", path, "/", "", 127},
		{"/usr/bin/missing", path, "/", "", 127},
		{"/usr/bin/plain/x", path, "/", "", 127},
		{"", path, "/", "", 127},
	} {
		got, err := lookPath(root, tc.arg0, tc.path, tc.dir)
		var ee *ExecError
		switch {
		case tc.code == 0 && (err != nil || got != tc.want):
			t.Errorf("lookPath(%q, %q, %q) = %q, %v; want %q", tc.arg0, tc.path, tc.dir, got, err, tc.want)
		case tc.code != 0 && (!errors.As(err, &ee) || ee.Code != tc.code || ee.Command != tc.arg0):
			t.Errorf("lookPath(%q, %q, %q) = %q, %v; want exit code %d", tc.arg0, tc.path, tc.dir, got, err, tc.code)
		}
	}
}

func TestLookupUser(t *testing.T) {
	root, err := rootfs.Open(testTree(t))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, tc := range []struct {
		spec string
		want account
	}{
		{"", account{uid: 0, gid: 0, name: "root", home: "/root", shell: "/bin/bash", userKnown: true, groupKnown: true}},
		{"nobody", account{uid: 65534, gid: 65534, name: "nobody", home: "/nonexistent", shell: "/usr/sbin/nologin", userKnown: true, groupKnown: true}},
		{"65534", account{uid: 65534, gid: 65534, name: "nobody", home: "/nonexistent", shell: "/usr/sbin/nologin", userKnown: true, groupKnown: true}},
		{"1000", account{uid: 1000, gid: 0, home: "/", groupKnown: true}},
		{"1000:1000", account{uid: 1000, gid: 1000, home: "/"}},
		{"nobody:users", account{uid: 65534, gid: 100, name: "nobody", home: "/nonexistent", shell: "/usr/sbin/nologin", group: "users", userKnown: true, groupKnown: true}},
		{"0:100", account{uid: 0, gid: 100, name: "root", home: "/root", shell: "/bin/bash", group: "users", userKnown: true, groupKnown: true}},
	} {
		got, err := lookupUser(root, tc.spec)
		if err != nil || got != tc.want {
			t.Errorf("lookupUser(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	for _, spec := range []string{"nosuch", "nobody:nosuch", "bad"} {
		_, err := lookupUser(root, spec)
		var ee *ExecError
		if !errors.As(err, &ee) || ee.Code != 126 {
			t.Errorf("lookupUser(%q): %v, want an ExecError with code 126", spec, err)
		}
	}
}

func TestMkdirAllInRoot(t *testing.T) {
	tree := testTree(t)
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(tree, "escape"))
	// The same path exists inside the tree: that is where it must lead.
	os.MkdirAll(filepath.Join(tree, outside), 0o755)
	root, err := rootfs.Open(tree)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := root.MkdirAll("/a/b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(tree, "a/b/c")); err != nil || !fi.IsDir() {
		t.Errorf("a/b/c not created: %v", err)
	}
	// Through an absolute symlink: created inside the tree.
	if err := root.MkdirAll("/escape/x", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
		t.Error("mkdirAll followed a symlink out of the root")
	}
	if _, err := os.Stat(filepath.Join(tree, outside, "x")); err != nil {
		t.Errorf("mkdirAll through the symlink did not create inside the root: %v", err)
	}
	if err := root.MkdirAll("/usr/bin/tool/x", 0o755); err == nil {
		t.Error("mkdirAll through a file succeeded")
	}
}

func TestChooseExecutor(t *testing.T) {
	for _, tc := range []struct {
		want    Executor
		version int
		known   bool
		got     Executor
	}{
		{ExecAuto, 252, true, ExecDBus},
		{ExecAuto, 225, true, ExecDBus},
		{ExecAuto, 224, true, ExecNsenter},
		{ExecAuto, 0, false, ExecNsenter},
		{ExecDBus, 0, false, ExecDBus},
		{ExecNsenter, 252, true, ExecNsenter},
	} {
		if got := chooseExecutor(tc.want, tc.version, tc.known); got != tc.got {
			t.Errorf("chooseExecutor(%v, %d, %v) = %v, want %v", tc.want, tc.version, tc.known, got, tc.got)
		}
	}
}
