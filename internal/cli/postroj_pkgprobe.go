package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/acquire"
	"github.com/racker-postroj/racker/internal/aptlists"
	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/nspawn"
	"github.com/racker-postroj/racker/internal/probe"
)

// postroj's exit codes.
const (
	exitProbeFailed = 1
	exitUsage       = 2
	exitInfra       = 3
)

func pkgprobeCommand() *cli.Command {
	return &cli.Command{
		Name:  "pkgprobe",
		Usage: "install packages on a booted image and check their units and network services",
		UsageText: "postroj pkgprobe --image=NAME... [--package=URL|PATH]... [--check-unit=UNIT]...\n" +
			"       [--check-network=URL]... [--network=private|host|none] [--allow-host=HOST[:PORT]]...\n" +
			"       [--jobs=N] [--report=FILE.json] [--junit=FILE.xml]",
		Description: "The image (a catalogue name such as debian-bookworm, or an image reference such as\n" +
			"debian:bookworm-slim) boots on a throw-away overlay. Package files are downloaded on this host\n" +
			"first (into --cache-dir; resumed, revalidated, and checked against #sha256=HEX when the URL\n" +
			"carries it), bind-mounted read-only into the container and installed with its package manager,\n" +
			"which resolves their dependencies. Each unit is enabled and started, then must become and stay\n" +
			"active within --unit-timeout; each address (http://, https://, tcp://HOST:PORT) is checked as\n" +
			"the container sees it (localhost is the container's own under --network=private and none)\n" +
			"until it answers or --network-timeout passes: any HTTP answer counts unless --expect-status\n" +
			"says otherwise (redirects are not followed; https certificates are not verified).\n" +
			"--network=private (the default): the container has only its own loopback and reaches the\n" +
			"outside through an HTTP proxy postroj serves there, which lets requests through to the\n" +
			"image's package repositories, the hosts of --package URLs and --allow-host, answers others\n" +
			"with 403 and lists them in the report, and keeps package files and indexes fetched over\n" +
			"plain HTTP in a cache shared by all probes (DIR/packages of --cache-dir).\n" +
			"Several --image run the same probe on each, --jobs at a time, and end with a table.\n" +
			"Exit status: 0 passed, 1 a probe failed (including a package that does not install), 2 bad\n" +
			"usage (also a file that is not a package, or a package type the image cannot install),\n" +
			"3 infrastructure failure (download, image, boot, the proxy); with several images the highest\n" +
			"of the cells'. The container is gone afterwards.",
		Flags: append([]cli.Flag{
			&cli.GenericFlag{Name: "image", Value: &stringList{}, Usage: "catalogue `NAME` (postroj list-images) or image reference (repeatable: a matrix)"},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Value: 2, Usage: "`N` images probed at a time"},
			&cli.GenericFlag{Name: "package", Value: &stringList{}, Usage: "package file to install: `URL|PATH` (repeatable; URL#sha256=HEX pins it)"},
			&cli.GenericFlag{Name: "check-unit", Value: &stringList{}, Usage: "systemd `UNIT` that must become active (repeatable)"},
			&cli.GenericFlag{Name: "check-network", Value: &stringList{}, Usage: "`URL` that must answer: http://, https:// or tcp://HOST:PORT (repeatable)"},
			&cli.StringFlag{Name: "expect-status", Usage: "HTTP `STATUS` that passes: 200, 2xx, or a list such as 200,301 (default: any answer)"},
		}, probeFlags()...),
		Action: pkgprobe,
	}
}

// probeFlags are the flags pkgprobe and selftest share.
func probeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "unit-timeout", Value: probe.DefaultUnitTimeout, Usage: "how long a unit may take to become active"},
		&cli.DurationFlag{Name: "settle", Value: probe.DefaultSettle, Usage: "how long a Type=simple, exec or idle service must have been active to pass (other units: a tenth of it)"},
		&cli.DurationFlag{Name: "network-timeout", Value: probe.DefaultNetworkTimeout, Usage: "how long an address may take to answer"},
		&cli.DurationFlag{Name: "boot-timeout", Value: nspawn.DefaultBootTimeout, Usage: "give up when booting takes longer"},
		&cli.StringFlag{Name: "source", Value: acquire.SourceAuto, Usage: "where catalogue images come from: `SOURCE` auto, registry or mirror"},
		&cli.StringFlag{Name: "cache-dir", Value: DefaultCacheDir, EnvVars: []string{"POSTROJ_CACHE"}, Usage: "`DIR` for downloaded packages (DIR/downloads) and the package cache (DIR/packages)"},
		&cli.StringFlag{Name: "network", Value: string(container.NetworkPrivate), Usage: "the containers' network: `MODE` private (own loopback, egress through postroj's proxy), host or none"},
		&cli.GenericFlag{Name: "allow-host", Value: &stringList{}, Usage: "let the proxy through to `HOST[:PORT]` too (repeatable; *.DOMAIN; '*' for every host)"},
		userNSFlag(),
		&cli.StringFlag{Name: "report", Usage: "write a JSON report with every step's timing and outcome to `FILE`"},
		&cli.StringFlag{Name: "junit", Usage: "write a JUnit XML report to `FILE`"},
	}
}

// stringList is a repeatable flag that, unlike urfave's slice flags, does
// not split values at commas (URLs may contain them).
type stringList []string

func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
func (s *stringList) String() string     { return strings.Join(*s, " ") }

func listFlag(c *cli.Context, name string) []string {
	if l, ok := c.Generic(name).(*stringList); ok && l != nil {
		return *l
	}
	return nil
}

// DefaultCacheDir is postroj's cache: downloads/ (package files given to
// pkgprobe) and packages/ (what containers fetch through the proxy).
const DefaultCacheDir = "/var/cache/postroj"

func pkgprobe(c *cli.Context) error {
	if c.NArg() != 0 {
		return usagef("pkgprobe takes no arguments, got %q (packages go with --package)", c.Args().First())
	}
	names := listFlag(c, "image")
	if len(names) == 0 {
		return usagef("pkgprobe needs --image=NAME (postroj list-images shows the catalogue)")
	}
	if c.Int("jobs") < 1 {
		return usagef("--jobs must be at least 1, not %d", c.Int("jobs"))
	}
	spec := probe.Spec{
		Packages:       listFlag(c, "package"),
		Units:          listFlag(c, "check-unit"),
		UnitTimeout:    c.Duration("unit-timeout"),
		NetworkTimeout: c.Duration("network-timeout"),
	}
	for _, u := range spec.Units {
		if u == "" || strings.HasPrefix(u, "-") || strings.ContainsAny(u, " \t\n/") {
			return usagef("unexpected --check-unit %q (want a unit name such as webfs or webfs.service)", u)
		}
	}
	for _, n := range listFlag(c, "check-network") {
		a, err := probe.ParseAddress(n)
		if err != nil {
			return usageError{err}
		}
		spec.Network = append(spec.Network, a)
	}
	var err error
	if spec.Expect, err = probe.ParseStatusMatcher(c.String("expect-status")); err != nil {
		return usageError{err}
	}
	env, err := newProbeEnv(c)
	if err != nil {
		return err
	}
	var targets []probe.Target
	for _, name := range names {
		t, err := env.target(name)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	if len(targets) == 1 {
		spec.Target = targets[0]
		rep, err := env.prober.Run(c.Context, spec)
		if werr := env.writeReports(rep.WriteText, []*probe.Report{rep}, rep); werr != nil && err == nil {
			return exitError{code: exitInfra, err: werr}
		}
		return probeExit(c, rep.Result, err)
	}
	return pkgprobeMatrix(c, env, spec, targets)
}

// pkgprobeMatrix runs spec on several images: the reports of cells that did
// not pass, then the table; the exit status is the highest of the cells'.
func pkgprobeMatrix(c *cli.Context, env *probeEnv, spec probe.Spec, targets []probe.Target) error {
	for i, t := range targets {
		for _, o := range targets[:i] {
			if o.Name == t.Name {
				return usagef("--image %s given twice", t.Name)
			}
		}
	}
	env.prober.Output = nil // cells run at once: their output would interleave
	mx := &probe.Matrix{Prober: env.prober, Jobs: c.Int("jobs"), Progress: env.stderr}
	rep, err := mx.Run(c.Context, spec, targets)
	text := func(w io.Writer) error {
		for _, r := range rep.Cells {
			if r.Result == probe.Failed || r.Result == probe.Errored {
				r.WriteText(w)
				fmt.Fprintln(w)
			}
		}
		return rep.WriteTable(w)
	}
	if werr := env.writeReports(text, rep.Cells, rep); werr != nil && err == nil {
		return exitError{code: exitInfra, err: werr}
	}
	if err != nil {
		return probeExit(c, rep.Result, err)
	}
	// The highest exit status of the cells; the causes were in the table.
	var worst error
	code := 0
	for i, r := range rep.Cells {
		cerr := probeExit(c, r.Result, rep.Errs[i])
		var ee exitError
		if errors.As(cerr, &ee) && ee.code > code {
			code, worst = ee.code, cerr
		}
	}
	if worst != nil {
		return exitError{code: code}
	}
	return nil
}

// probeExit maps the outcome of a probe (or selftest) to postroj's exit
// codes. An interruption is returned as it is, for ExitInterrupted.
func probeExit(c *cli.Context, res probe.Result, err error) error {
	var ie *probe.InputError
	switch {
	case c.Context.Err() != nil:
		return c.Context.Err()
	case errors.As(err, &ie):
		return exitError{code: exitUsage, err: err}
	case err != nil:
		return exitError{code: exitInfra, err: err}
	case res == probe.Failed:
		return exitError{code: exitProbeFailed}
	case res == probe.Errored:
		return exitError{code: exitInfra}
	}
	return nil
}

// probeEnv is what pkgprobe and selftest need from their flags.
type probeEnv struct {
	c      *cli.Context
	cat    *curated.Catalogue
	rt     *container.Runtime
	prober *probe.Prober
	acq    acquire.Options
	stderr io.Writer
}

func newProbeEnv(c *cli.Context) (*probeEnv, error) {
	source := c.String("source")
	if err := acquire.CheckSource(source); err != nil {
		return nil, postrojError(err)
	}
	for _, f := range []string{"unit-timeout", "network-timeout", "boot-timeout", "settle"} {
		if c.Duration(f) <= 0 {
			return nil, usagef("--%s must be positive, not %s", f, c.Duration(f))
		}
	}
	if c.String("cache-dir") == "" {
		return nil, usagef("--cache-dir must not be empty")
	}
	hostUserNS, err := hostUserNS(c)
	if err != nil {
		return nil, err
	}
	mode, err := container.ParseNetworkMode(c.String("network"))
	if err != nil {
		return nil, usageError{err}
	}
	allow, err := allowRules(c)
	if err != nil {
		return nil, err
	}
	cat, err := curated.Load()
	if err != nil {
		return nil, err
	}
	mirrors, err := mirrors()
	if err != nil {
		return nil, err
	}
	retry, err := retryPolicy(c)
	if err != nil {
		return nil, err
	}
	st, err := openStore(c)
	if err != nil {
		return nil, err
	}
	stderr := &lockedWriter{w: c.App.ErrWriter}
	packages := &egress.Cache{Dir: filepath.Join(c.String("cache-dir"), "packages"), Logger: logger(c)}
	rt := &container.Runtime{Store: st, Logger: logger(c), PackageCache: packages, HostUserNS: hostUserNS}
	e := &probeEnv{c: c, cat: cat, stderr: stderr, rt: rt,
		acq: acquire.Options{
			Source:   source,
			PullOpts: image.PullOptions{Mirrors: mirrors, Retry: retry, Progress: retryLines{w: stderr}},
		},
		prober: &probe.Prober{
			Cache:        &probe.Cache{Dir: filepath.Join(c.String("cache-dir"), "downloads"), Logger: logger(c), Retry: retry, Progress: stderr},
			Containers:   probe.RuntimeStarter(rt),
			Network:      mode,
			Allow:        allow,
			PackageCache: packages,
			Indexes:      &aptlists.Cache{Dir: filepath.Join(packages.Dir, "apt-lists"), Logger: logger(c)},
			Logger:       logger(c),
			BootTimeout:  c.Duration("boot-timeout"),
			Settle:       c.Duration("settle"),
			HostUserNS:   hostUserNS,
		},
	}
	if c.Bool("verbose") {
		e.prober.Output = stderr
		e.acq.PrepareOutput, e.acq.BuildOutput = stderr, stderr
	}
	return e, nil
}

// allowRules parses --allow-host; a rule for the host's own loopback makes
// no sense under --network=host, but does no harm either.
func allowRules(c *cli.Context) ([]egress.Rule, error) {
	var rules []egress.Rule
	for _, v := range listFlag(c, "allow-host") {
		r, err := egress.ParseRule(v)
		if err != nil {
			return nil, usageError{err}
		}
		rules = append(rules, r)
	}
	if len(rules) > 0 && c.String("network") != string(container.NetworkPrivate) {
		return nil, usagef("--allow-host needs --network=private (there is no proxy under --network=%s)", c.String("network"))
	}
	return rules, nil
}

// target resolves --image (acquire.Resolve) into what the prober boots.
func (e *probeEnv) target(name string) (probe.Target, error) {
	t, err := acquire.Resolve(e.cat, name)
	if err != nil {
		return probe.Target{}, postrojError(err)
	}
	return probe.Target{Name: t.Name, PackageType: t.PackageType(), Acquire: e.acquirer(t)}, nil
}

// acquirer returns the function that acquires t, telling the user on
// stderr when that means pulling or building.
func (e *probeEnv) acquirer(t acquire.Target) func(ctx context.Context) (probe.Image, error) {
	return func(ctx context.Context) (probe.Image, error) {
		opts := e.acq
		opts.Notify = func(msg string) { fmt.Fprintf(e.stderr, "%s: %s\n", t.Name, msg) }
		img, err := t.Get(ctx, e.rt, opts)
		if err != nil {
			return probe.Image{}, err
		}
		return probe.Image{Reference: img.Image.Reference, Digest: img.Image.Digest, RootFS: img.RootFS, Executor: img.Executor}, nil
	}
}

// writeReports writes the human report to stdout and the files --report
// and --junit name.
func (e *probeEnv) writeReports(text func(io.Writer) error, junit []*probe.Report, jsonDoc any) error {
	text(e.c.App.Writer)
	var errs []error
	if p := e.c.String("report"); p != "" {
		errs = append(errs, writeFile(p, func(w io.Writer) error { return probe.WriteJSON(w, jsonDoc) }))
	}
	if p := e.c.String("junit"); p != "" {
		errs = append(errs, writeFile(p, func(w io.Writer) error { return probe.WriteJUnit(w, "postroj", junit) }))
	}
	return errors.Join(errs...)
}

func writeFile(p string, write func(io.Writer) error) error {
	f, err := os.Create(p)
	if err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}
