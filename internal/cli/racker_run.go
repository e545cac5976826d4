package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/nspawn"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "boot an image as an OS container and run a command in it",
		ArgsUsage: "IMAGE [COMMAND [ARG...]]",
		Description: "The image is pulled if needed, given systemd, D-Bus, curl and CA certificates with its own\n" +
			"package manager if it lacks them (once; the result is kept in the store), booted with\n" +
			"systemd-nspawn on a throw-away overlay, and the command runs inside the booted system.\n" +
			"--network=host (the default, as for machinectl-style OS containers) shares this host's\n" +
			"network; none gives the container only its own loopback; private does too, and lets it out\n" +
			"through an HTTP proxy racker serves on that loopback (127.0.0.1:3129, set as http_proxy and\n" +
			"https_proxy and in apt's and zypper's configuration) to the hosts of the image's package\n" +
			"repositories and --allow-host only; others get 403.\n" +
			"The exit status is the command's; 125 when racker fails, 126 when the command cannot be\n" +
			"executed, 127 when it is not found.",
		Flags: append(processFlags(),
			&cli.BoolFlag{Name: "rm", Usage: "remove the container when it exits (always so: containers are volatile)"},
			&cli.StringFlag{Name: "name", Usage: "machine `NAME` (default: derived from the image, unique)"},
			&cli.StringFlag{Name: "hostname", Usage: "container host name (default: the machine name)"},
			&cli.StringSliceFlag{Name: "volume", Aliases: []string{"v"}, Usage: "bind mount `HOST:CONTAINER[:ro]`"},
			&cli.StringFlag{Name: "boot", Value: "auto", Usage: "`auto`, always or never: never runs the command as the only process"},
			&cli.StringFlag{Name: "pull", Value: "missing", Usage: "pull the image: `missing`, always or never"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "boot, print the container name and leave it running"},
			&cli.DurationFlag{Name: "boot-timeout", Value: nspawn.DefaultBootTimeout, Usage: "give up when booting takes longer"},
			&cli.BoolFlag{Name: "fast-boot", Value: true, Usage: "mask units a throw-away container does not need (consoles, timers, ...)"},
			&cli.StringFlag{Name: "platform", Usage: "pull this `OS/ARCH[/VARIANT]`"},
			userNSFlag(),
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print no pull progress"},
			stallFlag(),
			&cli.StringFlag{Name: "network", Value: string(container.NetworkHost), Usage: "`MODE` host (share this host's), private (own loopback, egress through racker's proxy) or none"},
			&cli.GenericFlag{Name: "allow-host", Value: &stringList{}, Usage: "with --network=private, let the proxy through to `HOST[:PORT]` too (repeatable; *.DOMAIN; '*' for every host)"},
		),
		Action: func(c *cli.Context) error {
			opts, err := runOptions(c)
			if err != nil {
				return err
			}
			if !c.Bool("quiet") {
				pr := newProgress(c.App.ErrWriter, false)
				defer pr.Stop()
				opts.PullOpts.Progress = pr
				opts.Status = c.App.ErrWriter
			}
			if c.Bool("verbose") {
				opts.PrepareOutput = c.App.ErrWriter
			}
			rt, err := runtime(c)
			if err != nil {
				return err
			}
			rt.HostUserNS = opts.Isolation.HostUserNS
			restore, err := attachTerminal(c, &opts.Process, &opts.TTY, &opts.Terminal)
			if err != nil {
				return err
			}
			defer restore()
			code, name, err := rt.Run(c.Context, opts)
			restore()
			if err == nil && opts.Detach {
				fmt.Fprintln(c.App.Writer, name)
			}
			return commandExit(code, err)
		},
	}
}

// runOptions turns racker run's flags and arguments into the options of
// container.Runtime.Run; progress, terminal and output writers are the
// caller's to add.
func runOptions(c *cli.Context) (container.Options, error) {
	if c.NArg() < 1 {
		return container.Options{}, usagef("run needs an IMAGE")
	}
	opts := container.Options{
		Image:       c.Args().First(),
		Pull:        container.PullPolicy(c.String("pull")),
		Boot:        container.BootMode(c.String("boot")),
		Name:        c.String("name"),
		Hostname:    c.String("hostname"),
		Detach:      c.Bool("detach"),
		BootTimeout: c.Duration("boot-timeout"),
		FastBoot:    c.Bool("fast-boot"),
	}
	switch opts.Pull {
	case container.PullMissing, container.PullAlways, container.PullNever:
	default:
		return opts, usagef("unexpected --pull %q (valid: missing, always, never)", opts.Pull)
	}
	switch opts.Boot {
	case container.BootAuto, container.BootAlways, container.BootNever:
	default:
		return opts, usagef("unexpected --boot %q (valid: auto, always, never)", opts.Boot)
	}
	if opts.Name != "" {
		if err := nspawn.ValidName(opts.Name); err != nil {
			return opts, usageError{err}
		}
	}
	var err error
	if opts.Isolation.HostUserNS, err = hostUserNS(c); err != nil {
		return opts, err
	}
	mode, err := container.ParseNetworkMode(c.String("network"))
	if err != nil {
		return opts, usageError{err}
	}
	opts.Isolation.Network = container.Network{Mode: mode}
	if opts.Isolation.Network.Allow, err = allowRules(c); err != nil {
		return opts, err
	}
	if mode == container.NetworkPrivate {
		switch {
		case opts.Detach:
			return opts, usageError{container.ErrPrivateDetached}
		case opts.Boot == container.BootNever:
			return opts, usageError{container.ErrPrivateUnbooted}
		}
		opts.Isolation.Network.Cache = packageCache(c)
	}
	if opts.Binds, err = parseVolumes(c.StringSlice("volume")); err != nil {
		return opts, usageError{err}
	}
	if opts.Process, err = processFromFlags(c, c.Args().Tail()); err != nil {
		return opts, err
	}
	if opts.PullOpts.Retry, err = retryPolicy(c); err != nil {
		return opts, err
	}
	if opts.PullOpts.Mirrors, err = mirrors(); err != nil {
		return opts, err
	}
	if p := c.String("platform"); p != "" {
		if opts.PullOpts.Platform, err = image.ParsePlatform(p); err != nil {
			return opts, usageError{err}
		}
	}
	return opts, nil
}

// processFlags are the flags run and exec share.
func processFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "interactive", Aliases: []string{"i"}, Usage: "connect standard input"},
		&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "give the command a terminal (when standard input is one)"},
		&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `KEY=VALUE` (KEY alone: take it from here)"},
		&cli.StringSliceFlag{Name: "env-file", Usage: "read KEY=VALUE lines from `FILE`"},
		&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "working `DIR` in the container"},
		&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as `USER[:GROUP]` (names or ids)"},
	}
}

// processFromFlags builds the process of run and exec from their flags.
func processFromFlags(c *cli.Context, args []string) (nspawn.Process, error) {
	p := nspawn.Process{Args: args, Dir: c.String("workdir"), User: c.String("user"), Stdout: os.Stdout, Stderr: os.Stderr}
	if c.App.Writer != os.Stdout {
		p.Stdout = c.App.Writer
	}
	if c.App.ErrWriter != os.Stderr {
		p.Stderr = c.App.ErrWriter
	}
	if c.Bool("interactive") {
		p.Stdin = os.Stdin
	}
	for _, f := range c.StringSlice("env-file") {
		env, err := readEnvFile(f)
		if err != nil {
			return p, usageError{err}
		}
		p.Env = append(p.Env, env...)
	}
	for _, e := range c.StringSlice("env") {
		kv, err := envEntry(e)
		if err != nil {
			return p, usageError{err}
		}
		if kv != "" {
			p.Env = append(p.Env, kv)
		}
	}
	return p, nil
}

// attachTerminal sets up -t: when standard input is a terminal it is put
// into raw mode (restore undoes that; it may be called more than once), and
// the process gets a terminal inside the container. Without a terminal on
// standard input, -t quietly falls back to pipes.
func attachTerminal(c *cli.Context, p *nspawn.Process, tty *bool, terminal **os.File) (restore func(), err error) {
	restore = func() {}
	if !c.Bool("tty") || !term.IsTerminal(int(os.Stdin.Fd())) {
		return restore, nil
	}
	*tty, *terminal = true, os.Stdin
	if p.Stdin == nil {
		p.Stdin = eofReader{}
	}
	state, err := term.MakeRaw(int(os.Stdin.Fd()))
	if err != nil {
		return restore, fmt.Errorf("setting the terminal to raw mode: %w", err)
	}
	done := false
	return func() {
		if !done {
			term.Restore(int(os.Stdin.Fd()), state)
			done = true
		}
	}, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// commandExit maps the outcome of a command run in a container to
// racker's exit, as docker does: the command's own status, 126 or 127 when
// it could not be executed (*nspawn.ExecError), racker's failure otherwise.
func commandExit(code int, err error) error {
	var ee *nspawn.ExecError
	switch {
	case errors.As(err, &ee):
		return exitError{code: ee.Code, err: err}
	case err != nil:
		return err
	case code != 0:
		return exitError{code: code}
	}
	return nil
}

// runtime returns the container runtime over the store named by --root.
func runtime(c *cli.Context) (*container.Runtime, error) {
	st, err := openStore(c)
	if err != nil {
		return nil, err
	}
	return &container.Runtime{Store: st, Logger: logger(c), PackageCache: packageCache(c)}, nil
}

// packageCache is the package cache racker shares with postroj:
// $POSTROJ_CACHE/packages, /var/cache/postroj/packages by default.
func packageCache(c *cli.Context) *egress.Cache {
	root := os.Getenv("POSTROJ_CACHE")
	if root == "" {
		root = DefaultCacheDir
	}
	return &egress.Cache{Dir: filepath.Join(root, "packages"), Logger: logger(c)}
}
