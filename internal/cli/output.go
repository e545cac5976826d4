package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// formatFlag is the --format flag of listing commands.
func formatFlag() cli.Flag {
	return &cli.StringFlag{Name: "format", Value: "table", Usage: "output `FORMAT`: table or json"}
}

// outputFormat returns the validated --format value.
func outputFormat(c *cli.Context) (string, error) {
	f := c.String("format")
	if f != "table" && f != "json" {
		return "", usagef("unexpected --format %q (valid: table, json)", f)
	}
	return f, nil
}

// writeJSON writes v indented, with a final newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
