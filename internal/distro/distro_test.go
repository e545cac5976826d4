package distro

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/racker-postroj/racker/internal/rootfs"
	"github.com/racker-postroj/racker/internal/testtree"
)

func TestMissing(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		want    []string
	}{
		{"slim debian", []string{"usr/bin/apt-get", "etc/os-release"}, []string{"systemd", "init", "dbus", "curl", "ca-certificates"}},
		{"merged usr through symlinks", []string{"lib -> usr/lib", "usr/lib/systemd/systemd", "bin -> /usr/bin", "usr/bin/dbus-daemon",
			"usr/bin/wget", "etc/pki/tls/certs/ca-bundle.crt", "sbin -> usr/sbin", "usr/sbin/init -> /lib/systemd/systemd"}, nil},
		{"broker and curl", []string{"usr/lib/systemd/systemd", "usr/bin/dbus-broker", "usr/bin/curl", "etc/ssl/certs/ca-certificates.crt",
			"sbin/init -> ../usr/lib/systemd/systemd"}, nil},
		{"systemd without init", []string{"usr/lib/systemd/systemd", "usr/bin/dbus-broker", "usr/bin/curl", "etc/ssl/cert.pem"}, []string{"init"}},
		// A link that points at the host's files resolves inside the tree.
		{"absolute links stay inside", []string{"usr/lib/systemd/systemd -> /proc/1/exe", "usr/bin/curl -> /usr/bin/env",
			"usr/bin/dbus-daemon -> ../../../../../../bin/sh", "etc/ssl/cert.pem -> /etc/passwd", "sbin/init -> /sbin/init"},
			[]string{"systemd", "init", "dbus", "curl", "ca-certificates"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Missing(testtree.Make(t, tt.entries...))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Missing = %v, want %v", got, tt.want)
			}
		})
	}
	if got := BootPackages(); !reflect.DeepEqual(got, []string{"systemd", "init", "dbus", "curl", "ca-certificates"}) {
		t.Errorf("BootPackages = %v", got)
	}
}

func names(ms []Manager) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name)
	}
	return strings.Join(s, " ")
}

func TestDetect(t *testing.T) {
	tests := []struct {
		entries []string
		want    string
		pkgs    []string // what systemd, init and dbus are called
	}{
		{[]string{"usr/bin/apt-get", "usr/bin/dpkg"}, "apt-get", []string{"systemd", "systemd-sysv", "dbus"}},
		{[]string{"usr/bin/yum -> dnf-3", "usr/bin/dnf -> dnf-3", "usr/bin/dnf-3"}, "dnf yum", []string{"systemd", "dbus"}},
		{[]string{"usr/bin/microdnf"}, "microdnf", []string{"systemd", "dbus"}},
		{[]string{"usr/bin/yum"}, "yum", []string{"systemd", "dbus"}},
		{[]string{"usr/bin/zypper"}, "zypper", []string{"systemd", "systemd-sysvinit", "dbus-1"}},
		{[]string{"usr/bin/pacman"}, "pacman", []string{"systemd", "systemd-sysvcompat", "dbus"}},
		{[]string{"bin -> usr/bin", "usr/bin/apt-get", "usr/bin/dnf"}, "apt-get dnf", []string{"systemd", "systemd-sysv", "dbus"}},
	}
	for _, tt := range tests {
		have, err := Detect(testtree.Make(t, tt.entries...))
		if err != nil || names(have) != tt.want {
			t.Errorf("%v: got %q, %v; want %q", tt.entries, names(have), err, tt.want)
			continue
		}
		if got := have[0].Packages([]string{"systemd", "init", "dbus", "systemd"}); !reflect.DeepEqual(got, tt.pkgs) {
			t.Errorf("%s packages = %v, want %v", have[0].Name, got, tt.pkgs)
		}
	}
	for _, tt := range []struct {
		entries []string
		want    string
	}{
		{[]string{"sbin/apk"}, "no supported package manager: Alpine has no systemd"},
		{[]string{"bin/sh"}, "no supported package manager (apt-get, dnf, yum, microdnf, zypper, pacman)"},
		// An absolute symlink in the image resolves inside it, not on the
		// host (which has apt-get).
		{[]string{"usr/bin/apt-get -> /usr/bin/apt-get"}, "no supported package manager (apt-get,"},
		{[]string{"usr/bin/apt-get -> ../../../../../usr/bin/apt-get"}, "no supported package manager (apt-get,"},
	} {
		have, err := Detect(testtree.Make(t, tt.entries...))
		if !errors.Is(err, ErrNoManager) || !strings.HasPrefix(err.Error(), tt.want) || have != nil {
			t.Errorf("%v: Detect = %q, %v; want an error saying %q", tt.entries, names(have), err, tt.want)
		}
	}
}

func TestChoose(t *testing.T) {
	get := func(ns ...string) []Manager {
		var out []Manager
		for _, n := range ns {
			m, ok := LookupManager(n)
			if !ok {
				t.Fatalf("no manager %s", n)
			}
			out = append(out, m)
		}
		return out
	}
	for _, tt := range []struct {
		name    string
		have    []string
		types   []PackageType
		want    string
		wantErr string
	}{
		{"debian", []string{"apt-get"}, []PackageType{Deb}, "apt-get", ""},
		{"repository packages only", []string{"apt-get"}, nil, "apt-get", ""},
		{"fedora with yum link", []string{"dnf", "yum"}, []PackageType{RPM}, "dnf", ""},
		{"centos 7", []string{"yum"}, []PackageType{RPM, RPM}, "yum", ""},
		{"opensuse", []string{"zypper"}, []PackageType{RPM}, "zypper", ""},
		{"arch", []string{"pacman"}, []PackageType{Pacman}, "pacman", ""},
		{"debian with dnf: rpm goes to dnf", []string{"apt-get", "dnf"}, []PackageType{RPM}, "dnf", ""},
		{"deb on centos", []string{"dnf"}, []PackageType{Deb}, "", "package type does not fit the image: deb packages cannot be installed with dnf"},
		{"rpm on debian", []string{"apt-get"}, []PackageType{RPM}, "", "rpm packages cannot be installed with apt-get"},
		{"mixed", []string{"apt-get", "dnf"}, []PackageType{Deb, RPM, Deb}, "", "deb and rpm packages cannot be installed with apt-get, dnf"},
	} {
		m, err := Choose(get(tt.have...), tt.types)
		switch {
		case tt.wantErr != "" && (!errors.Is(err, ErrIncompatible) || !strings.HasSuffix(err.Error(), tt.wantErr)):
			t.Errorf("%s: Choose = %v, want an ErrIncompatible saying %q", tt.name, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || m.Name != tt.want):
			t.Errorf("%s: Choose = %q, %v; want %q", tt.name, m.Name, err, tt.want)
		}
	}
	if _, err := Choose(nil, []PackageType{Deb}); !errors.Is(err, ErrNoManager) {
		t.Errorf("Choose(nil) = %v, want ErrNoManager", err)
	}
}

func TestInstallScript(t *testing.T) {
	paths := []string{"/run/postroj/packages/x_1.0_amd64.deb"}
	rpms := []string{"/run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}
	for _, tt := range []struct {
		manager     string
		names, path []string
		want        []string // lines after the preamble
	}{
		{"apt-get", nil, paths, []string{"apt-get install -y -q /run/postroj/packages/x_1.0_amd64.deb"}},
		{"apt-get", []string{"apache2"}, nil, []string{"apt-get install -y -q apache2"}},
		{"dnf", nil, rpms, []string{"dnf install -y /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}},
		{"yum", []string{"httpd"}, rpms, []string{"yum install -y httpd", "yum install -y /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}},
		{"microdnf", nil, rpms, []string{"microdnf install -y /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}},
		{"zypper", nil, rpms, []string{"zypper --non-interactive --gpg-auto-import-keys install --allow-unsigned-rpm /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm"}},
		{"zypper", []string{"apache2"}, nil, []string{"zypper --non-interactive --gpg-auto-import-keys install apache2"}},
		{"pacman", nil, []string{"/run/postroj/packages/x-1-1-any.pkg.tar.zst"}, []string{"pacman -U --noconfirm /run/postroj/packages/x-1-1-any.pkg.tar.zst"}},
		{"pacman", []string{"apache"}, nil, []string{"pacman -S --noconfirm --needed apache"}},
		{"apt-get", nil, []string{"/run/postroj/packages/it's.deb"}, []string{`apt-get install -y -q '/run/postroj/packages/it'\''s.deb'`}},
	} {
		m, ok := LookupManager(tt.manager)
		if !ok {
			t.Fatalf("LookupManager(%q) found nothing", tt.manager)
		}
		got := m.InstallScript(tt.names, tt.path)
		want := strings.Join(append([]string{"set -e", "export DEBIAN_FRONTEND=noninteractive"}, tt.want...), "\n") + "\n"
		if got != want {
			t.Errorf("%s %v %v:\n%s\nwant:\n%s", tt.manager, tt.names, tt.path, got, want)
		}
	}
}

// The refresh runs before the install; after indexes were put back, apt
// must revalidate every one of them or fail, and keep the binary caches
// that still fit.
func TestRefreshScript(t *testing.T) {
	for _, tt := range []struct {
		manager string
		kept    bool
		want    []string // lines after the preamble, none for no script
	}{
		{"apt-get", false, []string{"apt-get update -q -o Acquire::Languages=none"}},
		{"apt-get", true, []string{"apt-get update -q -o Acquire::Languages=none -o APT::Update::Error-Mode=any -o pkgCacheFile::Generate=false",
			"apt-cache gencaches -q"}},
		{"pacman", false, []string{"pacman -Sy --noconfirm"}},
		{"pacman", true, []string{"pacman -Sy --noconfirm"}},
		{"dnf", false, nil},
		{"zypper", true, nil},
	} {
		m, _ := LookupManager(tt.manager)
		got := m.RefreshScript(tt.kept)
		want := ""
		if tt.want != nil {
			want = strings.Join(append([]string{"set -e", "export DEBIAN_FRONTEND=noninteractive"}, tt.want...), "\n") + "\n"
		}
		if got != want {
			t.Errorf("%s kept=%v:\n%s\nwant:\n%s", tt.manager, tt.kept, got, want)
		}
	}
}

func TestPrepareScript(t *testing.T) {
	for manager, want := range map[string][]string{
		"apt-get":  {"apt-get update -q -o Acquire::Languages=none", "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-unsafe-io systemd systemd-sysv dbus curl ca-certificates"},
		"dnf":      {"dnf install -y --setopt=install_weak_deps=False systemd dbus curl ca-certificates", "dnf clean all"},
		"yum":      {"yum install -y systemd dbus curl ca-certificates", "yum clean all"},
		"microdnf": {"microdnf install -y systemd dbus curl ca-certificates", "microdnf clean all"},
		"zypper": {"zypper --non-interactive --gpg-auto-import-keys install --no-recommends systemd systemd-sysvinit dbus-1 curl ca-certificates",
			"zypper clean --all"},
		"pacman": {"pacman -Sy --noconfirm", "pacman -S --noconfirm --needed systemd systemd-sysvcompat dbus curl ca-certificates"},
	} {
		m, _ := LookupManager(manager)
		got := m.PrepareScript(m.Packages(BootPackages()))
		w := strings.Join(append([]string{"set -e", "export DEBIAN_FRONTEND=noninteractive"}, want...), "\n") + "\n"
		if got != w {
			t.Errorf("%s:\n%s\nwant:\n%s", manager, got, w)
		}
	}
}

// The table is complete: every manager installs a known type, by name and
// from files, and is found by its name.
func TestManagerTable(t *testing.T) {
	if got := strings.Join(ManagerNames(), " "); got != "apt-get dnf yum microdnf zypper pacman" {
		t.Errorf("ManagerNames = %s", got)
	}
	for _, m := range managers {
		if !slices.Contains(PackageTypes, m.Type) || m.install == nil || m.files == nil || !strings.HasPrefix(m.Binary, "/usr/bin/") {
			t.Errorf("%s: incomplete: %+v", m.Name, m)
		}
		if got, ok := LookupManager(m.Name); !ok || got.Name != m.Name {
			t.Errorf("LookupManager(%s) = %v", m.Name, ok)
		}
	}
	if _, ok := LookupManager("apk"); ok {
		t.Error("LookupManager(apk) found one")
	}
	for _, tt := range []struct {
		t    PackageType
		want string
	}{{Deb, ".deb"}, {RPM, ".rpm"}, {Pacman, ".pkg.tar.zst"}, {"", ""}} {
		if got := tt.t.Extension(); got != tt.want {
			t.Errorf("%q.Extension() = %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestFamilies(t *testing.T) {
	if got := strings.Join(Families(), " "); got != "debian ubuntu fedora centos rhel rocky alma opensuse sles amazon oracle arch" {
		t.Errorf("Families = %s", got)
	}
	for name, want := range map[string]PackageType{"debian": Deb, "ubuntu": Deb, "centos": RPM, "sles": RPM, "arch": Pacman} {
		if f, ok := LookupFamily(name); !ok || f.Type != want {
			t.Errorf("LookupFamily(%s) = %+v, %v; want type %s", name, f, ok, want)
		}
	}
	if _, ok := LookupFamily("gentoo"); ok {
		t.Error("LookupFamily(gentoo) found one")
	}
}

func TestNeedsNsenter(t *testing.T) {
	for _, tc := range []struct {
		version int
		known   bool
		want    bool
	}{
		{252, true, false},
		{225, true, false},
		{224, true, true},
		{219, true, true}, // CentOS 7
		{0, false, true},
	} {
		if got := NeedsNsenter(tc.version, tc.known); got != tc.want {
			t.Errorf("NeedsNsenter(%d, %v) = %v, want %v", tc.version, tc.known, got, tc.want)
		}
	}
}

func TestSystemdVersion(t *testing.T) {
	for _, tc := range []struct {
		files   []string
		version int
		known   bool
	}{
		{nil, 0, false},
		{[]string{"usr/lib/systemd/libsystemd-shared-252.so", "usr/lib/systemd/systemd"}, 252, true},
		{[]string{"lib/systemd/libsystemd-shared-237.so"}, 237, true},
		{[]string{"usr/lib64/systemd/libsystemd-shared-254.10-1.fc39.so"}, 254, true},
		{[]string{"usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-255.so"}, 255, true},
		{[]string{"usr/lib/systemd/systemd", "usr/lib/systemd/libsystemd-core-219.so"}, 0, false},
	} {
		dir := t.TempDir()
		for _, f := range tc.files {
			os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755)
			os.WriteFile(filepath.Join(dir, f), nil, 0o644)
		}
		root, err := rootfs.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		v, known := SystemdVersion(root)
		root.Close()
		if v != tc.version || known != tc.known {
			t.Errorf("%q: version %d %v, want %d %v", tc.files, v, known, tc.version, tc.known)
		}
	}
}

func TestDebianArch(t *testing.T) {
	for goarch, deb := range map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf", "386": "i386", "ppc64le": "ppc64el", "s390x": "s390x"} {
		if got := DebianArch(goarch); got != deb {
			t.Errorf("DebianArch(%s) = %s, want %s", goarch, got, deb)
		}
	}
}
