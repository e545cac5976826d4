package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		name, want string
		wantErr    error
	}{
		{"etc/passwd", "etc/passwd", nil},
		{"./etc//passwd/", "etc/passwd", nil},
		{"../../etc/cron.d/x", "etc/cron.d/x", nil},
		{"/../x", "x", nil},
		{"/etc/x", "etc/x", nil},
		{"a/b/../../../c", "c", nil},
		{"", ".", nil},
		{".", ".", nil},
		{"/", ".", nil},
		{"..", ".", nil},
		{"./", ".", nil},
		{"etc/pass\x00wd", "", ErrUnsafePath},
		{"\x00", "", ErrUnsafePath},
	}
	for _, tc := range tests {
		got, err := cleanName(tc.name)
		if !errors.Is(err, tc.wantErr) || got != tc.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestNULNames feeds headers that archive/tar cannot write straight to the
// entry code.
func TestNULNames(t *testing.T) {
	tests := []struct {
		name string
		hdr  tar.Header
	}{
		{"name", tar.Header{Typeflag: tar.TypeReg, Name: "etc/x\x00y"}},
		{"symlink-target", tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc\x00/passwd"}},
		{"hardlink-target", tar.Header{Typeflag: tar.TypeLink, Name: "h", Linkname: "etc\x00"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			a, err := NewApplier(fx.rootfs, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			a.created = make(map[string]uint8)
			l := layerApply{a: a, ctx: context.Background(), st: &Stats{}}
			if err := l.entry(strings.NewReader(""), &tc.hdr); !errors.Is(err, ErrUnsafePath) {
				t.Errorf("error %v, want ErrUnsafePath", err)
			}
			if got := listTree(t, fx.rootfs); len(got) != 0 {
				t.Errorf("rootfs holds %q, want nothing", got)
			}
			fx.checkContained(t)
		})
	}
}

// TestLayers checks the result of well-formed layer sequences.
func TestLayers(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]tarEntry
		want   []string // listTree of the result
		check  func(t *testing.T, root string)
	}{
		{
			name: "whiteout-across-layers",
			layers: [][]tarEntry{
				{dirEntry("etc/"), reg("etc/a", "a"), reg("etc/b", "b"), dirEntry("etc/d/"), reg("etc/d/x", "x"), reg("top", "t")},
				{reg("etc/.wh.a", ""), reg("etc/.wh.d", ""), reg(".wh.top", ""), reg(".wh.missing", ""), reg("nodir/.wh.x", "")},
			},
			want: []string{"etc/", "etc/b"},
		},
		{
			name: "whiteout-spares-same-layer-entry",
			layers: [][]tarEntry{
				{reg("a", "lower"), dirEntry("d/"), reg("d/lower", "l")},
				{reg("a", "upper"), reg(".wh.a", ""), dirEntry("d/"), reg("d/upper", "u"), reg(".wh.d", "")},
			},
			want: []string{"a", "d/", "d/upper"},
			check: func(t *testing.T, root string) {
				wantContent(t, root, "a", "upper")
			},
		},
		{
			name: "opaque-across-layers",
			layers: [][]tarEntry{
				{
					dirEntry("d/"), reg("d/lower1", "1"), reg("d/keep", "lower"),
					dirEntry("d/sub/"), reg("d/sub/lowerchild", "c"), dirEntry("d/sub/deep/"), reg("d/sub/deep/x", "x"),
					dirEntry("d/gone/"), reg("d/gone/y", "y"),
					symlink("d/link", "/other"),
					dirEntry("other/"), reg("other/z", "z"),
				},
				{
					dirEntry("d/"), reg("d/keep", "upper"), dirEntry("d/sub/"), reg("d/sub/new", "n"),
					reg("d/.wh..wh..opq", ""),
					reg("d/after", "a"), dirEntry("d/sub/deep/"),
				},
			},
			want: []string{"d/", "d/after", "d/keep", "d/sub/", "d/sub/deep/", "d/sub/new", "other/", "other/z"},
			check: func(t *testing.T, root string) {
				wantContent(t, root, "d/keep", "upper")
			},
		},
		{
			name: "opaque-first-then-entries",
			layers: [][]tarEntry{
				{dirEntry("d/"), reg("d/old", "o"), dirEntry("d/s/"), reg("d/s/old", "o")},
				{dirEntry("d/"), reg("d/.wh..wh..opq", ""), reg("d/new", "n"), reg("d/s/new", "n")},
			},
			want: []string{"d/", "d/new", "d/s/", "d/s/new"},
		},
		{
			name: "opaque-root-and-implicit-parents",
			layers: [][]tarEntry{
				{reg("a/b/c", "c"), reg("a/x", "x"), reg("y", "y")},
				{reg("a/b/new", "n"), reg(".wh..wh..opq", "")},
			},
			want: []string{"a/", "a/b/", "a/b/new"},
		},
		{
			name: "replace-types",
			layers: [][]tarEntry{
				{dirEntry("d2f/"), reg("d2f/x", "x"), reg("f2d", "f"), reg("f2l", "f"), symlink("l2f", "/f"), dirEntry("keep/"), reg("keep/x", "x")},
				{reg("d2f", "now a file"), dirEntry("f2d/"), symlink("f2l", "target"), reg("l2f", "now a file"),
					dirEntry("keep/").with(func(h *tar.Header) { h.Mode = 0o700 })},
			},
			want: []string{"d2f", "f2d/", "f2l", "keep/", "keep/x", "l2f"},
			check: func(t *testing.T, root string) {
				wantContent(t, root, "d2f", "now a file")
				wantContent(t, root, "l2f", "now a file")
				if st := lstat(t, root, "keep"); st.Mode&0o7777 != 0o700 {
					t.Errorf("keep has mode %o, want 700", st.Mode&0o7777)
				}
			},
		},
		{
			name: "hardlink-same-inode",
			layers: [][]tarEntry{
				{reg("usr/bin/perl", "elf").with(func(h *tar.Header) { h.Mode = 0o755 }), hardlink("usr/bin/perl5", "usr/bin/perl"), hardlink("other/perl", "./usr/bin/perl")},
				{hardlink("usr/bin/perl6", "/usr/bin/perl5")},
			},
			want: []string{"other/", "other/perl", "usr/", "usr/bin/", "usr/bin/perl", "usr/bin/perl5", "usr/bin/perl6"},
			check: func(t *testing.T, root string) {
				st := lstat(t, root, "usr/bin/perl")
				if st.Nlink != 4 {
					t.Errorf("perl has %d links, want 4", st.Nlink)
				}
				for _, p := range []string{"usr/bin/perl5", "usr/bin/perl6", "other/perl"} {
					if lstat(t, root, p).Ino != st.Ino {
						t.Errorf("%s is not a hard link of usr/bin/perl", p)
					}
				}
			},
		},
		{
			name: "ownership-mode-times",
			layers: [][]tarEntry{{
				dirEntry("home/").with(func(h *tar.Header) { h.ModTime = time.Unix(1000, 0) }),
				dirEntry("home/user/").with(func(h *tar.Header) {
					h.Uid, h.Gid, h.Mode, h.ModTime = 1234, 1235, 0o750, time.Unix(2000, 5000)
				}),
				reg("home/user/f", "f").with(func(h *tar.Header) {
					h.Uid, h.Gid, h.Mode, h.ModTime, h.AccessTime = 1234, 1235, 0o600, time.Unix(3000, 7000), time.Unix(4000, 0)
				}),
				symlink("home/user/l", "f").with(func(h *tar.Header) { h.Uid, h.Gid, h.ModTime = 1234, 1235, time.Unix(5000, 0) }),
				typed(tar.TypeFifo, "home/user/p").with(func(h *tar.Header) { h.Uid, h.Mode, h.ModTime = 1234, 0o620, time.Unix(6000, 0) }),
			}},
			want: []string{"home/", "home/user/", "home/user/f", "home/user/l", "home/user/p"},
			check: func(t *testing.T, root string) {
				type want struct {
					path     string
					uid, gid uint32
					perm     uint32
					mtime    int64 // ns
				}
				for _, w := range []want{
					{"home", 0, 0, 0o755, 1000e9},
					{"home/user", 1234, 1235, 0o750, 2000e9 + 5000},
					{"home/user/f", 1234, 1235, 0o600, 3000e9 + 7000},
					{"home/user/l", 1234, 1235, 0o777, 5000e9},
					{"home/user/p", 1234, 0, 0o620, 6000e9},
				} {
					st := lstat(t, root, w.path)
					if st.Uid != w.uid || st.Gid != w.gid || st.Mode&0o7777 != w.perm || st.Mtim.Nano() != w.mtime {
						t.Errorf("%s: owner %d:%d mode %o mtime %d, want %d:%d %o %d",
							w.path, st.Uid, st.Gid, st.Mode&0o7777, st.Mtim.Nano(), w.uid, w.gid, w.perm, w.mtime)
					}
				}
				if st := lstat(t, root, "home/user/f"); st.Atim.Sec != 4000 {
					t.Errorf("f atime %d, want 4000", st.Atim.Sec)
				}
			},
		},
		{
			name: "dir-times-survive-later-layers",
			layers: [][]tarEntry{
				{dirEntry("etc/").with(func(h *tar.Header) { h.ModTime = time.Unix(1000, 0) }), reg("etc/a", "a")},
				{reg("etc/b", "b"), reg("etc/.wh.a", "")},
			},
			want: []string{"etc/", "etc/b"},
			check: func(t *testing.T, root string) {
				if st := lstat(t, root, "etc"); st.Mtim.Sec != 1000 {
					t.Errorf("etc mtime %d, want 1000", st.Mtim.Sec)
				}
			},
		},
		{
			name: "ignored-types",
			layers: [][]tarEntry{{
				{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "x"}}},
				reg("f", "f"),
				reg(".wh..wh.plnk", ""),
			}},
			want: []string{"f"},
		},
		{
			name:   "empty-layer",
			layers: [][]tarEntry{{}},
			want:   nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			var layers [][]byte
			for _, es := range tc.layers {
				layers = append(layers, buildTar(t, es...))
			}
			if _, err := applyLayers(t, fx.rootfs, Limits{}, layers...); err != nil {
				t.Fatal(err)
			}
			if got := listTree(t, fx.rootfs); !slices.Equal(got, tc.want) {
				t.Errorf("rootfs holds\n%q\nwant\n%q", got, tc.want)
			}
			if tc.check != nil {
				tc.check(t, fx.rootfs)
			}
			fx.checkContained(t)
		})
	}
}

func TestLargeFileContent(t *testing.T) {
	fx := newFixture(t)
	body := make([]byte, 3<<20+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	layer := buildTar(t, reg("big", string(body)), reg("small", "s"))
	stats, err := applyLayers(t, fx.rootfs, Limits{}, layer)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, fx.rootfs, "big"); got != string(body) {
		t.Errorf("big differs from the tar's content (len %d, want %d)", len(got), len(body))
	}
	if want := (Stats{Entries: 2, Bytes: int64(len(body)) + 1}); stats[0] != want {
		t.Errorf("stats %+v, want %+v", stats[0], want)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// zeros reads as an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// headerOnly returns the header blocks archive/tar writes for hdr.
func headerOnly(tb testing.TB, hdr tar.Header) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(&hdr); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// TestLimits covers HOSTILE-INPUTS 18: sparse bombs, byte and entry caps.
func TestLimits(t *testing.T) {
	const gib2 = 2 << 30
	sparse := headerOnly(t, tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Size: gib2, Mode: 0o644, Format: tar.FormatPAX,
		PAXRecords: map[string]string{ // GNU sparse 1.0: the map and the data follow in the content
			"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "bomb", "GNU.sparse.realsize": "2147483648",
		}})
	many := make([]tarEntry, 50)
	for i := range many {
		many[i] = reg("f"+strings.Repeat("x", i), "")
	}
	tests := []struct {
		name      string
		stream    func() io.Reader
		limits    Limits
		budget    int64
		wantLimit LimitError
		wantErr   bool // some other error
		wantFiles []string
	}{
		{
			name: "claimed-2GiB-over-budget",
			stream: func() io.Reader {
				return io.MultiReader(bytes.NewReader(headerOnly(t, tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Size: gib2, Mode: 0o644})),
					io.LimitReader(zeros{}, gib2+1024))
			},
			budget:    1 << 20,
			wantLimit: LimitError{What: "bytes", Limit: 1 << 20},
		},
		{
			name: "gnu-sparse-2GiB-over-budget",
			stream: func() io.Reader {
				// Sparse map "1\n0\n1\n" (one 1-byte segment at offset
				// 0) padded to a block, one data block: the file's
				// logical size is 2 GiB.
				sparseMap := append([]byte("1\n0\n1\n"), make([]byte, 512-6)...)
				data := append([]byte("x"), make([]byte, 511)...)
				return io.MultiReader(bytes.NewReader(sparse), bytes.NewReader(sparseMap), bytes.NewReader(data), bytes.NewReader(make([]byte, 1024)))
			},
			budget:    64 << 20,
			wantLimit: LimitError{What: "bytes", Limit: 64 << 20},
		},
		{
			name: "max-bytes-across-entries",
			stream: func() io.Reader {
				return bytes.NewReader(buildTar(t, reg("a", strings.Repeat("a", 600)), reg("b", strings.Repeat("b", 600))))
			},
			limits:    Limits{MaxBytes: 1000},
			wantLimit: LimitError{What: "bytes", Limit: 1000},
			wantFiles: []string{"a"},
		},
		{
			name:      "entry-count",
			stream:    func() io.Reader { return bytes.NewReader(buildTar(t, many...)) },
			limits:    Limits{MaxEntries: 10},
			wantLimit: LimitError{What: "entries", Limit: 10},
		},
		{
			name:      "within-limits",
			stream:    func() io.Reader { return bytes.NewReader(buildTar(t, many...)) },
			limits:    Limits{MaxEntries: 50, MaxBytes: 1},
			budget:    1,
			wantFiles: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			a, err := NewApplier(fx.rootfs, tc.limits)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			cr := &countingReader{r: tc.stream()}
			_, err = a.Apply(context.Background(), cr, tc.budget)
			var le *LimitError
			switch {
			case tc.wantLimit != (LimitError{}):
				if !errors.As(err, &le) || *le != tc.wantLimit {
					t.Fatalf("error %v, want %v", err, &tc.wantLimit)
				}
				t.Logf("error (as wanted): %v", err)
			case err != nil:
				t.Fatal(err)
			}
			if cr.n > 4<<20 {
				t.Errorf("read %d bytes of the stream, want the rejection before reading the content", cr.n)
			}
			if tc.wantFiles != nil {
				got := listTree(t, fx.rootfs)
				if !slices.Equal(got, tc.wantFiles) {
					t.Errorf("rootfs holds %q, want %q", got, tc.wantFiles)
				}
			}
			wantMissing(t, fx.rootfs, "bomb")
			fx.checkContained(t)
		})
	}
}

// TestGarbage covers HOSTILE-INPUTS 19: input that is not a complete tar.
func TestGarbage(t *testing.T) {
	valid := buildTar(t, dirEntry("etc/"), reg("etc/passwd", strings.Repeat("root:x:0:0\n", 100)), reg("etc/group", "root:x:0:\n"))
	twoEntries := buildTar(t, dirEntry("etc/"), reg("etc/passwd", strings.Repeat("root:x:0:0\n", 100)))
	corrupt := slices.Clone(valid)
	corrupt[148] ^= 0x55 // first header's checksum
	badSize := bytes.Clone(headerOnly(t, tar.Header{Typeflag: tar.TypeReg, Name: "f", Size: 10, Format: tar.FormatUSTAR}))
	copy(badSize[124:136], "zzzzzzzzzzz\x00") // size field
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	tests := []struct {
		name  string
		input []byte
	}{
		{"empty", nil},
		{"text", []byte("this is not a tar archive, it is a sentence\n")},
		{"random", random},
		{"corrupt-checksum", corrupt},
		{"bad-size-field", badSize},
		{"truncated-in-header", valid[:700]},
		{"truncated-in-content", valid[:bytes.Index(valid, []byte("root:x:0:0"))+300]},
		{"truncated-at-block-boundary", twoEntries[:len(twoEntries)-1024]},
		{"no-end-marker", valid[:len(valid)-1024]},
		{"half-end-marker", valid[:len(valid)-1024+100]},
		{"gzip-not-decompressed", []byte{0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			_, err := applyLayers(t, fx.rootfs, Limits{}, tc.input)
			if err == nil {
				t.Fatalf("no error for %d bytes of garbage", len(tc.input))
			}
			t.Logf("error (as wanted): %v", err)
			fx.checkContained(t)
		})
	}
}

// TestDrainsStream checks that Apply reads past the end marker to EOF.
func TestDrainsStream(t *testing.T) {
	fx := newFixture(t)
	layer := append(buildTar(t, reg("f", "f")), bytes.Repeat([]byte{0}, 10000)...)
	r := bytes.NewReader(layer)
	a, err := NewApplier(fx.rootfs, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Apply(context.Background(), r, 0); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left unread", r.Len())
	}
}

func TestContextCancelled(t *testing.T) {
	fx := newFixture(t)
	a, err := NewApplier(fx.rootfs, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = a.Apply(ctx, bytes.NewReader(buildTar(t, reg("f", "f"))), 0)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	wantMissing(t, fx.rootfs, "f")
}

func TestApplierArguments(t *testing.T) {
	fx := newFixture(t)
	if _, err := NewApplier(filepath.Join(fx.parent, "missing"), Limits{}); err == nil {
		t.Error("NewApplier on a missing directory: no error")
	}
	if _, err := NewApplier(filepath.Join(fx.victim, "passwd"), Limits{}); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("NewApplier on a file: %v, want ENOTDIR", err)
	}
	if _, err := NewApplier(fx.rootfs, Limits{MaxEntries: -1}); err == nil {
		t.Error("negative MaxEntries: no error")
	}
	a, err := NewApplier(fx.rootfs, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(context.Background(), bytes.NewReader(buildTar(t)), -1); err == nil {
		t.Error("negative budget: no error")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := a.Apply(context.Background(), bytes.NewReader(buildTar(t)), 0); err == nil {
		t.Error("Apply after Close: no error")
	}
}
