package curated

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/reference"
)

func load(t *testing.T) *Catalogue {
	t.Helper()
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The original Python tool's names (postroj/registry.py: fullname and
// versionname of every curated distribution) keep working.
var originalNames = []string{
	"debian-stretch", "debian-9", "debian-buster", "debian-10", "debian-bullseye", "debian-11",
	"debian-bookworm", "debian-12", "debian-sid", "debian-unstable",
	"ubuntu-focal", "ubuntu-20", "ubuntu-jammy", "ubuntu-22",
	"fedora-35", "fedora-36", "fedora-37",
	"centos-7", "centos-8", "centos-9",
	"rhel-8", "rhel-9", "rockylinux-8",
	"opensuse-leap", "opensuse-15", "opensuse-tumbleweed", "opensuse-latest",
	"sles-15", "sles-bci", "sles-latest",
	"amazonlinux-2022", "oraclelinux-8", "archlinux-20220501",
}

// Today's releases the catalogue adds.
var currentNames = []string{
	"debian-trixie", "debian-13", "ubuntu-noble", "ubuntu-24", "fedora-41", "fedora-42",
	"centos-10", "centos-stream9", "centos-stream10", "rockylinux-9", "rockylinux-10",
	"almalinux-9", "almalinux-10", "rhel-10", "amazonlinux-2023", "oraclelinux-9",
	"opensuse-15.6", "opensuse-leap-16",
}

func TestCatalogueHasEveryName(t *testing.T) {
	c := load(t)
	for _, n := range append(slices.Clone(originalNames), currentNames...) {
		if _, err := c.Lookup(n); err != nil {
			t.Errorf("Lookup(%q): %v", n, err)
		}
	}
}

func TestCatalogueEntries(t *testing.T) {
	c := load(t)
	entries := c.Entries()
	if len(entries) < 30 {
		t.Fatalf("only %d entries", len(entries))
	}
	if entries[0].Name != "debian-stretch" {
		t.Errorf("first entry %s: Entries must keep catalogue order", entries[0].Name)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name, e.nameOS()+"-") {
			t.Errorf("%s: name does not start with its os", e.Name)
		}
		if _, err := reference.Parse(e.Source); err != nil {
			t.Errorf("%s: source: %v", e.Name, err)
		}
		if e.Source != reference.MustParse(e.Source).String() {
			t.Errorf("%s: source %s is not normalized", e.Name, e.Source)
		}
		if e.DefaultSource != SourceRegistry && e.DefaultSource != SourceMirror {
			t.Errorf("%s: default source %q", e.Name, e.DefaultSource)
		}
		if e.Family == "debian" {
			if e.Mirror == nil {
				t.Errorf("%s: Debian releases have a mirror source", e.Name)
				continue
			}
			archived := strings.Contains(e.Mirror.URL, "archive.debian.org")
			if archived && !e.EOL {
				t.Errorf("%s: on archive.debian.org but not end of life", e.Name)
			}
			if archived != (e.Setup != "") {
				t.Errorf("%s: an archived suite's registry image must point apt at the archive (setup), and only then", e.Name)
			}
			if _, err := reference.Parse(e.MirrorReference()); err != nil {
				t.Errorf("%s: mirror reference: %v", e.Name, err)
			}
		}
		if e.NoPrepare != "" && e.Notes == "" {
			t.Errorf("%s: say what to use instead of an image that cannot be prepared", e.Name)
		}
	}
}

// nameOS is the <os> part of the catalogue's naming scheme.
func (e Entry) nameOS() string { return strings.TrimSuffix(e.Name, "-"+e.Release) }

func TestCatalogueQuirks(t *testing.T) {
	c := load(t)
	get := func(name string) Entry {
		e, err := c.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if e := get("centos-8"); !strings.Contains(e.Setup, "vault.centos.org") || !strings.Contains(e.Setup, "#mirrorlist") || !e.EOL {
		t.Errorf("centos-8 must move to vault.centos.org before installing: %+v", e)
	}
	if e := get("centos-7"); e.Exec != "nsenter" || e.PackageManager != "yum" {
		t.Errorf("centos-7: %+v", e)
	}
	if e := get("rhel-9"); e.NoPrepare == "" || !strings.Contains(e.NoPrepare, "subscription") {
		t.Errorf("rhel-9 must not be prepared: %+v", e)
	}
	if e := get("rhel-8"); e.NoPrepare != "" {
		t.Errorf("rhel-8 can be prepared: %+v", e)
	}
	if e := get("debian-bookworm"); e.Source != "docker.io/library/debian:bookworm-slim" || e.MirrorReference() != "mirror.local/debian:bookworm" ||
		e.Mirror.URL != DefaultMirrorURL || e.EOL {
		t.Errorf("debian-bookworm: %+v %+v", e, e.Mirror)
	}
	if e := get("debian-unstable"); e.Name != "debian-sid" || e.Mirror.Suite != "sid" {
		t.Errorf("debian-unstable: %+v", e)
	}
	if e := get("archlinux-20220501"); e.Source != "docker.io/library/archlinux:base-20220501.0.54834" || e.PackageType != distro.Pacman {
		t.Errorf("archlinux: %+v", e)
	}
	if e := get("centos-9"); e.Source != "quay.io/centos/centos:stream9" {
		t.Errorf("centos-9: %+v", e)
	}
}

func TestEntriesAreCopies(t *testing.T) {
	c := load(t)
	e := c.Entries()[3]
	e.Aliases[0] = "changed"
	e.Mirror.Suite = "changed"
	again, _ := c.Lookup(e.Name)
	if again.Aliases[0] == "changed" || again.Mirror.Suite == "changed" {
		t.Error("changing a returned entry changed the catalogue")
	}
}

func TestLookup(t *testing.T) {
	c := load(t)
	for _, tc := range []struct {
		name, want string
	}{
		{"debian-bullseye", "debian-bullseye"},
		{"debian-11", "debian-bullseye"},
		{"Debian-11", "debian-bullseye"},
		{" ubuntu-22 ", "ubuntu-jammy"},
		{"centos-stream9", "centos-9"},
	} {
		e, err := c.Lookup(tc.name)
		if err != nil || e.Name != tc.want {
			t.Errorf("Lookup(%q) = %s, %v; want %s", tc.name, e.Name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name, msg string
	}{
		{"debian-bookwrom", `unknown image "debian-bookwrom" (did you mean debian-bookworm?)`},
		{"debian-12-slim", `unknown image "debian-12-slim" (did you mean debian-bookworm?)`},
		{"fedora-38", `unknown image "fedora-38" (did you mean fedora-35, fedora-36, fedora-37?)`},
		{"rocky-1", `unknown image "rocky-1" (did you mean rockylinux-8, rockylinux-9, rockylinux-10?)`},
		{"centos-stream", `unknown image "centos-stream" (did you mean centos-9, centos-10?)`},
		{"windows", `unknown image "windows" (postroj list-images shows the catalogue)`},
		{"", `unknown image "" (postroj list-images shows the catalogue)`},
	} {
		_, err := c.Lookup(tc.name)
		if !errors.Is(err, ErrUnknown) || err.Error() != tc.msg {
			t.Errorf("Lookup(%q) error = %v\nwant %s", tc.name, err, tc.msg)
		}
	}
}

const validEntry = `
  - name: debian-bookworm
    aliases: [debian-12]
    family: debian
    release: bookworm
    version: "12"
    package-manager: apt-get
    package-type: deb
    image: debian:bookworm-slim
    mirror: {suite: bookworm}
`

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte("x-shared: &s echo hi\nimages:" + validEntry + `
  - name: fedora-43
    family: fedora
    release: "43"
    package-manager: dnf
    package-type: rpm
    image: fedora:43
    setup: *s
  - name: debian-sid
    family: debian
    release: sid
    package-manager: apt-get
    package-type: deb
    image: debian:sid-slim
    source: mirror
    mirror: {suite: sid, url: "https://mirror.example/debian"}
`))
	if err != nil {
		t.Fatal(err)
	}
	es := c.Entries()
	if es[0].Source != "docker.io/library/debian:bookworm-slim" || es[0].DefaultSource != SourceRegistry || es[0].Mirror.URL != DefaultMirrorURL {
		t.Errorf("defaults not filled in: %+v %+v", es[0], es[0].Mirror)
	}
	if es[1].Mirror != nil || es[1].MirrorReference() != "" || es[1].Aliases == nil || es[1].Setup != "echo hi" {
		t.Errorf("fedora: %+v", es[1])
	}
	if es[2].DefaultSource != SourceMirror || es[2].Mirror.URL != "https://mirror.example/debian" || es[2].MirrorReference() != "mirror.local/debian:sid" {
		t.Errorf("sid: %+v %+v", es[2], es[2].Mirror)
	}
}

func TestParseRejects(t *testing.T) {
	entry := func(replace ...string) string {
		return "images:" + strings.NewReplacer(replace...).Replace(validEntry)
	}
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"no images", "images: []", "no images"},
		{"unknown key", entry("eol", "eol") + "    colour: red\n", "field colour not found"},
		{"unknown top-level key", "extra: 1\n" + entry(), `unknown top-level key "extra"`},
		{"duplicate name", entry() + validEntry, `debian-bookworm: name "debian-bookworm" is already used by debian-bookworm`},
		{"alias clashes with a name", entry() + strings.NewReplacer("debian-bookworm", "debian-12x", "[debian-12]", "[debian-bookworm]").Replace(validEntry),
			`debian-12x: name "debian-bookworm" is already used by debian-bookworm`},
		{"duplicate alias", entry() + strings.NewReplacer("debian-bookworm", "debian-x").Replace(validEntry), `debian-x: name "debian-12" is already used`},
		{"no name", entry("name: debian-bookworm", "name: \"\""), "entry 1: no name"},
		{"bad name", entry("name: debian-bookworm", "name: Debian_Bookworm"), `invalid name "Debian_Bookworm"`},
		{"bad alias", entry("[debian-12]", "[debian 12]"), `invalid alias "debian 12"`},
		{"unknown family", entry("family: debian", "family: gentoo"), `unknown family "gentoo" (valid: debian, ubuntu,`},
		{"unknown package manager", entry("apt-get", "apk"), `unknown package manager "apk" (valid: apt-get, dnf,`},
		{"wrong package type", entry("type: deb", "type: rpm"), `package type "rpm" does not go with apt-get (want deb)`},
		{"no source", entry("image: debian:bookworm-slim", ""), "no image: every entry needs a registry source"},
		{"bad source", entry("debian:bookworm-slim", "Debian:Bookworm"), `invalid reference "Debian:Bookworm"`},
		{"mirror without suite", entry("{suite: bookworm}", "{url: http://x/debian}"), "mirror: no suite"},
		{"mirror not http", entry("{suite: bookworm}", "{suite: bookworm, url: ftp://x/debian}"), `mirror: url "ftp://x/debian" is not http(s)`},
		{"mirror outside debian", entry("family: debian", "family: ubuntu"), "a mirror source is supported for the debian family only, not ubuntu"},
		{"source mirror without mirror", entry("    mirror: {suite: bookworm}\n", "    source: mirror\n"), "source: mirror needs a mirror"},
		{"unknown source", entry("    mirror", "    source: ftp\n    mirror"), `unknown source "ftp" (valid: registry, mirror)`},
		{"unknown exec", entry("    mirror", "    exec: ssh\n    mirror"), `unknown exec "ssh"`},
		{"manager outside its family", entry("family: debian", "family: fedora", "    mirror: {suite: bookworm}\n", ""),
			"package manager apt-get installs deb packages, but the fedora family uses rpm"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse error = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// The catalogue is data: it must not depend on the image store, nspawn,
// the probe engine or what builds and boots images.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"image", "nspawn", "probe", "container", "mirror", "acquire", "layer", "cli"} {
			if dep == "github.com/racker-postroj/racker/internal/"+banned {
				t.Errorf("internal/curated depends on %s", dep)
			}
		}
	}
}
