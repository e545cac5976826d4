package acquire

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/image"
)

// ListOptions configure List.
type ListOptions struct {
	// Format is "table" (the default) or "json".
	Format string
	Stdout io.Writer
}

// Listed is a catalogue entry with what the store holds of it.
type Listed struct {
	curated.Entry
	MirrorReference string `json:"mirrorReference,omitempty"`
	Pulled          bool   `json:"pulled"`
	Reference       string `json:"reference,omitempty"` // stored under this reference
	Digest          string `json:"digest,omitempty"`
	Prepared        bool   `json:"prepared"` // has a root filesystem that boots
}

// Validate returns a UsageError for an unknown format, so that callers can
// refuse it before opening the store.
func (o ListOptions) Validate() error {
	switch o.Format {
	case "", "table", "json":
		return nil
	}
	return &UsageError{fmt.Errorf("unexpected --format %q (valid: table, json)", o.Format)}
}

// List writes the catalogue with what st holds of each entry: a table, or
// JSON (every field of Listed). An unknown format is a UsageError.
func List(st *image.Store, cat *curated.Catalogue, opts ListOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	rows := make([]Listed, 0, len(cat.Entries()))
	for _, e := range cat.Entries() {
		row, err := listEntry(st, e)
		if err != nil {
			return err
		}
		rows = append(rows, row)
	}
	if opts.Format == "json" {
		b, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(opts.Stdout, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(opts.Stdout, 0, 4, 3, ' ', 0)
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
}

// listEntry looks e up in the store: under its registry reference first,
// then under its mirror reference.
func listEntry(st *image.Store, e curated.Entry) (Listed, error) {
	row := Listed{Entry: e, MirrorReference: e.MirrorReference()}
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
