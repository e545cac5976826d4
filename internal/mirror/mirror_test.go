package mirror

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/curated"
)

func load(t *testing.T) *curated.Catalogue {
	t.Helper()
	c, err := curated.Load()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMmdebstrapArgs(t *testing.T) {
	c := load(t)
	bookworm, _ := c.Lookup("debian-bookworm")
	got := strings.Join(mmdebstrapArgs(bookworm, "amd64", "/t/rootfs.tar"), " ")
	want := "--variant=minbase --include=systemd,systemd-sysv,dbus,curl,ca-certificates --architectures=amd64 --format=tar bookworm /t/rootfs.tar http://deb.debian.org/debian"
	if got != want {
		t.Errorf("bookworm:\n got %s\nwant %s", got, want)
	}
	stretch, _ := c.Lookup("debian-stretch")
	got = strings.Join(mmdebstrapArgs(stretch, "arm64", "out.tar"), " ")
	for _, w := range []string{"--keyring=/usr/share/keyrings/debian-archive-removed-keys.gpg", `--aptopt=Acquire::Check-Valid-Until "false"`,
		"--architectures=arm64", " stretch out.tar http://archive.debian.org/debian"} {
		if !strings.Contains(got, w) {
			t.Errorf("stretch: %s lacks %s", got, w)
		}
	}
}

func TestMirrorCache(t *testing.T) {
	c := load(t)
	bookworm, _ := c.Lookup("debian-bookworm")
	sid, _ := c.Lookup("debian-sid")
	day := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	name := cacheName(bookworm, "amd64", day)
	if !strings.HasPrefix(name, "debian-bookworm-amd64-") || !strings.HasSuffix(name, ".tar") {
		t.Errorf("cache name %s", name)
	}
	if cacheName(bookworm, "amd64", day.Add(15*time.Hour)) != name {
		t.Error("the same UTC day must share the cache entry")
	}
	for what, other := range map[string]string{
		"next day":    cacheName(bookworm, "amd64", day.Add(24*time.Hour)),
		"other arch":  cacheName(bookworm, "arm64", day),
		"other suite": cacheName(sid, "amd64", day),
	} {
		if other == name {
			t.Errorf("%s: same cache entry %s", what, name)
		}
	}

	dir := t.TempDir()
	src := filepath.Join(dir, "rootfs.tar")
	os.WriteFile(src, []byte("tar"), 0o600)
	dst := filepath.Join(dir, "cache", name)
	os.Mkdir(filepath.Dir(dst), 0o700)
	if err := keep(src, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "tar" {
		t.Errorf("cached %q", b)
	}
	old := filepath.Join(dir, "cache", "debian-buster-amd64-0.tar")
	os.WriteFile(old, nil, 0o600)
	os.Chtimes(old, day.Add(-72*time.Hour), day.Add(-72*time.Hour))
	os.Chtimes(dst, day, day)
	pruneCache(filepath.Join(dir, "cache"), day.Add(time.Hour), slog.New(slog.DiscardHandler))
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old entry kept: %v", err)
	}
	if _, err := os.Stat(dst); err != nil {
		t.Errorf("today's entry removed: %v", err)
	}
}

func TestRunKeepsTheTail(t *testing.T) {
	ctx := context.Background()
	err := run(ctx, nil, "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; echo 'E: Release file for http://m/dists/sid/InRelease is expired (invalid since 23d)' >&2; exit 25")
	if !errors.Is(err, errExpired) || !strings.HasSuffix(err.Error(), "sh failed (release file expired: exit status 25): line 4 | line 5 | E: Release file for http://m/dists/sid/InRelease is expired (invalid since 23d)") {
		t.Errorf("err = %v", err)
	}
	var out strings.Builder
	if err := run(ctx, &out, "sh", "-c", "echo shown"); err != nil || out.String() != "shown\n" {
		t.Errorf("run = %v, output %q", err, out.String())
	}
	if err := run(ctx, nil, "sh", "-c", "exit 3"); err == nil || errors.Is(err, errExpired) {
		t.Errorf("plain failure: %v", err)
	}
}
