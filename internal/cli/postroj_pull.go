package cli

import (
	"errors"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/acquire"
	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/curated"
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
			&cli.StringFlag{Name: "source", Value: acquire.SourceAuto, Usage: "`SOURCE`: auto, registry or mirror (Debian releases)"},
			&cli.BoolFlag{Name: "rebuild", Usage: "build images that come from a mirror again"},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Value: 2, Usage: "`N` images at a time"},
		},
		Action: postrojPull,
	}
}

func postrojPull(c *cli.Context) error {
	opts, err := pullOptions(c)
	if err != nil {
		return err
	}
	cat, st, err := catalogueStore(c)
	if err != nil {
		return err
	}
	rt := &container.Runtime{Store: st, Logger: logger(c)}
	return postrojError(acquire.Pull(c.Context, rt, cat, opts))
}

// catalogueStore loads the catalogue and opens the image store.
func catalogueStore(c *cli.Context) (*curated.Catalogue, *image.Store, error) {
	cat, err := curated.Load()
	if err != nil {
		return nil, nil, err
	}
	st, err := openStore(c)
	if err != nil {
		return nil, nil, err
	}
	return cat, st, nil
}

// pullOptions turns postroj pull's flags and arguments into the options of
// acquire.Pull.
func pullOptions(c *cli.Context) (acquire.PullOptions, error) {
	opts := acquire.PullOptions{
		Selection: acquire.Selection{
			Names:      c.Args().Slice(),
			All:        c.Bool("all"),
			IncludeEOL: c.Bool("include-eol"),
			Families:   c.StringSlice("family"),
		},
		Options: acquire.Options{
			Source:      c.String("source"),
			Pull:        container.PullAlways,
			Rebuild:     c.Bool("rebuild"),
			MirrorCache: mirrorCache(),
		},
		Jobs:    c.Int("jobs"),
		Stdout:  c.App.Writer,
		Stderr:  &lockedWriter{w: c.App.ErrWriter},
		Verbose: c.Bool("verbose"),
	}
	if err := acquire.CheckSource(opts.Source); err != nil {
		return opts, postrojError(err)
	}
	if opts.Jobs < 1 {
		return opts, usagef("--jobs must be at least 1, not %d", opts.Jobs)
	}
	if !opts.All && len(opts.Names) == 0 {
		return opts, usagef("pull needs NAME arguments or --all")
	}
	var err error
	if opts.PullOpts.Mirrors, err = mirrors(); err != nil {
		return opts, err
	}
	opts.PullOpts.Retry, err = retryPolicy(c)
	opts.PullOpts.Progress = retryLines{w: opts.Stderr}
	return opts, err
}

// mirrorCache reads POSTROJ_MIRROR_CACHE: a directory where images built
// from a package mirror are kept for the day, so that other image stores on
// the machine reuse them (the tests set it).
func mirrorCache() string { return strings.TrimSpace(os.Getenv("POSTROJ_MIRROR_CACHE")) }

// postrojError makes the libraries' usage errors (acquire.UsageError) bad
// usage, exit status 2.
func postrojError(err error) error {
	if ue := (*acquire.UsageError)(nil); errors.As(err, &ue) {
		return usageError{err}
	}
	return err
}

// lockedWriter serializes writes from concurrent pulls and probes.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
