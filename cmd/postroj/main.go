// Command postroj runs package probes on a curated catalogue of distributions.
package main

import (
	"os"

	"github.com/racker-postroj/racker/internal/cli"
)

func main() { os.Exit(cli.PostrojMain()) }
