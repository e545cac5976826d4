package nspawn

import "github.com/racker-postroj/racker/internal/distro"

// chooseExecutor decides how Exec enters a container whose systemd has
// version (if known): over D-Bus when its systemd can take file
// descriptors, with nsenter otherwise (distro.NeedsNsenter). An explicit
// choice wins.
func chooseExecutor(want Executor, version int, known bool) Executor {
	if want != ExecAuto {
		return want
	}
	if distro.NeedsNsenter(version, known) {
		return ExecNsenter
	}
	return ExecDBus
}
