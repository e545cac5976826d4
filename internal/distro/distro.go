package distro

import "slices"

// PackageType is a kind of package file.
type PackageType string

const (
	Deb    PackageType = "deb"    // Debian and derivatives: an ar archive, debian-binary first
	RPM    PackageType = "rpm"    // Red Hat, SUSE and derivatives
	Pacman PackageType = "pacman" // Arch Linux: .pkg.tar.zst or .pkg.tar.xz
)

// PackageTypes lists every package type.
var PackageTypes = []PackageType{Deb, RPM, Pacman}

// Extension returns the file name suffix package managers expect for t.
func (t PackageType) Extension() string {
	switch t {
	case Deb:
		return ".deb"
	case RPM:
		return ".rpm"
	case Pacman:
		return ".pkg.tar.zst"
	}
	return ""
}

// Family is a group of distributions sharing a package format.
type Family struct {
	Name string
	Type PackageType
}

// families in the order people list them.
var families = []Family{
	{"debian", Deb}, {"ubuntu", Deb},
	{"fedora", RPM}, {"centos", RPM}, {"rhel", RPM}, {"rocky", RPM}, {"alma", RPM},
	{"opensuse", RPM}, {"sles", RPM}, {"amazon", RPM}, {"oracle", RPM},
	{"arch", Pacman},
}

// Families returns the family names.
func Families() []string {
	out := make([]string, len(families))
	for i, f := range families {
		out[i] = f.Name
	}
	return out
}

// LookupFamily returns the family called name.
func LookupFamily(name string) (Family, bool) {
	i := slices.IndexFunc(families, func(f Family) bool { return f.Name == name })
	if i < 0 {
		return Family{}, false
	}
	return families[i], true
}

// DebianArch maps a Go architecture to Debian's name for it.
func DebianArch(goarch string) string {
	switch goarch {
	case "arm":
		return "armhf"
	case "386":
		return "i386"
	case "ppc64le":
		return "ppc64el"
	case "mips64le":
		return "mips64el"
	case "loong64":
		return "loong64"
	}
	return goarch
}
