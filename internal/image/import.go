package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Import stores a local image (built on this machine rather than pulled)
// under ref, through the same verified unpacking and activation as Pull:
// the stored image's digest is img's manifest digest, and its layers are
// read from img (each is checked against its digest and diff ID). Its
// config must say os linux. ref must be a tag reference, or a digest
// reference naming img's digest.
func (s *Store) Import(ctx context.Context, ref Reference, img v1.Image) (Image, error) {
	out, err := s.importImage(ctx, ref, img)
	if err != nil {
		return Image{}, &Error{Op: "importing", Ref: ref.String(), Err: err}
	}
	return out, nil
}

func (s *Store) importImage(ctx context.Context, ref Reference, img v1.Image) (Image, error) {
	if err := s.CleanTemp(); err != nil {
		s.Logger.Warn("cleaning temporary files", "err", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Image{}, err
	}
	if d := ref.Digest(); d != "" && d != digest.String() {
		return Image{}, fmt.Errorf("the image's digest is %s, not %s", digest, d)
	}
	mt, err := img.MediaType()
	if err != nil {
		return Image{}, err
	}
	if !mt.IsImage() {
		return Image{}, fmt.Errorf("unsupported media type %q: not a container image", mt)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("reading image config: %w", err)
	}
	p := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if cfg.OS != "linux" || cfg.Architecture == "" {
		return Image{}, fmt.Errorf("%w: image is for %q, only linux images can run", ErrPlatform, p.String())
	}
	rr := refRecord{Reference: ref.String(), Digest: digest.String(), Platform: p.String()}
	return s.store(ctx, img, cfg, rr, PullOptions{}, nil)
}

// WorkDir makes a directory in the store's tmp/ for building the image
// that will be imported as key (its reference), on the store's filesystem.
// It holds a lock on key until release is called, so concurrent builds of
// one image wait for each other; release removes the directory. What a
// killed build leaves behind is removed by CleanTemp.
func (s *Store) WorkDir(ctx context.Context, key string) (dir string, release func(), err error) {
	sum := sha256.Sum256([]byte("workdir:" + key))
	h := hex.EncodeToString(sum[:])
	unlock, err := s.lock(ctx, "sha256:"+h)
	if err != nil {
		return "", nil, err
	}
	dir, err = os.MkdirTemp(filepath.Join(s.Root, "tmp"), h+".build-")
	if err != nil {
		unlock()
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir); unlock() }, nil
}
