package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/acquire"
	"github.com/racker-postroj/racker/internal/autopkgtest"
	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// VirtServerName is the name postroj answers to as autopkgtest's
// virtualisation server: `autopkgtest ... -- racker IMAGE` runs
// autopkgtest-virt-racker IMAGE.
const VirtServerName = "autopkgtest-virt-racker"

// virtServerMain runs autopkgtest-virt-racker: the protocol server on
// stdin/stdout, or, with --exec, the execute command it prints.
func virtServerMain() int {
	app := &cli.App{
		Usage:     "autopkgtest virtualisation server: testbeds are booted racker containers",
		UsageText: "autopkgtest ... -- racker [OPTIONS] IMAGE\n" + VirtServerName + " [OPTIONS] IMAGE",
		Description: "IMAGE is a postroj catalogue name (debian-bookworm) or an image reference\n" +
			"(debian:bookworm-slim). Speaks autopkgtest's virtualisation-server protocol on\n" +
			"stdin and stdout; autopkgtest starts it. --exec NAME -- COMMAND is the execute\n" +
			"command it hands to autopkgtest (exit status: the command's, 255 if racker failed).",
		Flags: append(globalFlags(),
			&cli.DurationFlag{Name: "boot-timeout", Value: nspawn.DefaultBootTimeout, Usage: "how long a boot may take"},
			&cli.StringFlag{Name: "source", Value: acquire.SourceAuto, Usage: "for catalogue names: auto, registry or mirror"},
			&cli.StringFlag{Name: "network", Value: string(container.NetworkPrivate), Usage: "the testbed's network: `MODE` private (own loopback, egress through the proxy), host or none"},
			&cli.GenericFlag{Name: "allow-host", Value: &stringList{}, Usage: "let the proxy through to `HOST[:PORT]` too (repeatable; *.DOMAIN; '*' for every host)"},
			userNSFlag(),
			stallFlag(),
			&cli.StringFlag{Name: "exec", Usage: "run `NAME`'s command given after -- (the execute command)", Hidden: true},
		),
		Action: virtServer,
	}
	// SIGPIPE is taken, not ignored: ignoring it would be inherited by the
	// commands started here, and a server whose caller went away learns it
	// from the failed write.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	return run(app, os.Args, VirtServerName, autopkgtest.ExitFailure)
}

func virtServer(c *cli.Context) error {
	if name := c.String("exec"); name != "" {
		return execInTestbed(c, name)
	}
	if c.NArg() != 1 {
		return usagef("give one IMAGE: a catalogue name or an image reference")
	}
	if c.Duration("boot-timeout") <= 0 {
		return usagef("--boot-timeout must be positive, not %s", c.Duration("boot-timeout"))
	}
	source := c.String("source")
	if err := acquire.CheckSource(source); err != nil {
		return postrojError(err)
	}
	mode, err := container.ParseNetworkMode(c.String("network"))
	if err != nil {
		return usageError{err}
	}
	network := container.Network{Mode: mode}
	if network.Allow, err = allowRules(c); err != nil {
		return err
	}
	if mode == container.NetworkPrivate {
		network.Cache = packageCache(c)
	}
	hostUsers, err := hostUserNS(c)
	if err != nil {
		return err
	}
	self, err := selfPath()
	if err != nil {
		return err
	}
	root, err := filepath.Abs(c.String("root"))
	if err != nil {
		return err
	}
	rt, err := runtime(c)
	if err != nil {
		return err
	}
	acquire, err := testbedImage(c, rt, c.Args().First(), source)
	if err != nil {
		return err
	}
	prefix := []string{self, "--root=" + root}
	if c.Bool("verbose") {
		prefix = append(prefix, "--verbose")
	}
	tb := &autopkgtest.Racker{
		Runtime: rt,
		Acquire: acquire,
		Start: container.StartOptions{
			MaskUnits:   autopkgtest.MaskedUnits(),
			BootTimeout: c.Duration("boot-timeout"),
			Isolation:   container.Isolation{Network: network, HostUserNS: hostUsers},
		},
		ExecPrefix: append(prefix, "--exec"),
		Logger:     logger(c),
	}
	s := &autopkgtest.Server{Testbed: tb, In: os.Stdin, Out: c.App.Writer, Err: c.App.ErrWriter, Name: VirtServerName}
	if code := s.Serve(withHangup(c.Context)); code != 0 {
		return exitError{code: code}
	}
	return nil
}

// withHangup ends ctx also on SIGHUP, as autopkgtest's servers clean up on
// it (run's context already ends on SIGINT and SIGTERM).
func withHangup(ctx context.Context) context.Context {
	ctx, _ = signal.NotifyContext(ctx, syscall.SIGHUP)
	return ctx
}

// execInTestbed is the execute command: the command after -- in the
// running testbed container name.
func execInTestbed(c *cli.Context, name string) error {
	rt, err := runtime(c)
	if err != nil {
		return exitError{code: 255, err: err}
	}
	code := autopkgtest.Exec(c.Context, rt, name, c.Args().Slice(), c.App.ErrWriter)
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// selfPath is how this program can be started again under the name it
// was started as (the execute command must reach the virtualisation
// server, not postroj: the name chooses).
func selfPath() (string, error) {
	arg0 := os.Args[0]
	if strings.Contains(arg0, "/") {
		return filepath.Abs(arg0)
	}
	p, err := exec.LookPath(arg0)
	if err != nil {
		return "", fmt.Errorf("finding %s in PATH: %w", arg0, err)
	}
	return filepath.Abs(p)
}

// testbedImage resolves IMAGE as pkgprobe's --image is resolved
// (acquire.Resolve): a catalogue name or alias, or an image reference.
func testbedImage(c *cli.Context, rt *container.Runtime, name, source string) (func(context.Context) (autopkgtest.Image, error), error) {
	mirrors, err := mirrors()
	if err != nil {
		return nil, err
	}
	cat, err := curated.Load()
	if err != nil {
		return nil, err
	}
	retry, err := retryPolicy(c)
	if err != nil {
		return nil, err
	}
	t, err := acquire.Resolve(cat, name)
	if err != nil {
		return nil, postrojError(err)
	}
	opts := acquire.Options{Source: source, PullOpts: image.PullOptions{Mirrors: mirrors, Retry: retry}}
	if c.Bool("verbose") {
		opts.PrepareOutput, opts.BuildOutput = c.App.ErrWriter, c.App.ErrWriter
	}
	opts.Notify = func(msg string) { fmt.Fprintf(c.App.ErrWriter, "%s: %s\n", t.Name, msg) }
	return func(ctx context.Context) (autopkgtest.Image, error) {
		img, err := t.Get(ctx, rt, opts)
		return autopkgtest.Image{Reference: img.Image.Reference, RootFS: img.RootFS, Executor: img.Executor}, err
	}, nil
}
