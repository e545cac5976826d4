package probe

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallScript(t *testing.T) {
	paths := []string{"/run/postroj/packages/x_1.0_amd64.deb"}
	rpms := []string{"/run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}
	for _, tt := range []struct {
		manager     string
		names, path []string
		want        []string // lines after the preamble
	}{
		{"apt-get", nil, paths, []string{"apt-get update -q", "apt-get install -y -q /run/postroj/packages/x_1.0_amd64.deb"}},
		{"apt", []string{"apache2"}, nil, []string{"apt-get update -q", "apt-get install -y -q apache2"}},
		{"dnf", nil, rpms, []string{"dnf install -y /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}},
		{"yum", []string{"httpd"}, rpms, []string{"yum install -y httpd", "yum install -y /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}},
		{"microdnf", nil, rpms, []string{"microdnf install -y /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}},
		{"zypper", nil, rpms, []string{"zypper --non-interactive install --allow-unsigned-rpm /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}},
		{"zypper", []string{"apache2"}, nil, []string{"zypper --non-interactive install apache2"}},
		{"pacman", nil, []string{"/run/postroj/packages/x-1-1-any.pkg.tar.zst"}, []string{"pacman -Sy --noconfirm", "pacman -U --noconfirm /run/postroj/packages/x-1-1-any.pkg.tar.zst"}},
		{"apt-get", nil, []string{"/run/postroj/packages/it's.deb"}, []string{"apt-get update -q", `apt-get install -y -q '/run/postroj/packages/it'\''s.deb'`}},
	} {
		m, ok := LookupManager(tt.manager)
		if !ok {
			t.Fatalf("LookupManager(%q) found nothing", tt.manager)
		}
		got := strings.Split(strings.TrimSuffix(m.InstallScript(tt.names, tt.path), "\n"), "\n")
		want := append([]string{"set -e", "export DEBIAN_FRONTEND=noninteractive"}, tt.want...)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s %v %v:\n%s\nwant:\n%s", tt.manager, tt.names, tt.path, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// fakeRoot makes a root filesystem with the given files, usr-merged like
// current distributions (bin -> usr/bin).
func fakeRoot(t *testing.T, files ...string) string {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	for _, f := range files {
		p := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func managerNames(ms []Manager) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name)
	}
	return strings.Join(s, " ")
}

func TestChooseManager(t *testing.T) {
	for _, tt := range []struct {
		name    string
		files   []string
		types   []Type
		have    string
		want    string
		wantErr string
	}{
		{"debian", []string{"usr/bin/apt-get", "usr/bin/dpkg"}, []Type{Deb}, "apt-get", "apt-get", ""},
		{"debian, repository packages only", []string{"usr/bin/apt-get"}, nil, "apt-get", "apt-get", ""},
		{"fedora with yum link", []string{"usr/bin/dnf", "usr/bin/yum"}, []Type{RPM}, "dnf yum", "dnf", ""},
		{"centos 7", []string{"usr/bin/yum"}, []Type{RPM, RPM}, "yum", "yum", ""},
		{"opensuse", []string{"usr/bin/zypper"}, []Type{RPM}, "zypper", "zypper", ""},
		{"arch", []string{"usr/bin/pacman"}, []Type{Pacman}, "pacman", "pacman", ""},
		{"debian with dnf: rpm goes to dnf", []string{"usr/bin/apt-get", "usr/bin/dnf"}, []Type{RPM}, "apt-get dnf", "dnf", ""},
		{"deb on centos", []string{"usr/bin/dnf"}, []Type{Deb}, "dnf", "", "deb packages cannot be installed with dnf"},
		{"rpm on debian", []string{"usr/bin/apt-get"}, []Type{RPM}, "apt-get", "", "rpm packages cannot be installed with apt-get"},
		{"mixed", []string{"usr/bin/apt-get", "usr/bin/dnf"}, []Type{Deb, RPM}, "apt-get dnf", "", "deb and rpm packages cannot be installed"},
		{"alpine", []string{"sbin/apk"}, []Type{Deb}, "", "", "no supported package manager"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			have, err := ImageManagers(fakeRoot(t, tt.files...))
			if err != nil {
				t.Fatal(err)
			}
			if got := managerNames(have); got != tt.have {
				t.Errorf("ImageManagers = %q, want %q", got, tt.have)
			}
			m, err := ChooseManager(have, tt.types)
			switch {
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ChooseManager: %v, want an error saying %q", err, tt.wantErr)
			case tt.wantErr != "" && len(have) > 0 && !errors.Is(err, ErrIncompatible):
				t.Errorf("error %v does not wrap ErrIncompatible", err)
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ChooseManager: %v", err)
			case m.Name != tt.want:
				t.Errorf("ChooseManager = %q, want %q", m.Name, tt.want)
			}
		})
	}
}

func TestImageManagersStaysInRoot(t *testing.T) {
	// An absolute symlink in the image must resolve inside it, not on the
	// host (which has apt-get).
	root := fakeRoot(t)
	os.Symlink("/nonexistent/apt-get", filepath.Join(root, "usr/bin/apt-get"))
	have, err := ImageManagers(root)
	if err != nil || len(have) != 0 {
		t.Fatalf("ImageManagers = %q, %v; want none", managerNames(have), err)
	}
}
