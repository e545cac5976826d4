package nspawn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/rootfs"
)

// ErrBootTimeout is the cause of a BootError when READY=1 did not arrive
// within Options.BootTimeout.
var ErrBootTimeout = errors.New("boot timed out")

// ErrStopped is returned by Exec and OpenPTY once the container has been
// stopped (Shutdown, Kill) or has powered off.
var ErrStopped = errors.New("container has stopped")

// ErrClosed is returned by a Machine's methods after Close.
var ErrClosed = errors.New("machine is closed")

// BootError reports a container that did not finish booting: nspawn failed
// or exited, READY=1 did not arrive in time (Err is ErrBootTimeout), or ctx
// ended (Err is ctx.Err()). Nothing of the container is left when Start
// returns it.
type BootError struct {
	Name    string
	Err     error
	Console []string // the last lines of the console, cleaned up for display
}

func (e *BootError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "booting %s: %v", e.Name, e.Err)
	if len(e.Console) > 0 {
		fmt.Fprintf(&b, "\nlast %d lines of the console:", len(e.Console))
		for _, l := range e.Console {
			b.WriteString("\n    ")
			b.WriteString(l)
		}
	}
	return b.String()
}

func (e *BootError) Unwrap() error { return e.Err }

// consoleTail is how many console lines a BootError carries.
const consoleTail = 20

// Machine is a booted container. Its methods are safe for concurrent use.
type Machine struct {
	opts     Options
	log      *slog.Logger
	state    containers
	rec      *record
	console  string // console log file
	cmd      *exec.Cmd
	nspawn   *proc
	leader   *proc
	exited   chan struct{} // closed once nspawn has exited and was reaped
	executor Executor      // ExecDBus or ExecNsenter
	bus      *bus          // nil unless executor is ExecDBus
	// stopWatch ends the goroutine that follows nspawn of an opened
	// (not started) machine.
	stopWatch context.CancelFunc

	mu      sync.Mutex
	closed  bool // by Close or Shutdown: no more Exec
	stopped bool // by Shutdown
	stopErr error
}

// Start boots opts.RootFS with systemd-nspawn --boot on a volatile overlay
// and returns once systemd in the container has finished booting (READY=1,
// an event from nspawn, not polled) and the container's D-Bus, if used, is
// connected. The console goes to StateDir/containers/NAME/console.log.
//
// ctx bounds the boot only; the container runs until Shutdown, Kill or
// Close, until it powers itself off, or, when detached, until Stop. If
// Start fails the container is gone: the error wraps ErrNameInUse if the
// name is taken, and is a *BootError once nspawn was started.
func Start(ctx context.Context, opts Options) (*Machine, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.StateDir == "" {
		return nil, errors.New("no state directory given")
	}
	m := &Machine{
		opts:   opts,
		log:    opts.logger().With("machine", opts.Name),
		state:  containersDir(opts.StateDir),
		exited: make(chan struct{}),
	}
	m.rec = &record{
		Name: opts.Name, Image: opts.Image, RootFS: opts.RootFS, Started: time.Now(),
		Booted: true, Detached: opts.Detach, Status: statusStarting, PrivateNet: opts.PrivateNetwork,
	}
	if err := opts.checkHost(ctx); err != nil {
		return nil, fmt.Errorf("starting %s: %w", opts.Name, err)
	}
	if err := ownRecord(m.rec); err != nil {
		return nil, err
	}
	if err := m.state.claim(m.rec); err != nil {
		return nil, fmt.Errorf("starting %s: %w", opts.Name, err)
	}
	if m.opts.registers() {
		if err := checkMachineName(ctx, opts.Name); err != nil {
			m.state.release(m.rec)
			return nil, fmt.Errorf("starting %s: %w", opts.Name, err)
		}
	}
	m.console = m.state.console(opts.Name)
	if err := m.opts.writeHostname(m.state.dir(opts.Name)); err != nil {
		m.state.release(m.rec)
		return nil, err
	}
	if !m.opts.HostUserNS {
		u, err := m.opts.setupUserNS(ctx)
		if err != nil {
			m.state.release(m.rec)
			return nil, fmt.Errorf("starting %s: %w", opts.Name, err)
		}
		m.opts.userns = u
		m.rec.UIDBase = u.ids.Base
	}
	if err := m.boot(ctx); err != nil {
		m.abort()
		lines := tailFile(m.console, consoleTail)
		m.state.release(m.rec)
		m.opts.userns.release()
		return nil, &BootError{Name: opts.Name, Err: err, Console: lines}
	}
	go func() {
		// A container that powers off by itself leaves no state behind.
		<-m.exited
		m.state.release(m.rec)
		m.opts.userns.release()
	}()
	return m, nil
}

// ownRecord fills in the claiming process.
func ownRecord(r *record) error {
	r.OwnerPID = os.Getpid()
	st, err := startTime(r.OwnerPID)
	if err != nil {
		return fmt.Errorf("reading own start time: %w", err)
	}
	r.OwnerStart = st
	return nil
}

// boot starts nspawn and waits for READY=1. On error the caller aborts.
func (m *Machine) boot(ctx context.Context) error {
	start := time.Now()
	console, err := os.OpenFile(m.console, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("creating console log: %w", err)
	}
	defer console.Close() // nspawn has its own copy
	notify, err := ListenNotify()
	if err != nil {
		return err
	}
	defer notify.Close()

	args := m.opts.bootArgs()
	m.log.Debug("starting nspawn", "args", args)
	// Not exec.CommandContext: the container outlives ctx, which only
	// bounds the boot.
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(environWithout("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"), "NOTIFY_SOCKET="+notify.Addr())
	if root, err := rootfs.Open(m.opts.RootFS); err == nil {
		version, known := distro.SystemdVersion(root)
		root.Close()
		if env := cgroupEnv(version, known, hostCgroupUnified()); env != nil {
			m.log.Debug("giving the container the unified cgroup hierarchy", "systemd", version)
			cmd.Env = append(cmd.Env, env...)
		}
	}
	cmd.Stdout = console
	cmd.Stderr = console
	var pid int
	if m.opts.ownUnit() {
		// On a systemd host a detached container is a service of its own
		// (see startUnit), not a process of whatever job started it.
		if pid, err = startUnit(ctx, containerUnit(m.opts.Name), args, unitEnv(cmd.Env), console); err != nil {
			return err
		}
		m.rec.NspawnPID = pid
		m.rec.NspawnStart, _ = startTime(pid)
		if m.nspawn, err = openProc(pid, m.rec.NspawnStart); err != nil {
			return fmt.Errorf("systemd-nspawn (pid %d) of unit %s: %w", pid, containerUnit(m.opts.Name), err)
		}
		if err := m.opts.userns.started(pid); err != nil {
			return err
		}
		m.watchNspawn()
	} else {
		if m.opts.Detach {
			// Its own session: no terminal signals, no ties to our lifetime.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		} else {
			// Its own process group keeps the terminal's Ctrl-C from nspawn
			// (racker shuts down in order instead); if racker dies, SIGTERM
			// makes nspawn kill the container (--kill-signal=SIGKILL).
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		}
		waited, err := m.opts.startNspawn(cmd)
		if waited == nil {
			return err
		}
		m.cmd = cmd
		pid = cmd.Process.Pid
		// Our unreaped child: its pid cannot be reused before Wait.
		m.rec.NspawnPID = pid
		m.rec.NspawnStart, _ = startTime(pid)
		go func() {
			<-waited
			close(m.exited)
		}()
		if err != nil {
			return err
		}
		if m.nspawn, err = openProc(pid, 0); errors.Is(err, errGone) {
			<-m.exited
			return fmt.Errorf("systemd-nspawn exited before the container was ready (%v)", m.cmd.ProcessState)
		} else if err != nil {
			return err
		}
	}
	if err := m.state.write(m.rec); err != nil {
		return err
	}

	leader, err := notify.WaitReady(ctx, pid, m.exited, m.opts.bootTimeout())
	if errors.Is(err, ErrExitedEarly) && m.cmd != nil {
		err = fmt.Errorf("%w (%v)", err, m.cmd.ProcessState)
	}
	if err != nil {
		return err
	}
	m.log.Debug("container ready", "leader", leader, "elapsed", time.Since(start))
	m.rec.LeaderPID = leader
	m.rec.LeaderStart, _ = startTime(leader)
	if m.leader, err = openProc(leader, m.rec.LeaderStart); err != nil {
		return fmt.Errorf("container init (pid %d): %w", leader, err)
	}
	if err := m.state.write(m.rec); err != nil { // still starting, with its init
		return err
	}
	err = m.connect(ctx)
	m.log.Debug("connected", "executor", m.executor, "elapsed", time.Since(start))
	if err != nil {
		return err
	}
	// Running, for racker ps and exec, once commands can be run in it.
	m.rec.Status = statusRunning
	return m.state.write(m.rec)
}

// environWithout returns the process environment without the given keys.
func environWithout(keys ...string) []string {
	var out []string
outer:
	for _, kv := range os.Environ() {
		for _, k := range keys {
			if strings.HasPrefix(kv, k+"=") {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

// connect chooses how Exec enters the container and connects its bus.
func (m *Machine) connect(ctx context.Context) error {
	m.executor = ExecNsenter
	want := m.opts.Executor
	if want == ExecAuto {
		version, known := -1, false
		if root, err := rootfs.Open(m.opts.RootFS); err == nil {
			version, known = distro.SystemdVersion(root)
			root.Close()
		}
		want = chooseExecutor(want, version, known)
		m.log.Debug("container systemd", "version", version, "known", known, "executor", want)
	}
	if want != ExecDBus {
		return nil
	}
	root, err := m.Root()
	if err != nil {
		return err
	}
	defer root.Close()
	b, err := dialBus(ctx, root, m.rec.UIDBase)
	if err != nil {
		if m.opts.Executor == ExecDBus || ctx.Err() != nil {
			return fmt.Errorf("connecting to the container's D-Bus: %w", err)
		}
		m.log.Debug("no D-Bus in the container, using nsenter", "err", err)
		return nil
	}
	m.bus, m.executor = b, ExecDBus
	return nil
}

// watchNspawn closes m.exited once nspawn, which is not our child, exits;
// closeHandles ends the watch.
func (m *Machine) watchNspawn() {
	watch, stop := context.WithCancel(context.Background())
	m.stopWatch = stop
	go func() {
		for !m.nspawn.wait(watch, time.Hour) {
			if watch.Err() != nil {
				return
			}
		}
		close(m.exited)
	}()
}

// abort kills a container that failed to boot and waits for nspawn.
func (m *Machine) abort() {
	if m.cmd == nil && m.nspawn == nil {
		return
	}
	if m.nspawn == nil {
		m.cmd.Process.Signal(syscall.SIGTERM)
		<-m.exited
		return
	}
	if err := stopProcesses(context.Background(), m.nspawn, m.leader, false, 0); err != nil {
		m.log.Debug("abort", "err", err)
	}
	<-m.exited
	m.closeHandles()
}

// usable returns ErrStopped once the container was stopped and ErrClosed
// once this Machine was closed, nil while commands can be run in it.
func (m *Machine) usable() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.stopped:
		return ErrStopped
	case m.closed:
		return ErrClosed
	}
	return nil
}

// Root opens the container's root directory (/proc/LEADER/root) as its
// processes see it, to resolve paths in from the host: a symlink in the
// container never leads to the host's files. The caller closes it; it is
// valid while the container runs.
func (m *Machine) Root() (*rootfs.Root, error) {
	if err := m.usable(); err != nil {
		return nil, err
	}
	if m.leader == nil {
		return nil, ErrStopped
	}
	r, err := rootfs.Open("/proc/" + strconv.Itoa(m.leader.pid) + "/root")
	// Checked after opening: the pid was still the container's then.
	if err == nil && m.leader.exited() {
		r.Close()
		err = ErrStopped
	}
	if err != nil {
		return nil, fmt.Errorf("opening the root of %s: %w", m.opts.Name, err)
	}
	return r, nil
}

// Name returns the container's machine name.
func (m *Machine) Name() string { return m.opts.Name }

// Leader returns the pid of the container's init (systemd) on the host.
func (m *Machine) Leader() int { return m.leader.pid }

// Done returns a channel that is closed once the container has stopped, by
// Shutdown, Stop or by itself.
func (m *Machine) Done() <-chan struct{} { return m.exited }

// Shutdown powers the container off in order (SIGRTMIN+4 to its systemd)
// and waits for nspawn to exit; after timeout (DefaultStopTimeout if zero)
// or when ctx ends first, the container is killed. The state of the
// container is removed. Calling it (or Kill) again returns the first
// result; after Close of a detached machine it returns ErrClosed.
func (m *Machine) Shutdown(ctx context.Context, timeout time.Duration) error {
	return m.stop(ctx, true, timeout)
}

// Kill ends the container at once: SIGTERM to nspawn, which was told to
// answer it by SIGKILLing the container's init and so every process in it
// (--kill-signal=SIGKILL). Nothing in
// the container gets to shut down, which suits a volatile container whose
// command has finished: docker, too, kills a container's remaining
// processes when its main process exits. Otherwise Kill is like Shutdown.
func (m *Machine) Kill() error {
	return m.stop(context.Background(), false, 0)
}

func (m *Machine) stop(ctx context.Context, poweroff bool, timeout time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return m.stopErr
	}
	if m.closed {
		return ErrClosed
	}
	m.stopped, m.closed = true, true
	if m.bus != nil {
		m.bus.close()
	}
	start := time.Now()
	err := stopProcesses(ctx, m.nspawn, m.leader, poweroff, timeout)
	if err == nil && m.cmd != nil {
		<-m.exited // reaped
	}
	m.log.Debug("stopped", "poweroff", poweroff, "err", err, "elapsed", time.Since(start))
	m.closeHandles()
	if rerr := m.state.release(m.rec); err == nil {
		err = rerr
	}
	if m.opts.userns != nil {
		if rerr := m.opts.userns.release(); err == nil {
			err = rerr
		}
	} else if m.rec.UIDBase != 0 {
		// Opened, not started here: the range and cgroups of the
		// container, now gone, are the starter's to release; prune them.
		if rerr := PruneRanges(context.WithoutCancel(ctx), m.opts.StateDir); err == nil {
			err = rerr
		}
	}
	if err != nil {
		err = fmt.Errorf("stopping %s: %w", m.opts.Name, err)
	}
	m.stopErr = err
	return err
}

// Close releases the machine; it is unusable afterwards. An attached
// container is shut down (with DefaultStopTimeout): it cannot outlive its
// Machine. A detached or opened one keeps running; only this process's
// handles on it are closed.
func (m *Machine) Close() error {
	if !m.opts.Detach {
		return m.Shutdown(context.Background(), DefaultStopTimeout)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.bus != nil {
		m.bus.close()
	}
	m.closeHandles()
	return nil
}

func (m *Machine) closeHandles() {
	if m.stopWatch != nil {
		m.stopWatch()
	}
	m.nspawn.close()
	m.leader.close()
}
