package testregistry

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/testenv"
)

// fakeMmdebstrap puts an mmdebstrap on a PATH of its own that logs its
// arguments and writes a two-entry tar, and returns the log's path.
func fakeMmdebstrap(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "calls")
	script := `#!/bin/sh
if [ "$1" = --version ]; then echo "mmdebstrap ` + version + `"; exit 0; fi
echo "$*" >> ` + logPath + `
prev=; out=
for a; do out=$prev; prev=$a; done
/bin/sleep 0.3
root=$(/bin/mktemp -d)
/bin/mkdir "$root/etc"
echo fake > "$root/etc/hostname"
/bin/tar -C "$root" -cf "$out" . && /bin/rm -rf "$root"
`
	if err := os.WriteFile(filepath.Join(dir, "mmdebstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir) // no pigz: the Go compressor runs
	t.Setenv(testenv.MirrorVar, "http://mirror.invalid/debian")
	return logPath
}

func calls(t *testing.T, logPath string) []string {
	data, err := os.ReadFile(logPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func TestCacheBuildsOnceAndReuses(t *testing.T) {
	logPath := fakeMmdebstrap(t, "1.0")
	c := &Cache{Dir: t.TempDir()}
	ctx := testContext(t)

	var wg sync.WaitGroup
	layers := make([]*FileLayer, 3)
	errs := make([]error, 3)
	for i := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			layers[i], errs[i] = c.Layer(ctx, BookwormSlim)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := calls(t, logPath)
	if len(got) != 1 {
		t.Fatalf("mmdebstrap ran %d times for 3 concurrent callers, want once: %q", len(got), got)
	}
	if want := "--variant=minbase --architectures=" + distro.DebianArch(image.HostPlatform().Architecture) +
		" bookworm "; !strings.HasPrefix(got[0], want) || !strings.HasSuffix(got[0], " http://mirror.invalid/debian") {
		t.Errorf("mmdebstrap %s, want %s... http://mirror.invalid/debian", got[0], want)
	}
	l := layers[0]
	if layers[1].Info.Digest != l.Info.Digest || layers[2].Info.Digest != l.Info.Digest {
		t.Error("concurrent callers got different layers")
	}
	if l.Info.Compressor != "go" {
		t.Errorf("compressor %q without pigz, want go", l.Info.Compressor)
	}

	// The recorded digests are those of the files.
	f, _ := os.Open(l.Path)
	digest, size, _ := v1.SHA256(f)
	f.Close()
	if digest != l.Info.Digest || size != l.Info.Size {
		t.Errorf("layer.tar.gz is %s (%d bytes), recorded %s (%d)", digest, size, l.Info.Digest, l.Info.Size)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	diffID, _, _ := v1.SHA256(rc)
	rc.Close()
	if diffID != l.Info.DiffID {
		t.Errorf("diffID %s, recorded %s", diffID, l.Info.DiffID)
	}
	names := tarNames(t, l)
	if !strings.Contains(names, "./etc/hostname") {
		t.Errorf("layer entries %s lack ./etc/hostname", names)
	}

	// Warm: no build.
	if _, err := c.Layer(ctx, BookwormSlim); err != nil {
		t.Fatal(err)
	}
	if n := len(calls(t, logPath)); n != 1 {
		t.Errorf("warm cache ran mmdebstrap again (%d runs)", n)
	}

	// The leftovers of a killed build go with the next build.
	entry := filepath.Dir(l.Path)
	os.RemoveAll(entry)
	os.MkdirAll(filepath.Join(filepath.Dir(entry), ".tmp-"+filepath.Base(entry)+"-killed"), 0o755)
	if _, err := c.Layer(ctx, BookwormSlim); err != nil {
		t.Fatal(err)
	}
	if n := len(calls(t, logPath)); n != 2 {
		t.Errorf("mmdebstrap ran %d times, want a second build after the entry was removed", n)
	}
	if left, _ := filepath.Glob(filepath.Join(c.Dir, ".tmp-*")); len(left) != 0 {
		t.Errorf("temporary directories left: %q", left)
	}

	// Another recipe or another mmdebstrap is another entry.
	if _, err := c.Layer(ctx, Recipe{Suite: "bookworm", Variant: "minbase", Include: []string{"dbus"}}); err != nil {
		t.Fatal(err)
	}
	fakeMmdebstrap(t, "2.0")
	if _, err := c.Layer(ctx, BookwormSlim); err != nil {
		t.Fatal(err)
	}
	entries, _ := filepath.Glob(filepath.Join(c.Dir, "debian-*[^k]")) // not the .lock files
	if len(entries) != 3 {
		t.Errorf("cache entries %q, want 3", entries)
	}
}

func TestCacheWithoutMmdebstrap(t *testing.T) {
	fakeMmdebstrap(t, "1.0")
	c := &Cache{Dir: t.TempDir()}
	ctx := testContext(t)
	built, err := c.Layer(ctx, BookwormSlim)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	got, err := c.Layer(ctx, BookwormSlim)
	if err != nil {
		t.Fatalf("a cached entry without mmdebstrap: %v", err)
	}
	if got.Info.Digest != built.Info.Digest {
		t.Error("got another layer")
	}
	_, err = c.Layer(ctx, Recipe{Suite: "trixie", Variant: "minbase"})
	if !errors.Is(err, ErrNoMmdebstrap) {
		t.Errorf("uncached without mmdebstrap: %v, want ErrNoMmdebstrap", err)
	}
}

func tarNames(t *testing.T, l *FileLayer) string {
	f, err := os.Open(l.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return strings.Join(names, " ")
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// A weekly recipe's entries of earlier weeks go once this week's is built;
// other recipes' entries and locked ones stay.
func TestCachePrunesEarlierWeeks(t *testing.T) {
	fakeMmdebstrap(t, "1.0")
	c := &Cache{Dir: t.TempDir()}
	ctx := testContext(t)
	weekly := Recipe{Suite: "sid", Variant: "minbase", Weekly: true}
	current, err := c.Layer(ctx, weekly)
	if err != nil {
		t.Fatal(err)
	}
	// Make entries as earlier weeks (and another recipe's) would have.
	entry := filepath.Dir(current.Path)
	plant := func(name string, edit func(*ResolvedRecipe)) string {
		dir := filepath.Join(c.Dir, name)
		if err := os.CopyFS(dir, os.DirFS(entry)); err != nil {
			t.Fatal(err)
		}
		info := current.Info
		edit(&info.Recipe)
		if err := fileio.WriteJSON(filepath.Join(dir, "layer.json"), info, 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	name := filepath.Base(entry) // debian-sid-minbase-ARCH-KEY
	prefix := name[:strings.LastIndex(name, "-")+1]
	old := plant(prefix+"0000000000000001", func(r *ResolvedRecipe) { r.Week = "2020-W01" })
	oldLocked := plant(prefix+"0000000000000002", func(r *ResolvedRecipe) { r.Week = "2020-W02" })
	other := plant(prefix+"0000000000000003", func(r *ResolvedRecipe) { r.Week = "2020-W01"; r.Include = []string{"systemd"} })
	unlock, ok := flock.TryLock(oldLocked + ".lock")
	if !ok {
		t.Fatal("locking")
	}
	defer unlock()
	// Remove this week's entry so that the next Layer builds it again.
	if err := os.RemoveAll(entry); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Layer(ctx, weekly); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]bool{old: false, oldLocked: true, other: true, entry: true} {
		if _, err := os.Stat(dir); (err == nil) != want {
			t.Errorf("%s: there %v, want %v", filepath.Base(dir), err == nil, want)
		}
	}
}
