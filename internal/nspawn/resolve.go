package nspawn

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/racker-postroj/racker/internal/rootfs"

	"golang.org/x/sys/unix"
)

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
func lookPath(r *rootfs.Root, arg0, pathEnv, dir string) (string, error) {
	if arg0 == "" {
		return "", &ExecError{Command: arg0, Code: 127, Err: os.ErrNotExist}
	}
	if strings.Contains(arg0, "/") {
		p := arg0
		if !path.IsAbs(p) {
			p = path.Join("/", dir, p)
		}
		if err := checkExecutable(r, p); err != nil {
			return "", err.withCommand(arg0)
		}
		return p, nil
	}
	for _, d := range strings.Split(pathEnv, ":") {
		if d == "" || !path.IsAbs(d) {
			continue // relative PATH entries depend on the cwd: skipped, like Go's LookPath
		}
		p := path.Join(d, arg0)
		if checkExecutable(r, p) == nil {
			return p, nil
		}
	}
	return "", &ExecError{Command: arg0, Code: 127, Err: ErrNotInPath}
}

// checkExecutable tells whether p is a file that can be executed.
func checkExecutable(r *rootfs.Root, p string) *ExecError {
	st, err := r.Stat(p)
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
func lookupUser(r *rootfs.Root, spec string) (account, error) {
	userPart, groupPart, _ := strings.Cut(spec, ":")
	if userPart == "" {
		userPart = "root"
	}
	passwd, _ := r.ReadFile("/etc/passwd", 4<<20)
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
	group, _ := r.ReadFile("/etc/group", 4<<20)
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
