package cli

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/nspawn"
)

// userNSFlag is --userns, which racker run, pkgprobe and selftest share.
func userNSFlag() cli.Flag {
	return &cli.StringFlag{Name: "userns", Value: "private",
		Usage: "user namespace: `MODE` private (container root is an unprivileged host user) or host (the host's user IDs)"}
}

// hostUserNS reads --userns: true for host.
func hostUserNS(c *cli.Context) (bool, error) {
	switch v := c.String("userns"); v {
	case "private":
		return false, nil
	case "host":
		return true, nil
	default:
		return false, usagef("unexpected --userns %q (valid: private, host)", v)
	}
}

// userNSHint is added to errors that a private user namespace is not
// possible here, which --userns=host avoids.
func userNSHint(err error) string {
	if errors.Is(err, nspawn.ErrNoIDMap) || errors.Is(err, nspawn.ErrNoUserNS) {
		return " (--userns=host runs the container with the host's user IDs instead)"
	}
	return ""
}
