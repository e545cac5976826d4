package layer

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Whiteout names from the OCI image spec (layer.md).
const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = ".wh..wh." // AUFS metadata; ignored
	whiteoutOpaque     = ".wh..wh..opq"
)

// whiteout applies the whiteout entry base in directory dir: ".wh.NAME"
// removes NAME from lower layers and the opaque marker hides all of dir's
// lower-layer content. Nothing is created, and a missing target or
// directory is not an error.
func (l *layerApply) whiteout(dir, base string) error {
	if base == whiteoutOpaque {
		return l.opaque(dir)
	}
	if strings.HasPrefix(base, whiteoutMetaPrefix) {
		return nil
	}
	name := base[len(whiteoutPrefix):]
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("%w: %q names no file", ErrInvalidWhiteout, base)
	}
	pfd, err := l.a.dir(dir, false)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("whiteout directory: %w", err)
	}
	defer l.a.cache.invalidate()
	if err := l.removeLower(pfd, joinPath(dir, name), name); err != nil {
		return fmt.Errorf("applying whiteout: %w", err)
	}
	return nil
}

// opaque removes everything in dir that the current layer did not create,
// whichever order the marker and the layer's own entries come in.
func (l *layerApply) opaque(dir string) error {
	pfd, err := l.a.dir(dir, false)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opaque directory: %w", err)
	}
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening opaque directory: %w", err)
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd)
	if err != nil {
		return fmt.Errorf("opaque directory: %w", err)
	}
	defer l.a.cache.invalidate()
	for _, name := range names {
		if err := l.removeLower(fd, joinPath(dir, name), name); err != nil {
			return fmt.Errorf("applying opaque whiteout: %w", err)
		}
	}
	return nil
}

// removeLower removes name in dirfd (at path rel) unless the current layer
// created it; in directories the current layer created or created something
// in, it removes only what lower layers left there.
func (l *layerApply) removeLower(dirfd int, rel, name string) error {
	f := l.a.created[rel]
	if f == 0 {
		return removeAllAt(dirfd, name)
	}
	if f&(flagCreatedDir|flagCreatedBelow) == 0 {
		return nil // a non-directory of this layer
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOENT:
		return nil
	case err == unix.ENOTDIR || err == unix.ELOOP:
		// Not a directory (any more), e.g. a lower-layer symlink through
		// which this layer created something.
		if f&flagCreated != 0 {
			return nil
		}
		return removeAllAt(dirfd, name)
	case err != nil:
		return fmt.Errorf("opening %q: %w", rel, err)
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd)
	if err != nil {
		return fmt.Errorf("%q: %w", rel, err)
	}
	for _, n := range names {
		if err := l.removeLower(fd, rel+"/"+n, n); err != nil {
			return err
		}
	}
	return nil
}
