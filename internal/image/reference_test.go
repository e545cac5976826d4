package image

import "testing"

func TestParseReference(t *testing.T) {
	tests := []struct {
		in, want, registry, repo string
	}{
		{"debian:bookworm-slim", "docker.io/library/debian:bookworm-slim", "docker.io", "library/debian"},
		{"debian", "docker.io/library/debian:latest", "docker.io", "library/debian"},
		{"opensuse/tumbleweed", "docker.io/opensuse/tumbleweed:latest", "docker.io", "opensuse/tumbleweed"},
		{"docker.io/library/debian:12", "docker.io/library/debian:12", "docker.io", "library/debian"},
		{"index.docker.io/library/debian:12", "docker.io/library/debian:12", "docker.io", "library/debian"},
		{"registry.suse.com/bci/bci-base:15.4", "registry.suse.com/bci/bci-base:15.4", "registry.suse.com", "bci/bci-base"},
		{"quay.io/centos/centos:stream9", "quay.io/centos/centos:stream9", "quay.io", "centos/centos"},
		{"docker://registry.access.redhat.com/ubi8/ubi-minimal", "registry.access.redhat.com/ubi8/ubi-minimal:latest", "registry.access.redhat.com", "ubi8/ubi-minimal"},
		{"127.0.0.1:5000/x/y:z", "127.0.0.1:5000/x/y:z", "127.0.0.1:5000", "x/y"},
		{"debian@sha256:" + sixtyFour, "docker.io/library/debian@sha256:" + sixtyFour, "docker.io", "library/debian"},
	}
	for _, tt := range tests {
		r, err := ParseReference(tt.in)
		if err != nil {
			t.Errorf("ParseReference(%q): %v", tt.in, err)
			continue
		}
		if got := r.String(); got != tt.want {
			t.Errorf("ParseReference(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if r.Registry() != tt.registry || r.Repository() != tt.repo {
			t.Errorf("ParseReference(%q): registry %q repo %q, want %q %q", tt.in, r.Registry(), r.Repository(), tt.registry, tt.repo)
		}
	}
}

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseReferenceErrors(t *testing.T) {
	for _, in := range []string{"", "docker://", "Debian:12", "debian:bad tag", " debian", "debian@sha256:abc"} {
		if _, err := ParseReference(in); err == nil {
			t.Errorf("ParseReference(%q) succeeded, want error", in)
		}
	}
}

func TestMirrorReference(t *testing.T) {
	r := MustParseReference("debian:bookworm-slim")
	m, err := r.at("127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Name(); got != "127.0.0.1:5000/library/debian:bookworm-slim" {
		t.Errorf("mirror reference = %q", got)
	}
	if got := m.Context().Scheme(); got != "http" {
		t.Errorf("loopback mirror scheme = %q, want http", got)
	}
	m, _ = MustParseReference("quay.io/a/b@sha256:" + sixtyFour).at("mirror.example:443")
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
	if got, want := m.String(), "docker.io=127.0.0.1:5000,docker.io=[::1]:5001,quay.io=mirror.example:5000"; got != want {
		t.Errorf("ParseMirrors = %q, want %q", got, want)
	}
	if m["docker.io"][0] != "127.0.0.1:5000" {
		t.Errorf("mirror order lost: %v", m["docker.io"])
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
	if err != nil || PlatformString(*p) != "linux/arm/v7" {
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
	if !platformMatches(*arm8, *arm) || !platformMatches(*arm, *arm8) || platformMatches(*amd, *arm) {
		t.Error("platformMatches wrong")
	}
}
