// Package mirror builds images from a distribution's package mirror with
// mmdebstrap (Debian-family catalogue entries) and imports them into the
// image store, for machines that reach a package mirror but no registry.
package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/image"
)

// Packages returns what is installed into images built from a mirror on top
// of mmdebstrap's minbase variant: apt's names for what booting and probing
// need (distro.BootNeeds), so such images need no preparation.
func Packages() []string {
	apt, _ := distro.LookupManager("apt-get")
	return apt.Packages(distro.BootPackages())
}

// ErrNoMmdebstrap is wrapped by Build's error when mmdebstrap is
// not installed.
var ErrNoMmdebstrap = errors.New("mmdebstrap is not installed (apt-get install mmdebstrap)")

// Options configure Build.
type Options struct {
	// Output receives mmdebstrap's output as it runs; otherwise it is kept
	// and its last lines are part of any error.
	Output io.Writer
	Logger *slog.Logger
	// Rebuild builds even when another process finished the same build
	// while this one waited for it, or the cache (CacheDir) has it.
	Rebuild bool
	// CacheDir, when set, keeps the tar mmdebstrap makes for each release
	// until the end of the UTC day, so that building the same release into
	// other stores on this machine (tests, CI) costs an import, not a
	// build. Older entries are removed.
	CacheDir string
	// Notify, when set, is told about what the user should know: a mirror
	// serving expired Release files.
	Notify func(msg string)
}

// Build builds e's root filesystem from its package mirror with mmdebstrap
// (variant minbase plus Packages) and imports it into st as
// e.MirrorReference(). The build runs in the store's tmp/ and leaves
// nothing behind.
func Build(ctx context.Context, st *image.Store, e curated.Entry, opts Options) (image.Image, error) {
	img, err := buildFromMirror(ctx, st, e, opts)
	if err != nil {
		return image.Image{}, fmt.Errorf("building %s from %s: %w", e.Name, mirrorURL(e), err)
	}
	return img, nil
}

func mirrorURL(e curated.Entry) string {
	if e.Mirror == nil {
		return "its mirror"
	}
	return e.Mirror.URL
}

func buildFromMirror(ctx context.Context, st *image.Store, e curated.Entry, opts Options) (image.Image, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if e.Mirror == nil {
		return image.Image{}, errors.New("the entry has no mirror source")
	}
	ref, err := image.ParseReference(e.MirrorReference())
	if err != nil {
		return image.Image{}, err
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return image.Image{}, ErrNoMmdebstrap
	}
	dir, release, err := st.WorkDir(ctx, ref.String())
	if err != nil {
		return image.Image{}, err
	}
	defer release()
	if !opts.Rebuild {
		if img, err := st.Lookup(ref); err == nil {
			return img, nil // built by another process while we waited
		}
	}

	t0 := time.Now()
	arch := distro.DebianArch(runtime.GOARCH)
	tarPath := filepath.Join(dir, "rootfs.tar")
	cached := ""
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
			return image.Image{}, fmt.Errorf("mirror cache: %w", err)
		}
		cached = filepath.Join(opts.CacheDir, cacheName(e, arch, t0))
		unlock, err := flock.Lock(ctx, cached+".lock", nil)
		if err != nil {
			return image.Image{}, fmt.Errorf("mirror cache: %w", err)
		}
		defer unlock()
		pruneCache(opts.CacheDir, t0, log)
		if _, err := os.Stat(cached); err == nil && !opts.Rebuild {
			log.Info("using cached build", "name", e.Name, "path", cached)
			tarPath = cached
		}
	}
	if tarPath != cached {
		args := mmdebstrapArgs(e, arch, tarPath)
		log.Info("building from mirror", "name", e.Name, "cmd", "mmdebstrap "+strings.Join(args, " "))
		err := run(ctx, opts.Output, "mmdebstrap", args...)
		if errors.Is(err, errExpired) {
			// Suites that change (sid) sign their Release files for a week;
			// a mirror that lags behind serves expired ones. Build anyway,
			// saying so; the option stays in the image's apt configuration
			// so that apt works inside it too.
			if opts.Notify != nil {
				opts.Notify(fmt.Sprintf("%s's Release file on %s has expired (the mirror lags behind): building without apt's Valid-Until check", e.Mirror.Suite, e.Mirror.URL))
			}
			args = append(args[:len(args)-3:len(args)-3], ignoreValidUntil, e.Mirror.Suite, tarPath, e.Mirror.URL)
			log.Info("building from mirror", "name", e.Name, "cmd", "mmdebstrap "+strings.Join(args, " "))
			err = run(ctx, opts.Output, "mmdebstrap", args...)
		}
		if err != nil {
			return image.Image{}, err
		}
		log.Info("built root filesystem", "name", e.Name, "took", time.Since(t0))
		if cached != "" {
			if err := keep(tarPath, cached); err != nil {
				log.Warn("caching the build", "path", cached, "err", err)
			}
		}
	}

	// The build's time, not the import's: stores that import one cached
	// build get the same image digest.
	created := t0
	if fi, err := os.Stat(tarPath); err == nil {
		created = fi.ModTime().Truncate(time.Second)
	}
	img, err := imageFromTar(tarPath, e, arch, created)
	if err != nil {
		return image.Image{}, err
	}
	out, err := st.Import(ctx, ref, img)
	if err != nil {
		return image.Image{}, err
	}
	return out, nil
}

// ignoreValidUntil makes apt accept Release files past their Valid-Until.
const ignoreValidUntil = `--aptopt=Acquire::Check-Valid-Until "false"`

// errExpired is wrapped by run's error when apt refused an expired Release
// file.
var errExpired = errors.New("release file expired")

// mmdebstrapArgs returns mmdebstrap's arguments for building e into out.
func mmdebstrapArgs(e curated.Entry, arch, out string) []string {
	args := []string{
		"--variant=minbase",
		"--include=" + strings.Join(Packages(), ","),
		"--architectures=" + arch,
		"--format=tar",
	}
	if e.Mirror.Keyring != "" {
		args = append(args, "--keyring="+e.Mirror.Keyring)
	}
	if strings.Contains(e.Mirror.URL, "archive.debian.org") {
		// Archived suites' Release files have long expired.
		args = append(args, ignoreValidUntil)
	}
	return append(args, e.Mirror.Suite, out, e.Mirror.URL)
}

// cacheName names the cached tar of e's build for arch on the UTC day of
// t: the suite for people, a hash of everything that decides the content.
func cacheName(e curated.Entry, arch string, t time.Time) string {
	sum := sha256.Sum256([]byte(strings.Join(mmdebstrapArgs(e, arch, "-"), "\x00") + "\x00" + t.UTC().Format(time.DateOnly)))
	return fmt.Sprintf("%s-%s-%s-%s.tar", e.Family, e.Mirror.Suite, arch, hex.EncodeToString(sum[:8]))
}

// pruneCache removes cached builds from before yesterday (UTC).
func pruneCache(dir string, now time.Time, log *slog.Logger) {
	entries, _ := os.ReadDir(dir)
	for _, d := range entries {
		info, err := d.Info()
		if err != nil || !strings.HasSuffix(d.Name(), ".tar") || now.Sub(info.ModTime()) < 48*time.Hour {
			continue
		}
		log.Info("removing old cached build", "path", filepath.Join(dir, d.Name()))
		os.Remove(filepath.Join(dir, d.Name()))
	}
}

// keep puts a copy of src at dst, atomically: a hard link when both are on
// one filesystem.
func keep(src, dst string) error {
	tmp := dst + ".tmp"
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		in, err := os.Open(src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			return err
		}
	}
	return os.Rename(tmp, dst)
}

// imageFromTar makes a one-layer image of an uncompressed root filesystem
// tar, configured for this host's platform.
func imageFromTar(tarPath string, e curated.Entry, arch string, created time.Time) (v1.Image, error) {
	l, err := newTarLayer(tarPath)
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: l, History: v1.History{
		Created:   v1.Time{Time: created.UTC()},
		CreatedBy: "mmdebstrap " + strings.Join(mmdebstrapArgs(e, arch, "rootfs.tar"), " "),
	}})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	host := image.HostPlatform()
	cfg.OS, cfg.Architecture, cfg.Variant = host.OS, host.Architecture, host.Variant
	cfg.Created = v1.Time{Time: created.UTC()}
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.Config.Cmd = []string{"bash"}
	cfg.Config.Labels = map[string]string{"org.racker.curated": e.Name, "org.racker.mirror": e.Mirror.URL + " " + e.Mirror.Suite}
	return mutate.ConfigFile(img, cfg)
}

// tarLayer is an uncompressed layer backed by a file: its digest and diff
// ID are the same hash, computed once, and nothing is compressed only to be
// decompressed again by the import a moment later.
type tarLayer struct {
	path string
	hash v1.Hash
	size int64
}

func newTarLayer(path string) (*tarLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hasher := sha256.New()
	n, err := io.Copy(hasher, f)
	if err != nil {
		return nil, err
	}
	return &tarLayer{path: path, size: n, hash: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(hasher.Sum(nil))}}, nil
}

func (l *tarLayer) Digest() (v1.Hash, error)             { return l.hash, nil }
func (l *tarLayer) DiffID() (v1.Hash, error)             { return l.hash, nil }
func (l *tarLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *tarLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }
func (l *tarLayer) Size() (int64, error)                 { return l.size, nil }
func (l *tarLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }

// run runs a command with its output going to out, or, when out is nil,
// kept: the last lines of it are then part of the error when it fails. On
// cancellation the command gets SIGTERM (mmdebstrap cleans up after
// itself) and, after a grace period, SIGKILL.
func run(ctx context.Context, out io.Writer, name string, args ...string) error {
	var tail humanize.Tail
	w := io.Writer(&tail)
	if out != nil {
		w = io.MultiWriter(out, &tail)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		if tail.Contains("is expired (invalid since") {
			err = fmt.Errorf("%w: %v", errExpired, err)
		}
		return fmt.Errorf("%s failed (%w): %s", name, err, tail.Last(3))
	}
	return nil
}
