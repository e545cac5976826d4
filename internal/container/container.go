package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// PullPolicy says when Run pulls the image.
type PullPolicy string

const (
	PullMissing PullPolicy = "missing" // only when the store lacks it (default)
	PullAlways  PullPolicy = "always"  // every time (cheap when unchanged)
	PullNever   PullPolicy = "never"   // fail when the store lacks it
)

// BootMode says whether Run boots the image with systemd.
type BootMode string

const (
	BootAuto   BootMode = "auto"   // boot when the image has or can get systemd (default)
	BootAlways BootMode = "always" // boot, or fail
	BootNever  BootMode = "never"  // run the command as the container's only process
)

// ErrNoCommand is returned when neither the caller nor the image names a
// command.
var ErrNoCommand = errors.New("no command given and the image defines none")

// Options describe a container to run. Process.Args may be empty to use
// the image's entrypoint and command.
type Options struct {
	Image    string // image reference
	Pull     PullPolicy
	PullOpts image.PullOptions
	Boot     BootMode
	// Name is the machine name; empty means one derived from the image.
	Name     string
	Hostname string
	Binds    []nspawn.Bind
	Process  nspawn.Process
	// TTY gives the command a terminal inside the container; Process's
	// streams are then copied through it and Terminal, if set, is the
	// caller's terminal whose size is followed.
	TTY      bool
	Terminal *os.File
	// Detach boots the container and returns, leaving it running.
	Detach bool
	// Isolation says what the container shares with the host (see
	// StartOptions.Isolation); it applies with and without booting.
	Isolation   Isolation
	BootTimeout time.Duration
	// FastBoot masks units a throw-away container does not need
	// (nspawn.DefaultMaskedUnits) when booting.
	FastBoot bool
	// PrepareOutput receives the package manager's output when an image is
	// prepared for booting; nil keeps it for error messages only.
	PrepareOutput io.Writer
	// Status, if set, receives one-line notices of slow steps (preparing
	// an image) so that they do not look hung.
	Status io.Writer
}

// Runtime runs containers from one image store.
type Runtime struct {
	Store *image.Store
	// StateDir holds the state of running containers (default: the
	// store's root).
	StateDir string
	Logger   *slog.Logger
	// PackageCache, when set, is where image preparation's package manager
	// gets its downloads: through a proxy on this host's loopback that keeps
	// them (see prepareProxy), as private containers' proxies do.
	PackageCache *egress.Cache
	// HostUserNS prepares images (Bootable) with the host's user IDs
	// (--userns=host) instead of in a private user namespace; containers
	// take theirs from their Isolation.
	HostUserNS bool
}

func (r *Runtime) stateDir() string {
	if r.StateDir != "" {
		return r.StateDir
	}
	return r.Store.Root
}

func (r *Runtime) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Image returns the stored image for ref, pulling it as policy says.
func (r *Runtime) Image(ctx context.Context, ref string, policy PullPolicy, opts image.PullOptions) (image.Image, error) {
	pr, err := image.ParseReference(ref)
	if err != nil {
		return image.Image{}, err
	}
	if policy != PullAlways {
		img, err := r.Store.Lookup(pr)
		switch {
		case err == nil && (opts.Platform == nil || img.MatchesPlatform(*opts.Platform)):
			return img, nil
		case err != nil && !errors.Is(err, image.ErrNotFound):
			return img, err
		}
		if policy == PullNever {
			what := ""
			if opts.Platform != nil {
				what = " for " + opts.Platform.String()
			}
			return image.Image{}, fmt.Errorf("%s is not in the store%s and --pull=never was given", pr, what)
		}
	}
	t0 := time.Now()
	res, err := r.Store.Pull(ctx, pr, opts)
	if err != nil {
		return image.Image{}, err
	}
	r.logger().Info("pull", "ref", pr.String(), "up_to_date", res.UpToDate, "took", time.Since(t0))
	return res.Image, nil
}

// Bootable returns a root filesystem of img that boots, preparing it if
// needed (see image.Store.Prepare).
func (r *Runtime) Bootable(ctx context.Context, img image.Image, output io.Writer) (string, error) {
	t0 := time.Now()
	p, err := r.Store.Prepare(ctx, img, image.PrepareOptions{Run: r.PrepareRunner(), Output: output})
	if err != nil {
		return "", err
	}
	r.logger().Info("prepare", "ref", img.Reference, "installed", strings.Join(p.Installed, " "), "took", time.Since(t0))
	return p.RootFS, nil
}

// PrepareRunner runs preparation scripts in a writable, non-booted
// container on the host's network.
func (r *Runtime) PrepareRunner() image.Runner {
	return func(ctx context.Context, rootfs, script string, out io.Writer) (int, error) {
		env, stop, err := r.prepareProxy(rootfs)
		if err != nil {
			return -1, err
		}
		defer stop()
		return nspawn.Run(ctx, nspawn.Options{
			Name:       "prepare-" + randomSuffix(),
			RootFS:     rootfs,
			StateDir:   r.stateDir(),
			Writable:   true,
			HostUserNS: r.HostUserNS,
			Logger:     r.Logger,
		}, nspawn.Process{Args: []string{"/bin/sh", "-c", script}, Env: env, Stdout: out, Stderr: out})
	}
}

// Run runs a container as opts says and returns the command's exit status
// (for Detach, 0 once the container is up).
func (r *Runtime) Run(ctx context.Context, opts Options) (code int, name string, err error) {
	log := r.logger()
	img, err := r.Image(ctx, opts.Image, opts.Pull, opts.PullOpts)
	if err != nil {
		return -1, "", err
	}
	// Until the container is recorded as running (and so keeps rmi away
	// by itself), the image may not be removed (see image.Store.Use).
	unuse, err := r.Store.Use(ctx, img)
	if err != nil {
		return -1, "", fmt.Errorf("running %s: %w", opts.Image, err)
	}
	defer unuse()
	boot := resolveBoot(opts.Boot, img.RootFS)
	if opts.Boot != BootNever && boot == BootNever {
		log.Info("image has no systemd and no package manager to install it: running without booting", "ref", img.Reference)
	}
	pl, err := plan(img, opts, boot)
	if err != nil {
		return -1, "", err
	}
	sopts, p, name := pl.start, pl.process, pl.start.Name
	if boot == BootNever {
		if sopts.RootFS, err = r.Store.RunnableRootFS(ctx, img); err != nil {
			return -1, "", err
		}
		code, err := r.runUnbooted(ctx, sopts, p)
		return code, name, err
	}

	if _, done := r.Store.Prepared(img); !done && opts.Status != nil {
		missing, _ := distro.Missing(img.RootFS)
		fmt.Fprintf(opts.Status, "Preparing %s for booting: installing %s (once; kept in the store)\n", img.Reference, strings.Join(missing, ", "))
	}
	if sopts.RootFS, err = r.Bootable(ctx, img, opts.PrepareOutput); err != nil {
		return -1, "", err
	}
	if opts.FastBoot {
		sopts.MaskUnits = nspawn.DefaultMaskedUnits()
	}
	c, err := r.Start(ctx, sopts)
	unuse()
	if err != nil {
		return -1, "", err
	}
	if opts.Detach {
		c.Close() // leaves a detached container running
		return 0, name, nil
	}
	defer func() {
		t0 := time.Now()
		// The overlay vanishes anyway, so once the command is done the
		// container is killed, unless services in it might still be
		// writing to bind-mounted host directories: then it powers off.
		how := Kill
		if len(opts.Binds) > 0 {
			how = Poweroff
		}
		if cerr := c.Stop(context.WithoutCancel(ctx), how, nspawn.DefaultStopTimeout); cerr != nil && err == nil {
			err = cerr
		}
		log.Info("stop", "machine", name, "how", how, "took", time.Since(t0))
	}()
	if opts.TTY {
		code, err = c.ExecTerminal(ctx, p, opts.Terminal)
	} else {
		code, err = c.Exec(ctx, p)
	}
	return code, name, err
}

// runPlan is what Run does with an image: the container to start and the
// command to run in it.
type runPlan struct {
	start   StartOptions // RootFS and MaskUnits are Run's to fill in
	process nspawn.Process
}

// plan works out, from the image's configuration and opts, the container
// and command Run starts, as docker does: the command replaces the image's
// Cmd and follows its Entrypoint, -e adds to its Env, -w and -u default to
// its WorkingDir and User. boot is the resolved boot mode (resolveBoot).
func plan(img image.Image, opts Options, boot BootMode) (runPlan, error) {
	p := opts.Process
	switch {
	case opts.Detach && len(p.Args) > 0:
		return runPlan{}, fmt.Errorf("running %s: with --detach the booted system is the payload: give no command, then use exec", img.Reference)
	case opts.Detach:
	case len(p.Args) == 0:
		p.Args = append(append([]string{}, img.Config.Entrypoint...), img.Config.Cmd...)
		if len(p.Args) == 0 {
			return runPlan{}, fmt.Errorf("running %s: %w", img.Reference, ErrNoCommand)
		}
	case len(img.Config.Entrypoint) > 0:
		p.Args = append(append([]string{}, img.Config.Entrypoint...), p.Args...)
	}
	if opts.Detach && boot == BootNever {
		return runPlan{}, fmt.Errorf("running %s: --detach needs a booted container (not --boot=never)", img.Reference)
	}
	p.Env = append(append([]string{}, img.Config.Env...), p.Env...)
	if p.Dir == "" {
		p.Dir = img.Config.WorkingDir
	}
	if p.User == "" {
		p.User = img.Config.User
	}
	if boot == BootNever {
		p.Terminal = opts.TTY && opts.Terminal != nil
	}
	name := opts.Name
	if name == "" {
		name = DefaultName("", img.Reference)
	}
	return runPlan{
		start: StartOptions{
			Name: name, Image: img.Reference, Hostname: opts.Hostname, Binds: opts.Binds,
			BootTimeout: opts.BootTimeout, Detach: opts.Detach, Isolation: opts.Isolation,
		},
		process: p,
	}, nil
}

// resolveBoot turns BootAuto (or "") into BootAlways when the tree at
// rootfs can boot (canBoot), BootNever otherwise; other modes stay.
func resolveBoot(mode BootMode, rootfs string) BootMode {
	if mode != "" && mode != BootAuto {
		return mode
	}
	if canBoot(rootfs) {
		return BootAlways
	}
	return BootNever
}

// canBoot reports whether the tree has systemd or a package manager that
// can install it.
func canBoot(rootfs string) bool {
	if missing, err := distro.Missing(rootfs); err == nil && !slices.Contains(missing, "systemd") {
		return true
	}
	_, err := distro.Detect(rootfs)
	return err == nil
}

// ErrImageInUse is returned by RemoveImage for an image that running
// containers were booted from.
var ErrImageInUse = errors.New("image is in use by running containers")

// RemoveImage removes ref from the store (see image.Store.Remove), but
// refuses while a running container uses the image's trees: deleting them
// would pull the root filesystem from under it.
func (r *Runtime) RemoveImage(ctx context.Context, ref image.Reference) (img image.Image, deleted bool, err error) {
	return r.Store.Remove(ctx, ref, func(img image.Image) error {
		running, err := r.List(ctx)
		if err != nil {
			return err
		}
		dir := filepath.Dir(img.RootFS) + string(filepath.Separator)
		var users []string
		for _, c := range running {
			if strings.HasPrefix(c.RootFS, dir) {
				users = append(users, c.Name)
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("removing %s: %w: %s (stop them first)", ref, ErrImageInUse, strings.Join(users, ", "))
		}
		return nil
	})
}
