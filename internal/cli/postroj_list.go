package cli

import (
	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/acquire"
)

func listImagesCommand() *cli.Command {
	return &cli.Command{
		Name:  "list-images",
		Usage: "list the curated catalogue of distributions",
		Description: "PULLED is yes when the store holds the entry's image, pulled from its registry\n" +
			"reference or built from its package mirror (mirror.local/debian:SUITE); SOURCE is then the\n" +
			"reference it is stored under, otherwise where it would come from. --format json also says\n" +
			"whether the image is prepared for booting (\"prepared\").",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Value: "table", Usage: "output `FORMAT`: table or json"},
		},
		Action: func(c *cli.Context) error {
			opts := acquire.ListOptions{Format: c.String("format"), Stdout: c.App.Writer}
			if err := opts.Validate(); err != nil {
				return postrojError(err)
			}
			if c.NArg() != 0 {
				return usagef("list-images takes no arguments")
			}
			cat, st, err := catalogueStore(c)
			if err != nil {
				return err
			}
			return postrojError(acquire.List(st, cat, opts))
		},
	}
}
