package testregistry

import (
	"archive/tar"
	"io"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

func TestPushDebian(t *testing.T) {
	s := startServer(t)
	fakeMmdebstrap(t, "1.0")
	c := &Cache{Dir: t.TempDir()}
	ctx := testContext(t)

	single, err := s.PushDebian(ctx, c, BookwormSlim, "library/debian:single", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := s.Addr() + "/library/debian:single"; single.Ref != want {
		t.Errorf("Ref %q, want %q", single.Ref, want)
	}
	if single.Index != (v1.Hash{}) || single.Other != (v1.Hash{}) {
		t.Errorf("single image has Index %v, Other %v; want zero", single.Index, single.Other)
	}
	img, err := s.Image(ctx, "debian:single", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := img.Digest(); got != single.Digest {
		t.Errorf("debian:single is %s, PushDebian said %s", got, single.Digest)
	}

	idx, err := s.PushDebian(ctx, c, BookwormSlim, "debian:index", true)
	if err != nil {
		t.Fatal(err)
	}
	// The same layer and platform: the host image is the same manifest.
	if idx.Digest != single.Digest || idx.Layer.Info.Digest != single.Layer.Info.Digest {
		t.Errorf("index host image %s (layer %s), single %s (layer %s)", idx.Digest, idx.Layer.Info.Digest, single.Digest, single.Layer.Info.Digest)
	}
	if idx.Index == (v1.Hash{}) || idx.Other == (v1.Hash{}) {
		t.Fatalf("index push has Index %v, Other %v; want both", idx.Index, idx.Other)
	}
	desc, err := s.Image(ctx, "debian:index", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := desc.Digest(); got != idx.Digest {
		t.Errorf("debian:index for the host is %s, want %s", got, idx.Digest)
	}
	other := OtherPlatform()
	oimg, err := s.Image(ctx, "debian:index", &other)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := oimg.Digest(); got != idx.Other {
		t.Errorf("debian:index for %s is %s, want %s", other, got, idx.Other)
	}
	if got := platformFile(t, oimg); got != other.String() {
		t.Errorf("etc/platform of the %s image is %q", other, got)
	}

	// Pushing again gives the same digests: tests and tools can rely on them.
	again, err := s.PushDebian(ctx, c, BookwormSlim, "debian:index", true)
	if err != nil {
		t.Fatal(err)
	}
	if again.Index != idx.Index || again.Other != idx.Other || again.Digest != idx.Digest {
		t.Errorf("second push %+v, first %+v", again, idx)
	}
}

// platformFile returns the content of etc/platform in img.
func platformFile(t *testing.T, img v1.Image) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatal("no etc/platform in the image")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "etc/platform" {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(data)
		}
	}
}

func TestServerDone(t *testing.T) {
	s := startServer(t)
	select {
	case <-s.Done():
		t.Fatal("Done is closed while the registry runs")
	default:
	}
	s.Close()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done is still open after Close")
	}
}
