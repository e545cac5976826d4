package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/image"
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
			format := c.String("format")
			if format != "table" && format != "json" {
				return usagef("unexpected --format %q (valid: table, json)", format)
			}
			if c.NArg() != 0 {
				return usagef("list-images takes no arguments")
			}
			cat, err := curated.Load()
			if err != nil {
				return err
			}
			st, err := openStore(c)
			if err != nil {
				return err
			}
			rows := make([]listedImage, 0, len(cat.Entries()))
			for _, e := range cat.Entries() {
				row, err := listEntry(st, e)
				if err != nil {
					return err
				}
				rows = append(rows, row)
			}
			if format == "json" {
				b, err := json.MarshalIndent(rows, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.App.Writer, "%s\n", b)
				return err
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tALIASES\tFAMILY\tSOURCE\tEOL\tPULLED")
			for _, r := range rows {
				aliases := strings.Join(r.Aliases, ",")
				if aliases == "" {
					aliases = "-"
				}
				source := r.Source
				switch {
				case r.Pulled:
					source = r.Reference
				case r.DefaultSource == curated.SourceMirror:
					source = r.MirrorReference
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, aliases, r.Family, source, yesNo(r.EOL), yesNo(r.Pulled))
			}
			return tw.Flush()
		},
	}
}

// listedImage is a catalogue entry with what the store holds of it.
type listedImage struct {
	curated.Entry
	MirrorReference string `json:"mirrorReference,omitempty"`
	Pulled          bool   `json:"pulled"`
	Reference       string `json:"reference,omitempty"` // stored under this reference
	Digest          string `json:"digest,omitempty"`
	Prepared        bool   `json:"prepared"` // has a root filesystem that boots
}

// listEntry looks e up in the store: under its registry reference first,
// then under its mirror reference.
func listEntry(st *image.Store, e curated.Entry) (listedImage, error) {
	row := listedImage{Entry: e, MirrorReference: e.MirrorReference()}
	for _, ref := range []string{e.Source, e.MirrorReference()} {
		if ref == "" {
			continue
		}
		img, err := st.Lookup(image.MustParseReference(ref))
		if errors.Is(err, image.ErrNotFound) {
			continue
		}
		if err != nil {
			return row, err
		}
		row.Pulled, row.Reference, row.Digest = true, img.Reference, img.Digest
		_, row.Prepared = st.Prepared(img)
		break
	}
	return row, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
