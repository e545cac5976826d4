// Package cli is the racker and postroj command lines. Each subcommand has
// a file of its own (racker_run.go, postroj_pull.go, ...) that declares its
// flags, turns them into the options of a library call (container.Options
// and container.Runtime for racker run, exec, ps and stop; acquire.PullOptions
// for postroj pull; probe.Spec for pkgprobe; image.PullOptions for racker
// pull), makes the call and prints what it returns. main.go maps errors to
// the documented exit codes (racker: 125 failed, 130 interrupted; postroj: 1
// a probe failed, 2 bad usage, 3 infrastructure, 130 interrupted) and prints
// them as one line; help.go renders --help to fit 100 columns.
package cli
