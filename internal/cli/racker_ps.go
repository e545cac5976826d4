package cli

import (
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
			format, err := psOptions(c)
			if err != nil {
				return err
			}
			rt, err := runtime(c)
			if err != nil {
				return err
			}
			list, err := rt.List(c.Context)
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
			fmt.Fprintln(tw, "NAME\tIMAGE\tSTATUS\tUPTIME\tLEADER\tUSERNS\tADDRESS")
			for _, m := range list {
				network := "host network"
				if m.PrivateNetwork {
					network = "private network"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", m.Name, m.Image, m.Status,
					time.Since(m.Started).Round(time.Second), m.LeaderPID, m.UserNS, network)
			}
			return tw.Flush()
		},
	}
}

// psOptions returns racker ps's output format; container.Runtime.List
// takes no options.
func psOptions(c *cli.Context) (format string, err error) {
	if c.NArg() > 0 {
		return "", usagef("ps takes no arguments, got %q", c.Args().First())
	}
	return outputFormat(c)
}
