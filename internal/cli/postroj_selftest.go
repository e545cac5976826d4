package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/acquire"
	"github.com/racker-postroj/racker/internal/probe"
)

func selftestCommand() *cli.Command {
	cmd := &cli.Command{
		Name:      "selftest",
		Usage:     "run example probes on catalogue images: hostnamectl, journald and Apache",
		ArgsUsage: "hostnamectl|pkgprobe [--image=NAME]...",
		Description: "hostnamectl runs `hostnamectl` in every selected image. pkgprobe runs two probes on each:\n" +
			"systemd-journald must be active, and Apache (apache2, or httpd on rpm and Arch families),\n" +
			"installed from the distribution's repositories, must be active and answer on\n" +
			"http://localhost:80 (the container's own port 80 under --network=private, the default).\n" +
			"Probes and image acquisition run --jobs at a time; under --network=host the Apache probes\n" +
			"run one at a time, since they share the host's port 80.\n" +
			"Without --image every catalogue image that is not end-of-life is tried, and one whose\n" +
			"registry cannot be reached is skipped (shown with the reason; it does not fail the run\n" +
			"unless nothing could be tested). An image named with --image must be acquired.\n" +
			"Ends with a table. Exit status: 0 all passed, 1 a probe failed, 2 bad usage, 3 otherwise\n" +
			"(an image or boot failed, or nothing could be tested).",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("unexpected selftest %q (valid: %s)", c.Args().First(), strings.Join(probe.Suites, ", "))
			}
			return usagef("selftest needs one of %s", strings.Join(probe.Suites, ", "))
		},
	}
	for _, suite := range probe.Suites {
		cmd.Subcommands = append(cmd.Subcommands, &cli.Command{
			Name:        suite,
			Usage:       map[string]string{probe.SuiteHostnamectl: "run hostnamectl on every selected image", probe.SuitePkgprobe: "probe systemd-journald and Apache on every selected image"}[suite],
			Description: cmd.Description,
			Flags: append([]cli.Flag{
				&cli.GenericFlag{Name: "image", Value: &stringList{}, Usage: "catalogue `NAME` to test (repeatable; default: every image that is not end-of-life)"},
				&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Value: 2, Usage: "`N` images acquired and probes run at a time"},
			}, probeFlags()...),
			OnUsageError: func(_ *cli.Context, err error, _ bool) error { return usageError{err} },
			Action:       func(c *cli.Context) error { return selftest(c, suite) },
		})
	}
	return cmd
}

func selftest(c *cli.Context, suite string) error {
	if c.NArg() != 0 {
		return usagef("selftest %s takes no arguments, got %q (images go with --image)", suite, c.Args().First())
	}
	if c.Int("jobs") < 1 {
		return usagef("--jobs must be at least 1, not %d", c.Int("jobs"))
	}
	env, err := newProbeEnv(c)
	if err != nil {
		return err
	}
	names := listFlag(c, "image")
	entries, err := acquire.Select(env.cat, acquire.Selection{Names: names, All: len(names) == 0})
	if err != nil {
		return postrojError(err)
	}
	var images []probe.SelftestImage
	for _, e := range entries {
		images = append(images, probe.SelftestImage{
			Name: e.Name, Manager: e.PackageManager, Acquire: env.acquirer(acquire.Target{Name: e.Name, Entry: &e}), SkipUnreachable: len(names) == 0,
		})
	}
	env.prober.Output = nil // many probes at once: their output would interleave
	st := &probe.Selftest{Prober: env.prober, Jobs: c.Int("jobs"), Progress: env.stderr}
	rep, err := st.Run(c.Context, suite, images)
	if err != nil && rep == nil {
		return err
	}
	if werr := env.writeReports(func(w io.Writer) error { return writeSelftest(w, rep) }, rep.Probes, rep); werr != nil && err == nil {
		return exitError{code: exitInfra, err: werr}
	}
	if err == nil && rep.Result == probe.Errored {
		err = fmt.Errorf("selftest %s: %s", suite, selftestTrouble(rep))
		return exitError{code: exitInfra, err: err}
	}
	return probeExit(c, rep.Result, err)
}

// writeSelftest writes the details of probes that did not pass, then the
// table.
func writeSelftest(w io.Writer, rep *probe.SelftestReport) error {
	for _, r := range rep.Probes {
		if r.Result == probe.Failed || r.Result == probe.Errored && len(r.Steps) > 1 {
			r.WriteText(w)
			fmt.Fprintln(w)
		}
	}
	return rep.WriteTable(w)
}

// selftestTrouble says in one line what kept a selftest from testing.
func selftestTrouble(rep *probe.SelftestReport) string {
	errored, skipped := 0, 0
	for _, r := range rep.Probes {
		switch r.Result {
		case probe.Errored:
			errored++
		case probe.Skipped:
			skipped++
		}
	}
	if errored == 0 {
		return fmt.Sprintf("no image could be acquired (%d probes skipped)", skipped)
	}
	return fmt.Sprintf("%d probes could not run", errored)
}
