package distro

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func writeTree(t *testing.T, files map[string]string) string {
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRepositoryURLs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"apt one-line", map[string]string{
			"etc/apt/sources.list": "# comment\ndeb http://deb.debian.org/debian bookworm main\n" +
				"deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://repo.example/apt stable main # trailing\n" +
				"deb-src tor+http://onion.example/debian bookworm main\n#deb http://disabled.example/ x main\ndeb cdrom:[Debian]/ bookworm main\n",
			"etc/apt/sources.list.d/extra.list": "deb http://security.debian.org/debian-security bookworm-security main\n",
		}, []string{"http://deb.debian.org/debian", "https://repo.example/apt", "http://onion.example/debian", "http://security.debian.org/debian-security"}},
		{"apt deb822", map[string]string{
			"etc/apt/sources.list.d/debian.sources": "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n" +
				"Types: deb\nURIs: http://deb.debian.org/debian-security\n http://mirror2.example/debian-security\nSuites: bookworm-security\n\n" +
				"Enabled: no\nTypes: deb\nURIs: http://off.example/debian\n",
		}, []string{"http://deb.debian.org/debian", "http://deb.debian.org/debian-security", "http://mirror2.example/debian-security"}},
		{"yum and dnf", map[string]string{
			"etc/yum.repos.d/fedora.repo": "[fedora]\nname=Fedora\n#baseurl=http://commented.example/\nmetalink=https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=$basearch\nenabled=1\n\n" +
				"[fedora-debuginfo]\nbaseurl=http://debug.example/\nenabled=0\n",
			"etc/yum.repos.d/centos.repo": "[base]\nbaseurl=http://vault.centos.org/8.5.2111/BaseOS/$basearch/os/\n        http://mirror.example/centos/\nmirrorlist=http://mirrorlist.centos.org/?release=8\n",
		}, []string{"http://vault.centos.org/8.5.2111/BaseOS/$basearch/os/", "http://mirror.example/centos/", "http://mirrorlist.centos.org/?release=8",
			"https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=$basearch"}},
		{"zypper", map[string]string{
			"etc/zypp/repos.d/repo-oss.repo": "[repo-oss]\nname=Main\nenabled=1\nautorefresh=1\nbaseurl=http://download.opensuse.org/tumbleweed/repo/oss/\ntype=rpm-md\n",
			"etc/zypp/repos.d/off.repo":      "[off]\nenabled=0\nbaseurl=http://off.example/\n",
		}, []string{"http://download.opensuse.org/tumbleweed/repo/oss/"}},
		{"pacman", map[string]string{
			"etc/pacman.conf":         "[options]\nArchitecture = auto\n[core]\nInclude = /etc/pacman.d/mirrorlist\n[custom]\nServer = http://custom.example/$repo\n",
			"etc/pacman.d/mirrorlist": "## Worldwide\n#Server = http://commented.example/$repo/os/$arch\nServer = https://geo.mirror.pkgbuild.com/$repo/os/$arch\n",
		}, []string{"https://geo.mirror.pkgbuild.com/$repo/os/$arch", "http://custom.example/$repo"}},
		{"none", map[string]string{"etc/os-release": "ID=scratch\n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RepositoryURLs(writeTree(t, tc.files))
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("got  %q\nwant %q", got, want)
			}
		})
	}
}
