package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/racker-postroj/racker/internal/flock"
)

// pulledImage is a store holding one small image, its reference and the
// image.
func pulledImage(t *testing.T) (*Store, Reference, Image) {
	t.Helper()
	reg := newTestRegistry(t)
	reg.push(t, "x/y:1", testImage(t, "amd64", tarLayer(t, "etc/", "", "etc/hostname", "box\n")))
	st := newStore(t)
	ref := MustParseReference(reg.host() + "/x/y:1")
	res, err := st.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st, ref, res.Image
}

// A start that holds Use keeps rmi away; one that comes after rmi is told
// the image was removed, never handed a half-deleted tree.
func TestUseAndRemoveCannotRace(t *testing.T) {
	st, ref, img := pulledImage(t)
	ctx := context.Background()
	release, err := st.Use(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Remove(ctx, ref, nil); !errors.Is(err, ErrStarting) {
		t.Fatalf("Remove during a start: %v, want ErrStarting", err)
	}
	release()
	release() // idempotent
	asked := false
	refuse := errors.New("in use by c1")
	if _, _, err := st.Remove(ctx, ref, func(Image) error { asked = true; return refuse }); !errors.Is(err, refuse) || !asked {
		t.Fatalf("Remove with a refusing check: %v", err)
	}
	if _, deleted, err := st.Remove(ctx, ref, nil); err != nil || !deleted {
		t.Fatalf("Remove: deleted %v, %v", deleted, err)
	}
	if _, err := st.Use(ctx, img); !errors.Is(err, ErrRemoved) {
		t.Fatalf("Use after Remove: %v, want ErrRemoved", err)
	}
}

func TestPruneLocks(t *testing.T) {
	st, _, img := pulledImage(t)
	h, _ := digestHex(img.Digest)
	locks := filepath.Join(st.Root, "locks")
	gone := strings.Repeat("a", 64)
	held := strings.Repeat("b", 64)
	building := strings.Repeat("c", 64)
	for _, n := range []string{gone + ".lock", gone + ".use", held + ".lock", building + ".lock", "README"} {
		os.WriteFile(filepath.Join(locks, n), nil, 0o600)
	}
	os.Mkdir(filepath.Join(st.Root, "tmp", building+".build-1"), 0o700)
	unlock, ok := flock.TryLock(filepath.Join(locks, held+".lock"))
	if !ok {
		t.Fatal("locking")
	}
	defer unlock()
	if err := st.PruneLocks(); err != nil {
		t.Fatal(err)
	}
	var left []string
	es, _ := os.ReadDir(locks)
	for _, e := range es {
		left = append(left, e.Name())
	}
	want := []string{h + ".lock", "README", held + ".lock", building + ".lock"}
	sort.Strings(want)
	if strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("locks left %v, want %v", left, want)
	}
}

// A container start given only the tree to boot (a probe's, a testbed's)
// holds the image as Use does; trees outside the store are not guarded.
func TestUseTree(t *testing.T) {
	st, ref, img := pulledImage(t)
	ctx := context.Background()
	for _, tree := range []string{img.RootFS, filepath.Join(filepath.Dir(img.RootFS), "prepared", "rootfs")} {
		if err := os.MkdirAll(tree, 0o755); err != nil {
			t.Fatal(err)
		}
		release, err := st.UseTree(ctx, "y", tree)
		if err != nil {
			t.Fatalf("UseTree(%s): %v", tree, err)
		}
		if _, _, err := st.Remove(ctx, ref, nil); !errors.Is(err, ErrStarting) {
			t.Fatalf("Remove while %s starts: %v, want ErrStarting", tree, err)
		}
		release()
	}
	for _, outside := range []string{t.TempDir(), filepath.Join(st.Root, "tmp", "x"), filepath.Join(st.Root, "images", "sha256", "..", "..", "tmp")} {
		release, err := st.UseTree(ctx, "y", outside)
		if err != nil {
			t.Fatalf("UseTree(%s) outside the images: %v", outside, err)
		}
		release()
	}
	prepared := filepath.Join(filepath.Dir(img.RootFS), "prepared", "rootfs")
	if _, deleted, err := st.Remove(ctx, ref, nil); err != nil || !deleted {
		t.Fatalf("Remove: deleted %v, %v", deleted, err)
	}
	if _, err := st.UseTree(ctx, "y", prepared); !errors.Is(err, ErrRemoved) || !strings.Contains(err.Error(), "y: image was removed") {
		t.Fatalf("UseTree after Remove: %v, want ErrRemoved", err)
	}
}
