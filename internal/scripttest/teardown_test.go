package scripttest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"
)

// teardown returns what runs when a script ends, passed or failed: every
// container racker lists in root is removed with `racker rm -f`; then, in
// case racker lost track of some, any systemd-nspawn whose root directory
// is under work is killed and anything still mounted under work is
// detached, so that removing work cannot reach into a container or a bind
// mount. What it had to clean up is logged; scripts assert on leftovers
// themselves (noprocs, nomounts), this only keeps them from piling up.
func teardown(t testscript.T, work, root string) func() {
	return func() {
		logf := func(format string, args ...any) { t.Log(fmt.Sprintf("teardown: "+format, args...)) }
		if entries, _ := os.ReadDir(filepath.Join(root, "containers")); len(entries) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "racker", "--root", root, "ps", "--format", "json").Output()
			var list []struct{ Name string }
			if err == nil {
				err = json.Unmarshal(out, &list)
			}
			if err != nil {
				logf("racker ps: %v", err)
			}
			var names []string
			for _, c := range list {
				names = append(names, c.Name)
			}
			if len(names) > 0 {
				out, err := exec.CommandContext(ctx, "racker", append([]string{"--root", root, "rm", "-f"}, names...)...).CombinedOutput()
				logf("racker rm -f %s: %v\n%s", strings.Join(names, " "), err, out)
			}
		}
		for _, p := range processes() {
			if filepath.Base(p.args[0]) != "systemd-nspawn" {
				continue
			}
			for _, a := range p.args[1:] {
				if dir, ok := strings.CutPrefix(a, "--directory="); ok && within(dir, work) {
					logf("killing leftover pid %d: %s", p.pid, strings.Join(p.args, " "))
					killAndWait(p.pid)
					break
				}
			}
		}
		mounts, err := mountPoints()
		if err != nil {
			logf("%v", err)
		}
		for i := len(mounts) - 1; i >= 0; i-- { // the innermost first
			if within(mounts[i], work) {
				err := unix.Unmount(mounts[i], unix.MNT_DETACH)
				logf("unmounting leftover %s: %v", mounts[i], err)
			}
		}
	}
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// killAndWait sends SIGTERM to pid (systemd-nspawn kills its container on
// SIGTERM as racker starts it), then SIGKILL if it is still there after 5 s.
func killAndWait(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 5000); n > 0 {
		return
	}
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	unix.Poll(pfd, 5000)
}

type process struct {
	pid  int
	args []string
}

// processes lists the processes of the host with their arguments, this one
// and zombies (which have none) excepted.
func processes() []process {
	entries, _ := os.ReadDir("/proc")
	var out []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		out = append(out, process{pid, strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")})
	}
	return out
}

// mountPoints returns the mount points of this process's mount namespace,
// in the order of /proc/self/mountinfo (parents before children).
func mountPoints() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			out = append(out, unescapeMountinfo(f[4]))
		}
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a blank) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
