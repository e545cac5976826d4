package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/mirror"
)

// Sources Acquire takes; see AcquireOptions.Source.
const (
	SourceAuto     = "auto"
	SourceRegistry = curated.SourceRegistry
	SourceMirror   = curated.SourceMirror
)

// AcquireOptions configure Acquire.
type AcquireOptions struct {
	// Source is where the image comes from:
	//   "auto" or "": the entry's default (curated.Entry.DefaultSource);
	//       when pulling from the registry fails and the entry has a mirror
	//       source, the image is built from the mirror instead and Notify is
	//       told why;
	//   "registry": pull Entry.Source, never build;
	//   "mirror": build from Entry.Mirror with mmdebstrap (an error for
	//       entries without one).
	Source string
	// Pull says when to fetch: PullMissing (the default) uses whatever the
	// store holds for the entry (its registry image or its mirror build);
	// PullAlways asks the registry again (one request when unchanged);
	// PullNever fails unless the store holds the image.
	Pull PullPolicy
	// Rebuild builds from the mirror even when a build is stored (images
	// from a mirror are otherwise built once and kept).
	Rebuild  bool
	PullOpts image.PullOptions
	// PrepareOutput receives the package manager's output when the image is
	// prepared; BuildOutput receives mmdebstrap's. nil keeps either for
	// error messages only.
	PrepareOutput io.Writer
	BuildOutput   io.Writer
	// MirrorCache, when set, is a directory where builds from a mirror are
	// kept for the day and shared between stores (mirror.Options.CacheDir).
	MirrorCache string
	// Notify, when set, receives one-line messages for the user as the
	// image is fetched: "pulling REF", "building from URL SUITE with
	// mmdebstrap", and why the mirror is used when the registry failed.
	// Nothing is said when the store already holds what is needed.
	Notify func(msg string)
}

// Acquire returns the stored image of the catalogue entry e and a root
// filesystem of it that boots: it pulls the image (or builds it from the
// distribution's package mirror) if needed, then prepares it with the
// entry's quirks (Entry.Setup before installing, Entry.NoPrepare to refuse).
// The returned image's Reference says which source it came from: the
// entry's registry reference or its mirror reference
// (mirror.local/debian:bookworm).
func Acquire(ctx context.Context, rt *Runtime, e curated.Entry, opts AcquireOptions) (img image.Image, rootfs string, err error) {
	img, err = acquireImage(ctx, rt, e, opts)
	if err != nil {
		return image.Image{}, "", err
	}
	rootfs, err = bootableEntry(ctx, rt, e, img, opts.PrepareOutput)
	if err != nil {
		return img, "", err
	}
	return img, rootfs, nil
}

func acquireImage(ctx context.Context, rt *Runtime, e curated.Entry, opts AcquireOptions) (image.Image, error) {
	notify := opts.Notify
	if notify == nil {
		notify = func(string) {}
	}
	src := opts.Source
	switch src {
	case "", SourceAuto:
		src = SourceAuto
	case SourceRegistry, SourceMirror:
	default:
		return image.Image{}, fmt.Errorf("unknown source %q (valid: auto, registry, mirror)", opts.Source)
	}
	if src == SourceMirror && e.Mirror == nil {
		return image.Image{}, fmt.Errorf("%s has no mirror source (only Debian releases have one): use the registry", e.Name)
	}
	if src == SourceMirror || src == SourceAuto && e.DefaultSource == curated.SourceMirror {
		return mirrorImage(ctx, rt, e, opts)
	}

	regRef, err := image.ParseReference(e.Source)
	if err != nil {
		return image.Image{}, err
	}
	if opts.Pull != PullAlways {
		// Any stored image of the entry will do; the registry's is preferred.
		if img, err := rt.Store.Lookup(regRef); err == nil || !errors.Is(err, image.ErrNotFound) {
			return img, err
		}
		if src == SourceAuto && e.Mirror != nil {
			if img, err := rt.Store.Lookup(image.MustParseReference(e.MirrorReference())); err == nil {
				return img, nil
			}
		}
	}
	if opts.Pull == PullNever {
		return image.Image{}, fmt.Errorf("%s (%s) is not in the store and pulling is off", e.Name, e.Source)
	}
	notify("pulling " + e.Source)
	t0 := time.Now()
	res, err := rt.Store.Pull(ctx, regRef, opts.PullOpts)
	if err == nil {
		rt.logger().Info("pull", "name", e.Name, "ref", e.Source, "up_to_date", res.UpToDate, "took", time.Since(t0))
		return res.Image, nil
	}
	if src != SourceAuto || e.Mirror == nil || ctx.Err() != nil {
		return image.Image{}, err
	}
	if stored, lerr := rt.Store.Lookup(image.MustParseReference(e.MirrorReference())); lerr == nil && !opts.Rebuild {
		notify(fmt.Sprintf("%s; using the image built from %s on %s", oneLine(err.Error()), e.Mirror.URL, stored.Pulled.Format(time.DateOnly)))
		return stored, nil
	}
	notify(fmt.Sprintf("%s; building it from %s instead", oneLine(err.Error()), e.Mirror.URL))
	img, merr := mirrorImage(ctx, rt, e, opts)
	if merr != nil {
		return image.Image{}, fmt.Errorf("%s; then %w", oneLine(err.Error()), merr)
	}
	return img, nil
}

// mirrorImage returns the entry's mirror build, building it unless one is
// stored (or opts.Rebuild).
func mirrorImage(ctx context.Context, rt *Runtime, e curated.Entry, opts AcquireOptions) (image.Image, error) {
	ref := image.MustParseReference(e.MirrorReference())
	if !opts.Rebuild {
		if img, err := rt.Store.Lookup(ref); err == nil || !errors.Is(err, image.ErrNotFound) {
			return img, err
		}
	}
	if opts.Pull == PullNever {
		return image.Image{}, fmt.Errorf("%s (%s) is not in the store and pulling is off", e.Name, ref)
	}
	notify := opts.Notify
	if notify == nil {
		notify = func(string) {}
	}
	notify(fmt.Sprintf("building from %s %s with mmdebstrap", e.Mirror.URL, e.Mirror.Suite))
	t0 := time.Now()
	img, err := mirror.Build(ctx, rt.Store, e, mirror.Options{Output: opts.BuildOutput, Logger: rt.Logger, Rebuild: opts.Rebuild, CacheDir: opts.MirrorCache, Notify: opts.Notify})
	if err != nil {
		return image.Image{}, err
	}
	rt.logger().Info("built from mirror", "name", e.Name, "ref", img.Reference, "took", time.Since(t0))
	return img, nil
}

// bootableEntry prepares img as the entry says: the entry's setup runs
// before the package manager, and an entry marked NoPrepare is used only
// if it boots as it is.
func bootableEntry(ctx context.Context, rt *Runtime, e curated.Entry, img image.Image, output io.Writer) (string, error) {
	if e.NoPrepare != "" {
		if p, ok := rt.Store.Prepared(img); ok {
			return p.RootFS, nil
		}
		missing, err := distro.Missing(img.RootFS)
		if err != nil {
			return "", err
		}
		return "", &image.Error{Op: "preparing", Ref: img.Reference, Err: fmt.Errorf("%w: it lacks %s and %s", image.ErrNotBootable,
			strings.Join(missing, ", "), e.NoPrepare)}
	}
	run := rt.prepareRunner()
	if e.Setup != "" {
		inner := run
		run = func(ctx context.Context, rootfs, script string, out io.Writer) (int, error) {
			return inner(ctx, rootfs, "set -e\n"+e.Setup+"\n"+script, out)
		}
	}
	t0 := time.Now()
	p, err := rt.Store.Prepare(ctx, img, image.PrepareOptions{Run: run, Output: output})
	if err != nil {
		return "", err
	}
	rt.logger().Info("prepare", "name", e.Name, "ref", img.Reference, "installed", strings.Join(p.Installed, " "), "took", time.Since(t0))
	return p.RootFS, nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
