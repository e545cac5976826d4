package nspawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/rootfs"
)

// minUnifiedGuestVersion is the first systemd that can run on the unified
// cgroup hierarchy (cgroup v2) alone. nspawn gives older ones the legacy
// hierarchy, which a host that mounts only cgroup v2 does not have.
const minUnifiedGuestVersion = 230

// minOwnUsernsOverlayVersion is the first systemd-nspawn whose own user
// namespace (-U, --private-users) works together with --volatile=overlay.
const minOwnUsernsOverlayVersion = 257

// NspawnFeatures are what the installed systemd-nspawn can do, decided from
// its version rather than assumed.
type NspawnFeatures struct {
	// Version is the systemd version systemd-nspawn reports (252 for
	// "systemd 252 (252.39-1~deb12u1)").
	Version int
	// UsernsOverlay: -U (--private-users=pick) works with
	// --volatile=overlay.
	UsernsOverlay bool
}

// featuresOf is NspawnFeatures for a systemd-nspawn of version.
func featuresOf(version int) NspawnFeatures {
	return NspawnFeatures{Version: version, UsernsOverlay: version >= minOwnUsernsOverlayVersion}
}

// DetectNspawn runs `NSPAWN --version` (systemd-nspawn in PATH if nspawn is
// empty) and returns what that binary can do.
func DetectNspawn(ctx context.Context, nspawn string) (NspawnFeatures, error) {
	if nspawn == "" {
		nspawn = "systemd-nspawn"
	}
	cmd := exec.CommandContext(ctx, nspawn, "--version")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return NspawnFeatures{}, fmt.Errorf("%s --version: %w: %s", nspawn, err, strings.TrimSpace(stderr.String()))
	}
	v, err := parseNspawnVersion(string(out))
	if err != nil {
		return NspawnFeatures{}, fmt.Errorf("%s --version: %w", nspawn, err)
	}
	return featuresOf(v), nil
}

// parseNspawnVersion reads the version from the first line of
// `systemd-nspawn --version`: "systemd 257 (257.13-1~deb13u1)".
func parseNspawnVersion(out string) (int, error) {
	line, _, _ := strings.Cut(out, "\n")
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "systemd" {
		return 0, fmt.Errorf("unexpected version line %q", line)
	}
	num, _, _ := strings.Cut(f[1], ".")
	v, err := strconv.Atoi(num)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("unexpected version line %q", line)
	}
	return v, nil
}

// ErrGuestTooOld is the cause of a start refused because the container's
// systemd cannot boot on the host's cgroup layout.
var ErrGuestTooOld = errors.New("container systemd too old for this host")

// GuestTooOldError names the two versions that do not fit together.
type GuestTooOldError struct {
	Guest int // the container's systemd
	Host  int // the host's systemd-nspawn; 0 if unknown
}

func (e *GuestTooOldError) Error() string {
	host := "this host"
	if e.Host > 0 {
		host = fmt.Sprintf("this host (systemd-nspawn %d)", e.Host)
	}
	return fmt.Sprintf("the image's systemd %d cannot boot on %s: the host mounts only cgroup v2, which needs systemd %d or newer in the container",
		e.Guest, host, minUnifiedGuestVersion)
}

func (e *GuestTooOldError) Is(target error) bool { return target == ErrGuestTooOld }

// checkGuestCgroups refuses a guest systemd (version, if known) that cannot
// boot on the host's cgroup layout: on a host with only cgroup v2 a systemd
// older than 230 has no hierarchy it can run on. On hybrid and v1 hosts
// nspawn picks the legacy hierarchy for it (see cgroupEnv).
func checkGuestCgroups(version int, known, hostUnified bool, hostNspawn int) error {
	if !hostUnified || !known || version >= minUnifiedGuestVersion {
		return nil
	}
	return &GuestTooOldError{Guest: version, Host: hostNspawn}
}

// guestSystemdVersion is distro.SystemdVersion, plus, for systemd older than 231
// (which installs no libsystemd-shared), the version compiled into the
// systemd binary: systemd prints PACKAGE_STRING "\n" SYSTEMD_FEATURES for
// --version, so "systemd 219\n+PAM ..." is a string in it.
func guestSystemdVersion(root *rootfs.Root) (int, bool) {
	if v, ok := distro.SystemdVersion(root); ok {
		return v, true
	}
	for _, p := range []string{"/usr/lib/systemd/systemd", "/lib/systemd/systemd"} {
		f, err := root.Open(p, 0)
		if err != nil {
			continue
		}
		// systemd 219's binary is 1.5 MB; refuse to read a huge file.
		data, err := io.ReadAll(io.LimitReader(f, 64<<20))
		f.Close()
		if err != nil {
			continue
		}
		if v, ok := embeddedVersion(data); ok {
			return v, true
		}
	}
	return 0, false
}

var embeddedVersionRE = regexp.MustCompile(`systemd ([1-9][0-9]{1,3})\n[+-][A-Z]`)

// embeddedVersion finds "systemd NNN\n+PAM" (or "-PAM") in a systemd binary.
func embeddedVersion(data []byte) (int, bool) {
	m := embeddedVersionRE.FindSubmatch(data)
	if m == nil {
		return 0, false
	}
	v, err := strconv.Atoi(string(m[1]))
	return v, err == nil
}

// checkHost refuses, before anything starts, a root filesystem whose
// systemd cannot boot on this host's cgroup layout.
func (o *Options) checkHost(ctx context.Context) error {
	if !hostCgroupUnified() {
		return nil
	}
	root, err := rootfs.Open(o.RootFS)
	if err != nil {
		return err
	}
	version, known := guestSystemdVersion(root)
	root.Close()
	if checkGuestCgroups(version, known, true, 0) == nil {
		return nil
	}
	f, _ := DetectNspawn(ctx, o.nspawn()) // the version only makes the message better
	return checkGuestCgroups(version, known, true, f.Version)
}
