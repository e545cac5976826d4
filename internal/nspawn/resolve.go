package nspawn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Files of a root filesystem, whether the stored image or a running
// container's /proc/PID/root, are opened from the host with
// RESOLVE_IN_ROOT: symlinks in the tree (os-release -> /etc/shadow, a bus
// socket -> the host's bus) then resolve inside it, never on the host.

// rootDir is an open directory that paths are resolved under.
type rootDir struct {
	f *os.File
}

// openRootDir opens dir as a root to resolve paths in.
func openRootDir(dir string) (*rootDir, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &rootDir{f: os.NewFile(uintptr(fd), dir)}, nil
}

func (r *rootDir) Close() error { return r.f.Close() }

// open opens name (absolute or relative, both taken from the root) with
// flags, resolving every component inside the root.
func (r *rootDir) open(name string, flags int) (*os.File, error) {
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

// stat returns the file information of name resolved in the root.
func (r *rootDir) stat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	f, err := r.open(name, unix.O_PATH)
	if err != nil {
		return st, err
	}
	defer f.Close()
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return st, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	return st, nil
}

// readFile reads at most limit bytes of the regular file name.
func (r *rootDir) readFile(name string, limit int64) ([]byte, error) {
	f, err := r.open(name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
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

// mkdirAll creates directory name and its parents in the root, like
// os.MkdirAll, each component resolved in the root.
func (r *rootDir) mkdirAll(name string, perm uint32) error {
	name = path.Clean("/" + name)
	if st, err := r.stat(name); err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%s: not a directory", name)
		}
		return nil
	}
	parent, base := path.Split(name)
	if err := r.mkdirAll(parent, perm); err != nil {
		return err
	}
	d, err := r.open(parent, unix.O_PATH|unix.O_DIRECTORY)
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

// ExecError reports a command that could not be started, with the exit code
// docker uses for it: 127 when the command does not exist, 126 when it
// cannot be executed (not executable, a directory, unknown user, missing
// working directory).
type ExecError struct {
	Command string
	Code    int
	Err     error
}

func (e *ExecError) Error() string { return fmt.Sprintf("exec %q: %v", e.Command, e.Err) }
func (e *ExecError) Unwrap() error { return e.Err }

// ErrNotInPath is the ExecError cause for a command name not found in PATH.
var ErrNotInPath = errors.New("executable file not found in $PATH")

// lookPath finds the command arg0 in the root the way execvp(3) and docker
// do: a name with a slash is taken as is (relative to dir), others are
// searched in pathEnv. It returns the absolute path in the root, or an
// *ExecError.
func (r *rootDir) lookPath(arg0, pathEnv, dir string) (string, error) {
	if arg0 == "" {
		return "", &ExecError{Command: arg0, Code: 127, Err: os.ErrNotExist}
	}
	if strings.Contains(arg0, "/") {
		p := arg0
		if !path.IsAbs(p) {
			p = path.Join("/", dir, p)
		}
		if err := r.checkExecutable(p); err != nil {
			return "", err.withCommand(arg0)
		}
		return p, nil
	}
	for _, d := range strings.Split(pathEnv, ":") {
		if d == "" || !path.IsAbs(d) {
			continue // relative PATH entries depend on the cwd: skipped, like Go's LookPath
		}
		p := path.Join(d, arg0)
		if r.checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", &ExecError{Command: arg0, Code: 127, Err: ErrNotInPath}
}

// checkExecutable tells whether p is a file that can be executed.
func (r *rootDir) checkExecutable(p string) *ExecError {
	st, err := r.stat(p)
	switch {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP):
		return &ExecError{Code: 127, Err: os.ErrNotExist}
	case err != nil:
		return &ExecError{Code: 126, Err: err}
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return &ExecError{Code: 126, Err: errors.New("is a directory")}
	case st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0:
		return &ExecError{Code: 126, Err: os.ErrPermission}
	}
	return nil
}

func (e *ExecError) withCommand(c string) *ExecError {
	e.Command = c
	return e
}

// account is the user a command runs as.
type account struct {
	uid, gid   int
	name       string // user name; "" if the uid has no entry
	home       string
	shell      string
	group      string // group name, if one was asked for and is known
	userKnown  bool   // found in /etc/passwd
	groupKnown bool   // no group asked for, or found in /etc/group
}

// lookupUser resolves spec ("", "name", "uid", "name:group", "uid:gid")
// against the root's /etc/passwd and /etc/group, as docker does. Numeric
// ids need no entry: an unknown uid gets gid 0 and home "/". Unknown names
// are an *ExecError with code 126.
func (r *rootDir) lookupUser(spec string) (account, error) {
	userPart, groupPart, _ := strings.Cut(spec, ":")
	if userPart == "" {
		userPart = "root"
	}
	passwd, _ := r.readFile("/etc/passwd", 4<<20)
	uid, numeric := parseID(userPart)
	a := account{uid: uid, gid: 0, home: "/", groupKnown: true}
	for _, f := range colonRecords(passwd, 7) {
		fid, ok := parseID(f[2])
		if ok && ((numeric && fid == uid) || (!numeric && f[0] == userPart)) {
			gid, _ := parseID(f[3])
			a = account{uid: fid, gid: gid, name: f[0], home: f[5], shell: f[6], userKnown: true, groupKnown: true}
			break
		}
	}
	if !a.userKnown && !numeric {
		return a, &ExecError{Command: spec, Code: 126, Err: fmt.Errorf("unable to find user %s: no matching entries in passwd file", userPart)}
	}
	if groupPart == "" {
		return a, nil
	}
	gid, numeric := parseID(groupPart)
	a.groupKnown = false
	group, _ := r.readFile("/etc/group", 4<<20)
	for _, f := range colonRecords(group, 3) {
		fid, ok := parseID(f[2])
		if ok && ((numeric && fid == gid) || (!numeric && f[0] == groupPart)) {
			gid, a.group, a.groupKnown = fid, f[0], true
			break
		}
	}
	if !a.groupKnown && !numeric {
		return a, &ExecError{Command: spec, Code: 126, Err: fmt.Errorf("unable to find group %s: no matching entries in group file", groupPart)}
	}
	a.gid = gid
	return a, nil
}

func parseID(s string) (int, bool) {
	n, err := strconv.ParseUint(s, 10, 31)
	return int(n), err == nil
}

// colonRecords splits passwd/group style data into records with at least
// min fields.
func colonRecords(data []byte, min int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if f := strings.Split(line, ":"); len(f) >= min {
			out = append(out, f)
		}
	}
	return out
}
