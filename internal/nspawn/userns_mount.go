package nspawn

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNoIDMap is the cause of errors from starting a container with a
// private user namespace when the kernel or the file system of the stored
// root filesystem cannot do idmapped mounts.
var ErrNoIDMap = errors.New("idmapped mounts are not supported")

// ErrNoUserNS is the cause of errors from starting a container with a
// private user namespace where this host's systemd-nspawn cannot give it
// one (ErrNoIDMap is the other cause).
var ErrNoUserNS = errors.New("no private user namespace with this systemd-nspawn")

// privateRoot is the root filesystem of a container with a private user
// namespace on an nspawn that cannot combine --private-users with
// --volatile=overlay (< 257): an idmapped, read-only view of the stored
// tree (its 0-65535 appear as Base-Base+65535) under a tmpfs overlay, all
// mounted in a mount namespace of the container's own, so that the mounts
// vanish with nspawn however it ends, even if racker is killed.
type privateRoot struct {
	RootFS string // the stored tree, never written unless Writable
	Base   uint32 // host ID of the container's root
	// Mnt is an empty host directory the tmpfs is mounted on inside the
	// private mount namespace (mountDir).
	Mnt string
	// Writable binds RootFS itself, idmapped and writable, without an
	// overlay, for preparing an image: files the container's root writes
	// are owned by the host's root, as without a user namespace.
	Writable bool
	Cgroups  containerCgroups
	// idmap is the user namespace RootFS is idmapped with, made in the
	// background while the rest of the container is set up.
	idmap *pendingUserNS
}

// Directory is the path nspawn boots (--directory), valid in the private
// mount namespace only.
func (p *privateRoot) Directory() string {
	if p.Writable {
		return filepath.Join(p.Mnt, "root")
	}
	return filepath.Join(p.Mnt, "merged")
}

// launch starts cmd (systemd-nspawn with --directory=p.Directory()) in a
// new mount namespace holding p's mounts and in p's cgroups, and returns
// once it has started: the channel then receives cmd.Wait's result.
//
// Mount namespaces belong to threads: a goroutine locks an OS thread,
// unshares its mount namespace, mounts, forks nspawn (which inherits the
// namespace) and waits for it. The thread is never unlocked, so the Go
// runtime ends it with the goroutine once nspawn has exited, and with it
// the namespace's last user besides nspawn; the parent-death signal of
// cmd, if set, follows this thread, which lives as long as the process.
func (p *privateRoot) launch(cmd *exec.Cmd) (<-chan error, error) {
	if p.idmap == nil {
		p.idmap = startUserNS()
		p.idmap.mapTo(p.Base)
	}
	defer p.idmap.close()
	userns, err := p.idmap.wait()
	if err != nil {
		return nil, err
	}
	var cgroupFD *os.File
	if p.Cgroups.unified != "" {
		if cgroupFD, err = os.Open(p.Cgroups.unified); err != nil {
			return nil, fmt.Errorf("opening the container's cgroup: %w", err)
		}
		defer cgroupFD.Close()
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgroupFD.Fd())
	}
	started := make(chan error, 1)
	waited := make(chan error, 1)
	goLockedForGood(func() {
		if err := p.mount(userns); err != nil {
			started <- err
			return
		}
		leave, err := p.Cgroups.enterLegacy()
		if err != nil {
			started <- err
			return
		}
		err = cmd.Start()
		leave()
		if err != nil {
			err = fmt.Errorf("starting systemd-nspawn: %w", err)
		}
		started <- err
		if err == nil {
			waited <- cmd.Wait()
		}
	})
	if err := <-started; err != nil {
		return nil, err
	}
	return waited, nil
}

// goLockedForGood runs f in a new goroutine locked to an OS thread that
// is never unlocked, so that the runtime ends the thread with f: for
// changes to a thread (its mount namespace) that must not outlive f. Not
// on the main thread, which the runtime keeps when a goroutine exits
// locked to it: a goroutine that lands there holds it while a second one
// takes another thread.
func goLockedForGood(f func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			f()
			return
		}
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			f()
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
}

// mount sets up p's mounts in a new mount namespace of the calling thread.
func (p *privateRoot) mount(userns *os.File) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("creating a mount namespace: %w", err)
	}
	// Nothing mounted here may reach the host's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("making / a slave mount: %w", err)
	}
	if err := unix.Mount("racker", p.Mnt, "tmpfs", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting a tmpfs on %s: %w", p.Mnt, err)
	}
	// The overlay options name directories relative to the tmpfs: no
	// escaping of ',' and ':' in the state directory's path. The working
	// directory is this thread's own after unshare (CLONE_FS).
	cwd, err := os.Open(".")
	if err != nil {
		return err
	}
	defer cwd.Close()
	if err := unix.Chdir(p.Mnt); err != nil {
		return err
	}
	defer unix.Fchdir(int(cwd.Fd()))
	var st unix.Stat_t
	if err := unix.Stat(p.RootFS, &st); err != nil {
		return fmt.Errorf("root filesystem: %w", err)
	}
	lower := "lower"
	if p.Writable {
		lower = "root"
	}
	if err := os.Mkdir(lower, 0o755); err != nil {
		return err
	}
	if err := idmapBind(p.RootFS, lower, userns, !p.Writable); err != nil {
		return err
	}
	if p.Writable {
		return nil
	}
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	// The overlay's root takes the owner and mode of upper/: the
	// container's root, and the mode of the stored tree's root.
	id := int(p.Base)
	for _, d := range []string{"upper", "work"} {
		if err := os.Lchown(d, id+int(st.Uid), id+int(st.Gid)); err != nil {
			return err
		}
	}
	if err := unix.Chmod("upper", st.Mode&0o7777); err != nil {
		return err
	}
	if err := unix.Mount("overlay", "merged", "overlay", 0, "lowerdir=lower,upperdir=upper,workdir=work"); err != nil {
		return fmt.Errorf("%w for %s (overlay over an idmapped mount: %v)", ErrNoIDMap, p.RootFS, err)
	}
	return nil
}

// idmapBind mounts src at dst (relative to the working directory) through
// the ID mapping of userns, read-only if ro.
func idmapBind(src, dst string, userns *os.File, ro bool) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("%w by this kernel (open_tree: %v)", ErrNoIDMap, err)
		}
		return fmt.Errorf("cloning the mount of %s: %w", src, err)
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w by the file system of %s (mount_setattr: %v)", ErrNoIDMap, src, err)
		}
		return fmt.Errorf("idmapping %s: %w", src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting the idmapped %s: %w", src, err)
	}
	return nil
}

// pendingUserNS is the user namespace a root filesystem is idmapped with
// (MOUNT_ATTR_IDMAP), in the making: that of a sleep(1) cloned into a new
// user namespace at once (startUserNS), as the fork and exec take about a
// millisecond, and given its ID mapping once the container's range is
// reserved (mapTo). The process is killed once the namespace is open (the
// open file keeps it).
type pendingUserNS struct {
	base  chan uint32   // receives the range's base once; closed without one by close
	once  sync.Once     // guards base
	ready chan struct{} // closed when f or err is set
	gone  chan struct{} // closed when the process has been reaped
	f     *os.File
	err   error
}

// startUserNS starts making a user namespace for idmapping. Whoever
// starts it closes it.
func startUserNS() *pendingUserNS {
	ns := &pendingUserNS{base: make(chan uint32, 1), ready: make(chan struct{}), gone: make(chan struct{})}
	go func() {
		defer close(ns.gone)
		cmd := exec.Command("sleep", "infinity")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER, Pdeathsig: syscall.SIGKILL}
		err := cmd.Start()
		base, ok := <-ns.base
		switch {
		case err != nil:
			ns.err = fmt.Errorf("creating a user namespace: %w", err)
		case !ok:
			ns.err = errors.New("creating a user namespace: given up")
		default:
			ns.f, ns.err = mapUserNS(cmd.Process.Pid, base)
		}
		close(ns.ready)
		if err == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	return ns
}

// mapTo gives the namespace its mapping: 0-65535 to base onwards.
func (ns *pendingUserNS) mapTo(base uint32) {
	ns.once.Do(func() {
		ns.base <- base
		close(ns.base)
	})
}

// wait returns the user namespace once it is made.
func (ns *pendingUserNS) wait() (*os.File, error) {
	<-ns.ready
	return ns.f, ns.err
}

// close gives up on the namespace if mapTo was not called, and closes it
// once its process is gone; it may be called more than once.
func (ns *pendingUserNS) close() {
	if ns == nil {
		return
	}
	ns.once.Do(func() { close(ns.base) })
	<-ns.gone
	if ns.f != nil {
		ns.f.Close()
	}
}

// mapUserNS writes the ID mapping of the user namespace of process pid,
// which has none yet, and opens the namespace.
func mapUserNS(pid int, base uint32) (*os.File, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/"
	m := []byte("0 " + strconv.FormatUint(uint64(base), 10) + " " + strconv.Itoa(IDRangeSize) + "\n")
	for _, f := range []string{"uid_map", "gid_map"} {
		if err := os.WriteFile(dir+f, m, 0); err != nil {
			return nil, fmt.Errorf("mapping the IDs of a user namespace: %w", err)
		}
	}
	f, err := os.Open(dir + "ns/user")
	if err != nil {
		return nil, fmt.Errorf("opening a user namespace: %w", err)
	}
	return f, nil
}
