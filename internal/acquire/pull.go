package acquire

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/humanize"
)

// PullOptions configure Pull.
type PullOptions struct {
	Selection
	// Options say how each image is acquired; Pull sets Notify (and, with
	// Verbose, the outputs) itself.
	Options
	// Jobs is how many images are acquired at once (at least 1).
	Jobs int
	// Stdout receives the outcome: one line for a single named image, a
	// table for several or for All.
	Stdout io.Writer
	// Stderr receives "NAME: message" lines as images are pulled or built
	// and, with Verbose, the package manager's and mmdebstrap's output. It
	// is written from several goroutines: it must be safe for that, as an
	// *os.File is.
	Stderr  io.Writer
	Verbose bool
}

// Result is what became of one entry.
type Result struct {
	Entry curated.Entry
	Image Image
	Err   error
	Took  time.Duration
}

// Pull acquires the selected entries, opts.Jobs at a time, started in
// catalogue order; a failure does not stop the others. A single named
// entry's failure is returned as it is; otherwise the error says how many
// failed. Selection mistakes are UsageErrors; an interruption returns
// ctx's error.
func Pull(ctx context.Context, rt *container.Runtime, cat *curated.Catalogue, opts PullOptions) error {
	if err := CheckSource(opts.Source); err != nil {
		return err
	}
	opts.MirrorOnly = opts.MirrorOnly || opts.Source == SourceMirror
	entries, err := Select(cat, opts.Selection)
	if err != nil {
		return err
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	if opts.Verbose {
		opts.PrepareOutput, opts.BuildOutput = opts.Stderr, opts.Stderr
	}
	results := pullEntries(ctx, rt, entries, opts.Options, opts.Jobs, opts.Stderr)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(results) == 1 && !opts.All {
		r := results[0]
		if r.Err != nil {
			return r.Err
		}
		_, err := fmt.Fprintf(opts.Stdout, "%s: %s (%s) ready to boot (%.1fs)\n", r.Entry.Name, r.Image.Image.Reference, r.Image.Image.Digest, r.Took.Seconds())
		return err
	}
	if failed := writeSummary(opts.Stdout, results); failed > 0 {
		return fmt.Errorf("%d of %d images failed", failed, len(results))
	}
	return nil
}

// pullEntries acquires entries with opts, jobs at a time, started in the
// order given, and returns a result for each, in that order. Progress goes
// to progress as "NAME: message" lines (nil: nowhere); it must be safe for
// concurrent writes. Entries not started when ctx ends get its error.
func pullEntries(ctx context.Context, rt *container.Runtime, entries []curated.Entry, opts Options, jobs int, progress io.Writer) []Result {
	results := make([]Result, len(entries))
	var g errgroup.Group
	g.SetLimit(max(jobs, 1))
	for i, e := range entries {
		if ctx.Err() != nil {
			results[i] = Result{Entry: e, Err: ctx.Err()}
			continue
		}
		g.Go(func() error {
			o := opts
			if progress != nil {
				o.Notify = func(msg string) { fmt.Fprintf(progress, "%s: %s\n", e.Name, msg) }
			}
			t0 := time.Now()
			img, err := Get(ctx, rt, e, o)
			results[i] = Result{Entry: e, Image: img, Err: err, Took: time.Since(t0)}
			return nil
		})
	}
	g.Wait()
	return results
}

// writeSummary writes one row per result and returns how many failed.
func writeSummary(w io.Writer, results []Result) int {
	failed := 0
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tRESULT\tTIME\tIMAGE OR ERROR")
	for _, r := range results {
		result, detail := "ok", r.Image.Image.Reference
		if r.Err != nil {
			failed++
			result, detail = "failed", humanize.OneLine(r.Err.Error())
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1fs\t%s\n", r.Entry.Name, result, r.Took.Seconds(), detail)
	}
	tw.Flush()
	return failed
}
