package acquire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/mirror"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// Sources an image can come from; see Options.Source.
const (
	SourceAuto     = "auto"
	SourceRegistry = curated.SourceRegistry
	SourceMirror   = curated.SourceMirror
)

// CheckSource returns a UsageError unless source is "" or one of the
// sources.
func CheckSource(source string) error {
	switch source {
	case "", SourceAuto, SourceRegistry, SourceMirror:
		return nil
	}
	return &UsageError{fmt.Errorf("unexpected --source %q (valid: auto, registry, mirror)", source)}
}

// A UsageError is the caller's mistake in naming images, sources or
// formats: an unknown name, options that select nothing, a source an entry
// lacks. postroj reports it as bad usage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Options configure how an image is acquired.
type Options struct {
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
	Pull container.PullPolicy
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

// Image is an acquired image: stored, with a root filesystem that boots.
type Image struct {
	// Image is the stored image. Its Reference says which source it came
	// from: the entry's registry reference or its mirror reference
	// (mirror.local/debian:bookworm).
	Image  image.Image
	RootFS string
	// Executor is how commands enter the booted container:
	// nspawn.ExecNsenter when the entry says so (curated.Entry.Exec),
	// otherwise ExecAuto, which tells from the image's systemd.
	Executor nspawn.Executor
}

// Get returns the stored image of the catalogue entry e and a root
// filesystem of it that boots: it pulls the image (or builds it from the
// distribution's package mirror) if needed, then prepares it with the
// entry's quirks (Entry.Setup before installing, Entry.NoPrepare to
// refuse). postroj pull, pkgprobe and selftest all acquire this way.
func Get(ctx context.Context, rt *container.Runtime, e curated.Entry, opts Options) (Image, error) {
	img, err := stored(ctx, rt, e, opts)
	if err != nil {
		return Image{}, err
	}
	rootfs, err := bootable(ctx, rt, e, img, opts.PrepareOutput)
	if err != nil {
		return Image{Image: img}, err
	}
	return Image{Image: img, RootFS: rootfs, Executor: executor(e)}, nil
}

func executor(e curated.Entry) nspawn.Executor {
	if e.Exec == curated.ExecNsenter {
		return nspawn.ExecNsenter
	}
	return nspawn.ExecAuto
}

func logger(rt *container.Runtime) *slog.Logger {
	if rt.Logger != nil {
		return rt.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (o Options) notify(msg string) {
	if o.Notify != nil {
		o.Notify(msg)
	}
}

// stored returns the image of e in the store, pulling or building it as
// opts say.
func stored(ctx context.Context, rt *container.Runtime, e curated.Entry, opts Options) (image.Image, error) {
	if err := CheckSource(opts.Source); err != nil {
		return image.Image{}, err
	}
	src := opts.Source
	if src == "" {
		src = SourceAuto
	}
	if src == SourceMirror && e.Mirror == nil {
		return image.Image{}, &UsageError{fmt.Errorf("%s has no mirror source (only Debian releases have one): use the registry", e.Name)}
	}
	if src == SourceMirror || src == SourceAuto && e.DefaultSource == curated.SourceMirror {
		return mirrorImage(ctx, rt, e, opts)
	}

	regRef, err := image.ParseReference(e.Source)
	if err != nil {
		return image.Image{}, err
	}
	if opts.Pull != container.PullAlways {
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
	if opts.Pull == container.PullNever {
		return image.Image{}, fmt.Errorf("%s (%s) is not in the store and pulling is off", e.Name, e.Source)
	}
	opts.notify("pulling " + e.Source)
	t0 := time.Now()
	res, err := rt.Store.Pull(ctx, regRef, opts.PullOpts)
	if err == nil {
		logger(rt).Info("pull", "name", e.Name, "ref", e.Source, "up_to_date", res.UpToDate, "took", time.Since(t0))
		return res.Image, nil
	}
	if src != SourceAuto || e.Mirror == nil || ctx.Err() != nil {
		return image.Image{}, err
	}
	if built, lerr := rt.Store.Lookup(image.MustParseReference(e.MirrorReference())); lerr == nil && !opts.Rebuild {
		opts.notify(fmt.Sprintf("%s; using the image built from %s on %s", humanize.OneLine(err.Error()), e.Mirror.URL, built.Pulled.Format(time.DateOnly)))
		return built, nil
	}
	opts.notify(fmt.Sprintf("%s; building it from %s instead", humanize.OneLine(err.Error()), e.Mirror.URL))
	img, merr := mirrorImage(ctx, rt, e, opts)
	if merr != nil {
		return image.Image{}, fmt.Errorf("%s; then %w", humanize.OneLine(err.Error()), merr)
	}
	return img, nil
}

// mirrorImage returns the entry's mirror build, building it unless one is
// stored (or opts.Rebuild).
func mirrorImage(ctx context.Context, rt *container.Runtime, e curated.Entry, opts Options) (image.Image, error) {
	ref := image.MustParseReference(e.MirrorReference())
	if !opts.Rebuild {
		if img, err := rt.Store.Lookup(ref); err == nil || !errors.Is(err, image.ErrNotFound) {
			return img, err
		}
	}
	if opts.Pull == container.PullNever {
		return image.Image{}, fmt.Errorf("%s (%s) is not in the store and pulling is off", e.Name, ref)
	}
	opts.notify(fmt.Sprintf("building from %s %s with mmdebstrap", e.Mirror.URL, e.Mirror.Suite))
	t0 := time.Now()
	img, err := mirror.Build(ctx, rt.Store, e, mirror.Options{Output: opts.BuildOutput, Logger: rt.Logger, Rebuild: opts.Rebuild,
		CacheDir: opts.MirrorCache, Notify: opts.Notify})
	if err != nil {
		return image.Image{}, err
	}
	logger(rt).Info("built from mirror", "name", e.Name, "ref", img.Reference, "took", time.Since(t0))
	return img, nil
}

// bootable prepares img as the entry says: the entry's setup runs before
// the package manager, and an entry marked NoPrepare is used only if it
// boots as it is.
func bootable(ctx context.Context, rt *container.Runtime, e curated.Entry, img image.Image, output io.Writer) (string, error) {
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
	run := rt.PrepareRunner()
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
	logger(rt).Info("prepare", "name", e.Name, "ref", img.Reference, "installed", strings.Join(p.Installed, " "), "took", time.Since(t0))
	return p.RootFS, nil
}

// Target is what a probe's --image names: a catalogue entry, or an image
// reference racker pulls.
type Target struct {
	// Name is what the caller gave: the entry's name for an entry.
	Name string
	// Entry is the catalogue entry; nil for an image reference.
	Entry *curated.Entry
	ref   image.Reference
}

// Resolve finds the target name names: a catalogue name or alias or, when
// it has a '/', ':' or '@', an image reference. Errors are UsageErrors.
func Resolve(cat *curated.Catalogue, name string) (Target, error) {
	e, err := cat.Lookup(name)
	switch {
	case err == nil:
		return Target{Name: e.Name, Entry: &e}, nil
	case !errors.Is(err, curated.ErrUnknown) || !strings.ContainsAny(name, "/:@"):
		return Target{}, &UsageError{err}
	}
	ref, err := image.ParseReference(name)
	if err != nil {
		return Target{}, &UsageError{fmt.Errorf("--image %q is neither a catalogue name nor an image reference: %w", name, err)}
	}
	return Target{Name: name, ref: ref}, nil
}

// PackageType is the package type the catalogue gives for the target, or
// "" for an image reference (the image's package managers decide).
func (t Target) PackageType() distro.PackageType {
	if t.Entry == nil {
		return ""
	}
	return t.Entry.PackageType
}

// Get acquires the target: an entry as the package-level Get does, an
// image reference by pulling it when the store lacks it and preparing it
// for booting (opts.Source and the mirror options do not apply).
func (t Target) Get(ctx context.Context, rt *container.Runtime, opts Options) (Image, error) {
	if t.Entry != nil {
		return Get(ctx, rt, *t.Entry, opts)
	}
	img, err := rt.Image(ctx, t.ref.String(), container.PullMissing, opts.PullOpts)
	if err != nil {
		return Image{}, err
	}
	rootfs, err := rt.Bootable(ctx, img, opts.PrepareOutput)
	if err != nil {
		return Image{Image: img}, err
	}
	return Image{Image: img, RootFS: rootfs}, nil
}

// Selection says which catalogue entries to work on.
type Selection struct {
	// Names are entry names or aliases; each entry is taken once, in the
	// order given.
	Names []string
	// All takes every entry, in catalogue order, but end-of-life ones
	// unless IncludeEOL; Families, if any, keep only those families. They
	// go with All only.
	All        bool
	IncludeEOL bool
	Families   []string
	// MirrorOnly refuses named entries without a mirror source and leaves
	// them out of All (for Options.Source SourceMirror).
	MirrorOnly bool
}

// Select returns the entries sel names. Every error is a UsageError.
func Select(cat *curated.Catalogue, sel Selection) ([]curated.Entry, error) {
	usage := func(format string, args ...any) error { return &UsageError{fmt.Errorf(format, args...)} }
	for _, f := range sel.Families {
		if _, ok := distro.LookupFamily(f); !ok {
			return nil, usage("unexpected --family %q (valid: %s)", f, strings.Join(distro.Families(), ", "))
		}
	}
	if !sel.All {
		if sel.IncludeEOL || len(sel.Families) > 0 {
			return nil, usage("--include-eol and --family go with --all")
		}
		var out []curated.Entry
		for _, name := range sel.Names {
			e, err := cat.Lookup(name)
			if err != nil {
				return nil, &UsageError{err}
			}
			if sel.MirrorOnly && e.Mirror == nil {
				return nil, usage("%s has no mirror source (only Debian releases have one)", e.Name)
			}
			if !slices.ContainsFunc(out, func(o curated.Entry) bool { return o.Name == e.Name }) {
				out = append(out, e)
			}
		}
		return out, nil
	}
	if len(sel.Names) > 0 {
		return nil, usage("give NAME arguments or --all, not both")
	}
	var out []curated.Entry
	for _, e := range cat.Entries() {
		switch {
		case e.EOL && !sel.IncludeEOL:
		case len(sel.Families) > 0 && !slices.Contains(sel.Families, e.Family):
		case sel.MirrorOnly && e.Mirror == nil:
		default:
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, usage("--all selects no image with these options")
	}
	return out, nil
}
