// Command bench measures racker against the tools it replaces, side by
// side in one run against one loopback registry, and checks the figures
// against the project's targets. `make bench` runs it:
//
//	go run ./tools/bench [-n 5] [-warmup 1] [-short-reps 4] [-json FILE] [-racker bin/racker]
//	                     [-postroj bin/postroj] [-cases pull,run,probe|ID,...] [-dir /var/tmp] [-keep-outputs]
//
// The registry (internal/testregistry) serves debian:bookworm-slim as Docker
// Hub does, a manifest list, whose image is one gzip layer of about 60 MB,
// 170 MB unpacked, built by mmdebstrap and cached like the tests' (the first
// run builds it: about 40 s). Every case runs once per round, in the order of
// the table in cases.go, for -n rounds after -warmup rounds that are not
// counted; short cases (the run and probe groups) run -short-reps times per round,
// interleaved among themselves. Output trees go to a fresh directory each
// time and are removed, and the disk synced, between runs, untimed (with
// -keep-outputs, removed at the end instead). Caches are not dropped: the
// page cache is warm for every case alike (the layer blob, the binaries).
// The file system of -dir matters as much as the tools: the report names it,
// and warns about ext4 without a journal, where creating files right after
// deleting others is slow.
//
// Three groups of cases, chosen with -cases (group names and case IDs mix):
//
//   - pull: racker pull, cold and up to date, against skopeo copy + umoci
//     unpack and the gzip | tar floor;
//   - run: racker run --rm REF true, booted on the prepared image, against
//     bare systemd-nspawn booting the same tree until READY=1, nsenter true
//     and poweroff (the floor), with units masked (racker's default
//     --fast-boot, systemd.mask= on init's command line) and without; and
//     racker run --boot=never against systemd-nspawn ... true. A setup step
//     pulls and prepares the image once (apt-get from Debian's mirror: about
//     10-20 s);
//   - probe: a warm postroj pkgprobe --image=debian-bookworm
//     --check-unit=systemd-journald against the masked boot floor on the
//     tree it boots, which a setup step makes with postroj pull (docker.io
//     mirrored by the loopback registry) and checks: the registry's image,
//     and a probe sends the registry no request; and the same probe cold,
//     from an empty store and cache each time (--source=registry: it pulls
//     from the loopback registry, apt-get installs systemd from Debian's
//     mirror, it boots and probes), with its phases from its log;
//   - net: private networks against the host's for that probe, a webfs
//     probe's install step with a warm package cache against a cold one,
//     and selftest pkgprobe over four Debian releases with --jobs 2
//     against --jobs 1 (see net.go).
//
// It exits 0 when every case ran and its output checked out, whether or not
// targets were met (MISS lines say so), 1 when something failed, 2 on bad
// usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/racker-postroj/racker/internal/testenv"
	"github.com/racker-postroj/racker/internal/testregistry"
)

func main() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) }

// Main runs the benchmark with args and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := cases()
	o := options{stdout: stdout, stderr: stderr}
	fs.IntVar(&o.rounds, "n", 5, "measured `rounds`; every case runs once per round")
	fs.IntVar(&o.shortReps, "short-reps", 4, "`runs` per round of the short cases (the run group), interleaved among themselves")
	fs.IntVar(&o.warmup, "warmup", 1, "unmeasured `rounds` first, to warm caches and check that every case works")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to `FILE`")
	fs.StringVar(&o.racker, "racker", "bin/racker", "the racker `binary` to measure")
	fs.StringVar(&o.postroj, "postroj", "bin/postroj", "the postroj `binary` to measure (the probe group)")
	fs.StringVar(&o.parent, "dir", "/var/tmp", "make the scratch directory (registry, output trees) in `DIR`; it is removed at the end")
	fs.BoolVar(&o.keepOutputs, "keep-outputs", false, "remove output trees only at the end, not after each run (needs about 250 MB per run): no case then creates files\nright after the previous one deleted as many, which ext4 without a journal makes slow")
	caseList := fs.String("cases", strings.Join(groups, ","), "comma-separated groups ("+strings.Join(groups, ", ")+") and case `IDs` to run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if o.rounds < 1 || o.warmup < 0 || o.shortReps < 1 {
		fmt.Fprintf(stderr, "bench: -n and -short-reps must be at least 1 and -warmup at least 0\n")
		return 2
	}
	var err error
	if o.cases, err = selectCases(all, *caseList); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err = bench(ctx, o); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// selectCases returns the cases of all that list names, by group or id,
// in the order of all.
func selectCases(all []benchCase, list string) ([]benchCase, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		known := slices.Contains(groups, name) || slices.ContainsFunc(all, func(c benchCase) bool { return c.id == name })
		if !known {
			var ids []string
			for _, c := range all {
				ids = append(ids, c.id)
			}
			return nil, fmt.Errorf("unexpected %q in -cases (valid: the groups %s, or the cases %s)",
				name, strings.Join(groups, ", "), strings.Join(ids, ", "))
		}
		want[name] = true
	}
	var out []benchCase
	for _, c := range all {
		if want[c.group] || want[c.id] {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-cases selects no case")
	}
	return out, nil
}

type options struct {
	cases          []benchCase
	rounds, warmup int
	shortReps      int
	jsonPath       string
	racker         string
	postroj        string
	parent         string
	keepOutputs    bool
	stdout, stderr io.Writer
}

func bench(ctx context.Context, o options) error {
	var err error
	if o.racker, err = filepath.Abs(o.racker); err != nil {
		return err
	}
	if _, err := os.Stat(o.racker); err != nil {
		return fmt.Errorf("racker binary: %w (build it with make build)", err)
	}
	if slices.ContainsFunc(o.cases, func(c benchCase) bool { return c.group == "probe" || c.group == "net" }) {
		if o.postroj, err = filepath.Abs(o.postroj); err != nil {
			return err
		}
		if _, err := os.Stat(o.postroj); err != nil {
			return fmt.Errorf("postroj binary: %w (build it with make build)", err)
		}
	} else {
		o.postroj = ""
	}
	for _, c := range o.cases {
		for _, prog := range c.needs {
			if _, err := exec.LookPath(prog); err != nil {
				return fmt.Errorf("case %s needs %s: %w (make bench installs the reference tools)", c.id, prog, err)
			}
		}
	}
	work, err := os.MkdirTemp(o.parent, "racker-bench-") // 0700, as racker wants above its trees
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	regDir := filepath.Join(work, "registry")
	if err := os.Mkdir(regDir, 0o755); err != nil {
		return err
	}
	srv, err := testregistry.Start(ctx, regDir)
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(o.stdout, "Seeding %s with debian:bookworm-slim (a first run builds it with mmdebstrap: about 40 s).\n", srv.Addr())
	cache := &testregistry.Cache{Dir: testenv.CacheDir()}
	img, err := srv.PushDebian(ctx, cache, testregistry.BookwormSlim, "library/debian:bookworm-slim", true)
	if err != nil {
		return err
	}
	e := &env{racker: o.racker, postroj: o.postroj, registry: srv.Addr(), registryLog: srv.LogPath(),
		ref: img.Ref, digest: img.Digest.String(), layer: img.Layer.Path, work: work, stdout: o.stdout}
	rep := newReport(o, work, img)
	fmt.Fprintf(o.stdout, "Image %s: a manifest list; layer %.1f MB gzip, %.1f MB tar.\n",
		img.Ref, mb(img.Layer.Info.Size), mb(img.Layer.Info.UncompressedSize))
	fmt.Fprintf(o.stdout, "%d rounds after %d warm-up, cases interleaved (short cases %d times a round); page cache warm for all.\n",
		o.rounds, o.warmup, o.shortReps)
	fmt.Fprintf(o.stdout, "Outputs in %s (%s); load average %s on %d CPUs.\n", work, rep.Host.Filesystem, rep.Host.Load, rep.Host.CPUs)
	if note := rep.Host.Filesystem.Note; note != "" {
		fmt.Fprintf(o.stdout, "Note: %s.\n", note)
	}
	fmt.Fprintln(o.stdout)

	for _, c := range o.cases {
		if c.setup == nil {
			continue
		}
		if err := c.setup(ctx, e); err != nil {
			return fmt.Errorf("%s: setup: %w", c.id, err)
		}
		if c.teardown != nil {
			defer c.teardown(context.WithoutCancel(ctx), e)
		}
	}

	samples := make([][]sample, len(o.cases))
	maxReps := 1
	for _, c := range o.cases {
		if c.short {
			maxReps = o.shortReps
		}
	}
	for round := 1 - o.warmup; round <= o.rounds; round++ {
		label := fmt.Sprintf("round %d/%d", round, o.rounds)
		if round <= 0 {
			label = "warm-up"
		}
		fmt.Fprintf(o.stdout, "%-12s", label)
		for rep := 0; rep < maxReps; rep++ {
			if rep > 0 {
				fmt.Fprintf(o.stdout, "\n%-12s", "")
			}
			for i, c := range o.cases {
				if rep > 0 && !c.short {
					continue
				}
				dir := filepath.Join(work, "out")
				if o.keepOutputs {
					dir = filepath.Join(work, fmt.Sprintf("out-%s-%d-%d", c.id, round+o.warmup, rep))
				}
				s, err := runOnce(ctx, e, c, dir, !o.keepOutputs)
				if err != nil {
					fmt.Fprintln(o.stdout)
					return fmt.Errorf("%s: %w", c.id, err)
				}
				fmt.Fprintf(o.stdout, "  %s %s", c.id, seconds(s.Wall))
				if round > 0 {
					samples[i] = append(samples[i], s)
				}
			}
		}
		fmt.Fprintln(o.stdout)
	}
	fmt.Fprintln(o.stdout)

	for i, c := range o.cases {
		rep.addCase(c, samples[i])
	}
	if slices.ContainsFunc(o.cases, func(c benchCase) bool { return c.group == "run" || c.group == "probe" || c.group == "net" }) {
		rep.MaskedUnits = maskedUnits()
	}
	rep.checkTargets(targets)
	rep.compare(comparisons)
	rep.print(o.stdout)
	if o.jsonPath != "" {
		if err := rep.write(o.jsonPath); err != nil {
			return err
		}
		fmt.Fprintf(o.stdout, "\nResults written to %s.\n", o.jsonPath)
	}
	return nil
}

// runOnce runs c once in dir, a new empty directory, checks the result,
// then, with clean, removes dir. It flushes the disk before and after, so no
// write-back from one run slows the next. Only c.run is timed.
func runOnce(ctx context.Context, e *env, c benchCase, dir string, clean bool) (sample, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return sample{}, err
	}
	defer func() {
		if clean {
			os.RemoveAll(dir)
		}
		syscall.Sync()
	}()
	syscall.Sync()
	var r runner
	t0 := time.Now()
	err := c.run(ctx, e, &r, dir)
	wall := time.Since(t0)
	if err != nil {
		return sample{}, err
	}
	if c.check != nil {
		if err := c.check(ctx, e, dir); err != nil {
			return sample{}, fmt.Errorf("check: %w", err)
		}
	}
	return sample{Wall: wall, CPU: r.cpu, MaxRSS: r.maxRSS, Phases: r.phases}, nil
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func mb(n int64) float64 { return float64(n) / 1e6 }
