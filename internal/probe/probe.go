package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/aptlists"
	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// Defaults for Spec and Prober fields left zero.
const (
	DefaultUnitTimeout    = 30 * time.Second
	DefaultNetworkTimeout = 5 * time.Second
	DefaultSettle         = 500 * time.Millisecond
	// InstallTimeout bounds installing the packages (repository metadata
	// and dependencies are downloaded inside the container).
	InstallTimeout = 20 * time.Minute
	// PackageDir is where package files appear in the container: each one
	// is bind-mounted read-only from the host, never copied into the image.
	PackageDir = "/run/postroj/packages"
	// outputTail is how many lines of install and command output a report
	// keeps.
	outputTail   = 40
	journalLines = 20
)

// Image is a root filesystem ready to boot.
type Image struct {
	Reference string // the image reference it came from, for reports
	// Digest is the image's manifest digest; it keys the index cache (none
	// is used without it).
	Digest string
	RootFS string
	// Executor says how commands enter the booted container (the catalogue
	// knows for CentOS 7); ExecAuto tells from the image.
	Executor nspawn.Executor
}

// Target is the image a probe boots.
type Target struct {
	// Name is the catalogue name or image reference the user gave; it names
	// the report and, cleaned up, the container.
	Name string
	// PackageType, when the catalogue says it, lets Run refuse packages of
	// another type before the image is acquired.
	PackageType Type
	// Acquire returns the image, pulling or building and preparing it as
	// needed (required).
	Acquire func(ctx context.Context) (Image, error)
}

// Spec is one probe: what to install on which image and what to check.
type Spec struct {
	// Probe names the probe in reports ("pkgprobe" if empty).
	Probe  string
	Target Target
	// Packages are package files: http(s) URLs (optionally pinned with
	// #sha256=HEX), file:// URLs or host paths. They are fetched before
	// anything else, so a bad one fails the probe before any container
	// starts.
	Packages []string
	// Install names packages of the image's repositories, installed before
	// Packages.
	Install []string
	// Commands must each exit with status 0; they run after installing.
	Commands [][]string
	// Units are enabled and started, then must become and stay active.
	Units []string
	// Network addresses are checked from the host once the units are up.
	Network []Address
	// Expect says which HTTP statuses pass (any, if zero).
	Expect         StatusMatcher
	UnitTimeout    time.Duration // DefaultUnitTimeout if zero
	NetworkTimeout time.Duration // DefaultNetworkTimeout if zero
}

// Machine is a booted container as a probe uses it; *container.Container
// is one.
type Machine interface {
	Executor
	Stop(ctx context.Context, how container.Teardown, timeout time.Duration) error
}

// Starter starts the container a probe runs in. RuntimeStarter is the real
// one; unit tests give a fake.
type Starter interface {
	Start(ctx context.Context, opts container.StartOptions) (Machine, error)
}

// RuntimeStarter starts probe containers with rt, the one way racker and
// postroj start containers (container.Runtime.Start); rt's state directory
// is then where `racker ps` lists them.
func RuntimeStarter(rt *container.Runtime) Starter { return runtimeStarter{rt} }

type runtimeStarter struct{ rt *container.Runtime }

func (s runtimeStarter) Start(ctx context.Context, opts container.StartOptions) (Machine, error) {
	c, err := s.rt.Start(ctx, opts)
	if err != nil {
		return nil, err // not a Machine holding a nil *Container
	}
	return c, nil
}

// Prober runs probes. Its fields are read-only while probes run, and
// several probes may run at once (on different ports).
type Prober struct {
	// Cache fetches package files (required when a Spec has Packages).
	Cache *Cache
	// Containers starts the probe's container (required): RuntimeStarter
	// of the racker store's runtime, so that `racker ps` lists it.
	Containers Starter
	// Logger receives what happens; nil discards it.
	Logger *slog.Logger
	// Output, when set, receives the output of installing and of commands
	// as it happens (--verbose); reports keep its tail either way.
	Output io.Writer
	// BootTimeout bounds the boot (nspawn.DefaultBootTimeout if zero).
	BootTimeout time.Duration
	// HostUserNS probes with the host's user IDs (--userns=host) instead
	// of in a private user namespace.
	HostUserNS bool
	// Settle is how long a unit must stay active (DefaultSettle if zero).
	Settle time.Duration
	// Network is the containers' network (container.NetworkPrivate if
	// empty), Allow what the proxy of a private one lets through besides
	// the image's repositories and the hosts of package URLs, and
	// PackageCache where it keeps what it fetches (none if nil).
	Network      container.NetworkMode
	Allow        []egress.Rule
	PackageCache *egress.Cache
	// Indexes, when set, keeps apt's lists between probes of one image
	// under a private network (see aptlists): apt-get update then
	// revalidates them instead of fetching them all again.
	Indexes *aptlists.Cache
}

func (p *Prober) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// Run runs the probe and returns its report, which is complete on every
// path: steps that did not run are recorded as skipped. A package that does
// not install, a command that fails, a unit that does not become active or
// an address that does not answer make the report Failed, with a nil
// error. Problems with the input (*InputError: a missing or non-package
// file, a package type the image cannot install) and with the
// infrastructure (*DownloadError, acquiring or booting the image) make it
// Errored and are returned. The container is gone when Run returns, also
// when ctx ends early.
func (p *Prober) Run(ctx context.Context, spec Spec) (*Report, error) {
	r := &Report{Probe: spec.Probe, Image: spec.Target.Name, Started: time.Now()}
	if r.Probe == "" {
		r.Probe = "pkgprobe"
	}
	err := p.run(ctx, spec, r)
	r.finish()
	if err != nil && r.Error == "" {
		r.Error = humanize.OneLine(err.Error())
	}
	return r, err
}

func (p *Prober) run(ctx context.Context, spec Spec, r *Report) (err error) {
	log := p.logger().With("image", spec.Target.Name)
	// Whatever stops the probe early, the remaining checks are recorded as
	// skipped, so reports always list everything that was asked for.
	todo := plannedSteps(spec)
	defer func() {
		done := map[string]bool{}
		for _, s := range r.Steps {
			done[s.Kind+"\x00"+s.Name] = true
		}
		why := "not run: an earlier step did not pass"
		if ctx.Err() != nil {
			why = "not run: interrupted"
		}
		for _, t := range todo {
			if !done[t[0]+"\x00"+t[1]] {
				r.skip(t[0], t[1], why)
			}
		}
		// The teardown, which ran first, is listed last.
		for i, s := range r.Steps {
			if s.Kind == KindTeardown {
				r.Steps = append(append(r.Steps[:i:i], r.Steps[i+1:]...), s)
				break
			}
		}
	}()

	// 1. Packages, on the host, before any container starts.
	var pkgs []Package
	for _, src := range spec.Packages {
		s := r.begin(KindDownload, src)
		if p.Cache == nil {
			err := errors.New("no download cache configured")
			s.endErr(Errored, err)
			return err
		}
		pkg, err := p.Cache.Fetch(ctx, src)
		if err != nil {
			s.endErr(Errored, err)
			return err
		}
		s.Package = &pkg
		s.Name = pkg.Name
		s.end(Passed, fmt.Sprintf("%s, %s, %s", pkg.Type, humanize.Bytes(pkg.Size), pkg.How))
		log.Info("package", "source", src, "type", pkg.Type, "how", pkg.How, "took", s.Seconds)
		pkgs = append(pkgs, pkg)
	}
	var types []Type
	for _, pkg := range pkgs {
		types = append(types, pkg.Type)
	}
	if t := spec.Target.PackageType; t != "" {
		for _, pkg := range pkgs {
			if pkg.Type != t {
				s := r.begin(KindImage, spec.Target.Name)
				err := &InputError{Source: pkg.Source, Err: fmt.Errorf("%w: %s is a %s package, but %s installs %s packages",
					distro.ErrIncompatible, pkg.Name, pkg.Type, spec.Target.Name, t)}
				s.endErr(Errored, err)
				return err
			}
		}
	}
	// On the host's network, a service already answering there would make
	// a network check pass without the container.
	for _, a := range spec.Network {
		if p.sharesHostNetwork() && a.Loopback() && PortInUse(ctx, a) {
			s := r.begin(KindNetwork, a.Raw)
			err := fmt.Errorf("%s already answers on this host before the container started, so checking it would prove nothing (stop what listens on port %s)", a.HostPort(), a.Port)
			s.endErr(Errored, err)
			return err
		}
	}

	// 2. The image.
	s := r.begin(KindImage, spec.Target.Name)
	if spec.Target.Acquire == nil {
		err := fmt.Errorf("%s: no way to acquire the image", spec.Target.Name)
		s.endErr(Errored, err)
		return err
	}
	img, err := spec.Target.Acquire(ctx)
	if err != nil {
		s.endErr(Errored, err)
		return err
	}
	r.Reference = img.Reference
	var mgr distro.Manager
	if len(pkgs) > 0 || len(spec.Install) > 0 {
		have, err := distro.Detect(img.RootFS)
		if err == nil {
			mgr, err = distro.Choose(have, types)
		}
		if err != nil {
			if errors.Is(err, distro.ErrIncompatible) && len(pkgs) > 0 {
				err = &InputError{Source: pkgs[0].Source, Err: fmt.Errorf("%s: %w", spec.Target.Name, err)}
			} else {
				err = fmt.Errorf("%s: %w", spec.Target.Name, err)
			}
			s.endErr(Errored, err)
			return err
		}
		r.Manager = mgr.Name
	}
	s.end(Passed, img.Reference)

	// 3. Boot, with the package files bound read-only.
	s = r.begin(KindBoot, container.DefaultName("postroj-", spec.Target.Name))
	r.Machine = s.Name
	var binds []nspawn.Bind
	var paths []string
	used := map[string]bool{}
	for i, pkg := range pkgs {
		name := pkg.Name
		if used[name] {
			name = fmt.Sprintf("%d-%s", i+1, name)
		}
		used[name] = true
		inside := path.Join(PackageDir, name)
		binds = append(binds, nspawn.Bind{Host: pkg.Path, Container: inside, ReadOnly: true})
		paths = append(paths, inside)
	}
	if p.Containers == nil {
		err := errors.New("no way to start containers configured")
		s.endErr(Errored, err)
		return err
	}
	m, err := p.Containers.Start(ctx, container.StartOptions{
		Name: r.Machine, RootFS: img.RootFS, Image: img.Reference,
		Binds: binds, MaskUnits: nspawn.DefaultMaskedUnits(), BootTimeout: p.BootTimeout, Executor: img.Executor,
		Isolation: container.Isolation{Network: p.network(spec), HostUserNS: p.HostUserNS},
	})
	if err != nil {
		s.endErr(Errored, err)
		return err
	}
	s.end(Passed, "")
	log.Info("booted", "machine", r.Machine, "took", s.Seconds)
	r.Network = string(p.networkMode())
	defer func() {
		r.Egress = egressReport(m)
		s := r.begin(KindTeardown, r.Machine)
		// Killed, not powered off: the overlay vanishes anyway, and the
		// only binds are the read-only package files.
		if kerr := m.Stop(context.WithoutCancel(ctx), container.Kill, 0); kerr != nil {
			s.endErr(Errored, kerr)
			if err == nil {
				err = kerr
			}
			return
		}
		s.end(Passed, "")
	}()

	// 4. Install.
	if len(paths) > 0 || len(spec.Install) > 0 {
		names := append(append([]string{}, spec.Install...), pkgNames(pkgs)...)
		s := r.begin(KindInstall, strings.Join(names, " "))
		ok, err := p.install(ctx, m, mgr, img, spec.Install, paths, s, log)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
	}

	// 5. Commands, units, network.
	for _, args := range spec.Commands {
		s := r.begin(KindCommand, strings.Join(args, " "))
		if err := p.command(ctx, m, args, s); err != nil {
			return err
		}
	}
	for _, u := range spec.Units {
		s := r.begin(KindUnit, u)
		if err := p.unit(ctx, m, u, spec.UnitTimeout, s); err != nil {
			return err
		}
	}
	timeout := spec.NetworkTimeout
	if timeout <= 0 {
		timeout = DefaultNetworkTimeout
	}
	for _, a := range spec.Network {
		s := r.begin(KindNetwork, a.Raw)
		res := CheckNetworkVia(ctx, dialer(m), a, spec.Expect, timeout, 0)
		s.Network = &res
		switch {
		case ctx.Err() != nil:
			s.endErr(Errored, ctx.Err())
			return ctx.Err()
		case res.Passed && res.Response != "":
			s.end(Passed, res.Response)
		case res.Passed:
			s.end(Passed, "connected")
		default:
			s.Error = res.Reason
			s.end(Failed, res.Response)
		}
	}
	return nil
}

// plannedSteps lists the checks a spec asks for, as (kind, name) pairs.
func plannedSteps(spec Spec) [][2]string {
	var out [][2]string
	for _, args := range spec.Commands {
		out = append(out, [2]string{KindCommand, strings.Join(args, " ")})
	}
	for _, u := range spec.Units {
		out = append(out, [2]string{KindUnit, u})
	}
	for _, a := range spec.Network {
		out = append(out, [2]string{KindNetwork, a.Raw})
	}
	return out
}

func pkgNames(pkgs []Package) []string {
	var out []string
	for _, p := range pkgs {
		out = append(out, p.Name)
	}
	return out
}

// install runs the package manager: its refresh (with the index cache's
// lists of an earlier container of img put back first, and the lists
// kept after), then the install. ok is false when it failed (the step
// then says why); err is for an interrupted or lost container.
func (p *Prober) install(ctx context.Context, m Machine, mgr distro.Manager, img Image, names, paths []string, s *Step, log *slog.Logger) (ok bool, err error) {
	var tail humanize.Tail
	var out io.Writer = &tail
	if p.Output != nil {
		out = io.MultiWriter(&tail, p.Output)
	}
	w := &syncWriter{w: out}
	ictx, cancel := context.WithTimeout(ctx, InstallTimeout)
	defer cancel()
	run := func(what, script string) (int, error) {
		t0 := time.Now()
		code, err := m.Exec(ictx, nspawn.Process{Args: []string{"/bin/sh", "-c", script}, Stdout: w, Stderr: w})
		log.Info(what, "manager", mgr.Name, "status", code, "took", time.Since(t0))
		return code, err
	}
	var code int
	if refresh := mgr.RefreshScript(false); refresh != "" {
		idx := p.indexes(m, mgr, img, log)
		defer idx.close()
		mark := idx.mark()
		if idx.restore(ctx) {
			code, err = run("revalidated", mgr.RefreshScript(true))
			if err == nil && ictx.Err() == nil && !idx.revalidated(code, mark) {
				// Refresh as if nothing had been kept.
				idx.undo()
				mark = idx.mark()
				code, err = run("refreshed", refresh)
			}
		} else {
			code, err = run("refreshed", refresh)
		}
		if err == nil && code == 0 {
			// Before the install: nothing of the package has run yet.
			idx.keep(ctx, mark)
		}
		s.IndexCache = idx.summary()
	}
	if err == nil && code == 0 {
		code, err = run("installed", mgr.InstallScript(names, paths))
	}
	s.Output = commandOutput(&tail)
	switch {
	case ctx.Err() != nil:
		s.endErr(Errored, ctx.Err())
		return false, ctx.Err()
	case ictx.Err() != nil:
		s.endErr(Failed, fmt.Errorf("%s did not finish within %s", mgr.Name, InstallTimeout))
		return false, nil
	case err != nil:
		s.endErr(Errored, err)
		return false, err
	case code != 0:
		s.endErr(Failed, fmt.Errorf("%s exited with status %d", mgr.Name, code))
		return false, nil
	}
	s.end(Passed, "installed with "+mgr.Name)
	return true, nil
}

func (p *Prober) command(ctx context.Context, m Machine, args []string, s *Step) error {
	var tail humanize.Tail
	var out io.Writer = &tail
	if p.Output != nil {
		out = io.MultiWriter(&tail, p.Output)
	}
	w := &syncWriter{w: out}
	code, err := m.Exec(ctx, nspawn.Process{Args: args, Stdout: w, Stderr: w})
	s.Output = commandOutput(&tail)
	var ee *nspawn.ExecError
	switch {
	case ctx.Err() != nil:
		s.endErr(Errored, ctx.Err())
		return ctx.Err()
	case errors.As(err, &ee):
		s.endErr(Failed, err)
	case err != nil:
		s.endErr(Errored, err)
		return err
	case code != 0:
		s.endErr(Failed, fmt.Errorf("exited with status %d", code))
	default:
		s.end(Passed, "exit status 0")
	}
	return nil
}
