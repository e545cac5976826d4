package testregistry

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/testenv"
)

// ErrNoMmdebstrap means a root filesystem is not cached and mmdebstrap,
// which would build it, is not installed.
var ErrNoMmdebstrap = errors.New("mmdebstrap is not installed (apt-get install mmdebstrap)")

// Recipe says how mmdebstrap builds a Debian root filesystem. Everything in
// it, plus the mmdebstrap version, keys the cache.
type Recipe struct {
	Suite   string   // a Debian suite such as "bookworm"
	Variant string   // an mmdebstrap --variant such as "minbase"
	Include []string // extra packages, as for --include
	Mirror  string   // empty means the mirror this machine's apt uses
	Arch    string   // a Debian architecture; empty means the host's
	// IgnoreValidUntil makes apt accept a Release file past its
	// Valid-Until, as a mirror frozen at a date serves sid's.
	IgnoreValidUntil bool
	// Weekly keys the entry by the ISO week too, so that it is built again
	// from the mirror every week (a suite that moves, such as sid).
	Weekly bool
}

// BookwormSlim is built like Docker Hub's debian:bookworm-slim: about 170 MB
// unpacked, one layer.
var BookwormSlim = Recipe{Suite: "bookworm", Variant: "minbase"}

// Cache builds root filesystems with mmdebstrap and keeps each one as a
// gzip-compressed layer, so later runs, and other test processes running at
// the same time, reuse it without the network.
type Cache struct {
	// Dir holds the cached layers, usually testenv.CacheDir().
	Dir string
	// Logger, when set, reports builds.
	Logger *slog.Logger
}

// LayerInfo describes a cached layer.
type LayerInfo struct {
	Digest           v1.Hash        `json:"digest"`           // of the .tar.gz
	DiffID           v1.Hash        `json:"diffID"`           // of the .tar
	Size             int64          `json:"size"`             // of the .tar.gz
	UncompressedSize int64          `json:"uncompressedSize"` // of the .tar
	Compressor       string         `json:"compressor"`       // "pigz" or "go"
	BuildSeconds     float64        `json:"buildSeconds"`     // mmdebstrap's wall time
	Recipe           ResolvedRecipe `json:"recipe"`           // what the key hashes
}

// cacheFormat changes whenever the cache layout or the way a recipe is
// turned into a layer changes, so old entries are not reused.
const cacheFormat = 1

// Layer returns the layer for r, building it first if it is not cached. It
// holds an exclusive lock on the entry while it looks and builds, so
// concurrent callers build it once. A cache hit reads two small files and
// runs `mmdebstrap --version`. Without mmdebstrap, an entry that an older or
// newer mmdebstrap built is used, and ErrNoMmdebstrap returned if none is.
func (c *Cache) Layer(ctx context.Context, r Recipe) (*FileLayer, error) {
	k, err := resolve(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("debian %s/%s: %w", r.Suite, r.Variant, err)
	}
	prefix := fmt.Sprintf("debian-%s-%s-%s-", k.Suite, k.Variant, k.Arch)
	if k.Mmdebstrap == "" {
		if l := c.anyVersion(prefix, k); l != nil {
			return l, nil
		}
		return nil, fmt.Errorf("debian %s/%s: not in cache %s and %w", k.Suite, k.Variant, c.Dir, ErrNoMmdebstrap)
	}
	data, err := json.Marshal(k)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	name := prefix + hex.EncodeToString(sum[:8])
	entry := filepath.Join(c.Dir, name)
	if l, err := openCached(entry); err == nil {
		return l, nil
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("debian cache: %w", err)
	}
	unlock, err := flock.Lock(ctx, entry+".lock", nil)
	if err != nil {
		return nil, fmt.Errorf("debian cache %s: %w", name, err)
	}
	defer unlock()
	if l, err := openCached(entry); err == nil {
		return l, nil // another process built it while we waited
	}
	// Leftovers of builds that were killed: safe to remove, we hold the lock.
	stale, _ := filepath.Glob(filepath.Join(c.Dir, ".tmp-"+name+"-*"))
	for _, dir := range stale {
		os.RemoveAll(dir)
	}
	tmp, err := os.MkdirTemp(c.Dir, ".tmp-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("debian cache: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	if err := c.build(ctx, tmp, k); err != nil {
		return nil, fmt.Errorf("building debian %s/%s: %w", k.Suite, k.Variant, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp made it 0700
		return nil, fmt.Errorf("debian cache: %w", err)
	}
	if err := os.Rename(tmp, entry); err != nil {
		return nil, fmt.Errorf("debian cache: %w", err)
	}
	if k.Week != "" {
		c.pruneWeeks(prefix, k)
	}
	return openCached(entry)
}

// pruneWeeks removes the entries of weekly recipe k from earlier weeks:
// nothing asks for them again, and each is a whole root filesystem. An
// entry someone holds the lock of is left for a later build.
func (c *Cache) pruneWeeks(prefix string, k ResolvedRecipe) {
	for _, l := range c.entries(prefix) {
		got := l.Info.Recipe
		if got.Week == "" || got.Week >= k.Week {
			continue
		}
		got.Week, got.Mmdebstrap = k.Week, k.Mmdebstrap
		if fmt.Sprint(got) != fmt.Sprint(k) {
			continue // another recipe
		}
		dir := filepath.Dir(l.Path)
		unlock, ok := flock.TryLock(dir + ".lock")
		if !ok {
			continue
		}
		if err := os.RemoveAll(dir); err == nil {
			os.Remove(dir + ".lock")
			if c.Logger != nil {
				c.Logger.Info("removed an earlier week's root filesystem", "entry", filepath.Base(dir), "week", l.Info.Recipe.Week)
			}
		}
		unlock()
	}
}

// ResolvedRecipe is a Recipe with its defaults filled in, plus what else
// decides the bytes of the layer. Its JSON encoding is hashed into the
// cache key.
type ResolvedRecipe struct {
	Format     int      `json:"format"`
	Suite      string   `json:"suite"`
	Variant    string   `json:"variant"`
	Include    []string `json:"include"`
	Mirror     string   `json:"mirror"`
	Arch       string   `json:"arch"`
	Mmdebstrap string   `json:"mmdebstrap"` // empty when not installed
	// Set only when asked for, so that other recipes keep their keys.
	IgnoreValidUntil bool   `json:"ignoreValidUntil,omitempty"`
	Week             string `json:"week,omitempty"` // "2026-W49" for Recipe.Weekly
}

func resolve(ctx context.Context, r Recipe) (ResolvedRecipe, error) {
	k := ResolvedRecipe{
		Format:  cacheFormat,
		Suite:   r.Suite,
		Variant: r.Variant,
		Include: slices.Sorted(slices.Values(r.Include)),
		Mirror:  r.Mirror,
		Arch:    r.Arch,

		IgnoreValidUntil: r.IgnoreValidUntil,
	}
	if r.Weekly {
		year, week := time.Now().UTC().ISOWeek()
		k.Week = fmt.Sprintf("%d-W%02d", year, week)
	}
	if k.Include == nil {
		k.Include = []string{}
	}
	if k.Mirror == "" {
		k.Mirror = testenv.Mirror(r.Suite)
	}
	if k.Arch == "" {
		k.Arch = distro.DebianArch(runtime.GOARCH)
	}
	if _, err := exec.LookPath("mmdebstrap"); err == nil {
		var out strings.Builder
		if err := run(ctx, &out, "mmdebstrap", "--version"); err != nil {
			return k, err
		}
		k.Mmdebstrap = strings.TrimSpace(out.String())
	}
	return k, nil
}

// anyVersion returns a cached layer built from k by any mmdebstrap, or nil.
func (c *Cache) anyVersion(prefix string, k ResolvedRecipe) *FileLayer {
	for _, l := range c.entries(prefix) {
		got := l.Info.Recipe
		got.Mmdebstrap = ""
		if fmt.Sprint(got) == fmt.Sprint(k) {
			return l
		}
	}
	return nil
}

// entries returns the complete cached layers whose entry names start with
// prefix (the recipes of one suite, variant and architecture).
func (c *Cache) entries(prefix string) []*FileLayer {
	dirs, _ := os.ReadDir(c.Dir)
	var out []*FileLayer
	for _, e := range dirs {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if l, err := openCached(filepath.Join(c.Dir, e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out
}

func (c *Cache) build(ctx context.Context, dir string, k ResolvedRecipe) error {
	tarPath := filepath.Join(dir, "rootfs.tar")
	args := []string{"--variant=" + k.Variant, "--architectures=" + k.Arch}
	if len(k.Include) > 0 {
		args = append(args, "--include="+strings.Join(k.Include, ","))
	}
	if k.IgnoreValidUntil {
		args = append(args, `--aptopt=Acquire::Check-Valid-Until "false"`)
	}
	args = append(args, k.Suite, tarPath, k.Mirror)
	if c.Logger != nil {
		c.Logger.Info("building root filesystem", "cmd", "mmdebstrap "+strings.Join(args, " "))
	}
	start := time.Now()
	if err := run(ctx, nil, "mmdebstrap", args...); err != nil {
		return err
	}
	info := LayerInfo{BuildSeconds: time.Since(start).Seconds(), Recipe: k}

	var err error
	info.DiffID, info.UncompressedSize, err = fileio.SHA256(tarPath)
	if err != nil {
		return err
	}
	gzPath := filepath.Join(dir, "layer.tar.gz")
	info.Compressor, err = compress(ctx, tarPath, gzPath)
	if err != nil {
		return fmt.Errorf("compressing: %w", err)
	}
	info.Digest, info.Size, err = fileio.SHA256(gzPath)
	if err != nil {
		return err
	}
	if err := os.Remove(tarPath); err != nil {
		return err
	}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if c.Logger != nil {
		c.Logger.Info("built root filesystem", "digest", info.Digest, "size", info.Size,
			"seconds", info.BuildSeconds)
	}
	return os.WriteFile(filepath.Join(dir, "layer.json"), data, 0o644)
}

// compress gzips src into dst with pigz when it is installed, else with Go.
func compress(ctx context.Context, src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	defer out.Close()
	if _, err := exec.LookPath("pigz"); err == nil {
		// From stdin, so the header names no file and no time.
		cmd := command(ctx, "pigz", "-6", "-c")
		cmd.Stdin = in
		cmd.Stdout = out
		var stderr humanize.Tail
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("pigz: %w: %s", err, stderr.Last(20))
		}
		return "pigz", out.Close()
	}
	w := bufio.NewWriterSize(out, 1<<20)
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(zw, in); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	return "go", out.Close()
}

// openCached opens a complete cache entry.
func openCached(dir string) (*FileLayer, error) {
	data, err := os.ReadFile(filepath.Join(dir, "layer.json"))
	if err != nil {
		return nil, err
	}
	var info LayerInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	path := filepath.Join(dir, "layer.tar.gz")
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() != info.Size {
		return nil, fmt.Errorf("%s: %d bytes, want %d", path, st.Size(), info.Size)
	}
	return &FileLayer{Path: path, Info: info, Type: types.DockerLayer}, nil
}
