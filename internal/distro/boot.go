package distro

import (
	"slices"

	"github.com/racker-postroj/racker/internal/rootfs"
)

// Need is something a container needs from an image to be booted and
// probed, by its generic package name (Manager.Packages maps it).
type Need struct {
	What  string   // generic package name
	Paths []string // any of these present means satisfied
}

// BootNeeds are what booting and probing need: systemd as init, a D-Bus
// system bus to talk to it, a way to fetch URLs and certificates to trust.
var BootNeeds = []Need{
	{What: "systemd", Paths: []string{"/usr/lib/systemd/systemd", "/lib/systemd/systemd"}},
	// /sbin/init makes systemd the init system in the eyes of packages:
	// without it Debian's invoke-rc.d refuses to start services from
	// maintainer scripts, unlike on a real installation.
	{What: "init", Paths: []string{"/sbin/init", "/usr/sbin/init"}},
	{What: "dbus", Paths: []string{"/usr/bin/dbus-daemon", "/usr/bin/dbus-broker", "/usr/bin/dbus-broker-launch", "/bin/dbus-daemon"}},
	{What: "curl", Paths: []string{"/usr/bin/curl", "/usr/bin/wget", "/bin/curl", "/bin/wget"}},
	{What: "ca-certificates", Paths: []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
		"/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem"}},
}

// BootPackages returns the generic names of every boot need, in order.
func BootPackages() []string {
	out := make([]string, len(BootNeeds))
	for i, n := range BootNeeds {
		out[i] = n.What
	}
	return out
}

// Missing lists what the root filesystem at dir lacks for booting (generic
// package names, in BootNeeds' order), resolving every path inside it.
func Missing(dir string) ([]string, error) {
	root, err := rootfs.Open(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var missing []string
	for _, n := range BootNeeds {
		if !slices.ContainsFunc(n.Paths, root.IsRegular) {
			missing = append(missing, n.What)
		}
	}
	return missing, nil
}
