package cli

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/nspawn"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command in a running container",
		ArgsUsage: "NAME COMMAND [ARG...]",
		Flags:     processFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() < 2 {
				return usagef("exec needs a container NAME and a COMMAND")
			}
			p, err := processFromFlags(c, c.Args().Tail())
			if err != nil {
				return err
			}
			st, err := openStore(c)
			if err != nil {
				return err
			}
			m, err := nspawn.Open(c.Context, st.Root, c.Args().First(), logger(c))
			if err != nil {
				return err
			}
			defer m.Close()
			var tty bool
			var terminal *os.File
			restore, err := attachTerminal(c, &p, &tty, &terminal)
			if err != nil {
				return err
			}
			defer restore()
			code, err := container.Exec(c.Context, m, p, tty, terminal)
			restore()
			if err != nil {
				return commandError(err)
			}
			if code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	}
}
