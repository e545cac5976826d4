package testregistry

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/testenv"
)

// untar extracts r into dir with GNU tar as root: owners, modes with setuid,
// mtimes and hardlinks kept, devices created. It is how the tests make a
// rootfs independently of racker and of Compare.
func untar(t *testing.T, dir string, r io.Reader, args ...string) {
	t.Helper()
	cmd := exec.Command("tar", append([]string{"-x", "-p", "--numeric-owner", "-C", dir, "-f", "-"}, args...)...)
	cmd.Stdin = r
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
}

func mustCompare(t *testing.T, img v1.Image, dir string) []string {
	t.Helper()
	diffs, err := Compare(context.Background(), img, dir)
	if err != nil {
		t.Fatal(err)
	}
	return diffs
}

func TestCompareSynthetic(t *testing.T) {
	needRoot(t)
	need(t, "tar")
	lower := specLayer(t, `
dir etc 0755
file etc/passwd 0644 "root:x:0:0\n"
dir usr 0755
dir usr/bin 0755
file usr/bin/su 4755 su
dir tmp 1777
file a 0644 mtime=@1000000000 aaa
hardlink b a
symlink c a
dir gone 0755
file gone/x 0644 x
dir opq 0755
file opq/old 0644 old
fifo run.fifo
dir dev 0755
chardev dev/null
file owned 0640 1000:1001 o
`, -1)
	upper := specLayer(t, `
whiteout gone
opaque opq
file opq/new 0644 new
file etc/passwd 0600 "root:x:0:1\n"
`, -1)
	img, err := NewImage(image.HostPlatform(), types.OCIManifestSchema1, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rc := mutate.Extract(img)
	untar(t, dir, rc)
	rc.Close()
	for _, gone := range []string{"gone", "opq/old"} {
		if _, err := os.Lstat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s survived its whiteout in the reference extraction", gone)
		}
	}
	if diffs := mustCompare(t, img, dir); len(diffs) != 0 {
		t.Fatalf("differences against a faithful extraction:\n%s", strings.Join(diffs, "\n"))
	}

	// Every kind of damage is reported.
	at := func(p string) string { return filepath.Join(dir, p) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(at("usr/bin/su"), 0o755))
	must(os.WriteFile(at("etc/passwd"), []byte("root:x:0:2\n"), 0o600))
	must(os.Chtimes(at("etc/passwd"), time.Time{}, time.Unix(defaultMtime.Unix(), 0)))
	must(os.Chown(at("owned"), 0, 0))
	must(os.Remove(at("b")))
	must(os.WriteFile(at("b"), []byte("aaa"), 0o644))
	must(os.Chtimes(at("b"), time.Time{}, time.Unix(1000000000, 0)))
	must(os.WriteFile(at("extra"), nil, 0o644))
	must(os.Chtimes(at("extra"), time.Time{}, defaultMtime))
	must(os.Remove(at("opq/new")))
	must(os.Remove(at("c")))
	must(os.Symlink("/etc/shadow", at("c")))
	must(os.Remove(at("run.fifo")))
	must(os.WriteFile(at("run.fifo"), nil, 0o644))
	outside := t.TempDir()
	must(os.Link(at("usr/bin/su"), filepath.Join(outside, "su")))
	must(exec.Command("mknod", at("dev/extra"), "c", "1", "5").Run())

	diffs := strings.Join(mustCompare(t, img, dir), "\n")
	for _, want := range []string{
		"usr/bin/su: mode 4755 in image, 0755 in rootfs",
		"etc/passwd: content differs (same size 11)",
		"owned: owner 1000:1001 in image, 0:0 in rootfs",
		"b: hardlinked with [a, b] in image, with [] in rootfs",
		"a: hardlinked with [a, b] in image, with [] in rootfs",
		"extra: not in image (rootfs has a file)",
		"opq/new: missing from rootfs (image has a file)",
		`c: symlink to "a" in image, to "/etc/shadow" in rootfs`,
		"run.fifo: image has a fifo, rootfs a file",
		"usr/bin/su: has 2 links but 1 inside rootfs",
	} {
		if !strings.Contains(diffs, want) {
			t.Errorf("differences lack %q", want)
		}
	}
	if strings.Contains(diffs, "dev/") {
		t.Errorf("devices were compared:\n%s", diffs)
	}
	if t.Failed() {
		t.Logf("differences:\n%s", diffs)
	}
}

func TestCompareMtime(t *testing.T) {
	need(t, "tar")
	img, err := NewImage(image.HostPlatform(), types.OCIManifestSchema1, specLayer(t, "file f 0644 mtime=@1234567890 x\nsymlink s f mtime=@1234567890", -1))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rc := mutate.Extract(img)
	untar(t, dir, rc, "--no-same-owner")
	rc.Close()
	if os.Geteuid() != 0 {
		t.Skip("owners differ when not root")
	}
	if diffs := mustCompare(t, img, dir); len(diffs) != 0 {
		t.Fatalf("differences: %q", diffs)
	}
	os.Chtimes(filepath.Join(dir, "f"), time.Time{}, time.Unix(1234567891, 0))
	diffs := mustCompare(t, img, dir)
	if len(diffs) != 1 || diffs[0] != "f: mtime 1234567890 in image, 1234567891 in rootfs" {
		t.Errorf("differences %q, want one about f's mtime", diffs)
	}
}

// TestCompareDebian checks the oracle against GNU tar's extraction of the
// real bookworm-slim layer (built by mmdebstrap on first use).
func TestCompareDebian(t *testing.T) {
	needRoot(t)
	need(t, "tar")
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		need(t, "mmdebstrap")
	}
	ctx := testContext(t)
	layer, err := (&Cache{Dir: testenv.CacheDir()}).Layer(ctx, BookwormSlim)
	if err != nil {
		t.Fatal(err)
	}
	img, err := NewImage(image.HostPlatform(), types.DockerManifestSchema2, layer)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := os.Open(layer.Path)
	if err != nil {
		t.Fatal(err)
	}
	untar(t, dir, f, "-z")
	f.Close()
	if diffs := mustCompare(t, img, dir); len(diffs) != 0 {
		t.Fatalf("%d differences against GNU tar's extraction, first:\n%s", len(diffs), strings.Join(diffs[:min(20, len(diffs))], "\n"))
	}
	perl := filepath.Join(dir, "usr/bin/perl5.36.0")
	if err := os.Remove(perl); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("perl", perl); err != nil {
		t.Fatal(err)
	}
	diffs := mustCompare(t, img, dir)
	if got, want := strings.Join(diffs, "\n"), "usr/bin/perl5.36.0: image has a file, rootfs a symlink\n"+
		"usr/bin/perl: hardlinked with [usr/bin/perl, usr/bin/perl5.36.0] in image, with [] in rootfs"; got != want {
		t.Errorf("after replacing a hardlink with a symlink:\n%s\nwant\n%s", got, want)
	}
}

func TestFlatten(t *testing.T) {
	lower := specLayer(t, `
dir etc 0755
file etc/a 0644 lower-a
file etc/b 0644 lower-b
hardlink etc/b-link etc/b
dir opq 0700
file opq/old 0644 old
symlink swap etc
file ../../dup 0644 first
file /dup 0600 second
file deep/implicit/file 0644 x
chardev dev/null
`, -1)
	upper := specLayer(t, `
whiteout etc/a
file etc/a 0640 same-layer-as-its-whiteout
file etc/b 0644 upper-b
opaque opq
file opq/new 0644 new
dir opq 0755
whiteout swap
dir swap 0750
`, -1)
	img, err := NewImage(image.HostPlatform(), types.OCIManifestSchema1, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	fs, diffs, err := flatten(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 0 {
		t.Errorf("diffs %q", diffs)
	}
	var got []string
	for name, n := range fs {
		line := fmt.Sprintf("%s %s %04o", name, n.kind, n.mode)
		if n.implicit {
			line = name + " implicit dir"
		}
		if n.kind == "file" {
			line += fmt.Sprintf(" %d", n.size)
		}
		got = append(got, line)
	}
	slices.Sort(got)
	want := []string{
		"deep implicit dir",
		"deep/implicit implicit dir",
		"deep/implicit/file file 0644 1",
		"dup file 0600 6", // the last entry for a path in a layer wins
		"etc dir 0755",
		"etc/a file 0640 26",     // a whiteout hides lower layers only
		"etc/b file 0644 7",      // replaced: a new inode...
		"etc/b-link file 0644 7", // ...while the link keeps the old one
		"opq dir 0755",
		"opq/new file 0644 3",
		"swap dir 0750",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("flattened:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if fs["etc/b"] == fs["etc/b-link"] {
		t.Error("etc/b still shares the link's inode after being replaced")
	}
}
