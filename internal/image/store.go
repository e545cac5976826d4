package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/flock"
)

// DefaultRoot is the state directory shared by racker and postroj.
const DefaultRoot = "/var/lib/postroj"

// ErrNotFound is returned when a reference names no stored image.
var ErrNotFound = errors.New("no such image")

// Store is the on-disk image store. Layout below Root:
//
//	images/sha256/<hex>/rootfs      unpacked root filesystem of manifest <hex>
//	images/sha256/<hex>/image.json  image record, written before activation
//	refs/<hash>.json                reference -> manifest digest
//	tmp/<hex>.<random>/             pulls in progress (same filesystem, so activation is a rename)
//	locks/<hex>.lock                flock(2) per manifest digest
//
// Root is created 0700: rootfs trees contain setuid binaries that no
// unprivileged user may reach.
type Store struct {
	Root   string
	Logger *slog.Logger
}

// Image is a stored image as seen through one reference.
type Image struct {
	Reference string    `json:"reference"`
	Digest    string    `json:"digest"` // manifest digest of the pulled platform
	Index     string    `json:"index,omitempty"`
	Platform  string    `json:"platform"`
	Size      int64     `json:"size"` // bytes of file content in the rootfs
	Layers    int       `json:"layers"`
	Created   time.Time `json:"created,omitzero"`
	Pulled    time.Time `json:"pulled"`
	RootFS    string    `json:"rootfs"`
	Config    Config    `json:"config"`
}

// Config is what an image's configuration says about running it.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// record is what images/sha256/<hex>/image.json holds.
type record struct {
	Digest   string    `json:"digest"`
	Config   string    `json:"config"`
	Platform string    `json:"platform"`
	Size     int64     `json:"size"`
	Entries  int64     `json:"entries"`
	Layers   int       `json:"layers"`
	Created  time.Time `json:"created,omitzero"`
	Pulled   time.Time `json:"pulled"`
	Run      Config    `json:"run"`
}

// refRecord is what refs/<hash>.json holds.
type refRecord struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`          // platform manifest
	Index     string `json:"index,omitempty"` // what the reference resolved to, if an index
	Platform  string `json:"platform"`
}

// OpenStore opens (creating if needed) the store at root.
func OpenStore(root string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := os.Chmod(abs, 0o700); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	for _, d := range []string{"images/sha256", "refs", "tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	return &Store{Root: abs, Logger: logger}, nil
}

func digestHex(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 {
		return "", fmt.Errorf("unsupported digest %q", digest)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("unsupported digest %q", digest)
	}
	return h, nil
}

func (s *Store) imageDir(digest string) string {
	h, _ := digestHex(digest)
	return filepath.Join(s.Root, "images", "sha256", h)
}

// RootFS returns where the root filesystem of the image with the given
// manifest digest lives.
func (s *Store) RootFS(digest string) string { return filepath.Join(s.imageDir(digest), "rootfs") }

func (s *Store) refPath(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.Root, "refs", hex.EncodeToString(sum[:16])+".json")
}

func (s *Store) readRecord(digest string) (record, error) {
	var rec record
	b, err := os.ReadFile(filepath.Join(s.imageDir(digest), "image.json"))
	if err != nil {
		return rec, err
	}
	return rec, json.Unmarshal(b, &rec)
}

func (s *Store) readRef(ref string) (refRecord, error) {
	var rr refRecord
	b, err := os.ReadFile(s.refPath(ref))
	if err != nil {
		return rr, err
	}
	if err := json.Unmarshal(b, &rr); err != nil {
		return rr, err
	}
	if rr.Reference != ref {
		return rr, fmt.Errorf("reference file %s names %q, not %q", s.refPath(ref), rr.Reference, ref)
	}
	return rr, nil
}

func (s *Store) writeRef(rr refRecord) error {
	return fileio.WriteJSON(s.refPath(rr.Reference), rr, 0o600)
}

func (s *Store) image(rr refRecord) (Image, error) {
	rec, err := s.readRecord(rr.Digest)
	if err != nil {
		return Image{}, err
	}
	return Image{
		Reference: rr.Reference,
		Digest:    rec.Digest,
		Index:     rr.Index,
		Platform:  rec.Platform,
		Size:      rec.Size,
		Layers:    rec.Layers,
		Created:   rec.Created,
		Pulled:    rec.Pulled,
		RootFS:    s.RootFS(rec.Digest),
		Config:    rec.Run,
	}, nil
}

// Lookup returns the stored image that ref names, or ErrNotFound.
func (s *Store) Lookup(ref Reference) (Image, error) {
	rr, err := s.readRef(ref.String())
	if errors.Is(err, os.ErrNotExist) && ref.Digest() != "" {
		// A digest reference also finds an image pulled by tag.
		if rec, rerr := s.readRecord(ref.Digest()); rerr == nil {
			return s.image(refRecord{Reference: ref.String(), Digest: rec.Digest, Platform: rec.Platform})
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return Image{}, fmt.Errorf("%s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return Image{}, fmt.Errorf("reading image store: %w", err)
	}
	img, err := s.image(rr)
	if errors.Is(err, os.ErrNotExist) {
		return Image{}, fmt.Errorf("%s: %w", ref, ErrNotFound)
	}
	return img, err
}

// List returns every stored image, one entry per reference, sorted by
// reference.
func (s *Store) List() ([]Image, error) {
	entries, err := os.ReadDir(filepath.Join(s.Root, "refs"))
	if err != nil {
		return nil, fmt.Errorf("reading image store: %w", err)
	}
	var out []Image
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.Root, "refs", e.Name()))
		if err != nil {
			continue
		}
		var rr refRecord
		if json.Unmarshal(b, &rr) != nil {
			continue
		}
		img, err := s.image(rr)
		if err != nil {
			continue // image removed under us, or a reference left by a crash
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Reference < out[j].Reference })
	return out, nil
}

// Remove deletes the reference ref and, when no other reference names the
// same image, the image itself (deleted is then true). inUse, if set, is
// asked first, under the image's use lock (see Use): no container can start
// from the image between its answer and the removal, so a non-nil answer
// (containers run from it) refuses the removal race-free. While a start
// holds the use lock, Remove fails with ErrStarting.
func (s *Store) Remove(ctx context.Context, ref Reference, inUse func(Image) error) (img Image, deleted bool, err error) {
	img, err = s.Lookup(ref)
	if err != nil {
		return Image{}, false, err
	}
	unuse, err := s.lockRemoval(img.Digest)
	if err != nil {
		return Image{}, false, fmt.Errorf("removing %s: %w", ref, err)
	}
	defer unuse()
	if inUse != nil {
		if err := inUse(img); err != nil {
			return Image{}, false, err
		}
	}
	unlock, err := s.lock(ctx, img.Digest)
	if err != nil {
		return Image{}, false, err
	}
	defer unlock()
	if err := os.Remove(s.refPath(ref.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Image{}, false, fmt.Errorf("removing %s: %w", ref, err)
	}
	all, err := s.List()
	if err != nil {
		return Image{}, false, err
	}
	for _, other := range all {
		if other.Digest == img.Digest {
			return img, false, nil // still named by another reference
		}
	}
	if err := s.removeImageDir(img.Digest); err != nil {
		return Image{}, false, fmt.Errorf("removing %s: %w", ref, err)
	}
	return img, true, nil
}

// removeImageDir takes an image out of images/ with one rename, so it
// vanishes at once, then deletes the tree.
func (s *Store) removeImageDir(digest string) error {
	h, err := digestHex(digest)
	if err != nil {
		return err
	}
	trash, err := os.MkdirTemp(filepath.Join(s.Root, "tmp"), h+".rm-")
	if err != nil {
		return err
	}
	dst := filepath.Join(trash, "image")
	if err := os.Rename(s.imageDir(digest), dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.Remove(trash)
		return err
	}
	return os.RemoveAll(trash)
}

// lock takes the per-digest lock, waiting (and saying so) while another
// process holds it. The returned function releases it.
func (s *Store) lock(ctx context.Context, digest string) (func(), error) {
	h, err := digestHex(digest)
	if err != nil {
		return nil, err
	}
	return flock.Lock(ctx, filepath.Join(s.Root, "locks", h+".lock"), func() {
		s.Logger.Info("waiting for another process working on the same image", "digest", digest)
	})
}

// tryLock takes the per-digest lock if nobody holds it.
func (s *Store) tryLock(hexDigest string) (func(), bool) {
	return flock.TryLock(filepath.Join(s.Root, "locks", hexDigest+".lock"))
}

// CleanTemp removes what interrupted pulls left in tmp/: every entry whose
// digest lock nobody holds.
func (s *Store) CleanTemp() error {
	dir := filepath.Join(s.Root, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		h, _, ok := strings.Cut(e.Name(), ".")
		if !ok || len(h) != 64 {
			continue
		}
		unlock, ok := s.tryLock(h)
		if !ok {
			continue // a pull or removal is under way
		}
		s.Logger.Info("removing leftover of an interrupted pull", "path", filepath.Join(dir, e.Name()))
		err := os.RemoveAll(filepath.Join(dir, e.Name()))
		unlock()
		if err != nil {
			return fmt.Errorf("cleaning %s: %w", dir, err)
		}
	}
	return nil
}

// PruneLocks removes the lock files in locks/ that belong to nothing any
// more: no image of that digest is stored, no tmp/ entry has it, and
// nobody holds the lock (flock.Remove; a killed process holds none).
func (s *Store) PruneLocks() error {
	dir := filepath.Join(s.Root, "locks")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	tmp, err := os.ReadDir(filepath.Join(s.Root, "tmp"))
	if err != nil {
		return err
	}
	busy := map[string]bool{}
	for _, e := range tmp {
		h, _, _ := strings.Cut(e.Name(), ".")
		busy[h] = true
	}
	for _, e := range entries {
		h, kind, ok := strings.Cut(e.Name(), ".")
		if !ok || len(h) != 64 || (kind != "lock" && kind != "use") || busy[h] {
			continue
		}
		if _, err := os.Lstat(filepath.Join(s.Root, "images", "sha256", h)); err == nil {
			continue
		}
		if flock.Remove(filepath.Join(dir, e.Name())) {
			s.Logger.Info("removed a lock of nothing", "path", filepath.Join(dir, e.Name()))
		}
	}
	return nil
}
