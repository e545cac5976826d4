package nspawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errGone means a process has exited, or its pid now names another process.
var errGone = errors.New("process is gone")

// sigRTMin is glibc's SIGRTMIN, which systemd's signal numbers count from:
// SIGRTMIN+4 asks systemd to power off.
const sigRTMin = 34

// sigPoweroff makes systemd as PID 1 start poweroff.target.
const sigPoweroff = unix.Signal(sigRTMin + 4)

// proc is a handle on a process that stays valid when its pid is reused: a
// pidfd, checked against the start time recorded with the pid.
type proc struct {
	pid int
	f   *os.File // non-blocking pidfd, readable once the process exits
}

// startTime returns the start time of pid in clock ticks after boot (field
// 22 of /proc/PID/stat), which with the pid identifies a process.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, errGone
		}
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: count from its end.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	const startField = 22 - 3 // fields after comm start at field 3
	if len(fields) <= startField {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(fields))
	}
	return strconv.ParseUint(fields[startField], 10, 64)
}

// openProc returns a handle on the process pid that started at start
// (see startTime), or errGone if that process no longer runs. start 0
// accepts whichever process has the pid now.
func openProc(pid int, start uint64) (*proc, error) {
	if pid <= 0 {
		return nil, errGone
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil, errGone
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	p := &proc{pid: pid, f: os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))}
	// Checked after the pidfd is open, so the pid cannot be reused between
	// the check and later signals.
	if start != 0 {
		got, err := startTime(pid)
		if err != nil || got != start {
			p.close()
			if err != nil && !errors.Is(err, errGone) {
				return nil, err
			}
			return nil, errGone
		}
	}
	if p.exited() {
		p.close()
		return nil, errGone
	}
	return p, nil
}

// alive reports whether the process pid that started at start still runs
// (zombies count as gone).
func alive(pid int, start uint64) bool {
	p, err := openProc(pid, start)
	if err != nil {
		return false
	}
	p.close()
	return true
}

func (p *proc) close() {
	if p != nil {
		p.f.Close()
	}
}

// signal sends sig to the process; a process that has exited is not an error.
func (p *proc) signal(sig syscall.Signal) error {
	if p == nil {
		return nil
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), sig, nil, 0)
	}); err != nil {
		return err
	}
	if serr != nil && !errors.Is(serr, unix.ESRCH) {
		return fmt.Errorf("sending %v to %d: %w", sig, p.pid, serr)
	}
	return nil
}

// exited reports whether the process has exited, without blocking.
func (p *proc) exited() bool {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return true
	}
	done := false
	rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		done = err == nil && n > 0
	})
	return done
}

// wait blocks until the process exits (true), timeout passes or ctx is done
// (false). It waits for the pidfd's readiness event, so it works for
// processes that are not children of this one.
func (p *proc) wait(ctx context.Context, timeout time.Duration) bool {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return true
	}
	p.f.SetReadDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { p.f.SetReadDeadline(time.Now()) })
	defer stop()
	exited := false
	rc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		exited = err == nil && n > 0
		return exited // false: wait for the poller to report readiness
	})
	return exited
}
