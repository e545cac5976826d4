package nspawn

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A command run through nsenter is nsenter's child, forked into the
// container's PID namespace, in nsenter's process group (and, with a
// terminal, its session). Killing nsenter along with it, as kill(-pgid)
// does, orphans that child to nsenter's reaper on the host: the host's init
// or a subreaper, which may not reap it for a long time. The zombie is then
// still a process of the container's PID namespace, which cannot go away
// before it is reaped: the command's processes are still listed in the
// container, and stopping the container waits for them. So a cancelled
// command's processes are killed, nsenter is left to reap its child and
// exit by itself, and Exec returns only once every process of the command
// is gone, reaped by nsenter or, for orphans, by the container's init.

// procInfo is what /proc/PID/stat says of a process, pids as seen here.
type procInfo struct {
	pid, ppid, pgrp, session int
	state                    byte
}

// readProcs lists every process of the host.
func readProcs() []procInfo {
	entries, _ := os.ReadDir("/proc")
	out := make([]procInfo, 0, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// comm (field 2) may hold spaces and parentheses: count from its end.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[i+1:])) // from field 3, state
	if len(f) < 4 || len(f[0]) != 1 {
		return procInfo{}, false
	}
	p := procInfo{pid: pid, state: f[0][0]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgrp, _ = strconv.Atoi(f[2])
	p.session, _ = strconv.Atoi(f[3])
	return p, true
}

// commandProcs returns the processes that belong to the command whose
// nsenter is leader: the members of its process group (its session, with
// session true) and, with tree, while leader has not been reaped, leader's
// descendants, which may have left the group. leader itself is not among
// them. The kernel does not reuse a pid while a process group of that id
// has members, so the group alone is safe to look for after the reaping.
func commandProcs(leader int, session, tree bool) []procInfo {
	all := readProcs()
	children := map[int][]procInfo{}
	for _, p := range all {
		children[p.ppid] = append(children[p.ppid], p)
	}
	seen := map[int]bool{leader: true}
	var out []procInfo
	add := func(p procInfo) {
		if !seen[p.pid] {
			seen[p.pid] = true
			out = append(out, p)
		}
	}
	for queue := []int{leader}; tree && len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			if !seen[c.pid] {
				add(c)
				queue = append(queue, c.pid)
			}
		}
	}
	for _, p := range all {
		if p.pgrp == leader || session && p.session == leader {
			add(p)
		}
	}
	return out
}

// killProcs sends SIGKILL to procs through pidfds. The pidfds are all
// opened, and each checked to still name the process listed (pids are
// reused), before the first signal: a child of a killed process is
// reparented at once.
func killProcs(procs []procInfo) {
	var fds []int
	for _, p := range procs {
		if p.state == 'Z' {
			continue
		}
		fd, err := unix.PidfdOpen(p.pid, 0)
		if err != nil {
			continue
		}
		if now, ok := readProc(p.pid); ok && now.ppid == p.ppid && now.pgrp == p.pgrp && now.session == p.session {
			fds = append(fds, fd)
		} else {
			unix.Close(fd)
		}
	}
	for _, fd := range fds {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	}
}

// cancelNsenter is the Cmd.Cancel of an nsenter started as leader of its
// own process group (session, with session true): it kills the command's
// processes until nsenter, having reaped its child, has exited, and kills
// nsenter itself only if that takes longer than killGrace.
func cancelNsenter(leader int, session bool) error {
	fd, err := unix.PidfdOpen(leader, 0)
	if err != nil {
		return nil // already gone
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(killGrace)
	for time.Now().Before(deadline) {
		killProcs(commandProcs(leader, session, true))
		// nsenter may not have forked yet: look again soon.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(pfd, 5); n > 0 {
			return nil
		}
	}
	return unix.PidfdSendSignal(fd, syscall.SIGKILL, nil, 0)
}

// awaitCommandGone waits, killing stragglers, until no process of the
// command whose nsenter was leader is left, zombies included, or until
// killGrace has passed. nsenter has been reaped by then, so only its
// process group (session) identifies them.
func awaitCommandGone(leader int, session bool) bool {
	for deadline := time.Now().Add(killGrace); ; time.Sleep(5 * time.Millisecond) {
		procs := commandProcs(leader, session, false)
		if len(procs) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		killProcs(procs)
	}
}
