package testregistry

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/racker-postroj/racker/internal/image"
)

func specLayer(t *testing.T, spec string, level int) *MemLayer {
	t.Helper()
	entries, err := ParseSpec(spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := WriteTar(entries)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewMemLayer(data, level, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestServerPushAndFetch(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Errorf("Addr %q, want 127.0.0.1:PORT", s.Addr())
	}
	layer := specLayer(t, "dir etc 0755\nfile etc/hostname 0644 pushed", -1)
	digest, err := s.Push(ctx, "library/probe:1", layer)
	if err != nil {
		t.Fatal(err)
	}
	// The Docker Hub spelling and the local one name the same manifest.
	for _, ref := range []string{"probe:1", "docker.io/library/probe:1", s.Addr() + "/library/probe:1", "probe@" + digest.String()} {
		img, err := s.Image(ctx, ref, nil)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if got, _ := img.Digest(); got != digest {
			t.Errorf("%s: digest %s, want %s", ref, got, digest)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OS != "linux" || cfg.Architecture != image.HostPlatform().Architecture {
			t.Errorf("%s: config platform %s/%s", ref, cfg.OS, cfg.Architecture)
		}
	}
	if _, err := s.Ref("quay.io/x/y:z"); err == nil {
		t.Error("Ref accepted a registry that is neither docker.io nor the test registry")
	}
}

func TestServerIndex(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)
	host, err := NewImage(image.HostPlatform(), types.DockerManifestSchema2, specLayer(t, "file host 0644", -1))
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewImage(OtherPlatform(), types.DockerManifestSchema2, specLayer(t, "file other 0644", -1))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := NewIndex(host, other)
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := idx.MediaType(); mt != types.DockerManifestList {
		t.Errorf("index media type %s, want a Docker manifest list", mt)
	}
	if _, err := s.WriteIndex(ctx, "multi:latest", idx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		platform *v1.Platform
		want     v1.Image
	}{{nil, host}, {&v1.Platform{OS: "linux", Architecture: OtherPlatform().Architecture}, other}} {
		img, err := s.Image(ctx, "multi:latest", tt.platform)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := img.Digest()
		want, _ := tt.want.Digest()
		if got != want {
			t.Errorf("platform %v: digest %s, want %s", tt.platform, got, want)
		}
	}
}

func TestReplaceBlob(t *testing.T) {
	s := startServer(t)
	ctx := testContext(t)
	entries, err := ParseSpec("file f 0644 size=5000", nil)
	if err != nil {
		t.Fatal(err)
	}
	goodTar, _ := WriteTar(entries)
	bad, _ := Corrupt(entries)
	badTar, _ := WriteTar(bad)
	good, err := NewMemLayer(goodTar, 0, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	worse, err := NewMemLayer(badTar, 0, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Push(ctx, "corrupt:1", good); err != nil {
		t.Fatal(err)
	}
	d, _ := good.Digest()
	if err := s.ReplaceBlob(d, worse.Gzip[:10]); err == nil {
		t.Error("ReplaceBlob accepted a different length")
	}
	if err := s.ReplaceBlob(d, worse.Gzip); err != nil {
		t.Fatal(err)
	}
	img, err := s.Image(ctx, "corrupt:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// go-containerregistry verifies the digest as it reads.
	_, err = io.ReadAll(rc)
	if err == nil || !strings.Contains(err.Error(), "verifying sha256 checksum") {
		t.Errorf("reading the replaced blob: %v, want a digest mismatch", err)
	}
}

func TestServerClose(t *testing.T) {
	s := startServer(t)
	pid := s.cmd.Process.Pid
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("registry process %d still exists after Close", pid)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Close", s.Addr())
	}
	log, _ := os.ReadFile(s.LogPath())
	if !strings.Contains(string(log), "listening on") {
		t.Errorf("registry log lacks \"listening on\":\n%s", log)
	}
}
