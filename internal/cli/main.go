package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/humanize"
)

// Version is the version both binaries report; set with -ldflags at build time.
var Version = "0.1.0-dev"

// Exit codes shared by racker's commands, as docker uses them.
const (
	ExitFailure     = 125 // racker itself failed: bad usage, image, registry
	ExitInterrupted = 130 // stopped by SIGINT or SIGTERM
)

// RackerMain runs the racker command line with os.Args and returns the exit code.
func RackerMain() int {
	return run(rackerApp(), os.Args, "racker", ExitFailure)
}

// PostrojMain runs the postroj command line with os.Args and returns the
// exit code. Started as autopkgtest-virt-racker (a link to postroj) it is
// autopkgtest's virtualisation server instead, as busybox dispatches on
// its name: the toolkit stays two binaries.
func PostrojMain() int {
	if filepath.Base(os.Args[0]) == VirtServerName {
		return virtServerMain()
	}
	return run(postrojApp(), os.Args, "postroj", 3)
}

// run runs app until it returns or a signal arrives, and maps what it
// returned to an exit code: the code of an exitError, ExitInterrupted after
// a signal, failure otherwise. The error is printed as one line, prefixed
// with the program's name.
func run(app *cli.App, args []string, prog string, failure int) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	useFlagHelp()
	app.Name = prog
	app.Version = Version
	app.HideHelpCommand = true
	app.UseShortOptionHandling = true
	app.Suggest = true
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	for _, c := range app.Commands {
		c.OnUsageError = app.OnUsageError
	}
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var ee exitError
	code := failure
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case ctx.Err() != nil:
		fmt.Fprintf(app.ErrWriter, "%s: interrupted\n", prog)
		return ExitInterrupted
	case errors.As(err, new(usageError)) && prog == "postroj":
		code = 2
	}
	if msg := humanize.OneLine(err.Error()); msg != "" {
		fmt.Fprintf(errWriter(app), "%s: %s%s\n", prog, msg, userNSHint(err))
	}
	return code
}

func errWriter(app *cli.App) io.Writer {
	if app.ErrWriter != nil {
		return app.ErrWriter
	}
	return os.Stderr
}

// exitError carries an exit code chosen by a command.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}
func (e exitError) Unwrap() error { return e.err }

// usageError is a mistake in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() + " (see --help)" }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// logger returns the logger a command passes to the libraries: silent
// unless --verbose was given.
func logger(c *cli.Context) *slog.Logger {
	if !c.Bool("verbose") {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
