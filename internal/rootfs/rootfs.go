// Package rootfs opens files of a root filesystem from the host with every
// path resolved inside it (openat2 RESOLVE_IN_ROOT): symlinks in the tree
// (os-release -> /etc/shadow, a bus socket -> the host's bus) resolve within
// it, never on the host. Used for stored images and for running containers'
// /proc/PID/root alike.
package rootfs

import (
	"fmt"
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// Root is an open directory that paths are resolved under.
type Root struct {
	f *os.File
}

// Open opens dir as a root to resolve paths in.
func Open(dir string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &Root{f: os.NewFile(uintptr(fd), dir)}, nil
}

func (r *Root) Close() error { return r.f.Close() }

// Open opens name (absolute or relative, both taken from the root) with
// flags, resolving every component inside the root.
func (r *Root) Open(name string, flags int) (*os.File, error) {
	how := &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(int(r.f.Fd()), name, how)
		// EAGAIN: a rename raced with the lookup; the kernel asks to retry.
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// Stat returns the file information of name resolved in the root.
func (r *Root) Stat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	f, err := r.Open(name, unix.O_PATH)
	if err != nil {
		return st, err
	}
	defer f.Close()
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return st, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	return st, nil
}

// ReadFile reads at most limit bytes of the regular file name.
func (r *Root) ReadFile(name string, limit int64) ([]byte, error) {
	f, err := r.Open(name, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// MkdirAll creates directory name and its parents in the root, like
// os.MkdirAll, each component resolved in the root.
func (r *Root) MkdirAll(name string, perm uint32) error {
	name = path.Clean("/" + name)
	if st, err := r.Stat(name); err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%s: not a directory", name)
		}
		return nil
	}
	parent, base := path.Split(name)
	if err := r.MkdirAll(parent, perm); err != nil {
		return err
	}
	d, err := r.Open(parent, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer d.Close()
	// base is one component and does not exist: mkdirat cannot follow a
	// symlink here.
	if err := unix.Mkdirat(int(d.Fd()), base, perm); err != nil && err != unix.EEXIST {
		return &os.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return nil
}

// ReadDirNames returns the names in directory name.
func (r *Root) ReadDirNames(name string) ([]string, error) {
	f, err := r.Open(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// IsRegular reports whether name is a regular file in the root.
func (r *Root) IsRegular(name string) bool {
	st, err := r.Stat(name)
	return err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
}
