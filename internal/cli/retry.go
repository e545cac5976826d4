package cli

import (
	"fmt"

	"github.com/urfave/cli/v2"

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
