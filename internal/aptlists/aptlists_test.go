package aptlists

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/rootfs"
)

const prefix = "deb.debian.org_debian_dists_bookworm_"

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// inRelease is a clear-signed InRelease listing files (path -> content).
func inRelease(files map[string][]byte) []byte {
	var b strings.Builder
	b.WriteString("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nSuite: stable\nMD5Sum:\n 00000000000000000000000000000000 1 main/binary-amd64/Packages\nSHA256:\n")
	for p, data := range files {
		fmt.Fprintf(&b, " %s %8d %s\n", sum(data), len(data), p)
	}
	b.WriteString("- -dash-escaped: line\n-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n")
	return []byte(b.String())
}

var (
	packages = []byte("Package: webfs\nVersion: 1.21\n\n")
	modTime  = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
)

// container makes a root with apt's directories, an InRelease listing
// main/binary-amd64/Packages with content listedAs, the file itself with
// content packages, and a binary cache.
func container(t *testing.T, listedAs []byte) string {
	t.Helper()
	dir := t.TempDir()
	lists := filepath.Join(dir, ListsDir)
	for _, d := range []string{lists + "/partial", filepath.Join(dir, CachesDir, "archives")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, data []byte) {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, modTime, modTime)
	}
	write(filepath.Join(lists, prefix+"InRelease"), inRelease(map[string][]byte{"main/binary-amd64/Packages": listedAs}))
	write(filepath.Join(lists, prefix+"main_binary-amd64_Packages"), packages)
	write(filepath.Join(lists, "lock"), nil)
	write(filepath.Join(dir, CachesDir, "pkgcache.bin"), []byte("binary cache"))
	return dir
}

func open(t *testing.T, dir string) *rootfs.Root {
	t.Helper()
	r, err := rootfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// emptyContainer has apt's directories only.
func emptyContainer(t *testing.T) string {
	dir := t.TempDir()
	for _, d := range []string{ListsDir + "/partial", CachesDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var key = strings.Repeat("ab", 32)

// asked is what the proxy's record says the refresh got.
var asked = Asked{prefix + "InRelease": true}

func names(k *Kept) string {
	var out []string
	for _, f := range k.Files {
		out = append(out, f.Dir+"/"+f.Name)
	}
	return strings.Join(out, " ")
}

func TestParseRelease(t *testing.T) {
	got, err := ParseRelease(inRelease(map[string][]byte{"main/binary-amd64/Packages": packages, "main/i18n/Translation-en": nil}))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["main/binary-amd64/Packages"] != (Index{SHA256: sum(packages), Size: int64(len(packages))}) {
		t.Errorf("ParseRelease = %v", got)
	}
	for _, bad := range []string{
		"Origin: Debian\n", // no SHA256 section
		"SHA256:\n abc 12 main/binary-amd64/Packages\n",      // short digest
		"SHA256:\n " + sum(nil) + " -1 main/x\n",             // negative size
		"SHA256:\n " + sum(nil) + " 12\n",                    // no path
		"SHA256:\n " + strings.ToUpper(sum(nil)) + " 1 x\n",  // upper case
		"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n", // no text
	} {
		if _, err := ParseRelease([]byte(bad)); err == nil {
			t.Errorf("ParseRelease(%q) did not fail", bad)
		}
	}
}

func TestListName(t *testing.T) {
	for path, want := range map[string]string{
		"main/binary-amd64/Packages":        prefix + "main_binary-amd64_Packages",
		"main/dep11/icons-48x48@2.tar.gz":   prefix + "main_dep11_icons-48x48%402.tar.gz",
		"non_free/source/Sources":           prefix + "non%5ffree_source_Sources",
		"main/binary-amd64/Packages~ x=y!*": prefix + "main_binary-amd64_Packages%7e%20x%3dy%21%2a",
	} {
		if got := listName(prefix, path); got != want {
			t.Errorf("listName(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestKeepAndRestore(t *testing.T) {
	ctx := context.Background()
	c := &Cache{Dir: t.TempDir()}
	src := open(t, container(t, packages))
	kept, changed, err := c.Keep(ctx, src, key, nil, asked)
	if err != nil || !changed {
		t.Fatalf("Keep = %v, %v", changed, err)
	}
	want := ListsDir + "/" + prefix + "InRelease " + ListsDir + "/" + prefix + "main_binary-amd64_Packages " + CachesDir + "/pkgcache.bin"
	if got := names(kept); got != want {
		t.Errorf("kept %s, want %s", got, want)
	}
	dstDir := emptyContainer(t)
	uid := os.Getuid()
	if uid == 0 {
		// The owner of the directory, as a private user namespace maps
		// the container's root.
		uid = 524288
		os.Chown(filepath.Join(dstDir, ListsDir), uid, uid)
	}
	dst := open(t, dstDir)
	restored, err := c.Restore(ctx, dst, key)
	if err != nil || restored == nil {
		t.Fatalf("Restore = %v, %v", restored, err)
	}
	p := filepath.Join(dstDir, ListsDir, prefix+"main_binary-amd64_Packages")
	fi, err := os.Stat(p)
	if b, _ := os.ReadFile(p); err != nil || !bytes.Equal(b, packages) || !fi.ModTime().Equal(modTime) {
		t.Fatalf("restored %s: %q %v, %v", p, b, fi, err)
	}
	if st, _ := dst.Stat(ListsDir + "/" + prefix + "InRelease"); int(st.Uid) != uid {
		t.Errorf("restored InRelease owned by %d, want %d (its directory's)", st.Uid, uid)
	}
	if ents, _ := os.ReadDir(filepath.Join(dstDir, ListsDir)); len(ents) != 3 { // partial, InRelease, Packages
		t.Errorf("lists after restore: %v", ents)
	}
	// Nothing changed since: nothing is read or written again.
	again, changed, err := c.Keep(ctx, dst, key, restored, asked)
	if err != nil || changed || again != restored {
		t.Errorf("Keep of an unchanged container = %v, %v", changed, err)
	}
	// A changed index is kept again.
	os.WriteFile(p, []byte("other"), 0o644)
	if _, _, err := c.Keep(ctx, dst, key, restored, asked); !errors.Is(err, ErrMismatch) {
		t.Errorf("Keep of a changed, unlisted index = %v, want ErrMismatch", err)
	}
	if err := restored.Remove(dst); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dstDir, ListsDir)); len(ents) != 1 {
		t.Errorf("lists after Remove: %v", ents)
	}
}

// A Packages file whose digest is not the one its InRelease lists is not
// kept, and nothing else either.
func TestKeepRefusesMismatch(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	_, _, err := c.Keep(context.Background(), open(t, container(t, []byte("what the release says"))), key, nil, asked)
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "main_binary-amd64_Packages") {
		t.Fatalf("Keep = %v, want ErrMismatch naming the Packages file", err)
	}
	if _, err := os.Stat(c.manifestPath(key)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("manifest written: %v", err)
	}
	if blobs, _ := os.ReadDir(filepath.Join(c.Dir, "blobs")); len(blobs) != 0 {
		t.Errorf("blobs left: %v", blobs)
	}
}

// Symlinks in the lists directory are not followed: a link named like a
// listed index, to a file outside the lists with the right content, is
// left out; a lists directory that is a link resolves inside the root.
func TestKeepDoesNotFollowSymlinks(t *testing.T) {
	dir := container(t, packages)
	lists := filepath.Join(dir, ListsDir)
	outside := filepath.Join(t.TempDir(), "Packages")
	os.WriteFile(outside, packages, 0o644)
	p := filepath.Join(lists, prefix+"main_binary-amd64_Packages")
	os.Remove(p)
	if err := os.Symlink(outside, p); err != nil {
		t.Fatal(err)
	}
	c := &Cache{Dir: t.TempDir()}
	kept, _, err := c.Keep(context.Background(), open(t, dir), key, nil, asked)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(names(kept), "Packages") {
		t.Errorf("kept the link: %s", names(kept))
	}
	// The lists directory itself a link out of the root.
	dir2 := t.TempDir()
	os.MkdirAll(filepath.Join(dir2, "var/lib/apt"), 0o755)
	if err := os.Symlink(lists, filepath.Join(dir2, ListsDir)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Keep(context.Background(), open(t, dir2), key, nil, asked); err == nil {
		t.Errorf("Keep followed a lists directory linked out of the root")
	}
}

// A kept file with a changed byte is not put into a container (nothing
// is), and the entry is dropped.
func TestRestoreRefusesCorruption(t *testing.T) {
	for _, tt := range []struct {
		name    string
		corrupt func(t *testing.T, c *Cache, m *manifest)
	}{
		{"a byte of Packages", func(t *testing.T, c *Cache, m *manifest) {
			flipByte(t, c.blobPath(sum(packages)))
		}},
		{"a byte of InRelease", func(t *testing.T, c *Cache, m *manifest) {
			flipByte(t, c.blobPath(m.Files[at(m, "InRelease")].SHA256))
		}},
		{"the binary cache", func(t *testing.T, c *Cache, m *manifest) {
			flipByte(t, c.blobPath(m.Files[at(m, "pkgcache.bin")].SHA256))
		}},
		{"Packages and its digest in the manifest", func(t *testing.T, c *Cache, m *manifest) {
			other := []byte("Package: evil\n")
			os.WriteFile(c.blobPath(sum(other)), other, 0o644)
			m.Files[at(m, "Packages")].SHA256, m.Files[at(m, "Packages")].Size = sum(other), int64(len(other))
			writeManifest(t, c, m)
		}},
		{"a missing blob", func(t *testing.T, c *Cache, m *manifest) {
			os.Remove(c.blobPath(sum(packages)))
		}},
		{"a manifest naming a path", func(t *testing.T, c *Cache, m *manifest) {
			m.Files[at(m, "Packages")].Name = "../../../etc/passwd"
			writeManifest(t, c, m)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := &Cache{Dir: t.TempDir()}
			if _, _, err := c.Keep(ctx, open(t, container(t, packages)), key, nil, asked); err != nil {
				t.Fatal(err)
			}
			m, _, err := c.load(key)
			if err != nil {
				t.Fatal(err)
			}
			tt.corrupt(t, c, m)
			dstDir := emptyContainer(t)
			got, err := c.Restore(ctx, open(t, dstDir), key)
			if err == nil || got != nil {
				t.Fatalf("Restore = %v, %v; want an error", got, err)
			}
			for _, d := range []string{ListsDir, CachesDir} {
				if ents, _ := os.ReadDir(filepath.Join(dstDir, d)); len(ents) > 1 || len(ents) == 1 && ents[0].Name() != "partial" {
					t.Errorf("%s after a refused restore: %v", d, ents)
				}
			}
			if _, err := os.Stat(c.manifestPath(key)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the entry is still there: %v", err)
			}
			if got, err := c.Restore(ctx, open(t, dstDir), key); got != nil || err != nil {
				t.Errorf("second Restore = %v, %v; want nothing", got, err)
			}
		})
	}
}

// at is the index of the file whose name ends in suffix.
func at(m *manifest, suffix string) int {
	for i, f := range m.Files {
		if strings.HasSuffix(f.Name, suffix) {
			return i
		}
	}
	panic(suffix)
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeManifest(t *testing.T, c *Cache, m *manifest) {
	t.Helper()
	b := fmt.Sprintf(`{"key":%q,"files":[`, m.Key)
	for i, f := range m.Files {
		if i > 0 {
			b += ","
		}
		b += fmt.Sprintf(`{"dir":%q,"name":%q,"size":%d,"sha256":%q,"mtime":%q}`, f.Dir, f.Name, f.Size, f.SHA256, f.ModTime.Format(time.RFC3339Nano))
	}
	if err := os.WriteFile(c.manifestPath(m.Key), []byte(b+"]}"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Keys differ by image digest, refresh command and apt's sources.
func TestNewKey(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc/apt/sources.list.d"), 0o755)
	src := filepath.Join(dir, "etc/apt/sources.list.d/debian.sources")
	os.WriteFile(src, []byte("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"), 0o644)
	k := func(digest, refresh string) string {
		t.Helper()
		key, err := NewKey(digest, refresh, dir)
		if err != nil || !validKey(key) {
			t.Fatalf("NewKey = %q, %v", key, err)
		}
		return key
	}
	a := k("sha256:aa", "apt-get update")
	if k("sha256:aa", "apt-get update") != a || k("sha256:bb", "apt-get update") == a || k("sha256:aa", "apt-get update -q") == a {
		t.Errorf("keys do not follow the digest and the refresh command")
	}
	os.WriteFile(src, []byte("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\n"), 0o644)
	if k("sha256:aa", "apt-get update") == a {
		t.Errorf("the key does not follow the sources")
	}
	if _, err := NewKey("", "apt-get update", dir); err == nil {
		t.Errorf("NewKey without a digest did not fail")
	}
}

// Probes of one image keep and put back at once: every put-back is
// complete or nothing, never an error, and the entry stays whole.
func TestConcurrentKeepAndRestore(t *testing.T) {
	ctx := context.Background()
	c := &Cache{Dir: t.TempDir()}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 4; i++ {
		src, dst := open(t, container(t, packages)), open(t, emptyContainer(t))
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, _, err := c.Keep(ctx, src, key, nil, asked); err != nil {
				errs <- fmt.Errorf("Keep: %w", err)
			}
		}()
		go func() {
			defer wg.Done()
			if k, err := c.Restore(ctx, dst, key); err != nil || k != nil && len(k.Files) != 3 {
				errs <- fmt.Errorf("Restore = %v, %v", k, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if k, err := c.Restore(ctx, open(t, emptyContainer(t)), key); err != nil || k == nil {
		t.Errorf("Restore after = %v, %v", k, err)
	}
	if blobs, _ := os.ReadDir(filepath.Join(c.Dir, "blobs")); len(blobs) != 3 {
		t.Errorf("blobs: %v", blobs)
	}
}

// What a writer killed while keeping left (a temporary blob nobody holds)
// goes with the next Keep; a live writer's stays.
func TestKeepSweepsDeadWritersFiles(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	os.MkdirAll(filepath.Join(c.Dir, "blobs"), 0o755)
	dead, live := c.blobPath(".tmp-dead"), c.blobPath(".tmp-live")
	os.WriteFile(dead, []byte("part"), 0o644)
	os.WriteFile(live, []byte("part"), 0o644)
	f, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Keep(context.Background(), open(t, container(t, packages)), key, nil, asked); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dead writer's file is still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live writer's file is gone: %v", err)
	}
}

// Releases the refresh did not get through the proxy (over HTTPS, or not
// at all) are left out, with their indexes: a next refresh could not be
// seen to revalidate them.
func TestKeepOnlyAskedReleases(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	_, _, err := c.Keep(context.Background(), open(t, container(t, packages)), key, nil, Asked{})
	if err == nil || !strings.Contains(err.Error(), "no release to keep") {
		t.Errorf("Keep without the release asked = %v", err)
	}
}

func TestAskedAndRevalidated(t *testing.T) {
	a := AskedReleases([]egress.Request{
		{Method: "GET", URL: "http://deb.debian.org/debian/dists/bookworm/InRelease", Status: 200, Cache: "miss"},
		{Method: "GET", URL: "http://deb.debian.org/debian/dists/bookworm-updates/InRelease", Status: 502},
		{Method: "GET", URL: "http://security.debian.org:8080/debian-security/dists/bookworm-security/InRelease", Status: 304},
		{Method: "GET", URL: "http://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz", Status: 200},
		{Method: "CONNECT", URL: "deb.debian.org:443", Status: 200},
		{Method: "GET", URL: "http://archive.example/~user/dists/x/Release", Status: 200},
	})
	want := []string{prefix + "InRelease", "security.debian.org:8080_debian-security_dists_bookworm-security_InRelease", "archive.example_%7euser_dists_x_Release"}
	if len(a) != len(want) {
		t.Errorf("AskedReleases = %v, want %v", a, want)
	}
	for _, w := range want {
		if !a[w] {
			t.Errorf("AskedReleases lacks %s: %v", w, a)
		}
	}
	k := &Kept{Files: []File{{Dir: ListsDir, Name: prefix + "InRelease"}, {Dir: ListsDir, Name: prefix + "main_binary-amd64_Packages"},
		{Dir: ListsDir, Name: "deb.debian.org_debian_dists_bookworm-updates_InRelease"}}}
	if ok, missing := k.Revalidated(a); ok || len(missing) != 1 || missing[0] != "deb.debian.org_debian_dists_bookworm-updates_InRelease" {
		t.Errorf("Revalidated = %v, %v", ok, missing)
	}
	k.Files = k.Files[:2]
	if ok, _ := k.Revalidated(a); !ok {
		t.Errorf("Revalidated = false with the release asked")
	}
}
