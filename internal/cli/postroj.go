package cli

import "github.com/urfave/cli/v2"

func postrojApp() *cli.App {
	return &cli.App{
		Usage:     "probe distribution packages on a curated catalogue of operating systems",
		UsageText: "postroj [--root DIR] [--verbose] [--stall-timeout D] COMMAND [OPTIONS]",
		Description: "postroj shares racker's image store (--root, RACKER_ROOT).\n" +
			"Exit codes: 0 passed, 1 a probe failed, 2 bad usage, 3 infrastructure failure.",
		Flags:    append(globalFlags(), stallFlag()),
		Commands: []*cli.Command{listImagesCommand(), postrojPullCommand(), pkgprobeCommand(), selftestCommand()},
	}
}
