package cli

import (
	"fmt"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
)

// helpWidth is the widest line --help prints, so that help fits a terminal
// (help_test.go holds every command to it).
const helpWidth = 100

// flagUsageWidth is where flagHelp wraps a flag's usage: what is left of
// helpWidth after the indent, the widest flag column (names and
// placeholder, at most 33 columns) and the gap.
const flagUsageWidth = helpWidth - 3 - 33 - 2

var setFlagStringer sync.Once

// useFlagHelp makes urfave/cli render flags with flagHelp. urfave/cli has
// one renderer for the process (cli.FlagStringer); both binaries want the
// same, so it is set once.
func useFlagHelp() {
	setFlagStringer.Do(func() { cli.FlagStringer = flagHelp })
}

// flagHelp renders a flag for --help as docker does, short names first and
// the placeholder once: "-e, --env KEY=VALUE", then a tab and the usage,
// its default and environment variables, wrapped at flagUsageWidth onto
// lines that start with a tab, which the help's tabwriter aligns under the
// usage. Flags that may be repeated say so.
func flagHelp(f cli.Flag) string {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return ""
	}
	placeholder, usage := unquoteUsage(df.GetUsage())
	if df.TakesValue() && placeholder == "" {
		placeholder = "value"
	}
	var short, long []string
	for _, n := range df.Names() {
		if len(n) == 1 {
			short = append(short, "-"+n)
		} else {
			long = append(long, "--"+n)
		}
	}
	names := strings.Join(append(short, long...), ", ")
	if placeholder != "" {
		names += " " + placeholder
	}
	if b, isBool := f.(*cli.BoolFlag); !isBool || !b.DisableDefaultText && b.Value {
		if d := df.GetDefaultText(); d != "" && (!isBool || d != "false") {
			usage += fmt.Sprintf(" (default: %s)", d)
		}
	}
	if s, ok := f.(cli.DocGenerationSliceFlag); ok && s.IsSliceFlag() && !strings.Contains(usage, "repeatable") {
		usage += " (repeatable)"
	}
	if env := df.GetEnvVars(); len(env) > 0 {
		usage += " [$" + strings.Join(env, ", $") + "]"
	}
	return names + "\t" + strings.Join(wrapWords(strings.TrimSpace(usage), flagUsageWidth), "\n\t")
}

// wrapWords breaks s into lines of at most width columns at blanks (a
// longer word gets a line of its own).
func wrapWords(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		switch {
		case line == "":
			line = w
		case len(line)+1+len(w) <= width:
			line += " " + w
		default:
			lines = append(lines, line)
			line = w
		}
	}
	return append(lines, line)
}

// unquoteUsage takes the placeholder out of usage, as urfave/cli does: the
// first `quoted` word, which stays in the text without its quotes.
func unquoteUsage(usage string) (placeholder, text string) {
	before, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return "", usage
	}
	name, after, ok := strings.Cut(rest, "`")
	if !ok {
		return "", usage
	}
	return name, before + name + after
}
