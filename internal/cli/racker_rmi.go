package cli

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/image"
)

func rmiCommand() *cli.Command {
	return &cli.Command{
		Name:      "rmi",
		Usage:     "remove images from the store",
		ArgsUsage: "IMAGE [IMAGE...]",
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usagef("rmi needs at least one IMAGE")
			}
			rt, err := runtime(c)
			if err != nil {
				return err
			}
			var errs []error
			for _, arg := range c.Args().Slice() {
				ref, err := image.ParseReference(arg)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				img, deleted, err := rt.RemoveImage(c.Context, ref)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(c.App.Writer, "Untagged: %s\n", ref)
				if deleted {
					fmt.Fprintf(c.App.Writer, "Deleted: %s\n", img.Digest)
				}
			}
			return errors.Join(errs...)
		},
	}
}
