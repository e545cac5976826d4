package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/testenv"
)

// testMtime is the mtime (Unix seconds) of entries unless a test sets another.
const testMtime = 1580702706

// tarEntry is one entry of a test tar; body is the content of regular files.
type tarEntry struct {
	hdr  tar.Header
	body string
	// rawName, if set, is patched into the USTAR name field after
	// writing, for names archive/tar refuses to write (e.g. a file "/").
	rawName string
}

// rawNamed returns e with a name that buildTar patches in after archive/tar
// has written the header.
func (e tarEntry) rawNamed(name string) tarEntry {
	e.rawName = name
	return e
}

func reg(name, body string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, ModTime: time.Unix(testMtime, 0)}, body: body}
}

func dirEntry(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: time.Unix(testMtime, 0)}}
}

func symlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: time.Unix(testMtime, 0)}}
}

func hardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: time.Unix(testMtime, 0)}}
}

func typed(typ byte, name string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: typ, Name: name, Mode: 0o644, ModTime: time.Unix(testMtime, 0), Devmajor: 1, Devminor: 3}}
}

// with returns e with its header changed by f.
func (e tarEntry) with(f func(h *tar.Header)) tarEntry {
	f(&e.hdr)
	return e
}

// buildTar returns a PAX tar of entries. Names are written verbatim,
// hostile ones included.
func buildTar(tb testing.TB, entries ...tarEntry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		off := buf.Len()
		if e.rawName != "" {
			h.Name, h.Format = "placeholder", tar.FormatUSTAR
		}
		if err := tw.WriteHeader(&h); err != nil {
			tb.Fatalf("writing header %q: %v", h.Name, err)
		}
		if e.rawName != "" {
			patchName(buf.Bytes()[off:off+512], e.rawName)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			tb.Fatalf("writing %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// fixture is a temporary directory holding rootfs/, the directory layers are
// applied to, and victim/, which stands for the host: no layer may change it.
type fixture struct {
	parent, rootfs, victim string
	before                 map[string]string
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	requireRoot(tb)
	parent := tb.TempDir()
	fx := &fixture{
		parent: parent,
		rootfs: filepath.Join(parent, "rootfs"),
		victim: filepath.Join(parent, "victim"),
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, step := range []func() error{
		func() error { return os.Mkdir(fx.rootfs, 0o755) },
		func() error { return os.Mkdir(fx.victim, 0o755) },
		func() error { return os.Mkdir(filepath.Join(fx.victim, "dir"), 0o755) },
		func() error { return os.WriteFile(filepath.Join(fx.victim, "passwd"), []byte("host secret\n"), 0o644) },
		func() error {
			return os.WriteFile(filepath.Join(fx.victim, "dir", "file"), []byte("host file\n"), 0o600)
		},
		func() error { return os.Chtimes(filepath.Join(fx.victim, "passwd"), old, old) },
		func() error { return os.Chtimes(filepath.Join(fx.victim, "dir", "file"), old, old) },
		func() error { return os.Chtimes(filepath.Join(fx.victim, "dir"), old, old) },
		func() error { return os.Chtimes(fx.victim, old, old) },
	} {
		if err := step(); err != nil {
			tb.Fatal(err)
		}
	}
	fx.before = snapshot(tb, fx.victim)
	return fx
}

// requireRoot skips tb unless it runs as root (applying owners needs it);
// under RACKER_E2E=1 (CI) it fails instead.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	testenv.Missing(tb, "root", "applying layers needs it")
}

// vrel is the victim's absolute path without the leading slash: the path an
// escaping entry would have to name.
func (fx *fixture) vrel() string { return strings.TrimPrefix(fx.victim, "/") }

// checkContained fails the test if the victim changed in any way or anything
// but rootfs/ and victim/ appeared in the parent.
func (fx *fixture) checkContained(tb testing.TB) {
	tb.Helper()
	after := snapshot(tb, fx.victim)
	for p, want := range fx.before {
		if got, ok := after[p]; !ok {
			tb.Errorf("victim %s was removed", p)
		} else if got != want {
			tb.Errorf("victim %s changed:\n got %s\nwant %s", p, got, want)
		}
	}
	for p := range after {
		if _, ok := fx.before[p]; !ok {
			tb.Errorf("victim %s was created", p)
		}
	}
	ents, err := os.ReadDir(fx.parent)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "rootfs victim" {
		tb.Errorf("parent holds %q, want only rootfs and victim", names)
	}
	if fi, err := os.Lstat(fx.rootfs); err != nil || !fi.IsDir() {
		tb.Errorf("rootfs is no longer a directory: %v", err)
	}
}

// snapshot describes every file under dir: type, mode, owner, link count,
// times, size and content or link target.
func snapshot(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	m := make(map[string]string)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d nlink=%d mtime=%d size=%d", st.Mode, st.Uid, st.Gid, st.Nlink, st.Mtim.Nano(), st.Size)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" content=%q", b)
		case unix.S_IFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " target=" + t
		}
		m[p] = desc
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// applyLayers applies layers to root with one Applier and calls Finish.
func applyLayers(tb testing.TB, root string, limits Limits, layers ...[]byte) ([]Stats, error) {
	tb.Helper()
	a, err := NewApplier(root, limits)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() {
		if err := a.Close(); err != nil {
			tb.Error(err)
		}
	}()
	var stats []Stats
	for i, l := range layers {
		st, err := a.Apply(context.Background(), bytes.NewReader(l), 0)
		stats = append(stats, st)
		if err != nil {
			return stats, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return stats, a.Finish()
}

// readFile returns the content of a regular file (not a symlink) at rel in
// root, or fails the test.
func readFile(tb testing.TB, root, rel string) string {
	tb.Helper()
	p := filepath.Join(root, rel)
	fi, err := os.Lstat(p)
	if err != nil {
		tb.Fatalf("%s: %v", rel, err)
	}
	if !fi.Mode().IsRegular() {
		tb.Fatalf("%s is %v, not a regular file", rel, fi.Mode())
	}
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func wantContent(tb testing.TB, root, rel, want string) {
	tb.Helper()
	if got := readFile(tb, root, rel); got != want {
		tb.Errorf("%s holds %q, want %q", rel, got, want)
	}
}

func wantMissing(tb testing.TB, root, rel string) {
	tb.Helper()
	if _, err := os.Lstat(filepath.Join(root, rel)); !errors.Is(err, fs.ErrNotExist) {
		tb.Errorf("%s exists (err %v), want it missing", rel, err)
	}
}

func lstat(tb testing.TB, root, rel string) unix.Stat_t {
	tb.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, rel), &st); err != nil {
		tb.Fatalf("%s: %v", rel, err)
	}
	return st
}

// listTree returns the paths under root, sorted, with "/" after directories.
func listTree(tb testing.TB, root string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// patchName sets the name field of a USTAR header block and its checksum.
func patchName(blk []byte, name string) {
	clear(blk[0:100])
	copy(blk[0:100], name)
	copy(blk[148:156], "        ")
	var sum int64
	for _, b := range blk {
		sum += int64(b)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}
