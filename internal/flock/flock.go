// Package flock takes advisory file locks (flock(2)) whose wait a context
// can abandon. The kernel drops a lock when its holder dies, so a killed
// process never blocks the next one.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pollInterval is how often a waiter tries again: flock(2) has no timeout
// or cancellation of its own.
const pollInterval = 50 * time.Millisecond

// Lock takes an exclusive lock on path (created 0600 if missing), waiting
// while another process or open file holds it. onWait, if not nil, is
// called once when Lock has to wait. It returns when the lock is taken,
// with the function that releases it, or when ctx ends, with ctx.Err().
func Lock(ctx context.Context, path string, onWait func()) (unlock func(), err error) {
	return lock(ctx, path, unix.LOCK_EX, onWait)
}

// LockShared is Lock for a shared lock: any number of holders at once,
// none while an exclusive lock is held.
func LockShared(ctx context.Context, path string) (unlock func(), err error) {
	return lock(ctx, path, unix.LOCK_SH, nil)
}

func lock(ctx context.Context, path string, how int, onWait func()) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	for waited := false; ; waited = true {
		ok, err := try(f, how)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if ok && !current(f, path) {
			// Pruned (see Remove) between our open and our lock: the
			// lock that counts is on the file now at path.
			f.Close()
			if f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600); err != nil {
				return nil, fmt.Errorf("locking %s: %w", path, err)
			}
			continue
		}
		if ok {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !waited && onWait != nil {
			onWait()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// TryLock takes an exclusive lock on path only if nobody holds it.
func TryLock(path string) (unlock func(), ok bool) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, false
	}
	if ok, _ := try(f, unix.LOCK_EX); !ok || !current(f, path) {
		f.Close()
		return nil, false
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, true
}

// Remove deletes the lock file at path if nobody holds it (a lock of
// something that no longer exists), and reports whether it did. Lock and
// TryLock notice a file removed under them and lock the new one, so
// removing lock files this way never lets two holders in.
func Remove(path string) bool {
	unlock, ok := TryLock(path)
	if !ok {
		return false
	}
	defer unlock()
	return os.Remove(path) == nil
}

// current reports whether the open lock file f is still the file at path.
func current(f *os.File, path string) bool {
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Stat(path, &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

func try(f *os.File, how int) (bool, error) {
	err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EWOULDBLOCK), errors.Is(err, unix.EINTR):
		return false, nil
	}
	return false, err
}
