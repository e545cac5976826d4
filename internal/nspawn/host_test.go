package nspawn

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/rootfs"
)

func TestParseNspawnVersion(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want int
		ok   bool
	}{
		{"systemd 252 (252.39-1~deb12u1)\n+PAM +AUDIT\n", 252, true},
		{"systemd 257 (257.13-1~deb13u1)\n", 257, true},
		{"systemd 262 (262~rc1-1)\n", 262, true},
		{"systemd 255.4-1ubuntu8\n", 255, true},
		{"systemd-nspawn: unrecognized option\n", 0, false},
		{"", 0, false},
		{"systemd x (x)", 0, false},
	} {
		got, err := parseNspawnVersion(tc.out)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseNspawnVersion(%q) = %d, %v; want %d, ok=%v", tc.out, got, err, tc.want, tc.ok)
		}
	}
}

func TestFeaturesOf(t *testing.T) {
	for v, want := range map[int]bool{252: false, 256: false, 257: true, 262: true} {
		if got := featuresOf(v).UsernsOverlay; got != want {
			t.Errorf("featuresOf(%d).UsernsOverlay = %v, want %v", v, got, want)
		}
	}
}

func TestCheckGuestCgroups(t *testing.T) {
	for _, tc := range []struct {
		version     int
		known       bool
		hostUnified bool
		refused     bool
	}{
		{219, true, true, true},   // CentOS 7 on a cgroup v2-only host
		{219, true, false, false}, // CentOS 7 on a hybrid host: legacy hierarchy
		{229, true, true, true},
		{230, true, true, false},
		{252, true, true, false},
		{0, false, true, false}, // unknown: nspawn decides
	} {
		err := checkGuestCgroups(tc.version, tc.known, tc.hostUnified, 262)
		if (err != nil) != tc.refused {
			t.Errorf("guest %d (known %v) on unified=%v: err = %v, refused want %v", tc.version, tc.known, tc.hostUnified, err, tc.refused)
		}
		if err != nil {
			if !errors.Is(err, ErrGuestTooOld) {
				t.Errorf("%v does not match ErrGuestTooOld", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, "systemd "+strconv.Itoa(tc.version)) || !strings.Contains(msg, "systemd-nspawn 262") {
				t.Errorf("message %q: want one line naming both versions", msg)
			}
		}
	}
}

func TestEmbeddedVersion(t *testing.T) {
	for _, tc := range []struct {
		data string
		want int
		ok   bool
	}{
		{"\x00\x7fELF...systemd 219\n+PAM +AUDIT +SELINUX\x00more", 219, true},
		{"xx systemd 208\n-PAM +AUDIT\x00", 208, true},
		{"Welcome to systemd 219!\x00", 0, false},
		{"systemd 2190000\n+PAM", 0, false},
	} {
		got, ok := embeddedVersion([]byte(tc.data))
		if got != tc.want || ok != tc.ok {
			t.Errorf("embeddedVersion(%q) = %d, %v; want %d, %v", tc.data, got, ok, tc.want, tc.ok)
		}
	}
}

func TestGuestSystemdVersion(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, dir+"/usr/lib/systemd/systemd", "\x7fELF systemd 219\n+PAM -AUDIT\x00")
	if v, ok := guestSystemdVersion(openRoot(t, dir)); v != 219 || !ok {
		t.Errorf("from the binary: %d, %v; want 219, true", v, ok)
	}
	mustWrite(t, dir+"/usr/lib/systemd/libsystemd-shared-252.so", "")
	if v, ok := guestSystemdVersion(openRoot(t, dir)); v != 252 || !ok {
		t.Errorf("from libsystemd-shared: %d, %v; want 252, true", v, ok)
	}
	if v, ok := guestSystemdVersion(openRoot(t, t.TempDir())); ok {
		t.Errorf("empty tree: %d, true; want unknown", v)
	}
}

func TestDetachedOwnUnit(t *testing.T) {
	for _, tc := range []struct {
		detach, hostSystem, keepUnit, own bool
	}{
		{detach: true, hostSystem: true, keepUnit: true, own: true},
		{detach: false, hostSystem: true, keepUnit: false, own: false},
		{detach: true, hostSystem: false, keepUnit: true, own: false}, // --register=no --keep-unit
		{detach: false, hostSystem: false, keepUnit: true, own: false},
	} {
		o := Options{Name: "web", RootFS: "/r", Detach: tc.detach, hostHasSystemd: func() bool { return tc.hostSystem }}
		args := o.bootArgs()
		if got := slices.Contains(args, "--keep-unit"); got != tc.keepUnit {
			t.Errorf("detach=%v systemd=%v: --keep-unit %v, want %v (%q)", tc.detach, tc.hostSystem, got, tc.keepUnit, args)
		}
		if got := o.ownUnit(); got != tc.own {
			t.Errorf("detach=%v systemd=%v: ownUnit %v, want %v", tc.detach, tc.hostSystem, got, tc.own)
		}
		if tc.hostSystem != slices.Contains(args, "--register=yes") {
			t.Errorf("detach=%v systemd=%v: registration in %q", tc.detach, tc.hostSystem, args)
		}
	}
	if got := containerUnit("web-1.x"); got != "racker-web-1.x.service" {
		t.Errorf("containerUnit = %q", got)
	}
}

func TestUnitEnv(t *testing.T) {
	got := unitEnv([]string{"PATH=/bin", "NOTIFY_SOCKET=@x", "HOME=/root", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1", "SYSTEMD_LOG_LEVEL=debug", "XSYSTEMD_=1"})
	want := []string{"NOTIFY_SOCKET=@x", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1", "SYSTEMD_LOG_LEVEL=debug"}
	if !slices.Equal(got, want) {
		t.Errorf("unitEnv = %q, want %q", got, want)
	}
}

func TestAbandoned(t *testing.T) {
	self := os.Getpid()
	selfStart, err := startTime(self)
	if err != nil {
		t.Fatal(err)
	}
	dead := &record{Status: statusStarting, OwnerPID: self, OwnerStart: selfStart + 1, NspawnPID: self, NspawnStart: selfStart, Started: time.Now()}
	if !dead.abandoned() {
		t.Error("starting, owner gone, nspawn running: not abandoned")
	}
	live := *dead
	live.OwnerStart = selfStart
	if live.abandoned() {
		t.Error("owner running: abandoned")
	}
	running := *dead
	running.Status, running.Detached = statusRunning, true
	if running.abandoned() {
		t.Error("running detached container whose starter exited: abandoned")
	}
	attached := running
	attached.Detached = false
	if !attached.abandoned() {
		t.Error("running container (not detached) whose racker is gone: not abandoned")
	}
	ending := running
	ending.LeaderPID, ending.LeaderStart = self, selfStart+1
	if !ending.ending() {
		t.Error("running, init gone: not ending")
	}
	ending.LeaderStart = selfStart
	if ending.ending() {
		t.Error("running, init there: ending")
	}
	unstarted := *dead
	unstarted.NspawnPID = 0
	if unstarted.abandoned() {
		t.Error("no nspawn yet: abandoned")
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func openRoot(t *testing.T, dir string) *rootfs.Root {
	t.Helper()
	root, err := rootfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}
