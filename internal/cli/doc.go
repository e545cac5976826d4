// Package cli defines the racker and postroj command lines: flags in, options
// structs out, one library call per subcommand, and the exit codes.
package cli
