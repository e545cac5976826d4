package flock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	ctx := context.Background()
	unlock, err := Lock(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := TryLock(path); ok {
		t.Fatal("TryLock took a held lock")
	}
	waited := make(chan struct{})
	got := make(chan error)
	go func() {
		u, err := Lock(ctx, path, func() { close(waited) })
		if err == nil {
			u()
		}
		got <- err
	}()
	<-waited
	unlock()
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}

	unlock, _ = Lock(ctx, path, nil)
	defer unlock()
	cctx, cancel := context.WithTimeout(ctx, 120*time.Millisecond)
	defer cancel()
	if _, err := Lock(cctx, path, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock on a held lock after ctx ended: %v", err)
	}
}

// A lock file removed while someone waits on it does not let two holders
// in: the waiter moves to the file now at the path.
func TestRemoveUnderAWaiter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	ctx := context.Background()
	a, err := Lock(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if Remove(path) {
		t.Fatal("Remove took a held lock file")
	}
	waiting := make(chan struct{})
	acquired := make(chan struct{})
	go func() {
		u, err := Lock(ctx, path, func() { close(waiting) })
		if err != nil {
			t.Error(err)
			return
		}
		close(acquired)
		u()
	}()
	<-waiting
	a()
	if !Remove(path) {
		t.Fatal("Remove of a free lock file failed")
	}
	d, err := Lock(ctx, path, nil) // the new file
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-acquired:
		t.Fatal("the waiter took the removed file's lock while another holds the new one")
	case <-time.After(200 * time.Millisecond):
	}
	d()
	<-acquired
}

func TestLockShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	ctx := context.Background()
	s1, err := LockShared(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := LockShared(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := TryLock(path); ok {
		t.Fatal("TryLock took a lock held shared")
	}
	s1()
	s2()
	u, ok := TryLock(path)
	if !ok {
		t.Fatal("TryLock after the shared holders left")
	}
	u()
}
