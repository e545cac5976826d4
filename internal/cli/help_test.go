package cli

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
)

// TestHelpFitsTerminal renders the help of both binaries and of every
// command, as users get it with --help, and fails on a line wider than
// helpWidth.
func TestHelpFitsTerminal(t *testing.T) {
	for _, tt := range []struct {
		prog string
		app  func() *cli.App
	}{{"racker", rackerApp}, {"postroj", postrojApp}} {
		paths := [][]string{nil}
		var walk func(prefix []string, cmds []*cli.Command)
		walk = func(prefix []string, cmds []*cli.Command) {
			for _, c := range cmds {
				p := append(append([]string{}, prefix...), c.Name)
				paths = append(paths, p)
				walk(p, c.Subcommands)
			}
		}
		walk(nil, tt.app().Commands)
		if len(paths) < 4 {
			t.Fatalf("%s: %d commands found, want them all", tt.prog, len(paths)-1)
		}
		for _, p := range paths {
			args := append(append([]string{tt.prog}, p...), "--help")
			app := tt.app()
			var out bytes.Buffer
			app.Writer, app.ErrWriter = &out, &out
			if code := run(app, args, tt.prog, 1); code != 0 {
				t.Errorf("%s: exit %d:\n%s", strings.Join(args, " "), code, out.String())
				continue
			}
			if !strings.Contains(out.String(), "USAGE:") || !strings.Contains(out.String(), "-h, --help") {
				t.Errorf("%s printed no help:\n%s", strings.Join(args, " "), out.String())
			}
			for i, line := range strings.Split(out.String(), "\n") {
				if n := utf8.RuneCountInString(line); n > helpWidth {
					t.Errorf("%s, line %d: %d columns, more than %d:\n%s", strings.Join(args, " "), i+1, n, helpWidth, line)
				}
			}
		}
	}
}

func TestFlagHelp(t *testing.T) {
	for _, tt := range []struct {
		flag cli.Flag
		want string
	}{
		{&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `KEY=VALUE`"}, "-e, --env KEY=VALUE\tset KEY=VALUE (repeatable)"},
		{&cli.BoolFlag{Name: "rm", Usage: "remove it"}, "--rm\tremove it"},
		{&cli.BoolFlag{Name: "fast-boot", Value: true, Usage: "mask units"}, "--fast-boot\tmask units (default: true)"},
		{&cli.StringFlag{Name: "root", Value: "/var/lib/x", EnvVars: []string{"R"}, Usage: "state"}, "--root value\tstate (default: \"/var/lib/x\") [$R]"},
		{&cli.StringFlag{Name: "long", Usage: strings.Repeat("word ", 20)}, "--long value\t" +
			strings.TrimSpace(strings.Repeat("word ", 12)) + "\n\t" + strings.TrimSpace(strings.Repeat("word ", 8))},
	} {
		if got := flagHelp(tt.flag); got != tt.want {
			t.Errorf("flagHelp(%s) =\n%q, want\n%q", tt.flag.Names()[0], got, tt.want)
		}
	}
}
