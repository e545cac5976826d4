package cli

import (
	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/nspawn"
)

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:      "stop",
		Usage:     "power running containers off (killed after --time)",
		ArgsUsage: "NAME [NAME...]",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "time", Aliases: []string{"t"}, Value: nspawn.DefaultStopTimeout, Usage: "wait this long for a clean poweroff"},
		},
		Action: func(c *cli.Context) error {
			opts, err := stopOptions(c)
			if err != nil {
				return err
			}
			rt, err := runtime(c)
			if err != nil {
				return err
			}
			return rt.Stop(c.Context, opts)
		},
	}
}

// stopOptions turns racker stop's flags and arguments into the options of
// container.Runtime.Stop.
func stopOptions(c *cli.Context) (container.StopOptions, error) {
	if c.NArg() == 0 {
		return container.StopOptions{}, usagef("stop needs at least one container NAME")
	}
	opts := container.StopOptions{
		Names:    c.Args().Slice(),
		Teardown: container.Poweroff,
		Timeout:  c.Duration("time"),
		Stdout:   c.App.Writer,
	}
	switch {
	case opts.Timeout < 0:
		return opts, usagef("--time must not be negative, not %s", opts.Timeout)
	case opts.Timeout == 0:
		opts.Teardown = container.Kill // no time to power off, as docker's stop -t 0
	}
	return opts, nil
}

func rmCommand() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "remove containers (they are volatile: with -f, running ones are killed)",
		ArgsUsage: "NAME [NAME...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "kill running containers"},
		},
		Action: func(c *cli.Context) error {
			opts, err := rmOptions(c)
			if err != nil {
				return err
			}
			rt, err := runtime(c)
			if err != nil {
				return err
			}
			return rt.Remove(c.Context, opts)
		},
	}
}

// rmOptions turns racker rm's flags and arguments into the options of
// container.Runtime.Remove.
func rmOptions(c *cli.Context) (container.RemoveOptions, error) {
	if c.NArg() == 0 {
		return container.RemoveOptions{}, usagef("rm needs at least one container NAME")
	}
	return container.RemoveOptions{Names: c.Args().Slice(), Force: c.Bool("force"), Stdout: c.App.Writer}, nil
}
