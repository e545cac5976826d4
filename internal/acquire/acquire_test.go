package acquire

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/image"
)

// treeImage is a one-layer linux image holding empty files at paths.
func treeImage(t *testing.T, paths ...string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		tw.WriteHeader(&tar.Header{Name: p, Mode: 0o755, Typeflag: tar.TypeReg})
	}
	tw.Close()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

var bootableFiles = []string{"usr/lib/systemd/systemd", "usr/sbin/init", "usr/bin/dbus-daemon", "usr/bin/curl", "etc/ssl/certs/ca-certificates.crt"}

func testRuntime(t *testing.T) *container.Runtime {
	t.Helper()
	st, err := image.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &container.Runtime{Store: st}
}

// closedRegistry returns a loopback address nothing listens on: pulls from
// it fail at once with "connection refused".
func closedRegistry(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func debianEntry(t *testing.T, source string) curated.Entry {
	t.Helper()
	c, err := curated.Parse([]byte(`images:
  - name: debian-bookworm
    family: debian
    package-manager: apt-get
    package-type: deb
    image: ` + source + `
    mirror: {suite: bookworm}
`))
	if err != nil {
		t.Fatal(err)
	}
	return c.Entries()[0]
}

func TestAcquireFallsBackToStoredMirrorBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking images needs root")
	}
	rt := testRuntime(t)
	ctx := context.Background()
	e := debianEntry(t, closedRegistry(t)+"/library/debian:bookworm-slim")
	built, err := rt.Store.Import(ctx, image.MustParseReference(e.MirrorReference()), treeImage(t, bootableFiles...))
	if err != nil {
		t.Fatal(err)
	}

	// Missing: a stored mirror build serves without asking the registry.
	var notes []string
	opts := Options{Notify: func(m string) { notes = append(notes, m) }}
	got, err := Get(ctx, rt, e, opts)
	if err != nil || got.Image.Digest != built.Digest || got.RootFS != built.RootFS || len(notes) != 0 {
		t.Fatalf("Get = %+v, %v (notes %q)", got, err, notes)
	}

	// Always: the registry is asked, fails, and the mirror build is used,
	// saying why.
	opts.Pull = container.PullAlways
	got, err = Get(ctx, rt, e, opts)
	if err != nil || got.Image.Reference != "mirror.local/debian:bookworm" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if len(notes) != 2 || notes[0] != "pulling "+e.Source ||
		!strings.Contains(notes[1], "connection refused; using the image built from http://deb.debian.org/debian on ") {
		t.Errorf("notes = %q", notes)
	}

	// --source=registry never falls back.
	opts.Source = SourceRegistry
	if _, err := Get(ctx, rt, e, opts); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("registry source: %v", err)
	}
}

func TestAcquireRefuses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking images needs root")
	}
	rt := testRuntime(t)
	ctx := context.Background()
	e := debianEntry(t, "registry.invalid/debian:12")

	if _, err := Get(ctx, rt, e, Options{Source: "ftp"}); !errors.As(err, new(*UsageError)) || err.Error() != `unexpected --source "ftp" (valid: auto, registry, mirror)` {
		t.Errorf("bad source: %v", err)
	}
	noMirror := e
	noMirror.Mirror = nil
	if _, err := Get(ctx, rt, noMirror, Options{Source: SourceMirror}); err == nil || !strings.Contains(err.Error(), "has no mirror source") {
		t.Errorf("mirror source without a mirror: %v", err)
	}

	// An entry that must not be prepared is used only if it boots as it is.
	e.NoPrepare = "without a subscription dnf cannot install what booting needs"
	stored, err := rt.Store.Import(ctx, image.MustParseReference(e.MirrorReference()), treeImage(t, "usr/bin/dnf", "usr/bin/curl"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Get(ctx, rt, e, Options{})
	if !errors.Is(err, image.ErrNotBootable) || err.Error() != "preparing mirror.local/debian:bookworm: image cannot be booted: it lacks systemd, init, dbus, ca-certificates and without a subscription dnf cannot install what booting needs" {
		t.Errorf("not preparable: %v", err)
	}
	if _, ok := rt.Store.Prepared(stored); ok {
		t.Error("an image lacking systemd counts as prepared")
	}
}
