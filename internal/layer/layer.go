package layer

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"golang.org/x/sys/unix"
)

// DefaultMaxEntries is the entry cap used when Limits.MaxEntries is 0.
const DefaultMaxEntries = 2_000_000

// copyBufferSize is the size of the buffer an Applier reuses to copy file content.
const copyBufferSize = 1 << 20

var (
	// ErrUnsafePath reports an entry whose name or link target cannot be
	// applied safely: a NUL byte, or a non-directory entry for the root itself.
	ErrUnsafePath = errors.New("unsafe path")
	// ErrInvalidWhiteout reports a malformed whiteout entry such as ".wh..",
	// ".wh..." or ".wh.", or a whiteout name used as a directory.
	ErrInvalidWhiteout = errors.New("invalid whiteout")
	// ErrExposedRoot reports a root directory that unprivileged users can reach:
	// setuid binaries unpacked there could be run by them (CVE-2021-41091).
	ErrExposedRoot = errors.New("root directory is reachable by other users")
)

// Limits caps the work one Applier does across all layers it applies.
type Limits struct {
	// MaxEntries caps the number of tar entries across all layers; 0 means
	// DefaultMaxEntries.
	MaxEntries int64
	// MaxBytes caps the sum of hdr.Size of regular files across all layers;
	// 0 means no cap.
	MaxBytes int64
}

// Stats describes one applied layer.
type Stats struct {
	// Entries is the number of tar entries read, including ignored ones.
	Entries int64
	// Bytes is the sum of hdr.Size of the regular files written.
	Bytes int64
	// SkippedDevices counts character and block device entries, which are
	// never created.
	SkippedDevices int64
}

// LimitError reports that a layer exceeded a limit; callers branch with
// errors.As.
type LimitError struct {
	What  string // "entries" or "bytes"
	Limit int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("layer exceeds limit of %d %s", e.Limit, e.What)
}

// Applier applies OCI image layers, in order, to one root directory.
//
// Every path is resolved by the kernel inside the root (openat2 with
// RESOLVE_IN_ROOT), so symlinks in the image, absolute ("var/run -> /run") or
// relative ("../../etc"), resolve within the root the way they will inside the
// container; the final component is then created or replaced with *at system
// calls on the parent directory that never follow it. Entry names are cleaned
// lexically with path.Clean("/"+name): ".." components cannot climb above the
// root, so "../../etc/cron.d/x" lands at ROOT/etc/cron.d/x, as with containerd
// and moby. Hard-link targets are cleaned and resolved the same way.
//
// Character and block devices are skipped and counted in Stats.SkippedDevices:
// systemd-nspawn mounts its own /dev, and device nodes in an image would give
// whoever can reach the rootfs a way to the host's devices. FIFOs are created.
// Of the extended attributes in PAX "SCHILY.xattr.*" records only
// security.capability (file capabilities, e.g. of ping) and user.* are set;
// trusted.*, security.selinux and everything else are dropped, and a file
// system without xattr support is tolerated. Extended attributes are not set
// on symlinks (the kernel refuses user.* there and capabilities are
// meaningless on them). Hard links get no metadata of their own: they share
// the target's inode. Missing parent directories are created (0755, owned by
// root); a parent that is a dangling symlink or not a directory is an error.
//
// Whiteouts follow the OCI image spec (layer.md) and are never created
// themselves: ".wh.NAME" removes NAME as lower layers left it, and the opaque
// marker ".wh..wh..opq" removes everything lower layers left in its
// directory, whichever order the layer lists the marker and its own entries
// in. What the current layer created stays, including directories, whose
// lower-layer content still goes. The layer's own entries are recognised by
// cleaned name, so an entry written through a symlinked path is not. Names
// starting with ".wh..wh." other than the opaque marker (AUFS metadata) are
// ignored.
//
// An Applier is not safe for concurrent use, and nothing else may modify the
// root while it is in use. Errors leave the root partially written: callers
// unpack into a fresh directory and discard it on error.
type Applier struct {
	rootFd  int
	limits  Limits
	entries int64 // across all layers
	bytes   int64 // across all layers
	buf     []byte

	// dirTimes holds directory times, applied by Finish because adding
	// children (in this or later layers) changes a directory's mtime.
	dirTimes map[string][2]unix.Timespec
	// created records what the current layer created, for whiteouts.
	created map[string]uint8
	// cache holds the directory of the previous entry.
	cache dirCache
}

// NewApplier returns an Applier for root, which must be an existing
// directory. It keeps an O_PATH descriptor on root until Close. It fails if
// the kernel lacks openat2 (Linux 5.6) rather than fall back to unconfined
// path handling, and with ErrExposedRoot unless one of root's ancestors
// denies search permission to other users (e.g. a 0700 state directory), so
// that setuid binaries in the image cannot be run from outside the
// container. Root itself does not count: a layer may change its mode.
func NewApplier(root string, limits Limits) (*Applier, error) {
	if limits.MaxEntries < 0 || limits.MaxBytes < 0 {
		return nil, fmt.Errorf("invalid limits %+v: must not be negative", limits)
	}
	if limits.MaxEntries == 0 {
		limits.MaxEntries = DefaultMaxEntries
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening root %s: %w", root, err)
	}
	probe, err := openInRoot(fd, ".")
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("opening root %s: openat2 is unavailable (Linux 5.6 or newer is required): %w", root, err)
		}
		return nil, fmt.Errorf("opening root %s: %w", root, err)
	}
	unix.Close(probe)
	if err := checkNotExposed(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("root %s: %w", root, err)
	}
	return &Applier{
		rootFd:   fd,
		limits:   limits,
		buf:      make([]byte, copyBufferSize),
		dirTimes: make(map[string][2]unix.Timespec),
		cache:    dirCache{fd: -1},
	}, nil
}

// checkNotExposed walks from the parent of the directory fd up to the file
// system root and returns ErrExposedRoot if every directory on the way lets
// others search it.
func checkNotExposed(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	cur := fd
	defer func() {
		if cur != fd {
			unix.Close(cur)
		}
	}()
	for range 4096 {
		up, err := unix.Openat(cur, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if cur != fd {
			unix.Close(cur)
		}
		cur = up
		var pst unix.Stat_t
		if err := unix.Fstat(up, &pst); err != nil {
			return err
		}
		if pst.Mode&0o001 == 0 {
			return nil
		}
		if pst.Dev == st.Dev && pst.Ino == st.Ino {
			return ErrExposedRoot // ".." of "/" is "/"
		}
		st = pst
	}
	return ErrExposedRoot
}

// Apply applies one layer. tarStream is the uncompressed tar; Apply does not
// close it. layerBudget, if positive, caps the sum of hdr.Size of this
// layer's regular files; 0 means no per-layer cap. Every cap is checked
// before an entry is written, so an entry claiming gigabytes is rejected
// without writing or reading its content; exceeding one returns a
// *LimitError. Hostile or invalid entries return an error naming the entry,
// wrapping ErrUnsafePath, ErrInvalidWhiteout or the system call's error;
// input that is not a tar returns an error, never a panic. ctx is checked
// between entries and between chunks of file content.
//
// On success Apply has read tarStream to EOF, past the tar end marker, so
// that a digest-verifying reader underneath sees the whole stream; on error
// it stops reading. The returned Stats describe this layer only.
func (a *Applier) Apply(ctx context.Context, tarStream io.Reader, layerBudget int64) (Stats, error) {
	var st Stats
	if a.rootFd < 0 {
		return st, errors.New("applier is closed")
	}
	if layerBudget < 0 {
		return st, fmt.Errorf("invalid layer budget %d: must not be negative", layerBudget)
	}
	a.created = make(map[string]uint8)
	defer func() { a.created = nil }()
	l := layerApply{a: a, ctx: ctx, budget: layerBudget, st: &st}
	er := &endReader{r: tarStream}
	tr := tar.NewReader(er)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			// archive/tar also reports a stream cut at a block boundary
			// as the end.
			if er.zeros < blockSize {
				return st, fmt.Errorf("reading tar after %d entries: stream ends without an end-of-archive marker: %w", st.Entries, io.ErrUnexpectedEOF)
			}
			break
		}
		// archive/tar only reports non-local names under
		// GODEBUG=tarinsecurepath=0; such names are confined below.
		if err != nil && !(hdr != nil && errors.Is(err, tar.ErrInsecurePath)) {
			return st, fmt.Errorf("reading tar after %d entries: %w", st.Entries, err)
		}
		if a.entries >= a.limits.MaxEntries {
			return st, fmt.Errorf("entry %q: %w", hdr.Name, &LimitError{What: "entries", Limit: a.limits.MaxEntries})
		}
		a.entries++
		st.Entries++
		if err := l.entry(tr, hdr); err != nil {
			return st, fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	if _, err := io.CopyBuffer(io.Discard, tarStream, a.buf); err != nil {
		return st, fmt.Errorf("reading past tar end marker: %w", err)
	}
	return st, nil
}

// Finish sets the directory times recorded by Apply; it must be called once
// after the last layer. Each directory is looked up again inside the root and
// skipped if it no longer exists or is no longer a directory.
func (a *Applier) Finish() error {
	if a.rootFd < 0 {
		return errors.New("applier is closed")
	}
	type dirTime struct {
		dir, base string
		ts        [2]unix.Timespec
	}
	todo := make([]dirTime, 0, len(a.dirTimes))
	for rel, ts := range a.dirTimes {
		dir, base := splitPath(rel)
		todo = append(todo, dirTime{dir, base, ts})
	}
	// Group siblings so that each parent is resolved once.
	sort.Slice(todo, func(i, j int) bool {
		if todo[i].dir != todo[j].dir {
			return todo[i].dir < todo[j].dir
		}
		return todo[i].base < todo[j].base
	})
	for _, d := range todo {
		pfd, err := a.dir(d.dir, false)
		if isNotExist(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("setting times of %q: %w", d.dir, err)
		}
		var st unix.Stat_t
		err = unix.Fstatat(pfd, d.base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if isNotExist(err) || err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		if err == nil {
			err = unix.UtimesNanoAt(pfd, d.base, d.ts[:], unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return fmt.Errorf("setting times of %q: %w", joinPath(d.dir, d.base), err)
		}
	}
	clear(a.dirTimes)
	return nil
}

// Close releases the descriptors held by the Applier. It does not set
// directory times (see Finish). Close is idempotent.
func (a *Applier) Close() error {
	a.cache.drop()
	if a.rootFd < 0 {
		return nil
	}
	err := unix.Close(a.rootFd)
	a.rootFd = -1
	if err != nil {
		return fmt.Errorf("closing root: %w", err)
	}
	return nil
}

// blockSize is the tar block size; the end-of-archive marker is two zero blocks.
const blockSize = 512

// endReader counts the zero bytes at the end of what it has delivered, so
// that Apply can tell an end-of-archive marker from a stream that stops
// after an entry. A truncated stream whose last entry ends in a block of
// zeros still passes: verifying the layer digest is the real defence.
type endReader struct {
	r     io.Reader
	zeros int
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if n > 0 {
		i := n - 1
		for i >= 0 && p[i] == 0 {
			i--
		}
		if i < 0 {
			e.zeros += n
		} else {
			e.zeros = n - 1 - i
		}
	}
	return n, err
}
