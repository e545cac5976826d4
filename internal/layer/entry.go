package layer

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// maxID is the largest uid or gid accepted; (uid_t)-1 means "unchanged" to chown.
const maxID = 1<<32 - 2

// Flags recorded in Applier.created for the paths of the current layer.
const (
	flagCreated      = 1 << iota // this layer created an entry at the path
	flagCreatedDir               // ... and it was a directory
	flagCreatedBelow             // this layer created something below the path
)

// layerApply holds the state of one Apply call.
type layerApply struct {
	a      *Applier
	ctx    context.Context
	budget int64
	st     *Stats
}

// cleanName confines a tar name to the root lexically: "..", "." and
// repeated slashes are cleaned away against a leading "/". It returns "." for
// the root itself and otherwise a relative path without "." or "..".
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: name contains a NUL byte", ErrUnsafePath)
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return ".", nil
	}
	return p[1:], nil
}

// entry applies one tar entry; tr is positioned at its content.
func (l *layerApply) entry(tr io.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont, tar.TypeDir, tar.TypeSymlink,
		tar.TypeLink, tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
	default:
		return nil // PAX global headers, GNU volume labels, unknown types
	}
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: entry for the root directory has type %q, not directory", ErrUnsafePath, hdr.Typeflag)
		}
		return l.root(hdr)
	}
	dir, base := splitPath(rel)
	if strings.Contains(rel, whiteoutPrefix) {
		if strings.HasPrefix(dir, whiteoutPrefix) || strings.Contains(dir, "/"+whiteoutPrefix) {
			return fmt.Errorf("%w: whiteout name used as a directory", ErrInvalidWhiteout)
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			return l.whiteout(dir, base)
		}
	}
	if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
		l.st.SkippedDevices++
		return nil
	}
	if hdr.Uid < 0 || hdr.Uid > maxID || hdr.Gid < 0 || hdr.Gid > maxID {
		return fmt.Errorf("invalid owner %d:%d", hdr.Uid, hdr.Gid)
	}
	if hdr.Typeflag == tar.TypeSymlink || hdr.Typeflag == tar.TypeLink {
		if strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return fmt.Errorf("%w: link target contains a NUL byte", ErrUnsafePath)
		}
	}
	pfd, err := l.a.dir(dir, true)
	if err != nil {
		return fmt.Errorf("parent directory: %w", err)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return l.directory(pfd, rel, base, hdr)
	case tar.TypeSymlink:
		err = l.symlink(pfd, base, hdr)
	case tar.TypeLink:
		err = l.hardlink(pfd, rel, dir, base, hdr)
	case tar.TypeFifo:
		err = l.fifo(pfd, base, hdr)
	default:
		err = l.file(tr, pfd, base, hdr)
	}
	if err != nil {
		return err
	}
	l.a.cache.invalidateUnder(rel)
	l.mark(rel, false)
	return nil
}

// mark records that the current layer created rel.
func (l *layerApply) mark(rel string, isDir bool) {
	m := l.a.created
	f := m[rel]&flagCreatedBelow | flagCreated
	if isDir {
		f |= flagCreatedDir
	}
	m[rel] = f
	for p := rel; ; {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return
		}
		p = p[:i]
		if m[p]&flagCreatedBelow != 0 {
			return // and so are its ancestors
		}
		m[p] |= flagCreatedBelow
	}
}

// replace calls create and, if the name exists already, removes whatever is
// there (recursively, without following symlinks) and calls create again.
func (l *layerApply) replace(pfd int, base string, create func() error) error {
	err := create()
	if err != unix.EEXIST {
		return err
	}
	if err := removeAllAt(pfd, base); err != nil {
		return fmt.Errorf("replacing existing entry: %w", err)
	}
	l.a.cache.invalidate()
	return create()
}

// root applies a directory entry for the root: metadata only.
func (l *layerApply) root(hdr *tar.Header) error {
	if hdr.Uid < 0 || hdr.Uid > maxID || hdr.Gid < 0 || hdr.Gid > maxID {
		return fmt.Errorf("invalid owner %d:%d", hdr.Uid, hdr.Gid)
	}
	fd, err := unix.Openat(l.a.rootFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening root: %w", err)
	}
	defer unix.Close(fd)
	if err := setMeta(fd, hdr); err != nil {
		return err
	}
	l.a.dirTimes["."] = times(hdr)
	return nil
}

func (l *layerApply) directory(pfd int, rel, base string, hdr *tar.Header) error {
	err := unix.Mkdirat(pfd, base, 0o700)
	if err == unix.EEXIST {
		var st unix.Stat_t
		err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			// Symlinks to directories are replaced too, as GNU tar
			// and containerd do.
			if err = removeAllAt(pfd, base); err == nil {
				l.a.cache.invalidate()
				err = unix.Mkdirat(pfd, base, 0o700)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("creating directory: %w", err)
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening directory: %w", err)
	}
	if err := setMeta(fd, hdr); err != nil {
		unix.Close(fd)
		return err
	}
	l.a.dirTimes[rel] = times(hdr)
	l.mark(rel, true)
	// The next entries are most likely inside this directory. pfd is
	// no longer needed, so the cache may close it.
	l.a.cache.set(rel, fd)
	return nil
}

func (l *layerApply) file(tr io.Reader, pfd int, base string, hdr *tar.Header) error {
	size := hdr.Size
	if l.budget > 0 && size > l.budget-l.st.Bytes {
		return &LimitError{What: "bytes", Limit: l.budget}
	}
	if maxBytes := l.a.limits.MaxBytes; maxBytes > 0 && size > maxBytes-l.a.bytes {
		return &LimitError{What: "bytes", Limit: maxBytes}
	}
	l.st.Bytes += size
	l.a.bytes += size
	fd := -1
	err := l.replace(pfd, base, func() error {
		var err error
		fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating file: %w", err)
	}
	err = l.fill(fd, tr, size)
	if err == nil {
		err = setMeta(fd, hdr)
	}
	if err == nil {
		ts := times(hdr)
		if err = futimens(fd, &ts); err != nil {
			err = fmt.Errorf("setting times: %w", err)
		}
	}
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("closing file: %w", cerr)
	}
	return err
}

// fill copies exactly size bytes from r to fd.
func (l *layerApply) fill(fd int, r io.Reader, size int64) error {
	var written int64
	for written < size {
		if err := l.ctx.Err(); err != nil {
			return err
		}
		chunk := l.a.buf
		if rest := size - written; rest < int64(len(chunk)) {
			chunk = chunk[:rest]
		}
		n, err := io.ReadFull(r, chunk)
		if n > 0 {
			if werr := writeAll(fd, chunk[:n]); werr != nil {
				return fmt.Errorf("writing content: %w", werr)
			}
			written += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("content ends after %d of %d bytes: %w", written, size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("reading content: %w", err)
		}
	}
	return nil
}

// symlink creates a symlink with the target stored verbatim: absolute and
// ".." targets are resolved inside the root by every later lookup here and
// by the container.
func (l *layerApply) symlink(pfd int, base string, hdr *tar.Header) error {
	err := l.replace(pfd, base, func() error { return unix.Symlinkat(hdr.Linkname, pfd, base) })
	if err != nil {
		return fmt.Errorf("creating symlink: %w", err)
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting owner: %w", err)
	}
	ts := times(hdr)
	if err := unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times: %w", err)
	}
	return nil
}

// hardlink links to the cleaned target, whose directory is resolved inside
// the root; linkat without AT_SYMLINK_FOLLOW links a symlink itself, never
// its target. The link gets no metadata of its own.
func (l *layerApply) hardlink(pfd int, rel, dir, base string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return err
	}
	if target == "." {
		return fmt.Errorf("%w: hard link to the root directory", ErrUnsafePath)
	}
	if target == rel {
		return fmt.Errorf("hard link %q to itself", hdr.Linkname)
	}
	tdir, tbase := splitPath(target)
	tfd := pfd
	if tdir != dir {
		if tdir == "" {
			tfd = l.a.rootFd
		} else {
			if tfd, err = openInRoot(l.a.rootFd, tdir); err != nil {
				return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
			}
			defer unix.Close(tfd)
		}
	}
	err = l.replace(pfd, base, func() error { return unix.Linkat(tfd, tbase, pfd, base, 0) })
	if err != nil {
		return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
	}
	return nil
}

func (l *layerApply) fifo(pfd int, base string, hdr *tar.Header) error {
	err := l.replace(pfd, base, func() error { return unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0) })
	if err != nil {
		return fmt.Errorf("creating fifo: %w", err)
	}
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening fifo: %w", err)
	}
	defer unix.Close(fd)
	if err := setMeta(fd, hdr); err != nil {
		return err
	}
	ts := times(hdr)
	if err := futimens(fd, &ts); err != nil {
		return fmt.Errorf("setting times: %w", err)
	}
	return nil
}

// setMeta sets owner, mode and kept xattrs on fd. The owner comes first
// because chown clears setuid, setgid and security.capability; content is
// written before, because writing clears them too.
func setMeta(fd int, hdr *tar.Header) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("setting owner: %w", err)
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode)&0o7777); err != nil {
		return fmt.Errorf("setting mode: %w", err)
	}
	for key, value := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(key, "SCHILY.xattr.")
		if !ok || !keepXattr(name) {
			continue
		}
		err := unix.Fsetxattr(fd, name, []byte(value), 0)
		if err != nil && err != unix.ENOTSUP && err != unix.EOPNOTSUPP {
			return fmt.Errorf("setting xattr %s: %w", name, err)
		}
	}
	return nil
}

// keepXattr reports whether an extended attribute from an image is applied:
// file capabilities and user attributes are; trusted.* (privileged overlayfs
// and host metadata), security.selinux (host labelling policy) and anything
// else are not.
func keepXattr(name string) bool {
	return name == "security.capability" || strings.HasPrefix(name, "user.") && len(name) > len("user.")
}

// times returns the access and modification times for utimensat.
func times(hdr *tar.Header) [2]unix.Timespec {
	ts := func(t time.Time) unix.Timespec {
		if t.IsZero() {
			return unix.Timespec{Nsec: unix.UTIME_OMIT}
		}
		return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
	}
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return [2]unix.Timespec{ts(at), ts(hdr.ModTime)}
}
