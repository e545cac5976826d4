package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/racker-postroj/racker/internal/flock"
)

// ErrRemoved is returned by Use for an image that was removed (rmi) after
// it was looked up.
var ErrRemoved = errors.New("image was removed")

// ErrStarting is returned by Remove while a container is being started from
// the image (see Use).
var ErrStarting = errors.New("a container is being started from it")

// usePath is the lock a container start holds shared (Use) and Remove
// holds exclusively: locks/<hex>.use, apart from the digest's lock, which
// pulls and preparations of the same image take while a start holds this.
func (s *Store) usePath(digest string) (string, error) {
	h, err := digestHex(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.Root, "locks", h+".use"), nil
}

// Use keeps img from being removed until release is called: a container
// start takes it once it has looked the image up and releases it once the
// container is recorded as running (Remove then refuses because of the
// container). If the image was removed after it was looked up, Use fails
// with ErrRemoved; while a removal is under way it waits for it.
func (s *Store) Use(ctx context.Context, img Image) (release func(), err error) {
	p, err := s.usePath(img.Digest)
	if err != nil {
		return nil, err
	}
	unlock, err := flock.LockShared(ctx, p)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(img.RootFS); err != nil {
		unlock()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", img.Reference, ErrRemoved)
		}
		return nil, err
	}
	if _, err := s.readRecord(img.Digest); err != nil {
		unlock()
		return nil, fmt.Errorf("%s: %w", img.Reference, ErrRemoved)
	}
	var once sync.Once
	return func() { once.Do(unlock) }, nil
}

// UseTree is Use for a container start that has only the root filesystem
// to boot: rootfs, a tree of one of the store's images (its rootfs, or the
// prepared tree next to it), is kept from being removed until release is
// called, and a tree that is gone fails with ErrRemoved. name is what the
// error calls it. A tree outside the store's images is not the store's to
// keep: release is then a no-op.
func (s *Store) UseTree(ctx context.Context, name, rootfs string) (release func(), err error) {
	rel, err := filepath.Rel(filepath.Join(s.Root, "images", "sha256"), filepath.Clean(rootfs))
	if err != nil || !filepath.IsLocal(rel) {
		return func() {}, nil
	}
	h, _, _ := strings.Cut(rel, string(filepath.Separator))
	if _, err := digestHex("sha256:" + h); err != nil {
		return func() {}, nil
	}
	return s.Use(ctx, Image{Reference: name, Digest: "sha256:" + h, RootFS: rootfs})
}

// lockRemoval takes the use lock of digest exclusively, failing at once
// with ErrStarting while a start holds it.
func (s *Store) lockRemoval(digest string) (func(), error) {
	p, err := s.usePath(digest)
	if err != nil {
		return nil, err
	}
	unlock, ok := flock.TryLock(p)
	if !ok {
		return nil, ErrStarting
	}
	return unlock, nil
}
