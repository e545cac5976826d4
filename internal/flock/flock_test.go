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
