package nspawn

import (
	"fmt"
	"os"
	"runtime"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// asContainerRoot runs f with the effective uid and gid idBase, the host
// IDs of the root of a container with a private user namespace, on a
// thread of its own; with idBase 0 it just runs f.
//
// What f creates then belongs to the container's root rather than to the
// host's, which the container cannot use: a peer's credentials are taken
// at connect(2) and translated into the listener's user namespace, where
// host root is unmapped ("nobody") and so refused privileged calls on the
// container's bus; a pseudo-terminal belongs to whoever opens ptmx, and
// the container's root may not open one of an unmapped owner.
//
// Credentials belong to threads: a locked thread takes the IDs for f and
// returns to its own (a multithreaded process cannot setns(2) into a user
// namespace, and needs no helper process this way). If its IDs cannot be
// restored the thread is not unlocked, and the runtime ends it with its
// goroutine. f must not leave goroutines that act on its behalf.
func asContainerRoot(idBase uint32, f func() error) error {
	if idBase == 0 {
		return f()
	}
	euid, egid := os.Geteuid(), os.Getegid()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var err error
		if err = setThreadIDs(int(idBase), int(idBase)); err != nil {
			err = fmt.Errorf("taking the IDs of the container's root: %w", err)
		} else {
			err = f()
		}
		if rerr := setThreadIDs(euid, egid); rerr != nil {
			done <- fmt.Errorf("restoring own IDs: %w", rerr)
			return // stays locked: the runtime ends the thread
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// dialAs is dbus.Dial as the root of the container whose root is host ID
// idBase (see asContainerRoot), so that it may make privileged calls.
func dialAs(addr string, idBase uint32) (*dbus.Conn, error) {
	var conn *dbus.Conn
	err := asContainerRoot(idBase, func() error {
		var err error
		conn, err = dbus.Dial(addr)
		return err
	})
	if err != nil && conn != nil {
		conn.Close()
		conn = nil
	}
	return conn, err
}

// setThreadIDs sets the effective uid and gid of the calling thread only
// (the raw system calls; syscall.Setresuid changes all threads). The real
// and saved IDs stay, so the thread can return.
func setThreadIDs(uid, gid int) error {
	// Back to root first (a no-op if there already), so that changing
	// the gid is allowed.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
		return e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
		return e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return e
	}
	return nil
}
