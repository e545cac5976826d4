package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarLayer builds a gzip layer from name/content pairs ("dir/" names are
// directories).
func tarLayer(t *testing.T, files ...string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < len(files); i += 2 {
		name, content := files[i], files[i+1]
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}
		if strings.HasSuffix(name, "/") {
			hdr = &tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			tw.Write([]byte(content))
		}
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testImage(t *testing.T, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testRegistry serves an in-process registry on loopback. mangle, if set,
// may rewrite each response body for blob GETs.
type testRegistry struct {
	srv      *httptest.Server
	requests atomic.Int64
	blobGets atomic.Int64
	mangle   func(body []byte) []byte
}

func newTestRegistry(t *testing.T) *testRegistry {
	tr := &testRegistry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.requests.Add(1)
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			tr.blobGets.Add(1)
			if tr.mangle != nil {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(tr.mangle(rec.Body.Bytes()))
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	return tr
}

func (tr *testRegistry) host() string { return strings.TrimPrefix(tr.srv.URL, "http://") }

func (tr *testRegistry) push(t *testing.T, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(tr.host() + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d
}

func newStore(t *testing.T) *Store {
	t.Helper()
	st, err := OpenStore(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func assertTmpEmpty(t *testing.T, st *Store) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(st.Root, "tmp"))
	if len(entries) != 0 {
		t.Errorf("tmp/ not empty: %v", entries)
	}
}

func TestPullUnpacksAndIsUpToDate(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "amd64",
		tarLayer(t, "etc/", "", "etc/os-release", "ID=test\n", "etc/gone", "x", "opt/", ""),
		tarLayer(t, "etc/.wh.gone", "", "opt/new", "layer two"))
	want := reg.push(t, "library/test:1", img)
	st := newStore(t)
	ref := MustParseReference(reg.host() + "/library/test:1")
	ctx := context.Background()
	opts := PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}

	res, err := st.Pull(ctx, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.UpToDate || res.Image.Digest != want.String() || res.Image.Layers != 2 {
		t.Fatalf("first pull: %+v", res)
	}
	rootfs := st.RootFS(want.String())
	if got := readFile(t, filepath.Join(rootfs, "etc/os-release")); got != "ID=test\n" {
		t.Errorf("os-release = %q", got)
	}
	if got := readFile(t, filepath.Join(rootfs, "opt/new")); got != "layer two" {
		t.Errorf("opt/new = %q", got)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc/gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whiteout not applied: %v", err)
	}
	assertTmpEmpty(t, st)
	if entries, _ := os.ReadDir(filepath.Dir(rootfs)); len(entries) != 2 {
		t.Errorf("image directory holds %v, want image.json and rootfs only", entries)
	}
	fi, err := os.Stat(st.Root)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("store root mode = %v, %v; want 0700", fi.Mode(), err)
	}

	blobs := reg.blobGets.Load()
	res, err = st.Pull(ctx, ref, opts)
	if err != nil || !res.UpToDate {
		t.Fatalf("second pull: %+v %v", res, err)
	}
	if n := reg.blobGets.Load() - blobs; n != 0 {
		t.Errorf("second pull fetched %d blobs", n)
	}
	list, err := st.List()
	if err != nil || len(list) != 1 || list[0].Reference != ref.String() || list[0].RootFS != rootfs {
		t.Fatalf("List = %+v, %v", list, err)
	}

	// A digest reference finds the stored image without the network.
	reg.srv.Close()
	if res, err := st.Pull(ctx, MustParseReference(reg.host()+"/library/test@"+want.String()), PullOptions{}); err != nil || !res.UpToDate {
		t.Fatalf("digest pull offline: %+v %v", res, err)
	}

	if _, deleted, err := st.Remove(ctx, ref, nil); err != nil || !deleted {
		t.Fatalf("Remove: %v %v", deleted, err)
	}
	if _, err := os.Stat(rootfs); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rootfs still there after Remove: %v", err)
	}
	if _, err := st.Lookup(ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after Remove: %v", err)
	}
	assertTmpEmpty(t, st)
}

func TestPullThroughMirror(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "library/debian:bookworm-slim", testImage(t, "amd64", tarLayer(t, "hello", "mirror")))
	st := newStore(t)
	ref := MustParseReference("debian:bookworm-slim")
	mirrors, err := ParseMirrors("docker.io=" + reg.host())
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Pull(context.Background(), ref, PullOptions{Mirrors: mirrors, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Image.Reference != "docker.io/library/debian:bookworm-slim" {
		t.Errorf("stored as %q", res.Image.Reference)
	}
	if got := readFile(t, filepath.Join(res.Image.RootFS, "hello")); got != "mirror" {
		t.Errorf("hello = %q", got)
	}
}

func TestPullRejectsTamperedBlob(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "amd64", tarLayer(t, "file", strings.Repeat("good", 1000)))
	reg.push(t, "x/y:1", img)
	reg.mangle = func(b []byte) []byte {
		if len(b) > 100 && b[0] == 0x1f { // the gzip layer, not the config
			b = bytes.Clone(b)
			b[len(b)/2] ^= 0xff
		}
		return b
	}
	st := newStore(t)
	_, err := st.Pull(context.Background(), MustParseReference(reg.host()+"/x/y:1"), PullOptions{})
	if err == nil {
		t.Fatal("pull of a tampered blob succeeded")
	}
	if !strings.Contains(err.Error(), "pulling "+reg.host()+"/x/y:1") ||
		!(strings.Contains(err.Error(), "digest") || strings.Contains(err.Error(), "gzip") || strings.Contains(err.Error(), "flate")) {
		t.Errorf("error = %q", err)
	}
	if list, _ := st.List(); len(list) != 0 {
		t.Errorf("tampered image listed: %+v", list)
	}
	assertTmpEmpty(t, st)
}

func TestPullRejectsWrongDiffID(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "amd64", tarLayer(t, "file", "content"))
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: sixtyFour}
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, "x/y:1", img)
	st := newStore(t)
	_, err = st.Pull(context.Background(), MustParseReference(reg.host()+"/x/y:1"), PullOptions{})
	if err == nil || !strings.Contains(err.Error(), "diff ID mismatch") {
		t.Fatalf("err = %v, want diff ID mismatch", err)
	}
	if list, _ := st.List(); len(list) != 0 {
		t.Errorf("image listed: %+v", list)
	}
	assertTmpEmpty(t, st)
}

func TestPullPlatforms(t *testing.T) {
	reg := newTestRegistry(t)
	amd := testImage(t, "amd64", tarLayer(t, "arch", "amd64"))
	arm := testImage(t, "arm64", tarLayer(t, "arch", "arm64"))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	ref, _ := name.ParseReference(reg.host() + "/multi:1")
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	st := newStore(t)
	r := MustParseReference(reg.host() + "/multi:1")
	for _, arch := range []string{"amd64", "arm64"} {
		res, err := st.Pull(context.Background(), r, PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: arch}})
		if err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(res.Image.RootFS, "arch")); got != arch {
			t.Errorf("--platform linux/%s got %q", arch, got)
		}
		idxDigest, _ := idx.Digest()
		if res.Image.Index != idxDigest.String() {
			t.Errorf("index digest %q, want %q", res.Image.Index, idxDigest)
		}
	}
	_, err := st.Pull(context.Background(), r, PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}})
	if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "linux/amd64, linux/arm64/v8") {
		t.Errorf("s390x: %v", err)
	}
	// A single-platform image must match an explicit --platform.
	reg.push(t, "single:1", amd)
	_, err = st.Pull(context.Background(), MustParseReference(reg.host()+"/single:1"), PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}})
	if !errors.Is(err, ErrPlatform) {
		t.Errorf("single-platform mismatch: %v", err)
	}
}

func TestPullErrors(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "x/y:1", testImage(t, "amd64", tarLayer(t, "f", "x")))
	st := newStore(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedHost := strings.TrimPrefix(closed.URL, "http://")
	closed.Close()
	tests := []struct{ ref, want string }{
		{reg.host() + "/x/y:nope", "pulling " + reg.host() + "/x/y:nope: manifest unknown"},
		{reg.host() + "/x/nope:1", "pulling " + reg.host() + "/x/nope:1: repository not found"},
		{closedHost + "/x/y:1", "registry unreachable: " + closedHost + ": connection refused"},
	}
	for _, tt := range tests {
		_, err := st.Pull(context.Background(), MustParseReference(tt.ref), PullOptions{})
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Pull(%s) = %v, want %q", tt.ref, err, tt.want)
		}
	}
	if list, _ := st.List(); len(list) != 0 {
		t.Errorf("images after failures: %+v", list)
	}
}

func TestPullConcurrent(t *testing.T) {
	reg := newTestRegistry(t)
	big := strings.Repeat("0123456789", 200000)
	want := reg.push(t, "x/y:1", testImage(t, "amd64", tarLayer(t, "big", big), tarLayer(t, "small", "s")))
	st := newStore(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other, err := OpenStore(st.Root, nil) // as separate processes would
			if err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = other.Pull(context.Background(), MustParseReference(reg.host()+"/x/y:1"), PullOptions{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := readFile(t, filepath.Join(st.RootFS(want.String()), "big")); got != big {
		t.Error("big file content wrong")
	}
	dirs, _ := os.ReadDir(filepath.Join(st.Root, "images/sha256"))
	if len(dirs) != 1 {
		t.Errorf("%d image directories, want 1", len(dirs))
	}
	assertTmpEmpty(t, st)
}

func TestPullCancelledLeavesNothing(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "x/y:1", testImage(t, "amd64", tarLayer(t, "big", strings.Repeat("z", 1<<20))))
	ctx, cancel := context.WithCancel(context.Background())
	reg.mangle = func(b []byte) []byte { cancel(); return b }
	st := newStore(t)
	_, err := st.Pull(ctx, MustParseReference(reg.host()+"/x/y:1"), PullOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if list, _ := st.List(); len(list) != 0 {
		t.Errorf("images after cancel: %+v", list)
	}
	assertTmpEmpty(t, st)
}

func TestCleanTempRemovesAbandonedPulls(t *testing.T) {
	st := newStore(t)
	stale := filepath.Join(st.Root, "tmp", sixtyFour+".123")
	if err := os.MkdirAll(filepath.Join(stale, "rootfs/etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	busy := filepath.Join(st.Root, "tmp", strings.Repeat("b", 64)+".456")
	os.MkdirAll(busy, 0o755)
	unlock, ok := st.tryLock(strings.Repeat("b", 64))
	if !ok {
		t.Fatal("tryLock failed")
	}
	defer unlock()
	if err := st.CleanTemp(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale pull directory kept: %v", err)
	}
	if _, err := os.Stat(busy); err != nil {
		t.Errorf("directory of a running pull removed: %v", err)
	}
}

func TestPullFallsBackFromDeadMirror(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "x/y:1", testImage(t, "amd64", tarLayer(t, "f", "origin")))
	dead := httptest.NewServer(http.NotFoundHandler())
	deadHost := strings.TrimPrefix(dead.URL, "http://")
	dead.Close()
	// Two mirrors: one nobody listens on, one without the image; then the
	// registry itself serves it.
	empty := newTestRegistry(t)
	mirrors, err := ParseMirrors(reg.host() + "=" + deadHost + "," + reg.host() + "=" + empty.host())
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(t)
	res, err := st.Pull(context.Background(), MustParseReference(reg.host()+"/x/y:1"), PullOptions{Mirrors: mirrors})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(res.Image.RootFS, "f")); got != "origin" {
		t.Errorf("f = %q", got)
	}
	if empty.requests.Load() == 0 {
		t.Error("the second mirror was not asked")
	}
	// When every source fails, the registry's answer is reported, not the
	// dead mirror's connection error.
	_, err = st.Pull(context.Background(), MustParseReference(reg.host()+"/x/y:nope"), PullOptions{Mirrors: mirrors})
	if err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("all sources failing: %v", err)
	}
}
