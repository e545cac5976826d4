package image

import (
	"reflect"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestMirrorReference(t *testing.T) {
	r := MustParseReference("debian:bookworm-slim")
	m, err := at(r, "127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Name(); got != "127.0.0.1:5000/library/debian:bookworm-slim" {
		t.Errorf("mirror reference = %q", got)
	}
	if got := m.Context().Scheme(); got != "http" {
		t.Errorf("loopback mirror scheme = %q, want http", got)
	}
	m, _ = at(MustParseReference("quay.io/a/b@sha256:"+sixtyFour), "mirror.example:443")
	if got := m.Name(); got != "mirror.example:443/a/b@sha256:"+sixtyFour {
		t.Errorf("mirror digest reference = %q", got)
	}
	if got := m.Context().Scheme(); got != "https" {
		t.Errorf("remote mirror scheme = %q, want https", got)
	}
}

func TestParseMirrors(t *testing.T) {
	m, err := ParseMirrors(" docker.io=127.0.0.1:5000, quay.io=http://mirror.example:5000/ ,docker.io=[::1]:5001,")
	if err != nil {
		t.Fatal(err)
	}
	// In order, per registry.
	if want := (Mirrors{"docker.io": {"127.0.0.1:5000", "[::1]:5001"}, "quay.io": {"mirror.example:5000"}}); !reflect.DeepEqual(m, want) {
		t.Errorf("ParseMirrors = %q, want %q", m, want)
	}
	for _, bad := range []string{"docker.io", "=x", "docker.io=", "docker.io=host/path"} {
		if _, err := ParseMirrors(bad); err == nil {
			t.Errorf("ParseMirrors(%q) succeeded, want error", bad)
		}
	}
}

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.1.2.3": true, "[::1]:5000": true, "localhost:80": true, "localhost": true,
		"10.0.0.1:5000": false, "192.168.1.1": false, "example.com:5000": false, "[::2]:1": false,
	} {
		if got := isLoopbackHost(host); got != want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestPlatform(t *testing.T) {
	p, err := ParsePlatform("linux/arm/v7")
	if err != nil || p.String() != "linux/arm/v7" {
		t.Fatalf("ParsePlatform: %v %v", p, err)
	}
	for _, bad := range []string{"linux", "/amd64", "linux/", "a/b/c/d"} {
		if _, err := ParsePlatform(bad); err == nil {
			t.Errorf("ParsePlatform(%q) succeeded", bad)
		}
	}
	amd, _ := ParsePlatform("linux/amd64")
	arm8, _ := ParsePlatform("linux/arm64/v8")
	arm, _ := ParsePlatform("linux/arm64")
	arm7, _ := ParsePlatform("linux/arm/v7")
	arm6, _ := ParsePlatform("linux/arm/v6")
	arm32, _ := ParsePlatform("linux/arm")
	for _, tt := range []struct {
		have, want *v1.Platform
		ok         bool
	}{
		{arm8, arm, true}, {arm, arm8, true}, {amd, arm, false}, {arm, amd, false},
		{arm7, arm32, true}, {arm32, arm7, true}, {arm6, arm7, false}, {arm7, arm6, false}, {arm7, arm8, false},
	} {
		if got := platformMatches(*tt.have, *tt.want); got != tt.ok {
			t.Errorf("platformMatches(%s, %s) = %v, want %v", tt.have, tt.want, got, tt.ok)
		}
	}
	if h := HostPlatform(); h.OS != "linux" || h.Architecture != runtime.GOARCH ||
		(h.Variant != "") != (h.Architecture == "arm64" || h.Architecture == "arm") {
		t.Errorf("HostPlatform() = %s", h)
	}
}
