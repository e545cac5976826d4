package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/nspawn"
)

func psCommand() *cli.Command {
	return &cli.Command{
		Name:  "ps",
		Usage: "list running containers",
		Flags: []cli.Flag{formatFlag()},
		Action: func(c *cli.Context) error {
			format, err := outputFormat(c)
			if err != nil {
				return err
			}
			st, err := openStore(c)
			if err != nil {
				return err
			}
			list, err := nspawn.List(st.Root)
			if err != nil {
				return err
			}
			if format == "json" {
				if list == nil {
					list = []nspawn.Container{}
				}
				return writeJSON(c.App.Writer, list)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tIMAGE\tSTATUS\tUPTIME\tLEADER\tADDRESS")
			for _, m := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", m.Name, m.Image, m.Status,
					time.Since(m.Started).Round(time.Second), m.LeaderPID, "host network")
			}
			return tw.Flush()
		},
	}
}

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:      "stop",
		Usage:     "power running containers off (killed after --time)",
		ArgsUsage: "NAME [NAME...]",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "time", Aliases: []string{"t"}, Value: nspawn.DefaultStopTimeout, Usage: "wait this long for a clean poweroff"},
		},
		Action: func(c *cli.Context) error {
			return eachContainer(c, "stop", c.Duration("time"))
		},
	}
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
			if !c.Bool("force") {
				return usagef("containers are removed when they stop; use rm -f to kill running ones, or stop")
			}
			return eachContainer(c, "rm", time.Nanosecond)
		},
	}
}

// eachContainer stops the named containers, giving each timeout to power
// off, and prints the names it stopped.
func eachContainer(c *cli.Context, verb string, timeout time.Duration) error {
	if c.NArg() == 0 {
		return usagef("%s needs at least one container NAME", verb)
	}
	st, err := openStore(c)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range c.Args().Slice() {
		if err := nspawn.Stop(c.Context, st.Root, name, timeout); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(c.App.Writer, name)
	}
	return errors.Join(errs...)
}
