package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/nspawn"
)

// StartOptions describe a container to boot from a root filesystem with
// Runtime.Start.
type StartOptions struct {
	// RootFS is a bootable root filesystem (Runtime.Bootable returns one).
	// It is never written: the container runs on a throw-away overlay.
	RootFS string
	// Image is the reference RootFS came from; it is recorded for List.
	Image string
	// Name is the machine name (see nspawn.ValidName), unique among the
	// running containers of the state directory; empty means
	// DefaultName("", Image).
	Name string
	// Hostname is the container's host name; empty means Name, as docker
	// names a container's host after it.
	Hostname string
	// Binds are bind mounts from the host.
	Binds []nspawn.Bind
	// MaskUnits are units masked for this boot only (nspawn.Options.MaskUnits);
	// nspawn.DefaultMaskedUnits is what a throw-away container can do without.
	MaskUnits []string
	// BootTimeout bounds the boot (nspawn.DefaultBootTimeout if zero).
	BootTimeout time.Duration
	// Detach lets the container outlive this process (racker run -d):
	// Container.Close then leaves it running, and Runtime.Stop ends it.
	Detach bool
	// Isolation says what the container shares with the host.
	Isolation Isolation
	// Executor says how commands enter the booted container; ExecAuto
	// (the zero value) tells from the image's systemd.
	Executor nspawn.Executor
}

// Isolation says what a container shares with the host. The zero value
// gives it a private user namespace and shares the host's network.
//
// New isolation (user namespaces, network modes) is added here, as a field,
// and applied in nspawnOptions (and, for what must be set up on the host or
// undone afterwards, in Runtime.Start and Container.Stop): every container
// racker and postroj start, booted or not, gets it from there.
type Isolation struct {
	// Network is the container's network (see Network); the zero value is
	// the host's.
	Network Network
	// HostUserNS shares the host's user IDs (docker's --userns=host):
	// the container's root is the host's root. By default the container
	// gets a private user namespace (see nspawn.Options.HostUserNS).
	HostUserNS bool
}

// Teardown says how Container.Stop and Runtime.Stop end a container.
type Teardown int

const (
	// Poweroff shuts the container down in order (SIGRTMIN+4 to its
	// systemd) and kills it if that takes longer than the timeout: what
	// racker stop does, and right when services may still be writing to
	// bind-mounted host directories.
	Poweroff Teardown = iota
	// Kill ends every process of the container at once. Nothing in it gets
	// to shut down, which suits a volatile container whose command has
	// finished (docker, too, kills a container's remaining processes when
	// its main process exits): racker rm -f, the end of racker run without
	// volumes, a probe's teardown.
	Kill
)

func (t Teardown) String() string {
	switch t {
	case Poweroff:
		return "poweroff"
	case Kill:
		return "kill"
	}
	return fmt.Sprintf("Teardown(%d)", int(t))
}

// Container is a booted container that this process started (Runtime.Start)
// or opened (Runtime.Open). Its methods are safe for concurrent use.
type Container struct {
	m   *nspawn.Machine
	net *netState // nil on the host's network, and for opened containers
}

// Name returns the container's machine name.
func (c *Container) Name() string { return c.m.Name() }

// Done returns a channel that is closed once the container has stopped,
// by Stop, Runtime.Stop or by powering itself off.
func (c *Container) Done() <-chan struct{} { return c.m.Done() }

// Exec runs p in the container and returns its exit status (see
// nspawn.Machine.Exec for the codes and errors).
func (c *Container) Exec(ctx context.Context, p nspawn.Process) (int, error) {
	p.Env = c.net.withProxyEnv(p.Env)
	return c.m.Exec(ctx, p)
}

// ExecTerminal runs p on a new terminal inside the container, as docker's
// -t does: p.Stdin is copied to the terminal and the terminal's output to
// p.Stdout (p.Stderr is not used: a terminal has one output). If terminal
// is not nil, it is the caller's terminal, whose window size is followed.
func (c *Container) ExecTerminal(ctx context.Context, p nspawn.Process, terminal *os.File) (int, error) {
	pty, err := c.m.OpenPTY()
	if err != nil {
		return -1, err
	}
	defer pty.Close()
	if terminal != nil {
		stop := nspawn.ForwardResize(ctx, terminal, pty)
		defer stop()
	}
	p.Env = c.net.withProxyEnv(p.Env)
	stdin, stdout := p.Stdin, p.Stdout
	p.Stdin, p.Stdout, p.Stderr, p.TTY = nil, nil, nil, pty
	if stdin != nil {
		go io.Copy(pty.Master, stdin)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		if stdout != nil {
			io.Copy(stdout, pty.Master)
		}
	}()
	code, err := c.m.Exec(ctx, p)
	if stdout != nil {
		select {
		case <-copied: // all output read (EIO once nobody holds the terminal)
		case <-time.After(2 * time.Second):
		}
	}
	return code, err
}

// Stop ends the container as how says (timeout bounds a Poweroff;
// nspawn.DefaultStopTimeout if zero) and returns once nothing of it is
// left: no process, mount or state. Calling it again returns the first
// result. ctx bounds only the wait for a poweroff: killing always finishes.
func (c *Container) Stop(ctx context.Context, how Teardown, timeout time.Duration) error {
	var err error
	switch how {
	case Poweroff:
		err = c.m.Shutdown(ctx, timeout)
	case Kill:
		err = c.m.Kill()
	default:
		return fmt.Errorf("stopping %s: unexpected teardown %v (valid: Poweroff, Kill)", c.Name(), how)
	}
	c.net.close()
	return err
}

// Close releases the container. One started attached (without
// StartOptions.Detach) is powered off, as it cannot outlive its Container;
// a detached or opened one keeps running and only this process's handles
// on it are closed.
func (c *Container) Close() error {
	err := c.m.Close()
	c.net.close()
	return err
}

// Start boots opts.RootFS as a volatile OS container and returns once its
// systemd has finished booting (READY=1) and commands can be run in it.
// This is the one way racker and postroj start a booted container:
// racker run, pkgprobe and selftest come here; exec, ps, stop and rm find
// what it started through Open, List and Stop.
//
// Isolation options go in opts.Isolation (see Isolation): fields there are
// turned into nspawn options by nspawnOptions, which the unbooted path of
// Run shares; whatever they need on the host is set up here, before
// nspawn.Start, and undone where the container ends: Container.Stop and
// Close in this process, Runtime.Stop and Remove from another, and, for a
// container whose racker was killed, the pruning that nspawn does in one
// place (its state check, reached from List, Open, Stop and the next claim
// of the name; removeStale there is where its state directory goes).
// (Image preparation, Runtime.Bootable, runs its own writable, unbooted
// container: it is not a container users run.)
//
// ctx bounds the boot only; the container runs until Stop or Close (see
// there for detached containers), or until it powers itself off. If Start
// fails nothing of the container is left; the error wraps
// nspawn.ErrNameInUse when the name is taken and is an *nspawn.BootError
// once nspawn was started.
func (r *Runtime) Start(ctx context.Context, opts StartOptions) (*Container, error) {
	nopts, err := r.nspawnOptions(opts)
	if err != nil {
		return nil, err
	}
	if opts.Detach && opts.Isolation.Network.Mode == NetworkPrivate {
		// The proxy lives in this process.
		return nil, fmt.Errorf("starting %s: %w", nopts.Name, ErrPrivateDetached)
	}
	if r.Store != nil {
		// rmi refuses until the container is recorded as running, and
		// then because of it; a tree removed since it was looked up is
		// not booted.
		unuse, err := r.Store.UseTree(ctx, opts.Image, opts.RootFS)
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", nopts.Name, err)
		}
		defer unuse()
	}
	net, err := newNet(opts.Isolation.Network, opts.RootFS, r.logger().With("machine", nopts.Name))
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", nopts.Name, err)
	}
	nopts.InitEnv = net.initEnv()
	t0 := time.Now()
	m, err := nspawn.Start(ctx, nopts)
	if err != nil {
		return nil, err
	}
	r.logger().Info("boot", "machine", nopts.Name, "took", time.Since(t0))
	t0 = time.Now()
	if err := net.start(m.Leader()); err != nil {
		m.Kill()
		return nil, fmt.Errorf("starting %s: %w", nopts.Name, err)
	}
	if net != nil {
		r.logger().Info("network", "machine", nopts.Name, "mode", opts.Isolation.Network.Mode, "took", time.Since(t0))
	}
	return &Container{m: m, net: net}, nil
}

// runUnbooted runs p as the only process of a container of opts.RootFS,
// without booting it (racker run --boot=never), with the same options,
// isolation included, as Start.
func (r *Runtime) runUnbooted(ctx context.Context, opts StartOptions, p nspawn.Process) (int, error) {
	nopts, err := r.nspawnOptions(opts)
	if err != nil {
		return -1, err
	}
	if opts.Isolation.Network.Mode == NetworkPrivate {
		return -1, fmt.Errorf("running %s: %w", nopts.Name, ErrPrivateUnbooted)
	}
	return nspawn.Run(ctx, nopts, p)
}

// nspawnOptions turns opts into nspawn's options for this runtime's state
// directory: names are defaulted here, and Isolation is applied here.
func (r *Runtime) nspawnOptions(opts StartOptions) (nspawn.Options, error) {
	if opts.RootFS == "" {
		return nspawn.Options{}, errors.New("starting a container: no root filesystem given")
	}
	name := opts.Name
	if name == "" {
		name = DefaultName("", opts.Image)
	}
	hostname := opts.Hostname
	if hostname == "" {
		hostname = name
	}
	return nspawn.Options{
		Name:           name,
		RootFS:         opts.RootFS,
		Image:          opts.Image,
		StateDir:       r.stateDir(),
		Hostname:       hostname,
		Binds:          opts.Binds,
		MaskUnits:      opts.MaskUnits,
		BootTimeout:    opts.BootTimeout,
		Detach:         opts.Detach,
		PrivateNetwork: opts.Isolation.Network.Private(),
		Executor:       opts.Executor,
		HostUserNS:     opts.Isolation.HostUserNS,
		Logger:         r.Logger,
	}, nil
}

var nameUnsafe = regexp.MustCompile(`[^A-Za-z0-9-]+`)

// DefaultName derives a unique machine name from an image reference or
// catalogue name: prefix, the last path element without tag separator or
// digest (at most 40 characters of [A-Za-z0-9-]), a dash and 6 random hex
// digits. DefaultName("", "docker.io/library/debian:bookworm-slim") is
// "debian-bookworm-slim-" plus the suffix; postroj's probes use the prefix
// "postroj-". prefix must be a valid start of a name of at most 17
// characters, so that the result is a valid name (nspawn.ValidName).
func DefaultName(prefix, ref string) string {
	base := ref
	if i := strings.LastIndex(base, "/"); i >= 0 {
		base = base[i+1:]
	}
	if i := strings.Index(base, "@"); i >= 0 {
		base = base[:i]
	}
	base = strings.Trim(nameUnsafe.ReplaceAllString(base, "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	if base == "" {
		base = "racker"
	}
	return prefix + base + "-" + randomSuffix()
}

func randomSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}
