package nspawn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/testenv"
)

// End-to-end tests boot real containers. They need root, systemd-nspawn,
// nsenter and (for a cold cache) mmdebstrap with a reachable Debian mirror
// ($RACKER_TEST_MIRROR, see testenv.Mirror). Without them they skip, unless
// RACKER_E2E=1, where a missing prerequisite fails the run. Built trees are
// cached under $RACKER_TEST_CACHE/nspawn (see testenv.CacheDir).

// testCache is where built root filesystems are kept.
func testCache() string { return filepath.Join(testenv.CacheDir(), "nspawn") }

// requireE2E skips or fails t when the end-to-end prerequisites are missing.
func requireE2E(t testing.TB) {
	t.Helper()
	if testing.Short() && !testenv.E2E() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"systemd-nspawn", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		testenv.Missing(t, strings.Join(missing, ", "), "")
	}
}

// testRootFS returns a bootable Debian 12 root filesystem, built once with
// mmdebstrap and cached under testCache() by recipe; with masked, a copy with
// DefaultMaskedUnits masked. Tests must not write to it.
func testRootFS(t testing.TB, masked bool) string {
	t.Helper()
	requireE2E(t)
	base := cachedTree(t, []string{"mmdebstrap", "--variant=minbase", "--include=systemd,dbus,systemd-sysv", "bookworm"},
		func(dir string) error {
			args := []string{"mmdebstrap", "--quiet", "--variant=minbase", "--include=systemd,dbus,systemd-sysv", "bookworm", dir, testenv.Mirror("bookworm")}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			out, err := command(ctx, args...).CombinedOutput()
			if err != nil {
				t.Logf("%s", out)
			}
			return err
		})
	if !masked {
		return base
	}
	return maskedRootFS(t, base, DefaultMaskedUnits())
}

// maskedRootFS returns a cached copy of base with units masked.
func maskedRootFS(t testing.TB, base string, units []string) string {
	t.Helper()
	recipe := append([]string{"copy", base, "mask"}, units...)
	return cachedTree(t, recipe, func(dir string) error {
		if out, err := exec.Command("cp", "-a", "--reflink=auto", base, dir).CombinedOutput(); err != nil {
			t.Logf("%s", out)
			return err
		}
		return MaskUnits(dir, units)
	})
}

// cachedTree returns testCache()/HASH/rootfs for recipe, building it with
// build (into a directory that does not exist yet) under a lock if missing.
func cachedTree(t testing.TB, recipe []string, build func(dir string) error) string {
	t.Helper()
	sum := sha256.Sum256([]byte(strings.Join(recipe, "\x00")))
	key := hex.EncodeToString(sum[:8])
	cache := testCache()
	final := filepath.Join(cache, key)
	rootfs := filepath.Join(final, "rootfs")
	if _, err := os.Stat(rootfs); err == nil {
		return rootfs
	}
	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(final+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rootfs); err == nil {
		return rootfs // built by another process while we waited
	}
	if _, err := exec.LookPath(recipe[0]); recipe[0] == "mmdebstrap" && err != nil {
		testenv.Missing(t, "mmdebstrap to build the test root filesystem", "apt-get install mmdebstrap")
	}
	tmp, err := os.MkdirTemp(cache, key+".tmp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	t.Logf("building test root filesystem %s: %s", key, strings.Join(recipe, " "))
	start := time.Now()
	if err := build(filepath.Join(tmp, "rootfs")); err != nil {
		t.Fatalf("building test root filesystem: %v", err)
	}
	os.WriteFile(filepath.Join(tmp, "recipe"), []byte(strings.Join(recipe, "\n")+"\n"), 0o644)
	if err := os.Rename(tmp, final); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %s", key, time.Since(start).Round(time.Second))
	return rootfs
}
