package nspawn

import (
	"path"
	"strconv"
	"strings"

	"github.com/racker-postroj/racker/internal/rootfs"
)

// minFDPassingVersion is the first systemd whose transient services take
// StandardInputFileDescriptor and friends.
const minFDPassingVersion = 225

// systemdVersion finds the version of systemd in a root filesystem without
// running anything: from the name of libsystemd-shared-VERSION.so, which
// every systemd since 231 installs next to its binaries. known is false
// when there is no such library (older systemd, or none).
func systemdVersion(root *rootfs.Root) (version int, known bool) {
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

// chooseExecutor decides how Exec enters a container whose systemd has
// version (if known): over D-Bus when its systemd can take file
// descriptors, with nsenter otherwise. An explicit choice wins.
func chooseExecutor(want Executor, version int, known bool) Executor {
	if want != ExecAuto {
		return want
	}
	if known && version >= minFDPassingVersion {
		return ExecDBus
	}
	return ExecNsenter
}
