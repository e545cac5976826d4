package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rawLayer is an uncompressed layer, as images built on this machine
// (mmdebstrap's tar) are imported.
type rawLayer struct{ b []byte }

func (l rawLayer) DiffID() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(l.b))
	return h, err
}
func (l rawLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.b)), nil
}
func (l rawLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }

func uncompressedLayer(t *testing.T, files ...string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < len(files); i += 2 {
		hdr := &tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[i+1]))
	}
	tw.Close()
	// The digest of an uncompressed layer is its diff ID.
	l, err := partial.UncompressedToLayer(rawLayer{buf.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	return uncompressedAsIs{l, buf.Bytes()}
}

// uncompressedAsIs serves the tar itself as the layer's blob (partial's
// adapter would gzip it).
type uncompressedAsIs struct {
	v1.Layer
	b []byte
}

func (l uncompressedAsIs) Digest() (v1.Hash, error) { return l.DiffID() }
func (l uncompressedAsIs) Size() (int64, error)     { return int64(len(l.b)), nil }
func (l uncompressedAsIs) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.b)), nil
}

func TestImport(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	img := testImage(t, "amd64",
		uncompressedLayer(t, "etc/os-release", "ID=debian\n", "etc/gone", "x"),
		tarLayer(t, "etc/.wh.gone", "", "usr/", "", "usr/bin/hello", "hi"))
	want, _ := img.Digest()
	ref := MustParseReference("mirror.local/debian:bookworm")

	got, err := st.Import(ctx, ref, img)
	if err != nil {
		t.Fatal(err)
	}
	if got.Reference != "mirror.local/debian:bookworm" || got.Digest != want.String() || got.Platform != "linux/amd64" || got.Layers != 2 {
		t.Fatalf("Import = %+v", got)
	}
	if got.RootFS != st.RootFS(want.String()) {
		t.Errorf("rootfs %s, want %s", got.RootFS, st.RootFS(want.String()))
	}
	if s := readFile(t, filepath.Join(got.RootFS, "etc/os-release")); s != "ID=debian\n" {
		t.Errorf("os-release = %q", s)
	}
	if s := readFile(t, filepath.Join(got.RootFS, "usr/bin/hello")); s != "hi" {
		t.Errorf("hello = %q", s)
	}
	if _, err := os.Lstat(filepath.Join(got.RootFS, "etc/gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whiteout not applied: %v", err)
	}
	if l, err := st.Lookup(ref); err != nil || l.Digest != want.String() {
		t.Errorf("Lookup = %+v, %v", l, err)
	}
	assertTmpEmpty(t, st)

	// The same content under another name is stored once.
	before, _ := os.Stat(got.RootFS)
	again, err := st.Import(ctx, MustParseReference("mirror.local/debian:12"), img)
	if err != nil || again.Digest != got.Digest {
		t.Fatalf("second Import = %+v, %v", again, err)
	}
	if after, _ := os.Stat(again.RootFS); !os.SameFile(before, after) {
		t.Error("second Import unpacked the image again")
	}
	if all, _ := st.List(); len(all) != 2 {
		t.Errorf("List = %v, want two references", all)
	}
	// A digest reference must name the image.
	if _, err := st.Import(ctx, MustParseReference("mirror.local/debian@"+want.String()), img); err != nil {
		t.Errorf("Import by its own digest: %v", err)
	}
	other := "sha256:" + strings.Repeat("ab", 32)
	if _, err := st.Import(ctx, MustParseReference("mirror.local/debian@"+other), img); err == nil || !strings.Contains(err.Error(), "not "+other) {
		t.Errorf("Import under another digest: %v", err)
	}
}

func TestImportRejects(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	ref := MustParseReference("mirror.local/debian:bad")

	noOS, err := mutate.AppendLayers(empty.Image, tarLayer(t, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Import(ctx, ref, noOS); !errors.Is(err, ErrPlatform) || !strings.HasPrefix(err.Error(), "importing mirror.local/debian:bad: ") {
		t.Errorf("image without os: %v", err)
	}

	// A layer whose content is not what its digest says is refused, and
	// nothing is left behind.
	good := uncompressedLayer(t, "etc/x", "good")
	lying := lyingLayer{good.(uncompressedAsIs), []byte("not a tar at all")}
	img := testImage(t, "amd64", lying)
	if _, err := st.Import(ctx, ref, img); err == nil || !strings.Contains(err.Error(), "got 16 bytes, manifest says 2048") {
		t.Errorf("tampered layer: %v", err)
	}
	if _, err := st.Lookup(ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after failed import: %v", err)
	}
	assertTmpEmpty(t, st)
}

type lyingLayer struct {
	uncompressedAsIs
	content []byte
}

func (l lyingLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.content)), nil
}

func TestWorkDir(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	dir, release, err := st.WorkDir(ctx, "mirror.local/debian:bookworm")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dir) != filepath.Join(st.Root, "tmp") {
		t.Errorf("work dir %s is not in tmp/", dir)
	}
	os.WriteFile(filepath.Join(dir, "rootfs.tar"), []byte("x"), 0o600)
	// CleanTemp leaves a build in progress alone ...
	if err := st.CleanTemp(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("CleanTemp removed a build in progress: %v", err)
	}
	// ... and a second build of the same image waits for the first.
	waited := make(chan time.Duration)
	go func() {
		t0 := time.Now()
		_, release2, err := st.WorkDir(ctx, "mirror.local/debian:bookworm")
		if err == nil {
			release2()
		}
		waited <- time.Since(t0)
	}()
	time.Sleep(200 * time.Millisecond)
	release()
	if d := <-waited; d < 150*time.Millisecond {
		t.Errorf("second WorkDir did not wait (%v)", d)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("release left %s: %v", dir, err)
	}

	// What a killed build leaves is cleaned once nobody holds its lock.
	dir, release, err = st.WorkDir(ctx, "mirror.local/debian:sid")
	if err != nil {
		t.Fatal(err)
	}
	leftover := dir + "-copy"
	if err := os.Mkdir(leftover, 0o700); err != nil {
		t.Fatal(err)
	}
	release()
	if err := st.CleanTemp(); err != nil {
		t.Fatal(err)
	}
	assertTmpEmpty(t, st)

	cctx, cancel := context.WithCancel(ctx)
	_, release, _ = st.WorkDir(ctx, "k")
	cancel()
	if _, _, err := st.WorkDir(cctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("WorkDir with a cancelled context while locked: %v", err)
	}
	release()
}
