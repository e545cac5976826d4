package testregistry

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// node is what Compare knows about one file system entry. Hardlinked
// names share one *node.
type node struct {
	kind     string // "dir", "file", "symlink", "fifo", "socket" or "other"
	mode     int64  // permission bits with setuid, setgid and sticky
	uid      int
	gid      int
	size     int64
	sum      [sha256.Size]byte
	target   string // of a symlink
	mtime    int64  // seconds
	implicit bool   // a parent directory the image has no entry for

	// rootfs side only
	inode [2]uint64 // device and inode number
	nlink uint64
}

// Compare flattens img and compares the result with the directory rootfs
// entry by entry: path, type, mode (with setuid, setgid and sticky bits),
// owner, symlink target, size and SHA-256 of files, mtime of everything but
// directories, and hardlinks (names linked in the image must share an inode
// in rootfs, and the reverse, and no file in rootfs may have links outside
// it). Character and block devices are ignored: racker does not create them.
// It returns the differences, sorted by path.
//
// Flattening applies the layers in order as the OCI image spec says: within
// a layer the last entry for a path wins; a whiteout or opaque marker hides
// entries of lower layers only; a non-directory replaces whatever was at
// its path, subtree included. Names are resolved inside the root ("../x"
// and "/x" are "x"), and parents without entries of their own are expected
// as directories of any mode. It does not model writes through symlinked
// parents. (mutate.Extract would be the obvious oracle, but it keeps the
// first of two entries for a path in one layer and refuses climbing names.)
func Compare(ctx context.Context, img v1.Image, rootfs string) ([]string, error) {
	want, diffs, err := flatten(img)
	if err != nil {
		return nil, fmt.Errorf("flattening image: %w", err)
	}
	got, err := dirNodes(ctx, rootfs)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rootfs, err)
	}
	diffs = append(diffs, compareNodes(want, got)...)
	slices.Sort(diffs)
	return diffs, nil
}

// cleanName maps a tar name to a path relative to the root, the way an
// extractor confined to the root would: "./a", "/a", "a/" and "../a" are all
// "a"; the root itself is "".
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// layerEntry is one tar entry of a layer, read ahead so whiteouts can be
// applied before the layer's additions.
type layerEntry struct {
	name string
	link string // hardlink target, cleaned
	node *node
	dev  bool
}

func flatten(img v1.Image) (map[string]*node, []string, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, nil, err
	}
	fs := map[string]*node{}
	var diffs []string
	for i, l := range layers {
		entries, hides, opaques, err := readLayer(l)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
		for _, dir := range opaques {
			removeTree(fs, dir, false)
		}
		for _, name := range hides {
			removeTree(fs, name, true)
		}
		for _, e := range entries {
			if e.link != "" {
				target := fs[e.link]
				if target == nil {
					diffs = append(diffs, fmt.Sprintf("%s: hardlink to %s, which is not in the image", e.name, e.link))
					continue
				}
				e.node = target
			}
			old := fs[e.name]
			if old != nil && !(old.kind == "dir" && e.node != nil && e.node.kind == "dir") {
				removeTree(fs, e.name, true)
			}
			if e.dev {
				continue
			}
			fs[e.name] = e.node
			for dir := path.Dir(e.name); dir != "."; dir = path.Dir(dir) {
				if fs[dir] == nil {
					fs[dir] = &node{kind: "dir", implicit: true}
				}
			}
		}
	}
	return fs, diffs, nil
}

// removeTree deletes the descendants of name from fs, and name itself if self.
func removeTree(fs map[string]*node, name string, self bool) {
	if self {
		delete(fs, name)
	}
	prefix := name + "/"
	if name == "" {
		prefix = ""
	}
	for p := range fs {
		if strings.HasPrefix(p, prefix) && p != name {
			delete(fs, p)
		}
	}
}

func readLayer(l v1.Layer) (entries []layerEntry, hides, opaques []string, err error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, nil, nil, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, nil, err
		}
		name := cleanName(h.Name)
		if name == "" {
			continue
		}
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == opaqueMarker:
			opaques = append(opaques, dir)
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			hides = append(hides, path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
			continue
		}
		e := layerEntry{name: name}
		n := &node{mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, mtime: h.ModTime.Unix()}
		switch h.Typeflag {
		case tar.TypeChar, tar.TypeBlock:
			e.dev = true
		case tar.TypeDir:
			n.kind = "dir"
		case tar.TypeReg, tar.TypeRegA:
			n.kind = "file"
			hash := sha256.New()
			if n.size, err = io.Copy(hash, tr); err != nil {
				return nil, nil, nil, fmt.Errorf("%s: %w", h.Name, err)
			}
			copy(n.sum[:], hash.Sum(nil))
		case tar.TypeSymlink:
			n.kind, n.target = "symlink", h.Linkname
		case tar.TypeLink:
			e.link, n = cleanName(h.Linkname), nil
		case tar.TypeFifo:
			n.kind = "fifo"
		default:
			n.kind = fmt.Sprintf("other(%q)", h.Typeflag)
		}
		e.node = n
		entries = append(entries, e)
	}
	// Read to the end, so the layer's digest is verified.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, nil, nil, err
	}
	return entries, hides, opaques, nil
}

func dirNodes(ctx context.Context, root string) (map[string]*node, error) {
	nodes := map[string]*node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := &node{
			mode:  int64(st.Mode & 0o7777),
			uid:   int(st.Uid),
			gid:   int(st.Gid),
			mtime: st.Mtim.Sec,
			inode: [2]uint64{uint64(st.Dev), st.Ino},
			nlink: uint64(st.Nlink),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR, unix.S_IFBLK:
			return nil
		case unix.S_IFDIR:
			n.kind = "dir"
		case unix.S_IFREG:
			n.kind = "file"
			if n.size, n.sum, err = hashPath(p); err != nil {
				return err
			}
		case unix.S_IFLNK:
			n.kind = "symlink"
			if n.target, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFIFO:
			n.kind = "fifo"
		case unix.S_IFSOCK:
			n.kind = "socket"
		default:
			n.kind = "other"
		}
		nodes[filepath.ToSlash(rel)] = n
		return nil
	})
	return nodes, err
}

func hashPath(p string) (int64, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return 0, sum, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	copy(sum[:], h.Sum(nil))
	return n, sum, err
}

// groups maps each name that shares its inode with other names to the
// sorted list of those names, itself included. On the image side names
// share an inode when they share a *node, on the rootfs side when they have
// the same device and inode numbers.
func groups(nodes map[string]*node, byNumber bool) map[string]string {
	byInode := map[any][]string{}
	for name, n := range nodes {
		if n.kind == "dir" {
			continue
		}
		var key any = n
		if byNumber {
			key = n.inode
		}
		byInode[key] = append(byInode[key], name)
	}
	out := map[string]string{}
	for _, names := range byInode {
		if len(names) < 2 {
			continue
		}
		slices.Sort(names)
		for _, name := range names {
			out[name] = strings.Join(names, ", ")
		}
	}
	return out
}

func compareNodes(want, got map[string]*node) []string {
	var diffs []string
	add := func(name, format string, args ...any) {
		diffs = append(diffs, name+": "+fmt.Sprintf(format, args...))
	}
	wantGroups, gotGroups := groups(want, false), groups(got, true)
	names := map[string]bool{}
	for name := range want {
		names[name] = true
	}
	for name := range got {
		names[name] = true
	}
	for name := range names {
		w, g := want[name], got[name]
		switch {
		case g == nil:
			add(name, "missing from rootfs (image has a %s)", w.kind)
			continue
		case w == nil:
			add(name, "not in image (rootfs has a %s)", g.kind)
			continue
		case w.kind != g.kind:
			add(name, "image has a %s, rootfs a %s", w.kind, g.kind)
			continue
		}
		if w.implicit {
			continue // any directory will do
		}
		if w.kind != "symlink" && w.mode != g.mode {
			add(name, "mode %04o in image, %04o in rootfs", w.mode, g.mode)
		}
		if w.uid != g.uid || w.gid != g.gid {
			add(name, "owner %d:%d in image, %d:%d in rootfs", w.uid, w.gid, g.uid, g.gid)
		}
		if w.target != g.target {
			add(name, "symlink to %q in image, to %q in rootfs", w.target, g.target)
		}
		if w.kind == "file" {
			if w.size != g.size {
				add(name, "%d bytes in image, %d in rootfs", w.size, g.size)
			} else if w.sum != g.sum {
				add(name, "content differs (same size %d)", w.size)
			}
		}
		if w.kind != "dir" && w.mtime != g.mtime {
			add(name, "mtime %d in image, %d in rootfs", w.mtime, g.mtime)
		}
		if wantGroups[name] != gotGroups[name] {
			add(name, "hardlinked with [%s] in image, with [%s] in rootfs", wantGroups[name], gotGroups[name])
		}
		if g.kind == "file" {
			inside := uint64(1)
			if gr := gotGroups[name]; gr != "" {
				inside = uint64(strings.Count(gr, ", ") + 1)
			}
			if g.nlink != inside {
				add(name, "has %d links but %d inside rootfs", g.nlink, inside)
			}
		}
	}
	return diffs
}
