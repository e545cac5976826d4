package layer

import (
	"archive/tar"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// errAny marks a case that must fail without a particular sentinel.
var errAny = errors.New("any error")

// hostileCase applies layers to a fresh fixture; the numbers in names refer
// to /work/shared/HOSTILE-INPUTS.md. Every case also checks that the victim
// directory and the fixture's parent are untouched.
type hostileCase struct {
	name    string
	layers  func(fx *fixture) [][]tarEntry
	wantErr error // nil, errAny or a sentinel
	check   func(t *testing.T, fx *fixture, stats []Stats)
}

// Cases whose entries name real host directories (/etc, /run, /tmp, /) only
// use the unique name canary there, so that a regression leaves a file the
// test finds and removes rather than damage.
func hostileCases(canary string) []hostileCase {
	one := func(es ...tarEntry) func(*fixture) [][]tarEntry {
		return func(*fixture) [][]tarEntry { return [][]tarEntry{es} }
	}
	return []hostileCase{
		// 1: names climbing out or absolute.
		{
			name:   "1/dotdot-etc",
			layers: one(reg("../../etc/cron.d/x", "job")),
			check:  func(t *testing.T, fx *fixture, _ []Stats) { wantContent(t, fx.rootfs, "etc/cron.d/x", "job") },
		},
		{
			name:   "1/dotdot-victim",
			layers: one(reg("../victim/passwd", "evil"), reg("../victim/new", "evil")),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantContent(t, fx.rootfs, "victim/passwd", "evil")
				wantContent(t, fx.rootfs, "victim/new", "evil")
			},
		},
		{
			name: "1/dotdot-deep-to-victim-abs",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{reg(strings.Repeat("../", 30)+fx.vrel()+"/passwd", "evil")}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) { wantContent(t, fx.rootfs, fx.vrel()+"/passwd", "evil") },
		},
		{
			name:   "1/slash-dotdot",
			layers: one(reg("/../x", "x"), reg("./../../y", "y"), reg("a/../../../z", "z")),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantContent(t, fx.rootfs, "x", "x")
				wantContent(t, fx.rootfs, "y", "y")
				wantContent(t, fx.rootfs, "z", "z")
			},
		},
		{
			name: "1/absolute",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{reg("/etc/x", "x"), reg(fx.victim+"/passwd", "evil")}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantContent(t, fx.rootfs, "etc/x", "x")
				wantContent(t, fx.rootfs, fx.vrel()+"/passwd", "evil")
			},
		},
		{
			name: "1/dotdot-dir-metadata",
			layers: one(dirEntry("../victim/").with(func(h *tar.Header) { h.Mode = 0o777; h.Uid = 1234 }),
				dirEntry("..").with(func(h *tar.Header) { h.Mode = 0o777 })),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				if st := lstat(t, fx.rootfs, "victim"); st.Mode&0o7777 != 0o777 || st.Uid != 1234 {
					t.Errorf("rootfs/victim mode %o uid %d, want 777 1234", st.Mode&0o7777, st.Uid)
				}
			},
		},

		// 2: symlinked directories, absolute, relative and chained.
		{
			name:   "2/abs-symlink-etc",
			layers: one(dirEntry("etc/"), symlink("localetc", "/etc"), reg("localetc/"+canary, "x")),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantContent(t, fx.rootfs, "etc/"+canary, "x")
				if st := lstat(t, fx.rootfs, "localetc"); st.Mode&unix.S_IFMT != unix.S_IFLNK {
					t.Errorf("localetc is not a symlink any more")
				}
			},
		},
		{
			name: "2/abs-symlink-victim",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{dirEntry(fx.vrel() + "/"), symlink("localetc", fx.victim), reg("localetc/passwd", "evil")}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) { wantContent(t, fx.rootfs, fx.vrel()+"/passwd", "evil") },
		},
		{
			name: "2/abs-symlink-victim-dangling",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{symlink("localetc", fx.victim), reg("localetc/passwd", "evil")}}
			},
			wantErr: errAny,
			check:   func(t *testing.T, fx *fixture, _ []Stats) { wantMissing(t, fx.rootfs, fx.vrel()) },
		},
		{
			name: "2/relative-symlink-climbing",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{
					dirEntry("victim/"), dirEntry(fx.vrel() + "/"),
					symlink("l1", "../victim"), reg("l1/passwd", "evil1"),
					symlink("usr/l2", strings.Repeat("../", 20)+fx.vrel()), reg("usr/l2/passwd", "evil2"),
				}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantContent(t, fx.rootfs, "victim/passwd", "evil1")
				wantContent(t, fx.rootfs, fx.vrel()+"/passwd", "evil2")
			},
		},
		{
			name: "2/symlink-chain",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{
					dirEntry(fx.vrel() + "/"),
					symlink("a", "b"), symlink("b", "sub/../c"), dirEntry("sub/"), symlink("c", "../.."+fx.victim),
					reg("a/passwd", "evil"),
				}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) { wantContent(t, fx.rootfs, fx.vrel()+"/passwd", "evil") },
		},
		{
			name:    "2/symlink-loop",
			layers:  one(symlink("loop1", "loop2"), symlink("loop2", "/loop1"), reg("loop1/x", "x")),
			wantErr: errAny,
		},

		// 3: a directory replaced by a symlink within one layer.
		{
			name: "3/dir-replaced-by-symlink-to-slash",
			layers: one(dirEntry("foo/tmp/"), reg("foo/tmp/"+canary, "1"),
				symlink("foo", "/"), reg("foo/tmp/"+canary, "2")),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantContent(t, fx.rootfs, "tmp/"+canary, "2")
				wantMissing(t, "/tmp", canary)
				if st := lstat(t, fx.rootfs, "foo"); st.Mode&unix.S_IFMT != unix.S_IFLNK {
					t.Errorf("foo is not a symlink")
				}
			},
		},
		{
			name: "3/dir-replaced-by-symlink-to-victim",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{dirEntry("foo/"), reg("foo/passwd", "1"), symlink("foo", fx.victim), reg("foo/passwd", "evil")}}
			},
			wantErr: errAny, // rootfs has no victim directory to resolve to
		},
		{
			name: "3/dir-replaced-by-relative-symlink",
			layers: one(dirEntry("victim/"), dirEntry("foo/"), reg("foo/passwd", "1"),
				symlink("foo", "../../victim"), reg("foo/passwd", "evil")),
			check: func(t *testing.T, fx *fixture, _ []Stats) { wantContent(t, fx.rootfs, "victim/passwd", "evil") },
		},

		// 4: a file over a dangling symlink replaces the symlink.
		{
			name: "4/file-over-dangling-symlink",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{symlink("pwn", fx.victim+"/new"), reg("pwn", "data"),
					symlink("pwn2", "../victim/passwd"), reg("pwn2", "data2")}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantContent(t, fx.rootfs, "pwn", "data")
				wantContent(t, fx.rootfs, "pwn2", "data2")
			},
		},
		{
			name: "4/file-over-symlink-across-layers",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{symlink("pwn", fx.victim+"/passwd")}, {reg("pwn", "data")}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) { wantContent(t, fx.rootfs, "pwn", "data") },
		},
		{
			name: "4/dir-and-fifo-over-symlink",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{
					symlink("d", fx.victim+"/dir"), dirEntry("d/").with(func(h *tar.Header) { h.Mode = 0o777 }),
					symlink("f", fx.victim+"/passwd"), typed(tar.TypeFifo, "f"),
				}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				if st := lstat(t, fx.rootfs, "d"); st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o777 != 0o777 {
					t.Errorf("d has mode %o, want a directory with mode 777", st.Mode)
				}
				if st := lstat(t, fx.rootfs, "f"); st.Mode&unix.S_IFMT != unix.S_IFIFO {
					t.Errorf("f has mode %o, want a fifo", st.Mode)
				}
			},
		},

		// 5: hard links to outside.
		{
			name:    "5/hardlink-abs-victim",
			layers:  func(fx *fixture) [][]tarEntry { return [][]tarEntry{{hardlink("h", fx.victim+"/passwd")}} },
			wantErr: errAny,
			check:   func(t *testing.T, fx *fixture, _ []Stats) { wantMissing(t, fx.rootfs, "h") },
		},
		{
			name:    "5/hardlink-dotdot-victim",
			layers:  one(hardlink("h", "../victim/passwd")),
			wantErr: errAny,
		},
		{
			name:   "5/hardlink-dotdot-confined",
			layers: one(reg("etc/passwd", "root"), hardlink("h", "../../etc/passwd"), hardlink("/h2", "/etc/passwd")),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				ino := lstat(t, fx.rootfs, "etc/passwd").Ino
				if lstat(t, fx.rootfs, "h").Ino != ino || lstat(t, fx.rootfs, "h2").Ino != ino {
					t.Errorf("h and h2 are not hard links of etc/passwd")
				}
			},
		},
		{
			name: "5/hardlink-via-symlinked-dir",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{symlink("localetc", fx.victim), hardlink("h", "localetc/passwd")}}
			},
			wantErr: errAny,
		},
		{
			name:   "5/hardlink-via-symlinked-dir-confined",
			layers: one(reg("etc/passwd", "root"), symlink("localetc", "/etc"), hardlink("h", "localetc/passwd")),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				if lstat(t, fx.rootfs, "h").Ino != lstat(t, fx.rootfs, "etc/passwd").Ino {
					t.Errorf("h is not a hard link of etc/passwd")
				}
			},
		},
		{
			name:    "5/hardlink-to-directory",
			layers:  one(dirEntry("d/"), hardlink("h", "d")),
			wantErr: errAny,
		},
		{
			name:    "5/hardlink-to-missing",
			layers:  one(hardlink("h", "nothing/here")),
			wantErr: errAny,
		},

		// 6: metadata of a hard link to a symlink to a host file.
		{
			name: "6/hardlink-to-symlink-chmod-chtimes",
			layers: func(fx *fixture) [][]tarEntry {
				meta := func(h *tar.Header) { h.Mode = 0o4777; h.Uid = 1234; h.Gid = 1234; h.ModTime = time.Unix(42, 0) }
				return [][]tarEntry{
					{symlink("s", fx.victim+"/passwd").with(meta), hardlink("h", "s").with(meta),
						symlink("r", "../victim/passwd").with(meta), hardlink("hr", "r").with(meta)},
					{hardlink("h2", "h").with(meta)},
				}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				s := lstat(t, fx.rootfs, "s")
				for _, name := range []string{"h", "h2"} {
					if st := lstat(t, fx.rootfs, name); st.Ino != s.Ino || st.Mode&unix.S_IFMT != unix.S_IFLNK {
						t.Errorf("%s is not a hard link of the symlink s", name)
					}
				}
				if s.Uid != 1234 || s.Mtim.Sec != 42 {
					t.Errorf("symlink s has uid %d mtime %d, want 1234 42 (set on the link itself)", s.Uid, s.Mtim.Sec)
				}
			},
		},

		// 7: entries for the root itself.
		{name: "7/dot-symlink", layers: one(symlink(".", "/")), wantErr: ErrUnsafePath},
		{name: "7/slash-symlink-to-victim", layers: func(fx *fixture) [][]tarEntry { return [][]tarEntry{{symlink("/", fx.victim)}} }, wantErr: ErrUnsafePath},
		{name: "7/slash-file", layers: one(reg("x", "x").rawNamed("/")), wantErr: ErrUnsafePath},
		{name: "7/dot-slash-file", layers: one(reg("x", "x").rawNamed("./")), wantErr: ErrUnsafePath},
		{name: "7/empty-name-file", layers: one(reg("", "x")), wantErr: ErrUnsafePath},
		{name: "7/dotdot-symlink", layers: one(symlink("..", "/")), wantErr: ErrUnsafePath},
		{name: "7/dot-hardlink", layers: one(reg("f", "x"), hardlink("./", "f")), wantErr: ErrUnsafePath},
		{name: "7/hardlink-to-root", layers: one(hardlink("h", "/")), wantErr: ErrUnsafePath},
		{name: "7/dot-fifo", layers: one(typed(tar.TypeFifo, ".")), wantErr: ErrUnsafePath},
		{name: "7/slash-device", layers: one(typed(tar.TypeChar, "x").rawNamed("/")), wantErr: ErrUnsafePath},
		{
			name: "7/dot-dir-sets-root-metadata",
			layers: one(dirEntry("./").with(func(h *tar.Header) { h.Mode = 0o750; h.Uid = 1234 }),
				dirEntry("/").with(func(h *tar.Header) { h.Mode = 0o751; h.Uid = 1234; h.ModTime = time.Unix(77, 0) })),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				st := lstat(t, fx.rootfs, ".")
				if st.Mode != unix.S_IFDIR|0o751 || st.Uid != 1234 || st.Mtim.Sec != 77 {
					t.Errorf("root has mode %o uid %d mtime %d, want dir 751 1234 77", st.Mode, st.Uid, st.Mtim.Sec)
				}
			},
		},

		// 8: malformed whiteouts.
		{name: "8/wh-dot", layers: one(reg("etc/x", "x"), reg(".wh..", "")), wantErr: ErrInvalidWhiteout},
		{name: "8/wh-dotdot", layers: one(reg(".wh...", "")), wantErr: ErrInvalidWhiteout},
		{name: "8/etc-wh-dotdot", layers: one(reg("etc/x", "x"), reg("etc/.wh...", "")), wantErr: ErrInvalidWhiteout},
		{name: "8/wh-empty", layers: one(reg("etc/.wh.", "")), wantErr: ErrInvalidWhiteout},
		{name: "8/wh-as-directory", layers: one(reg("etc/.wh.x/y", "")), wantErr: ErrInvalidWhiteout},
		{name: "8/wh-dotdot-dir-entry", layers: one(dirEntry("../.wh..")), wantErr: ErrInvalidWhiteout},

		// 9: whiteouts through symlinked parents.
		{
			name: "9/whiteout-via-abs-symlink",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{
					{reg(fx.vrel()+"/passwd", "inside"), symlink("localetc", fx.victim)},
					{reg("localetc/.wh.passwd", ""), reg("localetc/.wh.dir", "")},
				}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) { wantMissing(t, fx.rootfs, fx.vrel()+"/passwd") },
		},
		{
			name: "9/whiteout-via-dangling-symlinks",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{
					{symlink("localetc", fx.victim), symlink("rel", "../victim")},
					{reg("localetc/.wh.passwd", ""), reg("rel/.wh.passwd", ""), reg("rel/.wh.dir", ""),
						reg("../victim/.wh.passwd", ""), reg(fx.victim+"/.wh.dir", "")},
				}
			},
		},
		{
			name: "9/whiteout-removes-symlink-not-target",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{reg(canary+"/keep", "k"), symlink("localetc", "/"+canary), symlink("v", fx.victim)},
					{reg(".wh.localetc", ""), reg(".wh.v", "")}}
			},
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantMissing(t, fx.rootfs, "localetc")
				wantMissing(t, fx.rootfs, "v")
				wantContent(t, fx.rootfs, canary+"/keep", "k")
			},
		},
		{
			name: "9/opaque-via-symlinked-parent",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{symlink("v", fx.victim), symlink("r", "../victim")},
					{reg("v/.wh..wh..opq", ""), reg("r/.wh..wh..opq", "")}}
			},
		},

		// 10: opaque whiteouts.
		{
			name: "10/opaque-keeps-same-layer",
			layers: one(dirEntry("d/"), reg("d/lower", "l"),
				dirEntry("e/"), reg("e/before", "b"), reg("e/.wh..wh..opq", ""), reg("e/after", "a")),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				// Everything here is in one layer: the marker hides nothing.
				wantContent(t, fx.rootfs, "e/before", "b")
				wantContent(t, fx.rootfs, "e/after", "a")
				wantContent(t, fx.rootfs, "d/lower", "l")
			},
		},

		// 11: legitimate absolute symlinks.
		{
			name: "11/var-run",
			layers: one(dirEntry("run/"), dirEntry("var/"), symlink("var/run", "/run"),
				reg("var/run/"+canary, "foo"), dirEntry("var/run/"+canary+"-dir/"), reg("var/run/"+canary+"-dir/bar", "bar")),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				wantContent(t, fx.rootfs, "run/"+canary, "foo")
				wantContent(t, fx.rootfs, "run/"+canary+"-dir/bar", "bar")
			},
		},

		// 12: device nodes are skipped.
		{
			name: "12/devices-skipped",
			layers: func(fx *fixture) [][]tarEntry {
				return [][]tarEntry{{dirEntry("dev/"), typed(tar.TypeChar, "dev/null"), typed(tar.TypeBlock, "dev/sda"),
					typed(tar.TypeChar, fx.victim+"/dev-null"), typed(tar.TypeFifo, "dev/fifo")}}
			},
			check: func(t *testing.T, fx *fixture, stats []Stats) {
				if stats[0].SkippedDevices != 3 {
					t.Errorf("SkippedDevices = %d, want 3", stats[0].SkippedDevices)
				}
				wantMissing(t, fx.rootfs, "dev/null")
				wantMissing(t, fx.rootfs, "dev/sda")
				wantMissing(t, fx.rootfs, fx.vrel())
				if st := lstat(t, fx.rootfs, "dev/fifo"); st.Mode&unix.S_IFMT != unix.S_IFIFO {
					t.Errorf("dev/fifo is not a fifo")
				}
			},
		},

		// 13: setuid bits survive (their exposure is checked by NewApplier,
		// see TestNewApplierRejectsExposedRoot).
		{
			name: "13/setuid-preserved",
			layers: one(reg("usr/bin/su", "elf").with(func(h *tar.Header) { h.Mode = 0o4755 }),
				reg("usr/bin/wall", "elf").with(func(h *tar.Header) { h.Mode = 0o2755; h.Uid = 1234; h.Gid = 5 }),
				dirEntry("tmp/").with(func(h *tar.Header) { h.Mode = 0o1777 })),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				if st := lstat(t, fx.rootfs, "usr/bin/su"); st.Mode&0o7777 != 0o4755 {
					t.Errorf("su mode %o, want 4755", st.Mode&0o7777)
				}
				if st := lstat(t, fx.rootfs, "usr/bin/wall"); st.Mode&0o7777 != 0o2755 || st.Uid != 1234 || st.Gid != 5 {
					t.Errorf("wall mode %o owner %d:%d, want 2755 1234:5", st.Mode&0o7777, st.Uid, st.Gid)
				}
				if st := lstat(t, fx.rootfs, "tmp"); st.Mode&0o7777 != 0o1777 {
					t.Errorf("tmp mode %o, want 1777", st.Mode&0o7777)
				}
			},
		},

		// 14: extended attributes.
		{
			name: "14/xattrs-filtered",
			layers: one(reg("bin/ping", "elf").with(func(h *tar.Header) {
				h.PAXRecords = map[string]string{
					"SCHILY.xattr.security.capability":     string(capNetRaw()),
					"SCHILY.xattr.user.mime":               "text/plain",
					"SCHILY.xattr.trusted.overlay.opaque":  "y",
					"SCHILY.xattr.security.selinux":        "system_u:object_r:shadow_t:s0",
					"SCHILY.xattr.system.posix_acl_access": "\x02\x00\x00\x00",
				}
			})),
			check: func(t *testing.T, fx *fixture, _ []Stats) {
				p := filepath.Join(fx.rootfs, "bin/ping")
				if got, err := getxattr(p, "security.capability"); errors.Is(err, unix.ENOTSUP) {
					t.Logf("file system without security.capability support: %v", err)
				} else if err != nil || string(got) != string(capNetRaw()) {
					t.Errorf("security.capability = %x, %v; want %x", got, err, capNetRaw())
				}
				if got, err := getxattr(p, "user.mime"); errors.Is(err, unix.ENOTSUP) {
					t.Logf("file system without user xattrs: %v", err)
				} else if err != nil || string(got) != "text/plain" {
					t.Errorf("user.mime = %q, %v; want text/plain", got, err)
				}
				for _, name := range []string{"trusted.overlay.opaque", "security.selinux", "system.posix_acl_access"} {
					if got, err := getxattr(p, name); err == nil {
						t.Errorf("%s = %q, want it dropped", name, got)
					}
				}
			},
		},
	}
}

// capNetRaw is a version 2 security.capability value granting cap_net_raw+ep.
func capNetRaw() []byte {
	return []byte{
		0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
		0x00, 0x20, 0x00, 0x00, // permitted[0]: 1<<13 (CAP_NET_RAW)
		0x00, 0x00, 0x00, 0x00, // inheritable[0]
		0x00, 0x00, 0x00, 0x00, // permitted[1]
		0x00, 0x00, 0x00, 0x00, // inheritable[1]
	}
}

func getxattr(p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func TestHostileInputs(t *testing.T) {
	canary := fmt.Sprintf("racker-layer-canary-%d-%x", os.Getpid(), rand.Uint64())
	for _, tc := range hostileCases(canary) {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			t.Cleanup(func() { checkHostCanary(t, canary) })
			var layers [][]byte
			for _, es := range tc.layers(fx) {
				layers = append(layers, buildTar(t, es...))
			}
			stats, err := applyLayers(t, fx.rootfs, Limits{}, layers...)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr == errAny && err == nil:
				t.Fatalf("no error, want one")
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				t.Logf("error (as wanted): %v", err)
			}
			fx.checkContained(t)
			if tc.check != nil {
				tc.check(t, fx, stats)
			}
		})
	}
}

// checkHostCanary fails the test if a file named canary appeared in one of the
// host directories the hostile cases name, and removes it.
func checkHostCanary(t *testing.T, canary string) {
	for _, dir := range []string{"/", "/etc", "/run", "/tmp"} {
		p := filepath.Join(dir, canary)
		for _, q := range []string{p, p + "-dir"} {
			if _, err := os.Lstat(q); err == nil {
				t.Errorf("escaped to the host: %s exists", q)
			}
			if err := os.RemoveAll(q); err != nil {
				t.Error(err)
			}
		}
	}
}

func TestNewApplierRejectsExposedRoot(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's directories are 0700, which keeps others out.
	a, err := NewApplier(rootfs, Limits{})
	if err != nil {
		t.Fatalf("root under a 0700 directory: %v", err)
	}
	a.Close()

	// Open every ancestor up to /tmp and / (both searchable by others).
	for _, d := range []string{dir, filepath.Dir(dir)} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(d, fi.Mode().Perm()) })
	}
	for p := filepath.Dir(filepath.Dir(dir)); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			t.Skipf("%s is closed to others; cannot build an exposed root here", p)
		}
		if p == "/" {
			break
		}
	}
	// A closed root does not help: a layer's "./" entry sets its mode.
	for _, perm := range []os.FileMode{0o755, 0o700} {
		if err := os.Chmod(rootfs, perm); err != nil {
			t.Fatal(err)
		}
		if a, err := NewApplier(rootfs, Limits{}); !errors.Is(err, ErrExposedRoot) {
			if a != nil {
				a.Close()
			}
			t.Errorf("NewApplier on an exposed %o root: %v, want ErrExposedRoot", perm, err)
		}
	}
}
