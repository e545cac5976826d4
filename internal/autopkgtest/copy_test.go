package autopkgtest

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type entry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func mkTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			io.WriteString(tw, e.body)
		}
	}
	tw.Close()
	return b.Bytes()
}

// TestExtractConfined unpacks what a hostile testbed might send and checks
// that nothing lands outside the destination.
func TestExtractConfined(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "dest")
	outside := filepath.Join(base, "outside")
	os.MkdirAll(dest, 0o755)
	os.MkdirAll(outside, 0o755)
	os.WriteFile(filepath.Join(outside, "victim"), []byte("untouched"), 0o644)

	data := mkTar(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "ok/file.txt", typ: tar.TypeReg, body: "hello"},
		entry{name: "../escape.txt", typ: tar.TypeReg, body: "x"},
		entry{name: "/abs.txt", typ: tar.TypeReg, body: "y"},
		entry{name: "link", typ: tar.TypeSymlink, link: outside},
		entry{name: "link/victim", typ: tar.TypeReg, body: "overwritten"},
		entry{name: "rel", typ: tar.TypeSymlink, link: "../outside"},
		entry{name: "rel/new", typ: tar.TypeReg, body: "z"},
		entry{name: "hard", typ: tar.TypeLink, link: "../outside/victim"},
		entry{name: "suid", typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/sh\n"},
		entry{name: "dev", typ: tar.TypeChar, mode: 0o666},
	)
	err := extractTar(bytes.NewReader(data), dest)
	// Escaping entries may fail the unpacking; what matters is where
	// bytes landed.
	t.Logf("extractTar: %v", err)
	if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "untouched" {
		t.Errorf("the victim outside was written: %q", b)
	}
	for _, p := range []string{filepath.Join(base, "escape.txt"), "/abs.txt", filepath.Join(outside, "new")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s was created outside the destination", p)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "ok/file.txt")); string(b) != "hello" {
		t.Errorf("ok/file.txt = %q", b)
	}
}

func TestExtractModes(t *testing.T) {
	dest := t.TempDir()
	data := mkTar(t,
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o750},
		entry{name: "bin/run", typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/sh\n"},
		entry{name: "bin/alias", typ: tar.TypeSymlink, link: "run"},
		entry{name: "bin/copy", typ: tar.TypeLink, link: "bin/run"},
		entry{name: "dev", typ: tar.TypeChar, mode: 0o666},
	)
	if err := extractTar(bytes.NewReader(data), dest); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dest, "bin/run"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o755 {
		t.Errorf("bin/run mode %v, want -rwxr-xr-x (no setuid)", fi.Mode())
	}
	if l, _ := os.Readlink(filepath.Join(dest, "bin/alias")); l != "run" {
		t.Errorf("bin/alias -> %q", l)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "bin/copy")); string(b) != "#!/bin/sh\n" {
		t.Errorf("bin/copy = %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dest, "dev")); err == nil {
		t.Error("a device node was created")
	}
}

// localRunner runs the testbed side of a copy on this machine, standing in
// for a container: the tar commands are the ones the testbed runs.
func localRunner(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func TestCopyRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar")
	}
	ctx := context.Background()
	c := Copier{Run: localRunner}
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "debian/tests"), 0o755)
	os.WriteFile(filepath.Join(src, "debian/tests/control"), []byte("Tests: smoke\n"), 0o644)
	os.WriteFile(filepath.Join(src, "debian/tests/smoke"), []byte("#!/bin/sh\necho ok\n"), 0o755)
	os.WriteFile(filepath.Join(src, "name with space é"), []byte("x"), 0o600)
	os.Symlink("debian/tests/smoke", filepath.Join(src, "link"))

	tb := filepath.Join(t.TempDir(), "testbed", "tree")
	if err := c.CopyDown(ctx, src+"/", tb+"/", true); err != nil {
		t.Fatal(err)
	}
	back := filepath.Join(t.TempDir(), "back")
	if err := c.CopyUp(ctx, tb+"/", back+"/", true); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"debian/tests/control", "debian/tests/smoke", "name with space é"} {
		a, _ := os.ReadFile(filepath.Join(src, name))
		b, err := os.ReadFile(filepath.Join(back, name))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s came back as %q, %v", name, b, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(back, "debian/tests/smoke")); fi == nil || fi.Mode()&0o111 == 0 {
		t.Error("the executable bit was lost")
	}
	if l, _ := os.Readlink(filepath.Join(back, "link")); l != "debian/tests/smoke" {
		t.Errorf("link -> %q", l)
	}

	// Files, with the executable bit.
	one := filepath.Join(t.TempDir(), "one")
	if err := c.CopyDown(ctx, filepath.Join(src, "debian/tests/smoke"), one, false); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(one); fi == nil || fi.Mode()&0o111 == 0 {
		t.Error("copydown of an executable file lost its executable bit")
	}
	up := filepath.Join(t.TempDir(), "up")
	if err := c.CopyUp(ctx, one, up, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(up); !strings.Contains(string(b), "echo ok") {
		t.Errorf("copyup of a file gave %q", b)
	}

	// A source that does not exist on the testbed is a copy failure.
	err := c.CopyUp(ctx, filepath.Join(t.TempDir(), "missing")+"/", back+"/", true)
	if _, ok := err.(*CopyError); !ok || !strings.Contains(err.Error(), "can't cd") {
		t.Errorf("copyup of a missing directory: %v, want a *CopyError with the shell's message", err)
	}
}
