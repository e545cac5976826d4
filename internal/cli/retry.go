package cli

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/transfer"
)

// stallFlag is --stall-timeout of racker pull and run, and of postroj.
func stallFlag() cli.Flag {
	return &cli.DurationFlag{Name: "stall-timeout", Value: transfer.DefaultStall,
		Usage: "a download that receives no bytes for this long counts as a dropped connection (resumed, at most 5 attempts)"}
}

// retryPolicy is how downloads survive faults, from --stall-timeout.
func retryPolicy(c *cli.Context) (transfer.Policy, error) {
	d := c.Duration("stall-timeout")
	if d <= 0 {
		return transfer.Policy{}, usageError{fmt.Errorf("invalid --stall-timeout %s (want a positive duration such as 30s)", d)}
	}
	return transfer.Policy{Stall: d}, nil
}

// retryLines is the pull progress of postroj, whose pulls are otherwise
// quiet: only retries, one line each ("layer 8fe13ad9715c: connection
// dropped at 20.1 MB, resuming (attempt 2/5)"), so that a slow pull never
// looks hung. It keeps no state: postroj pull shares it between the
// images it pulls at once.
type retryLines struct{ w io.Writer }

func (retryLines) Start(string, []image.LayerInfo) {}
func (retryLines) Fetched(int, int64)              {}
func (retryLines) Unpacked(int)                    {}

func (p retryLines) Retrying(_ int, what string, r transfer.Retry) {
	fmt.Fprintf(p.w, "  %s: %s\n", what, r)
}
