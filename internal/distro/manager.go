package distro

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/racker-postroj/racker/internal/rootfs"
)

// Manager is a distribution's package manager: how to find it in a root
// filesystem and the non-interactive command lines that install with it.
type Manager struct {
	Name   string      // apt-get, dnf, yum, microdnf, zypper, pacman
	Binary string      // path in the root that proves it is there
	Type   PackageType // the package files it installs

	refresh []string // run before installing, if the install does not refresh by itself
	// revalidate is added to refresh when the indexes of an earlier
	// container were put back (see RefreshScript); rebuild then follows.
	revalidate, rebuild []string
	install             []string // installs packages by name; the names follow
	files               []string // installs package files, resolving dependencies; the paths follow
	minimal             []string // added to install to get only what is asked for (no recommends)
	// unsynced is added to install when preparing a tree: no sync per file
	// written (the caller syncs the whole tree once, at the end).
	unsynced []string
	clean    []string          // drops downloaded packages and metadata after preparing
	names    map[string]string // generic package name -> this manager's (default: the same)
}

// managers in order of preference when a root has several (dnf images
// often carry yum as a compatibility link).
var managers = []Manager{
	{Name: "apt-get", Binary: "/usr/bin/apt-get", Type: Deb,
		// Without the descriptions' translations, 40% of a Debian
		// release's index: installing needs none of them.
		refresh: []string{"apt-get", "update", "-q", "-o", "Acquire::Languages=none"},
		// apt-get update warns and goes on with the old index when a
		// fetch fails: with put-back lists that would be using them
		// unrevalidated. And it drops the binary caches it would only
		// build again from unchanged lists; gencaches builds them only
		// if they no longer fit.
		revalidate: []string{"-o", "APT::Update::Error-Mode=any", "-o", "pkgCacheFile::Generate=false"},
		rebuild:    []string{"apt-cache", "gencaches", "-q"},
		install:    []string{"apt-get", "install", "-y", "-q"},
		// A path (not a name) makes apt-get install that file and resolve
		// its dependencies from the repositories.
		files:   []string{"apt-get", "install", "-y", "-q"},
		minimal: []string{"--no-install-recommends"},
		// dpkg syncs every file it unpacks: a third of preparing a
		// Debian image on this project's machines.
		unsynced: []string{"-o", "Dpkg::Options::=--force-unsafe-io"},
		names:    map[string]string{"init": "systemd-sysv"}},
	{Name: "dnf", Binary: "/usr/bin/dnf", Type: RPM,
		install: []string{"dnf", "install", "-y"},
		files:   []string{"dnf", "install", "-y"},
		minimal: []string{"--setopt=install_weak_deps=False"},
		clean:   []string{"dnf", "clean", "all"},
		names:   map[string]string{"init": "systemd"}},
	{Name: "yum", Binary: "/usr/bin/yum", Type: RPM,
		install: []string{"yum", "install", "-y"},
		files:   []string{"yum", "install", "-y"},
		clean:   []string{"yum", "clean", "all"},
		names:   map[string]string{"init": "systemd"}},
	{Name: "microdnf", Binary: "/usr/bin/microdnf", Type: RPM,
		install: []string{"microdnf", "install", "-y"},
		files:   []string{"microdnf", "install", "-y"},
		clean:   []string{"microdnf", "clean", "all"},
		names:   map[string]string{"init": "systemd"}},
	{Name: "zypper", Binary: "/usr/bin/zypper", Type: RPM,
		// New repositories' keys are accepted: a fresh image has never
		// been asked, and nobody is there to answer.
		install: []string{"zypper", "--non-interactive", "--gpg-auto-import-keys", "install"},
		files:   []string{"zypper", "--non-interactive", "--gpg-auto-import-keys", "install", "--allow-unsigned-rpm"},
		minimal: []string{"--no-recommends"},
		clean:   []string{"zypper", "clean", "--all"},
		names:   map[string]string{"dbus": "dbus-1", "init": "systemd-sysvinit"}},
	{Name: "pacman", Binary: "/usr/bin/pacman", Type: Pacman,
		// -U resolves dependencies from the sync databases, which slim
		// images do not ship.
		refresh: []string{"pacman", "-Sy", "--noconfirm"},
		install: []string{"pacman", "-S", "--noconfirm", "--needed"},
		files:   []string{"pacman", "-U", "--noconfirm"},
		names:   map[string]string{"init": "systemd-sysvcompat"}},
}

// ManagerNames returns the names of the package managers, in order of
// preference.
func ManagerNames() []string {
	out := make([]string, len(managers))
	for i, m := range managers {
		out[i] = m.Name
	}
	return out
}

// LookupManager returns the package manager called name.
func LookupManager(name string) (Manager, bool) {
	i := slices.IndexFunc(managers, func(m Manager) bool { return m.Name == name })
	if i < 0 {
		return Manager{}, false
	}
	return managers[i], true
}

// ErrNoManager is wrapped by Detect's error for a root filesystem without
// a supported package manager.
var ErrNoManager = errors.New("no supported package manager")

// ErrIncompatible is wrapped by errors about packages a root filesystem's
// package managers cannot install (a .deb for an rpm distribution, ...).
var ErrIncompatible = errors.New("package type does not fit the image")

// Detect lists the package managers present in the root filesystem at dir,
// in order of preference, resolving every path inside it. With none the
// error wraps ErrNoManager and names the supported ones (or, for an Alpine
// tree, says that Alpine has no systemd).
func Detect(dir string) ([]Manager, error) {
	root, err := rootfs.Open(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var found []Manager
	for _, m := range managers {
		if root.IsRegular(m.Binary) {
			found = append(found, m)
		}
	}
	switch {
	case len(found) > 0:
		return found, nil
	case root.IsRegular("/sbin/apk"):
		return nil, fmt.Errorf("%w: Alpine has no systemd", ErrNoManager)
	}
	return nil, fmt.Errorf("%w (%s)", ErrNoManager, strings.Join(ManagerNames(), ", "))
}

// Choose picks, from a root's managers (in order of preference), the first
// that installs every type in types; with no types, the first. The error
// wraps ErrIncompatible and names what the root has.
func Choose(have []Manager, types []PackageType) (Manager, error) {
	if len(have) == 0 {
		return Manager{}, fmt.Errorf("%w (%s)", ErrNoManager, strings.Join(ManagerNames(), ", "))
	}
	for _, m := range have {
		if !slices.ContainsFunc(types, func(t PackageType) bool { return t != m.Type }) {
			return m, nil
		}
	}
	var names []string
	for _, m := range have {
		names = append(names, m.Name)
	}
	var ts []string
	for _, t := range types {
		if !slices.Contains(ts, string(t)) {
			ts = append(ts, string(t))
		}
	}
	return Manager{}, fmt.Errorf("%w: %s packages cannot be installed with %s", ErrIncompatible, strings.Join(ts, " and "), strings.Join(names, ", "))
}

// Packages maps generic package names (BootNeeds' What) to m's, each once.
func (m Manager) Packages(generic []string) []string {
	var out []string
	for _, g := range generic {
		n := g
		if r, ok := m.names[g]; ok {
			n = r
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// PrepareScript returns the shell script that installs the packages named
// pkgs (m's names) from the root's repositories and nothing else (no
// recommended packages), then drops the package manager's caches: for
// preparing an image that is kept. The package manager does not sync what
// it writes file by file: the caller syncs the tree before keeping it.
func (m Manager) PrepareScript(pkgs []string) string {
	var b strings.Builder
	m.preamble(&b)
	if m.refresh != nil {
		b.WriteString(shellJoin(m.refresh) + "\n")
	}
	args := append(append(slices.Clone(m.install), m.minimal...), m.unsynced...)
	b.WriteString(shellJoin(append(args, pkgs...)) + "\n")
	if m.clean != nil {
		b.WriteString(shellJoin(m.clean) + "\n")
	}
	return b.String()
}

// RefreshScript returns the shell script that refreshes the repository
// metadata before InstallScript, or "" when m's install does that by
// itself. kept says that the indexes of an earlier container of the image
// were put back first: then every index must still be revalidated with
// its repository, and the script fails when one cannot be (rather than
// going on with the old one, as apt-get does by default).
func (m Manager) RefreshScript(kept bool) string {
	if m.refresh == nil {
		return ""
	}
	var b strings.Builder
	m.preamble(&b)
	if kept && m.revalidate != nil {
		b.WriteString(shellJoin(append(slices.Clone(m.refresh), m.revalidate...)) + "\n")
		b.WriteString(shellJoin(m.rebuild) + "\n")
		return b.String()
	}
	b.WriteString(shellJoin(m.refresh) + "\n")
	return b.String()
}

// InstallScript returns the shell script that installs the packages named
// names from the root's repositories, then the package files at paths,
// resolving their dependencies, as the distribution does by default: for a
// probe in a throw-away container, after RefreshScript.
func (m Manager) InstallScript(names, paths []string) string {
	var b strings.Builder
	m.preamble(&b)
	if len(names) > 0 {
		b.WriteString(shellJoin(append(slices.Clone(m.install), names...)) + "\n")
	}
	if len(paths) > 0 {
		b.WriteString(shellJoin(append(slices.Clone(m.files), paths...)) + "\n")
	}
	return b.String()
}

// preamble makes the script stop at the first failure and never ask.
func (m Manager) preamble(b *strings.Builder) {
	b.WriteString("set -e\nexport DEBIAN_FRONTEND=noninteractive\n")
}

// shellJoin quotes args for sh where needed.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = shellQuote(a)
	}
	return strings.Join(out, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=+:,@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
