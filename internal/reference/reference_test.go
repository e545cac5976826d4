package reference

import "testing"

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParse(t *testing.T) {
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
		r, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := r.String(); got != tt.want {
			t.Errorf("Parse(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if r.Registry() != tt.registry || r.Repository() != tt.repo {
			t.Errorf("Parse(%q): registry %q repo %q, want %q %q", tt.in, r.Registry(), r.Repository(), tt.registry, tt.repo)
		}
	}
}

func TestParseReferenceErrors(t *testing.T) {
	for _, in := range []string{"", "docker://", "Debian:12", "debian:bad tag", " debian", "debian@sha256:abc"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) succeeded, want error", in)
		}
	}
}
