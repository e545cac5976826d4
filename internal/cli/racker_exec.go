package cli

import (
	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/container"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command in a running container",
		ArgsUsage: "NAME COMMAND [ARG...]",
		Flags:     processFlags(),
		Action: func(c *cli.Context) error {
			opts, err := execOptions(c)
			if err != nil {
				return err
			}
			rt, err := runtime(c)
			if err != nil {
				return err
			}
			restore, err := attachTerminal(c, &opts.Process, &opts.TTY, &opts.Terminal)
			if err != nil {
				return err
			}
			defer restore()
			code, err := rt.Exec(c.Context, opts)
			restore()
			return commandExit(code, err)
		},
	}
}

// execOptions turns racker exec's flags and arguments into the options of
// container.Runtime.Exec; the terminal (-t) is the caller's to attach.
func execOptions(c *cli.Context) (container.ExecOptions, error) {
	if c.NArg() < 2 {
		return container.ExecOptions{}, usagef("exec needs a container NAME and a COMMAND")
	}
	p, err := processFromFlags(c, c.Args().Tail())
	if err != nil {
		return container.ExecOptions{}, err
	}
	return container.ExecOptions{Name: c.Args().First(), Process: p}, nil
}
