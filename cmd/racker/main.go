// Command racker pulls OCI images and boots them as systemd-nspawn OS containers.
package main

import (
	"os"

	"github.com/racker-postroj/racker/internal/cli"
)

func main() { os.Exit(cli.RackerMain()) }
