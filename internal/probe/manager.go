package probe

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Manager is a package manager a probe installs packages with.
type Manager struct {
	Name   string   // apt-get, dnf, yum, microdnf, zypper, pacman
	Binary string   // path in the image that proves it is there
	Types  []Type   // package files it installs
	update string   // shell command run before installing, if any
	files  []string // command installing package files; the paths follow
	names  []string // command installing packages by name; the names follow
}

// managers in order of preference when an image has several that take the
// same type (dnf images often carry yum as a compatibility link).
var managers = []Manager{
	{Name: "apt-get", Binary: "/usr/bin/apt-get", Types: []Type{Deb},
		update: "apt-get update -q",
		// A path (not a name) makes apt-get install that file and resolve
		// its dependencies from the repositories.
		files: []string{"apt-get", "install", "-y", "-q"},
		names: []string{"apt-get", "install", "-y", "-q"}},
	{Name: "dnf", Binary: "/usr/bin/dnf", Types: []Type{RPM},
		files: []string{"dnf", "install", "-y"},
		names: []string{"dnf", "install", "-y"}},
	{Name: "yum", Binary: "/usr/bin/yum", Types: []Type{RPM},
		files: []string{"yum", "install", "-y"},
		names: []string{"yum", "install", "-y"}},
	{Name: "microdnf", Binary: "/usr/bin/microdnf", Types: []Type{RPM},
		files: []string{"microdnf", "install", "-y"},
		names: []string{"microdnf", "install", "-y"}},
	{Name: "zypper", Binary: "/usr/bin/zypper", Types: []Type{RPM},
		files: []string{"zypper", "--non-interactive", "install", "--allow-unsigned-rpm"},
		names: []string{"zypper", "--non-interactive", "install"}},
	{Name: "pacman", Binary: "/usr/bin/pacman", Types: []Type{Pacman},
		// -U resolves dependencies from the sync databases, which slim
		// images do not ship.
		update: "pacman -Sy --noconfirm",
		files:  []string{"pacman", "-U", "--noconfirm"},
		names:  []string{"pacman", "-S", "--noconfirm", "--needed"}},
}

// ErrIncompatible is wrapped by errors about packages the image's package
// manager cannot install (a .deb for an rpm distribution, ...).
var ErrIncompatible = errors.New("package type does not fit the image")

// LookupManager returns the manager called name (as the catalogue names
// them: apt-get or apt, dnf, yum, microdnf, zypper, pacman).
func LookupManager(name string) (Manager, bool) {
	if name == "apt" {
		name = "apt-get"
	}
	for _, m := range managers {
		if m.Name == name {
			return m, true
		}
	}
	return Manager{}, false
}

// ImageManagers lists the package managers present in the root filesystem,
// in order of preference; paths resolve inside it.
func ImageManagers(rootfs string) ([]Manager, error) {
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", rootfs, err)
	}
	defer unix.Close(root)
	var found []Manager
	for _, m := range managers {
		fd, err := unix.Openat2(root, m.Binary, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err == nil {
			unix.Close(fd)
			found = append(found, m)
		}
	}
	return found, nil
}

// ChooseManager picks, from an image's managers (in order of preference),
// the first that installs every type in types; with no types, the first.
// The error wraps ErrIncompatible and names what the image has.
func ChooseManager(have []Manager, types []Type) (Manager, error) {
	if len(have) == 0 {
		return Manager{}, errors.New("the image has no supported package manager (apt-get, dnf, yum, microdnf, zypper, pacman)")
	}
outer:
	for _, m := range have {
		for _, t := range types {
			if !slices.Contains(m.Types, t) {
				continue outer
			}
		}
		return m, nil
	}
	var names []string
	for _, m := range have {
		names = append(names, m.Name)
	}
	return Manager{}, fmt.Errorf("%w: %s packages cannot be installed with %s", ErrIncompatible, joinTypes(types), strings.Join(names, ", "))
}

func joinTypes(types []Type) string {
	var s []string
	for _, t := range types {
		if !slices.Contains(s, string(t)) {
			s = append(s, string(t))
		}
	}
	return strings.Join(s, " and ")
}

// InstallScript returns the shell script that installs the packages named
// names from the image's repositories, then the package files at paths (in
// the container), resolving their dependencies. It runs non-interactively.
func (m Manager) InstallScript(names, paths []string) string {
	var b strings.Builder
	b.WriteString("set -e\nexport DEBIAN_FRONTEND=noninteractive\n")
	if m.update != "" {
		b.WriteString(m.update + "\n")
	}
	if len(names) > 0 {
		b.WriteString(shellJoin(append(slices.Clone(m.names), names...)) + "\n")
	}
	if len(paths) > 0 {
		b.WriteString(shellJoin(append(slices.Clone(m.files), paths...)) + "\n")
	}
	return b.String()
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
