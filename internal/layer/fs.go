package layer

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dirCache holds one resolved directory, keyed by its cleaned path relative
// to the root.
//
// A cached descriptor stays valid while the path still resolves to the same
// directory. Resolving a path consults only names that exist, and the Applier
// creates entries only at names that do not exist (O_EXCL, mkdirat,
// symlinkat, linkat and mknodat never replace), so only a removal can change
// what a cached path resolves to: every removal invalidates the cache.
// Creating a non-directory also invalidates it when it is at or above the
// cached path, as a second line of defence.
type dirCache struct {
	path  string
	fd    int // -1 if none; owned by the cache
	valid bool
}

// set caches fd for path and closes the previous descriptor. Callers must be
// done with the previous descriptor.
func (c *dirCache) set(path string, fd int) {
	if c.fd >= 0 {
		unix.Close(c.fd)
	}
	c.path, c.fd, c.valid = path, fd, true
}

// invalidate stops lookups from using the cached descriptor. It stays open,
// so a caller still working with it for the current entry can finish.
func (c *dirCache) invalidate() { c.valid = false }

// invalidateUnder invalidates the cache if rel is the cached path or one of
// its ancestors.
func (c *dirCache) invalidateUnder(rel string) {
	if c.valid && (c.path == rel || strings.HasPrefix(c.path, rel) && c.path[len(rel)] == '/') {
		c.valid = false
	}
}

func (c *dirCache) drop() {
	if c.fd >= 0 {
		unix.Close(c.fd)
	}
	c.path, c.fd, c.valid = "", -1, false
}

// openInRoot opens directory rel as an O_PATH descriptor, resolving every
// component, symlinks included, inside the directory rootFd.
func openInRoot(rootFd int, rel string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(rootFd, rel, &how)
		// The kernel asks for a retry when a rename or mount raced the lookup.
		if (err == unix.EAGAIN || err == unix.EINTR) && i < 64 {
			continue
		}
		return fd, err
	}
}

// dir returns a descriptor for directory rel ("" is the root), resolved
// inside the root. With create, missing directories are created with mode
// 0755. The descriptor belongs to the Applier: callers must not close it, and
// it stays usable until the next call to dir.
func (a *Applier) dir(rel string, create bool) (int, error) {
	if rel == "" {
		return a.rootFd, nil
	}
	if a.cache.valid && a.cache.path == rel {
		return a.cache.fd, nil
	}
	fd, err := a.openDir(rel, create)
	if err != nil {
		return -1, err
	}
	a.cache.set(rel, fd)
	return fd, nil
}

// openDir is dir without the cache; the caller owns the descriptor.
func (a *Applier) openDir(rel string, create bool) (int, error) {
	fd, err := openInRoot(a.rootFd, rel)
	if err == nil || !create || err != unix.ENOENT {
		return fd, err
	}
	parent, base := splitPath(rel)
	pfd := a.rootFd
	if parent != "" {
		if pfd, err = a.openDir(parent, true); err != nil {
			return -1, err
		}
		defer unix.Close(pfd)
	}
	switch err := unix.Mkdirat(pfd, base, 0o755); err {
	case nil:
		// We just created it, so nothing can have replaced it with a
		// symlink; fchmodat2 would refuse one anyway. Undo the umask.
		err := unix.Fchmodat(pfd, base, 0o755, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EOPNOTSUPP { // no fchmodat2 (Linux < 6.6)
			err = unix.Fchmodat(pfd, base, 0o755, 0)
		}
		if err != nil {
			return -1, fmt.Errorf("creating directory %q: %w", rel, err)
		}
		return unix.Openat(pfd, base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	case unix.EEXIST:
		// Something is there after all, e.g. a dangling symlink, which
		// the first lookup resolved to a missing name.
		fd, err := openInRoot(a.rootFd, rel)
		if err != nil {
			return -1, fmt.Errorf("%q exists but does not resolve to a directory: %w", rel, err)
		}
		return fd, nil
	default:
		return -1, fmt.Errorf("creating directory %q: %w", rel, err)
	}
}

// removeAllAt removes name in dirfd and, if it is a directory, everything
// below it. It never follows symlinks: they are removed, not their targets.
// A missing name is not an error.
func removeAllAt(dirfd int, name string) error {
	switch err := unix.Unlinkat(dirfd, name, 0); err {
	case nil, unix.ENOENT:
		return nil
	case unix.EISDIR:
	default:
		return fmt.Errorf("removing %q: %w", name, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening %q for removal: %w", name, err)
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("in %q: %w", name, err)
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && err != unix.ENOENT {
		return fmt.Errorf("removing %q: %w", name, err)
	}
	return nil
}

// readDirNames returns the names in the directory open as fd, except "." and
// "..". fd must not be an O_PATH descriptor.
func readDirNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading directory: %w", err)
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// writeAll writes b to fd, retrying short writes.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("short write")
		}
		b = b[n:]
	}
	return nil
}

// futimens sets the times of the file open as fd (utimensat with a NULL path,
// as glibc's futimens does).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// splitPath splits a cleaned relative path into its directory ("" for the
// root) and last component.
func splitPath(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

func joinPath(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// isNotExist reports errors meaning a lookup found nothing to act on.
func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}
