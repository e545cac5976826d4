package cli

import (
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/image"
)

func rackerApp() *cli.App {
	return &cli.App{
		Usage:     "run OCI images as full operating system containers with systemd-nspawn",
		UsageText: "racker [--root DIR] [--verbose] COMMAND [OPTIONS] [ARGS]",
		Description: "racker pulls Docker/OCI images natively and keeps their root filesystems in a local store.\n" +
			"Registry mirrors come from RACKER_REGISTRY_MIRRORS (docker.io=HOST:PORT,...); credentials from\n" +
			"~/.docker/config.json. Exit codes: 0 success, 125 racker failed, 130 interrupted.",
		Flags:    globalFlags(),
		Commands: []*cli.Command{runCommand(), execCommand(), psCommand(), stopCommand(), rmCommand(), pullCommand(), imagesCommand(), rmiCommand()},
	}
}

// globalFlags are the flags racker and postroj share.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "root", Usage: "state directory holding the image store", EnvVars: []string{"RACKER_ROOT"}, Value: image.DefaultRoot},
		&cli.BoolFlag{Name: "verbose", Usage: "report what happens, with timings, on stderr"},
	}
}

// openStore opens the store named by --root, first pruning what killed
// racker and postroj processes left there (container.Runtime.Prune): every
// command that touches the store or the container list comes through here.
func openStore(c *cli.Context) (*image.Store, error) {
	st, err := image.OpenStore(c.String("root"), logger(c))
	if err != nil {
		return nil, err
	}
	if err := (&container.Runtime{Store: st, Logger: logger(c)}).Prune(c.Context); err != nil {
		logger(c).Warn("pruning leftovers", "err", err)
	}
	return st, nil
}

// mirrors reads RACKER_REGISTRY_MIRRORS.
func mirrors() (image.Mirrors, error) {
	return image.ParseMirrors(strings.TrimSpace(os.Getenv("RACKER_REGISTRY_MIRRORS")))
}
