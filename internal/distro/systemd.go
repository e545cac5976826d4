package distro

import (
	"path"
	"strconv"
	"strings"

	"github.com/racker-postroj/racker/internal/rootfs"
)

// MinFDPassingSystemd is the first systemd whose transient services take
// StandardInputFileDescriptor and friends: commands reach containers with
// an older one (CentOS 7's 219) only by entering their namespaces.
const MinFDPassingSystemd = 225

// NeedsNsenter reports whether commands must enter a container with
// nsenter rather than start there over D-Bus, for a systemd of version
// (known false: the version could not be told, assume the worst).
func NeedsNsenter(version int, known bool) bool {
	return !known || version < MinFDPassingSystemd
}

// SystemdVersion finds the version of systemd in a root filesystem without
// running anything: from the name of libsystemd-shared-VERSION.so, which
// every systemd since 231 installs next to its binaries. known is false
// when there is no such library (older systemd, or none).
func SystemdVersion(root *rootfs.Root) (version int, known bool) {
	dirs := []string{"/usr/lib/systemd", "/lib/systemd", "/usr/lib64/systemd"}
	// Ubuntu and others: /usr/lib/<triplet>/systemd.
	if names, err := root.ReadDirNames("/usr/lib"); err == nil {
		for _, n := range names {
			if strings.Contains(n, "-linux-") {
				dirs = append(dirs, path.Join("/usr/lib", n, "systemd"))
			}
		}
	}
	for _, d := range dirs {
		names, err := root.ReadDirNames(d)
		if err != nil {
			continue
		}
		for _, n := range names {
			if v, ok := parseSharedLibVersion(n); ok && v > version {
				version, known = v, true
			}
		}
	}
	return version, known
}

// parseSharedLibVersion parses "libsystemd-shared-252.so" and
// "libsystemd-shared-255.4-1ubuntu8.so".
func parseSharedLibVersion(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "libsystemd-shared-")
	if !ok || !strings.Contains(rest, ".so") {
		return 0, false
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	v, err := strconv.Atoi(rest[:i])
	return v, err == nil
}
