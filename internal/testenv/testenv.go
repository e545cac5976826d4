package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The variables, documented in the README's Development section.
const (
	// E2EVar=1 turns every missing end-to-end prerequisite (root,
	// systemd-nspawn, docker-registry, mmdebstrap, ...) from a skip into a
	// failure. .ci/run sets it.
	E2EVar = "RACKER_E2E"
	// CacheVar is the directory where built Debian images and trees are
	// cached across runs; see CacheDir.
	CacheVar = "RACKER_TEST_CACHE"
	// MirrorVar is the Debian mirror mmdebstrap builds test images from;
	// see Mirror.
	MirrorVar = "RACKER_TEST_MIRROR"
	// UpdateScriptsVar, when not empty, makes the end-to-end scripts
	// rewrite the files they cmp against from the actual output.
	UpdateScriptsVar = "UPDATE_SCRIPTS"
	// HostVar names the test host (trixie, sid) the end-to-end scripts run
	// in, set by the host matrix for the harness it starts inside a host;
	// see internal/scripttest's TestHosts.
	HostVar = "RACKER_TEST_HOST"
	// HostsVar chooses the hosts of the matrix: a comma-separated list of
	// trixie and sid (default both), or "none" (not with RACKER_E2E=1).
	HostsVar = "RACKER_TEST_HOSTS"
	// SummaryVar, when set, is a file the end-to-end harness appends one
	// line per host to: how many scripts passed there. make test prints it.
	SummaryVar = "RACKER_TEST_SUMMARY"
)

// Host returns $RACKER_TEST_HOST: the test host this process runs in, or "".
func Host() string { return os.Getenv(HostVar) }

// E2E reports whether RACKER_E2E=1: no end-to-end test may skip.
func E2E() bool { return os.Getenv(E2EVar) == "1" }

// UpdateScripts reports whether UPDATE_SCRIPTS is set.
func UpdateScripts() bool { return os.Getenv(UpdateScriptsVar) != "" }

// Missing skips t because the prerequisite what does not hold, or fails it
// under RACKER_E2E=1. hint says how to get it (e.g. "apt-get install
// mmdebstrap"); it may be empty.
func Missing(t testing.TB, what, hint string) {
	t.Helper()
	if hint != "" {
		what += " (" + hint + ")"
	}
	if E2E() {
		t.Fatalf("missing %s, and %s=1 requires it", what, E2EVar)
	}
	t.Skipf("missing %s (%s=1 makes this a failure)", what, E2EVar)
}

// CacheDir returns $RACKER_TEST_CACHE if set, else /var/cache/racker-test if
// it is writable or can be created, else racker-test under the user's cache
// directory. Each user of the cache keeps to a subdirectory or to file names
// of its own (testregistry: layers; nspawn: nspawn/; the scripts:
// postroj-stores/).
func CacheDir() string {
	if dir := os.Getenv(CacheVar); dir != "" {
		return dir
	}
	const system = "/var/cache/racker-test"
	if err := os.MkdirAll(system, 0o755); err == nil && unix.Access(system, unix.W_OK) == nil {
		return system
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "racker-test")
	}
	return filepath.Join(os.TempDir(), "racker-test")
}
