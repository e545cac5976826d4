package cli

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/racker-postroj/racker/internal/image"
)

func pullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "fetch an image and unpack it into the store",
		ArgsUsage: "IMAGE",
		Description: "IMAGE is a reference as docker takes it (debian:bookworm-slim, quay.io/centos/centos:stream9,\n" +
			"name@sha256:...); a docker:// prefix is accepted. Pulling an image that has not changed only\n" +
			"asks the registry for its digest.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "platform", Usage: "pick this `OS/ARCH[/VARIANT]` from multi-platform images (default: linux/host architecture)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print no progress"},
			stallFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("pull takes exactly one IMAGE, got %d arguments", c.NArg())
			}
			ref, err := image.ParseReference(c.Args().First())
			if err != nil {
				return err
			}
			opts := image.PullOptions{}
			if p := c.String("platform"); p != "" {
				if opts.Platform, err = image.ParsePlatform(p); err != nil {
					return usageError{err}
				}
			}
			if opts.Mirrors, err = mirrors(); err != nil {
				return err
			}
			if opts.Retry, err = retryPolicy(c); err != nil {
				return err
			}
			st, err := openStore(c)
			if err != nil {
				return err
			}
			var pr *progress
			if !c.Bool("quiet") {
				live := !c.Bool("verbose") && term.IsTerminal(int(os.Stderr.Fd())) && c.App.ErrWriter == os.Stderr
				pr = newProgress(c.App.ErrWriter, live)
				defer pr.Stop()
				opts.Progress = pr
			}
			res, err := st.Pull(c.Context, ref, opts)
			if err != nil {
				return err
			}
			if pr != nil {
				pr.Stop() // the live display ends before the summary line
			}
			status := "Pulled"
			if res.UpToDate {
				status = "Up to date:"
			}
			if !c.Bool("quiet") {
				fmt.Fprintf(c.App.Writer, "%s %s (%s, %s)\n", status, ref, res.Image.Digest, res.Image.Platform)
			} else {
				fmt.Fprintln(c.App.Writer, res.Image.Digest)
			}
			return nil
		},
	}
}
