package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/image"
)

func imagesCommand() *cli.Command {
	return &cli.Command{
		Name:  "images",
		Usage: "list the images in the store",
		Flags: []cli.Flag{formatFlag()},
		Action: func(c *cli.Context) error {
			format, err := outputFormat(c)
			if err != nil {
				return err
			}
			if c.NArg() != 0 {
				return usagef("images takes no arguments")
			}
			st, err := openStore(c)
			if err != nil {
				return err
			}
			imgs, err := st.List()
			if err != nil {
				return err
			}
			if format == "json" {
				if imgs == nil {
					imgs = []image.Image{} // "[]", not "null"
				}
				return writeJSON(c.App.Writer, imgs)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "REFERENCE\tDIGEST\tPLATFORM\tSIZE\tPULLED")
			for _, img := range imgs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", img.Reference, shortDigest(img.Digest), img.Platform,
					humanize.Bytes(img.Size), humanAgo(time.Since(img.Pulled)))
			}
			return tw.Flush()
		},
	}
}

func shortDigest(d string) string {
	if len(d) > 7+12 {
		return d[7 : 7+12]
	}
	return d
}

func humanAgo(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d minutes ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}
