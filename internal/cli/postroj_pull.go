package cli

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/image"
)

func postrojPullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "fetch curated images and prepare them for booting",
		ArgsUsage: "NAME... | --all",
		Description: "NAME is a catalogue name or alias (postroj list-images). Each image is pulled from its\n" +
			"registry (RACKER_REGISTRY_MIRRORS applies) or, for Debian releases, built from Debian's\n" +
			"package mirror with mmdebstrap, then prepared for booting. --source=auto (the default) uses\n" +
			"the entry's own source and builds from the mirror when pulling fails; images built from a\n" +
			"mirror are kept as mirror.local/debian:SUITE and reused until --rebuild;\n" +
			"POSTROJ_MIRROR_CACHE=DIR also keeps the builds in DIR for the day, for other stores.\n" +
			"--all works through the catalogue without end-of-life releases (add --include-eol), --jobs\n" +
			"at a time; a failure does not stop the others. It ends with a summary; the exit status is 3\n" +
			"if any image failed.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "every catalogue entry (but end-of-life ones; see --include-eol)"},
			&cli.BoolFlag{Name: "include-eol", Usage: "with --all: end-of-life releases too"},
			&cli.StringSliceFlag{Name: "family", Usage: "with --all: only this `FAMILY` (debian, fedora, ...; repeatable)"},
			&cli.StringFlag{Name: "source", Value: container.SourceAuto, Usage: "`SOURCE`: auto, registry or mirror (Debian releases)"},
			&cli.BoolFlag{Name: "rebuild", Usage: "build images that come from a mirror again"},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Value: 2, Usage: "`N` images at a time"},
		},
		Action: postrojPull,
	}
}

func postrojPull(c *cli.Context) error {
	source := c.String("source")
	if !slices.Contains([]string{container.SourceAuto, container.SourceRegistry, container.SourceMirror}, source) {
		return usagef("unexpected --source %q (valid: auto, registry, mirror)", source)
	}
	if c.Int("jobs") < 1 {
		return usagef("--jobs must be at least 1, not %d", c.Int("jobs"))
	}
	cat, err := curated.Load()
	if err != nil {
		return err
	}
	entries, err := pullSelection(c, cat, source)
	if err != nil {
		return err
	}
	mirs, err := mirrors()
	if err != nil {
		return err
	}
	retry, err := retryPolicy(c)
	if err != nil {
		return err
	}
	st, err := openStore(c)
	if err != nil {
		return err
	}
	rt := &container.Runtime{Store: st, Logger: logger(c)}
	stderr := &lockedWriter{w: c.App.ErrWriter}
	opts := container.AcquireOptions{
		Source:      source,
		Pull:        container.PullAlways,
		Rebuild:     c.Bool("rebuild"),
		PullOpts:    image.PullOptions{Mirrors: mirs, Retry: retry},
		MirrorCache: mirrorCache(),
	}
	if c.Bool("verbose") {
		opts.PrepareOutput, opts.BuildOutput = stderr, stderr
	}

	results := make([]pullResult, len(entries))
	sem := make(chan struct{}, c.Int("jobs"))
	var wg sync.WaitGroup
	for i, e := range entries {
		// Started in catalogue order, --jobs at a time.
		select {
		case sem <- struct{}{}:
		case <-c.Context.Done():
			results[i] = pullResult{entry: e, err: c.Context.Err()}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			o := opts
			o.Notify = func(msg string) { fmt.Fprintf(stderr, "%s: %s\n", e.Name, msg) }
			t0 := time.Now()
			img, rootfs, err := container.Acquire(c.Context, rt, e, o)
			results[i] = pullResult{entry: e, img: img, rootfs: rootfs, err: err, took: time.Since(t0)}
		}()
	}
	wg.Wait()
	if c.Context.Err() != nil {
		return c.Context.Err()
	}

	if len(entries) == 1 && !c.Bool("all") {
		r := results[0]
		if r.err != nil {
			return r.err
		}
		fmt.Fprintf(c.App.Writer, "%s: %s (%s) ready to boot (%.1fs)\n", r.entry.Name, r.img.Reference, r.img.Digest, r.took.Seconds())
		return nil
	}
	failed := printPullSummary(c.App.Writer, results)
	if failed > 0 {
		return exitError{code: 3, err: fmt.Errorf("%d of %d images failed", failed, len(results))}
	}
	return nil
}

// mirrorCache reads POSTROJ_MIRROR_CACHE: a directory where images built
// from a package mirror are kept for the day, so that other image stores on
// the machine reuse them (the tests set it).
func mirrorCache() string { return strings.TrimSpace(os.Getenv("POSTROJ_MIRROR_CACHE")) }

// pullSelection turns the arguments into catalogue entries. A bad name or
// combination is a usage error.
func pullSelection(c *cli.Context, cat *curated.Catalogue, source string) ([]curated.Entry, error) {
	families := c.StringSlice("family")
	for _, f := range families {
		if _, ok := distro.LookupFamily(f); !ok {
			return nil, usagef("unexpected --family %q (valid: %s)", f, strings.Join(distro.Families(), ", "))
		}
	}
	if !c.Bool("all") {
		switch {
		case c.NArg() == 0:
			return nil, usagef("pull needs NAME arguments or --all")
		case c.Bool("include-eol") || len(families) > 0:
			return nil, usagef("--include-eol and --family go with --all")
		}
		var out []curated.Entry
		for _, name := range c.Args().Slice() {
			e, err := cat.Lookup(name)
			if err != nil {
				return nil, usageError{err}
			}
			if source == container.SourceMirror && e.Mirror == nil {
				return nil, usagef("%s has no mirror source (only Debian releases have one)", e.Name)
			}
			if !slices.ContainsFunc(out, func(o curated.Entry) bool { return o.Name == e.Name }) {
				out = append(out, e)
			}
		}
		return out, nil
	}
	if c.NArg() > 0 {
		return nil, usagef("give NAME arguments or --all, not both")
	}
	var out []curated.Entry
	for _, e := range cat.Entries() {
		switch {
		case e.EOL && !c.Bool("include-eol"):
		case len(families) > 0 && !slices.Contains(families, e.Family):
		case source == container.SourceMirror && e.Mirror == nil:
		default:
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, usagef("--all selects no image with these options")
	}
	return out, nil
}

type pullResult struct {
	entry  curated.Entry
	img    image.Image
	rootfs string
	err    error
	took   time.Duration
}

// printPullSummary writes one row per image and returns how many failed.
func printPullSummary(w io.Writer, results []pullResult) int {
	failed := 0
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tRESULT\tTIME\tIMAGE OR ERROR")
	for _, r := range results {
		result, detail := "ok", r.img.Reference
		if r.err != nil {
			failed++
			result, detail = "failed", oneLine(r.err.Error())
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1fs\t%s\n", r.entry.Name, result, r.took.Seconds(), detail)
	}
	tw.Flush()
	return failed
}

// lockedWriter serializes writes from concurrent pulls, line by line.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
