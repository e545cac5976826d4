package aptlists

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/rootfs"
)

// Where apt keeps what a Cache keeps, as the container sees it.
const (
	// ListsDir holds apt-get update's index files.
	ListsDir = "/var/lib/apt/lists"
	// CachesDir holds the binary caches apt builds from the lists and
	// dpkg's status (BinaryCaches).
	CachesDir = "/var/cache/apt"
)

// BinaryCaches are apt's caches in CachesDir that are kept: the package
// cache, which apt-get install uses as it is when it still fits. apt
// checks it itself against the lists and dpkg's status (their sizes and
// modification times) and builds it again when it does not fit; it cannot
// be checked on the host, so it is kept only beside lists that all
// checked out, and only for the image whose container built it. The
// source cache (srcpkgcache.bin) is not kept: apt needs it only to build
// the package cache again, and makes it then.
var BinaryCaches = []string{"pkgcache.bin"}

// Limits on what is read from a container.
const (
	maxRelease = 16 << 20  // one InRelease or Release file
	maxFile    = 512 << 20 // one index or binary cache
	maxTotal   = 2 << 30   // one container's lists and caches
	maxConfig  = 1 << 20   // one sources or configuration file of the image
)

// listNameRE is what names in apt's lists directory look like
// (URItoFileName leaves only these characters).
var listNameRE = regexp.MustCompile(`^[A-Za-z0-9_%+-][A-Za-z0-9._%+-]*$`)

// ErrMismatch is wrapped by errors about files that do not match what
// their release (or, in the cache, their manifest) says of them.
var ErrMismatch = errors.New("does not match its digest")

// File is one kept file.
type File struct {
	Dir     string    `json:"dir"` // ListsDir or CachesDir
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"`
	ModTime time.Time `json:"mtime"`
}

// Kept is what a cache holds for one key, and what Restore put into a
// container.
type Kept struct {
	Files []File `json:"files"`
}

// Bytes is the size of the kept files together.
func (k *Kept) Bytes() int64 {
	var n int64
	for _, f := range k.Files {
		n += f.Size
	}
	return n
}

// manifest is DIR/<key>.json.
type manifest struct {
	Key string `json:"key"`
	Kept
}

// Cache keeps apt's lists and binary caches on the host, by key (NewKey):
// DIR/<key>.json lists the files, whose contents are DIR/blobs/<sha256>.
// A manifest is replaced atomically; blobs are written under a temporary
// name and renamed once their digest is known, so a reader never sees a
// part. Writers hold DIR/.lock (exclusive), readers hold it shared while
// they open their blobs.
type Cache struct {
	Dir    string // required
	Logger *slog.Logger
}

func (c *Cache) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Cache) manifestPath(key string) string { return filepath.Join(c.Dir, key+".json") }
func (c *Cache) blobPath(sum string) string     { return filepath.Join(c.Dir, "blobs", sum) }
func (c *Cache) lockPath() string               { return filepath.Join(c.Dir, ".lock") }

// keyFiles are what makes an image's lists besides its digest and the
// refresh command: apt's sources, configuration and architecture.
var keyFiles = []string{"/etc/apt/sources.list", "/etc/apt/sources.list.d", "/etc/apt/apt.conf", "/etc/apt/apt.conf.d",
	"/etc/apt/preferences", "/etc/apt/preferences.d", "/var/lib/dpkg/arch"}

// NewKey names the lists of the image with manifest digest digest whose
// root filesystem is rootfsDir, refreshed with the script refresh: two
// containers get the same key only if they are of one image (so one
// image's containers never put files into another's) and their apt asks
// for the same indexes. The image's files are read confined to it.
func NewKey(digest, refresh, rootfsDir string) (string, error) {
	if digest == "" {
		return "", errors.New("apt lists: no image digest")
	}
	root, err := rootfs.Open(rootfsDir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	h := sha256.New()
	fmt.Fprintf(h, "postroj apt lists 1\x00%s\x00%s\x00", digest, refresh)
	for _, p := range keyFiles {
		names := []string{p}
		if sub, err := root.ReadDirNames(p); err == nil {
			sort.Strings(sub)
			names = names[:0]
			for _, n := range sub {
				names = append(names, p+"/"+n)
			}
		}
		for _, n := range names {
			if b, err := root.ReadFile(n, maxConfig); err == nil {
				fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
				h.Write(b)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// validKey reports whether key is one NewKey makes.
func validKey(key string) bool {
	b, err := hex.DecodeString(key)
	return err == nil && len(b) == sha256.Size
}

// load reads the manifest of key: nil, nil, nil without one; its bytes
// also when it is not valid.
func (c *Cache) load(key string) (*manifest, []byte, error) {
	b, err := os.ReadFile(c.manifestPath(key))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, b, fmt.Errorf("apt lists %s: %w", key[:12], err)
	}
	if m.Key != key || len(m.Files) == 0 {
		return nil, b, fmt.Errorf("apt lists %s: manifest of another key or empty", key[:12])
	}
	var total int64
	for _, f := range m.Files {
		if !validFile(f) {
			return nil, b, fmt.Errorf("apt lists %s: bad entry %q in %q", key[:12], f.Name, f.Dir)
		}
		total += f.Size
	}
	if total > maxTotal {
		return nil, b, fmt.Errorf("apt lists %s: %d bytes, more than %d", key[:12], total, int64(maxTotal))
	}
	return &m, b, nil
}

// validFile says whether f names a file Keep would keep.
func validFile(f File) bool {
	b, err := hex.DecodeString(f.SHA256)
	if err != nil || len(b) != sha256.Size || f.Size < 0 || f.Size > maxFile {
		return false
	}
	switch f.Dir {
	case ListsDir:
		return listNameRE.MatchString(f.Name) && f.Name != "lock"
	case CachesDir:
		return slices.Contains(BinaryCaches, f.Name)
	}
	return false
}

// Restore puts the files kept for key into the container whose root is
// root: each is copied under a temporary name, checked against its
// digest and size on the way, given the owner of its directory (the
// container's root, also in a user namespace of its own) and its kept
// modification time (apt's caches record them), and renamed into place
// once all of them checked out. It returns nil, nil when nothing is kept
// for key. An entry that does not check out (a changed byte, a missing
// blob) is put into nothing and removed from the cache; the error wraps
// ErrMismatch when its content was wrong.
func (c *Cache) Restore(ctx context.Context, root *rootfs.Root, key string) (*Kept, error) {
	if !validKey(key) {
		return nil, fmt.Errorf("apt lists: bad key %q", key)
	}
	if _, err := os.Stat(c.manifestPath(key)); errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing kept: no need to lock
	}
	m, raw, blobs, err := c.open(ctx, key)
	defer func() {
		for _, b := range blobs {
			b.Close()
		}
	}()
	if err != nil {
		if raw != nil {
			c.drop(ctx, key, raw)
		}
		return nil, err
	}
	if m == nil {
		return nil, nil
	}
	// The kept releases, checked against their digests, say what the kept
	// indexes must be, as when they were kept.
	srcs := make([]io.Reader, len(m.Files))
	releases := map[string][]byte{}
	for i, f := range m.Files {
		srcs[i] = blobs[i]
		if _, ok := releasePrefix(f.Name); !ok || f.Dir != ListsDir || f.Size > maxRelease {
			continue
		}
		var b bytes.Buffer
		if err := copyChecked(&b, blobs[i], f.Size, f.SHA256); err != nil {
			c.drop(ctx, key, raw)
			return nil, fmt.Errorf("apt lists: %s: %w", f.Name, err)
		}
		releases[f.Name] = b.Bytes()
		srcs[i] = bytes.NewReader(b.Bytes())
	}
	if err := verify(m.Files, releases); err != nil {
		c.drop(ctx, key, raw)
		return nil, err
	}
	dirs := map[string]*targetDir{}
	defer func() {
		for _, d := range dirs {
			d.f.Close()
		}
	}()
	temps := make([]placed, len(m.Files))
	for i, f := range m.Files {
		d, ok := dirs[f.Dir]
		if !ok {
			if d, err = openTarget(root, f.Dir); err != nil {
				return nil, fmt.Errorf("apt lists: %w", err)
			}
			dirs[f.Dir] = d
		}
		temps[i] = placed{dir: d, name: f.Name, temp: ".postroj-" + f.Name}
	}
	undo := func() {
		for _, t := range temps {
			unix.Unlinkat(int(t.dir.f.Fd()), t.temp, 0)
		}
	}
	// Two at a time: hashing is most of the work, and the big files are
	// two (Packages and the package cache).
	var g errgroup.Group
	g.SetLimit(2)
	for i, f := range m.Files {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := temps[i].dir.write(temps[i].temp, srcs[i], f); err != nil {
				return fmt.Errorf("apt lists: %s: %w", f.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		undo()
		if errors.Is(err, ErrMismatch) {
			c.drop(ctx, key, raw)
		}
		return nil, err
	}
	for i, t := range temps {
		if err := unix.Renameat(int(t.dir.f.Fd()), t.temp, int(t.dir.f.Fd()), t.name); err != nil {
			undo()
			(&Kept{Files: m.Files[:i]}).Remove(root)
			return nil, fmt.Errorf("apt lists: putting %s in place: %w", t.name, err)
		}
	}
	return &m.Kept, nil
}

type placed struct {
	dir        *targetDir
	name, temp string
}

// open reads key's manifest and opens the blobs of its files, in order,
// under the shared lock, so that no writer replaces the one or removes
// the others in between. raw is the manifest's content, also when it or
// its blobs are not valid.
func (c *Cache) open(ctx context.Context, key string) (m *manifest, raw []byte, blobs []*os.File, err error) {
	unlock, err := flock.LockShared(ctx, c.lockPath())
	if err != nil {
		return nil, nil, nil, err
	}
	defer unlock()
	m, raw, err = c.load(key)
	if m == nil {
		return nil, raw, nil, err
	}
	for _, f := range m.Files {
		b, err := os.Open(c.blobPath(f.SHA256))
		if err != nil {
			return nil, raw, blobs, fmt.Errorf("apt lists: %s: %w", f.Name, err)
		}
		blobs = append(blobs, b)
	}
	return m, raw, blobs, nil
}

// targetDir is a directory of the container that files are put into.
type targetDir struct {
	f        *os.File
	uid, gid int
}

// openTarget opens dir in root (resolved inside it) for putting files in.
func openTarget(root *rootfs.Root, dir string) (*targetDir, error) {
	f, err := root.Open(dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	return &targetDir{f: f, uid: int(st.Uid), gid: int(st.Gid)}, nil
}

// write creates name (which must not exist) in d with the content of src,
// which must be f's.
func (d *targetDir) write(name string, src io.Reader, f File) error {
	fd, err := unix.Openat(int(d.f.Fd()), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return &os.PathError{Op: "create", Path: name, Err: err}
	}
	out := os.NewFile(uintptr(fd), name)
	defer out.Close()
	if err := copyChecked(out, src, f.Size, f.SHA256); err != nil {
		return err
	}
	if err := out.Chown(d.uid, d.gid); err != nil {
		return err
	}
	if err := out.Chmod(0o644); err != nil {
		return err
	}
	// By descriptor: /proc/self/fd is this process's own table, nothing of
	// the container is resolved.
	ts := []unix.Timespec{unix.NsecToTimespec(f.ModTime.UnixNano()), unix.NsecToTimespec(f.ModTime.UnixNano())}
	if err := unix.UtimesNano("/proc/self/fd/"+strconv.Itoa(int(out.Fd())), ts); err != nil {
		return err
	}
	return out.Close()
}

// copyChecked copies src to dst and checks that it was size bytes with
// SHA-256 sum.
func copyChecked(dst io.Writer, src io.Reader, size int64, sum string) error {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(dst, h), io.LimitReader(src, size+1))
	if err != nil {
		return err
	}
	if n != size || hex.EncodeToString(h.Sum(nil)) != sum {
		return fmt.Errorf("%w (%d bytes, sha256:%s; want %d bytes, sha256:%s)", ErrMismatch, n, hex.EncodeToString(h.Sum(nil))[:12], size, sum[:12])
	}
	return nil
}

// Remove takes k's files out of the container whose root is root again
// (for lists that were put back but could not be revalidated).
func (k *Kept) Remove(root *rootfs.Root) error {
	var first error
	dirs := map[string]*os.File{}
	defer func() {
		for _, d := range dirs {
			d.Close()
		}
	}()
	for _, f := range k.Files {
		d, ok := dirs[f.Dir]
		if !ok {
			var err error
			if d, err = root.Open(f.Dir, unix.O_PATH|unix.O_DIRECTORY); err != nil {
				return err
			}
			dirs[f.Dir] = d
		}
		if err := unix.Unlinkat(int(d.Fd()), f.Name, 0); err != nil && err != unix.ENOENT && first == nil {
			first = &os.PathError{Op: "remove", Path: f.Dir + "/" + f.Name, Err: err}
		}
	}
	return first
}

// drop removes key's entry, whose manifest was raw when it did not check
// out (unless a writer has replaced it since), and the blobs nothing else
// needs.
func (c *Cache) drop(ctx context.Context, key string, raw []byte) {
	unlock, err := flock.Lock(context.WithoutCancel(ctx), c.lockPath(), nil)
	if err != nil {
		return
	}
	defer unlock()
	if cur, err := os.ReadFile(c.manifestPath(key)); err != nil || !bytes.Equal(cur, raw) {
		return
	}
	os.Remove(c.manifestPath(key))
	c.collect()
	c.logger().Info("apt lists: dropped an entry that did not check out", "key", key[:12])
}

// collect removes blobs that no manifest names, and the temporary files
// of writers that died (killed while keeping); the caller holds the lock.
func (c *Cache) collect() {
	used := map[string]bool{}
	ms, _ := filepath.Glob(filepath.Join(c.Dir, "*.json"))
	for _, p := range ms {
		key := strings.TrimSuffix(filepath.Base(p), ".json")
		if !validKey(key) {
			continue
		}
		m, _, err := c.load(key)
		if err != nil || m == nil {
			continue
		}
		for _, f := range m.Files {
			used[f.SHA256] = true
		}
	}
	ents, _ := os.ReadDir(filepath.Join(c.Dir, "blobs"))
	for _, e := range ents {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, ".tmp-"):
			// Its writer holds a lock on it until it is renamed: one that
			// can be locked is a dead writer's.
			if f, err := os.Open(c.blobPath(n)); err == nil {
				if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
					os.Remove(c.blobPath(n))
				}
				f.Close()
			}
		case !used[n]:
			os.Remove(c.blobPath(n))
		}
	}
}

// current is a file in the container as Keep first sees it.
type current struct {
	dir, name string
	size      int64
	mtime     time.Time
}

// scan lists the regular files of the container's lists directory with
// names apt gives its lists (not lock), and its binary caches, without
// following symlinks.
func scan(root *rootfs.Root) ([]current, map[string]*os.File, error) {
	dirs := map[string]*os.File{}
	var out []current
	for _, dir := range []string{ListsDir, CachesDir} {
		d, err := root.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			if errors.Is(err, unix.ENOENT) && dir == CachesDir {
				continue
			}
			for _, d := range dirs {
				d.Close()
			}
			return nil, nil, err
		}
		dirs[dir] = d
		names, err := d.Readdirnames(-1)
		if err != nil {
			for _, d := range dirs {
				d.Close()
			}
			return nil, nil, err
		}
		sort.Strings(names)
		for _, n := range names {
			if dir == ListsDir && (!listNameRE.MatchString(n) || n == "lock") || dir == CachesDir && !slices.Contains(BinaryCaches, n) {
				continue
			}
			var st unix.Stat_t
			if unix.Fstatat(int(d.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
				continue
			}
			out = append(out, current{dir: dir, name: n, size: st.Size, mtime: time.Unix(st.Mtim.Unix())})
		}
	}
	return out, dirs, nil
}

// unchanged says whether the container holds exactly what k put there.
func (k *Kept) unchanged(cur []current) bool {
	if len(cur) != len(k.Files) {
		return false
	}
	want := map[string]File{}
	for _, f := range k.Files {
		want[f.Dir+"/"+f.Name] = f
	}
	for _, c := range cur {
		f, ok := want[c.dir+"/"+c.name]
		if !ok || f.Size != c.size || !f.ModTime.Equal(c.mtime) {
			return false
		}
	}
	return true
}

// Keep keeps the container's lists (InRelease and Release files, the
// indexes they list, a Release's Release.gpg) and apt's binary caches for
// key, to be called right after apt-get update succeeded and before
// anything else ran in the container. Every index file must be a regular
// file (symlinks are not followed) whose size and SHA-256 a kept release
// lists: one that does not match makes Keep keep nothing and return an
// error wrapping ErrMismatch; files no release lists are left out. When
// the container holds exactly what restored (Restore's result) put there,
// nothing is read and changed is false. Only releases the refresh got
// through the package cache's proxy (asked) are kept, with their indexes:
// the next refresh must be seen to revalidate them (see Revalidated),
// which a tunnelled HTTPS fetch is not.
func (c *Cache) Keep(ctx context.Context, root *rootfs.Root, key string, restored *Kept, asked Asked) (kept *Kept, changed bool, err error) {
	if !validKey(key) {
		return nil, false, fmt.Errorf("apt lists: bad key %q", key)
	}
	cur, dirs, err := scan(root)
	if err != nil {
		return nil, false, fmt.Errorf("apt lists: %w", err)
	}
	defer func() {
		for _, d := range dirs {
			d.Close()
		}
	}()
	if restored != nil && restored.unchanged(cur) {
		return restored, false, nil
	}
	// The releases first: they say which other files are indexes. Each is
	// read once, and what was read is what is kept.
	releases := map[string][]byte{}
	listed := map[string]bool{}
	for _, f := range cur {
		prefix, ok := releasePrefix(f.name)
		if f.dir != ListsDir || !ok {
			continue
		}
		src, err := openRegular(dirs[ListsDir], f.name)
		if err != nil {
			return nil, false, fmt.Errorf("apt lists: %w", err)
		}
		data, err := readAll(src, maxRelease)
		src.Close()
		if err != nil {
			return nil, false, fmt.Errorf("apt lists: %s: %w", f.name, err)
		}
		entries, err := ParseRelease(data)
		if err != nil {
			c.logger().Info("apt lists: release left out", "file", f.name, "err", err)
			continue
		}
		if !asked[f.name] {
			c.logger().Info("apt lists: release left out: not fetched over plain HTTP through the proxy", "file", f.name)
			continue
		}
		releases[f.name] = data
		for p := range entries {
			listed[listName(prefix, p)] = true
		}
	}
	if len(releases) == 0 {
		return nil, false, errors.New("apt lists: no release to keep")
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "blobs"), 0o755); err != nil {
		return nil, false, err
	}
	defer func() {
		if err != nil { // blobs kept so far are no manifest's
			if unlock, lerr := flock.Lock(context.WithoutCancel(ctx), c.lockPath(), nil); lerr == nil {
				c.collect()
				unlock()
			}
		}
	}()
	// What to keep, each file opened once: what is read is what is kept.
	type job struct {
		f     current
		src   io.Reader
		mtime time.Time
	}
	var jobs []job
	var total int64
	for _, f := range cur {
		switch data, isRelease := releases[f.name]; {
		case f.dir == ListsDir && isRelease:
			jobs = append(jobs, job{f, bytes.NewReader(data), f.mtime})
		case f.dir == CachesDir, listed[f.name],
			strings.HasSuffix(f.name, "_Release.gpg") && releases[strings.TrimSuffix(f.name, ".gpg")] != nil:
			r, err := openRegular(dirs[f.dir], f.name)
			if err != nil {
				return nil, false, fmt.Errorf("apt lists: %w", err)
			}
			defer r.Close()
			fi, err := r.Stat()
			if err != nil {
				return nil, false, err
			}
			jobs = append(jobs, job{f, r, fi.ModTime()})
			total += fi.Size()
		default:
			c.logger().Debug("apt lists: not listed in a release, left out", "file", f.name)
		}
	}
	if total > maxTotal {
		return nil, false, fmt.Errorf("apt lists: %d bytes, more than %d", total, int64(maxTotal))
	}
	// Two at a time, as Restore does.
	out := Kept{Files: make([]File, len(jobs))}
	var g errgroup.Group
	g.SetLimit(2)
	for i, j := range jobs {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			file, err := c.keepFile(ctx, j.src, maxFile)
			if err != nil {
				return fmt.Errorf("apt lists: %s: %w", j.f.name, err)
			}
			file.Dir, file.Name, file.ModTime = j.f.dir, j.f.name, j.mtime
			out.Files[i] = file
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, false, err
	}
	total = 0
	for _, f := range out.Files {
		total += f.Size
	}
	if total > maxTotal {
		return nil, false, fmt.Errorf("apt lists: %d bytes, more than %d", total, int64(maxTotal))
	}
	if err := verify(out.Files, releases); err != nil {
		return nil, false, err
	}
	unlock, err := flock.Lock(ctx, c.lockPath(), nil)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	if err := fileio.WriteJSON(c.manifestPath(key), manifest{Key: key, Kept: out}, 0o644); err != nil {
		return nil, false, err
	}
	c.collect()
	return &out, true, nil
}

// verify checks files (a manifest's, or what Keep is about to keep)
// against the releases among them, whose contents are releases[name]:
// every file of the lists directory that is not a release or a release's
// signature must be listed in a release with its size and digest.
func verify(files []File, releases map[string][]byte) error {
	listed := map[string][]Index{}
	for name, data := range releases {
		prefix, _ := releasePrefix(name)
		entries, err := ParseRelease(data)
		if err != nil {
			return fmt.Errorf("apt lists: %s: %w", name, err)
		}
		for p, ix := range entries {
			n := listName(prefix, p)
			listed[n] = append(listed[n], ix)
		}
	}
	for _, f := range files {
		if f.Dir != ListsDir || releases[f.Name] != nil ||
			strings.HasSuffix(f.Name, "_Release.gpg") && releases[strings.TrimSuffix(f.Name, ".gpg")] != nil {
			continue
		}
		want := listed[f.Name]
		if want == nil {
			return fmt.Errorf("apt lists: %s: %w: no kept release lists it", f.Name, ErrMismatch)
		}
		if !slices.Contains(want, Index{SHA256: f.SHA256, Size: f.Size}) {
			return fmt.Errorf("apt lists: %s %w in its release (%d bytes, sha256:%s; the release says %d bytes, sha256:%s)",
				f.Name, ErrMismatch, f.Size, f.SHA256[:12], want[0].Size, want[0].SHA256[:12])
		}
	}
	return nil
}

// keepFile copies src (at most limit bytes) into a blob and returns its
// digest and size.
func (c *Cache) keepFile(ctx context.Context, src io.Reader, limit int64) (File, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := c.blobPath(".tmp-" + hex.EncodeToString(rnd[:]))
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return File{}, err
	}
	defer os.Remove(tmp) // a no-op once renamed
	// Held until the rename: collect removes only temporary files nobody
	// holds (the kernel drops the lock of a killed writer).
	defer dst.Close()
	if err := unix.Flock(int(dst.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return File{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(dst, h), io.LimitReader(src, limit+1))
	if err != nil {
		return File{}, err
	}
	if n > limit {
		return File{}, fmt.Errorf("more than %d bytes", limit)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	unlock, err := flock.Lock(ctx, c.lockPath(), nil)
	if err != nil {
		return File{}, err
	}
	defer unlock()
	if err := os.Rename(tmp, c.blobPath(sum)); err != nil {
		return File{}, err
	}
	return File{Size: n, SHA256: sum}, nil
}

// openRegular opens name in dir for reading: no symlink followed, no
// blocking on a FIFO, a regular file only.
func openRegular(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	return f, nil
}

// readAll reads r, at most limit bytes.
func readAll(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("more than %d bytes", limit)
	}
	return b, err
}

// Supports reports whether a Cache keeps the indexes of the package
// manager called manager (distro.Manager.Name): apt's only. dnf, yum,
// zypper and pacman keep theirs elsewhere and differently, and are not
// done.
func Supports(manager string) bool { return manager == "apt-get" }

// Asked holds the list file names of the releases (InRelease, Release) a
// refresh got through the package cache's proxy: asked for over plain
// HTTP and answered 200 or 304.
type Asked map[string]bool

// AskedReleases returns the releases that reqs, what the proxy answered
// during one refresh, got.
func AskedReleases(reqs []egress.Request) Asked {
	out := Asked{}
	for _, q := range reqs {
		if q.Method != http.MethodGet || q.Status != http.StatusOK && q.Status != http.StatusNotModified {
			continue
		}
		if n, ok := releaseListName(q.URL); ok {
			out[n] = true
		}
	}
	return out
}

// releaseListName is the name apt gives in its lists directory to the
// release at the plain-HTTP URL u (URItoFileName: no scheme, no user or
// password).
func releaseListName(u string) (string, bool) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "http" || pu.Host == "" {
		return "", false
	}
	name := listName("", pu.Host+pu.Path)
	if _, ok := releasePrefix(name); !ok {
		return "", false
	}
	return name, true
}

// Revalidated reports whether the refresh after Restore got every release
// k put back (asked): apt then checked them with their repositories, and
// only then may the indexes put back be used. Without that (an apt-get
// too old to fail on a failed fetch, a repository that did not answer)
// apt would go on with them unchecked. missing names the others.
func (k *Kept) Revalidated(asked Asked) (ok bool, missing []string) {
	for _, f := range k.Files {
		if _, isRelease := releasePrefix(f.Name); f.Dir == ListsDir && isRelease && !asked[f.Name] {
			missing = append(missing, f.Name)
		}
	}
	return len(missing) == 0, missing
}
