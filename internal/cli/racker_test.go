package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// parseRacker runs racker with args, but with the subcommand's action
// replaced by build, so that flag handling is tested without a store or a
// container. It returns what racker's own error handling would see.
func parseRacker(t *testing.T, build func(c *cli.Context) error, args ...string) error {
	t.Helper()
	app := rackerApp()
	app.Name = "racker"
	return parseApp(t, app, build, args...)
}

// parseApp runs app with args (global flags, a subcommand and its flags and
// arguments), with the subcommand's action replaced by build.
func parseApp(t *testing.T, app *cli.App, build func(c *cli.Context) error, args ...string) error {
	t.Helper()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	found := false
	for _, cmd := range app.Commands {
		cmd.OnUsageError = app.OnUsageError
		if slices.Contains(args, cmd.Name) {
			cmd.Action = build
			found = true
		}
	}
	if !found {
		t.Fatalf("no %s command in %q", app.Name, args)
	}
	return app.RunContext(context.Background(), append([]string{app.Name}, args...))
}

func TestRunOptions(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("RACKER_REGISTRY_MIRRORS", "")
	var got container.Options
	build := func(c *cli.Context) (err error) { got, err = runOptions(c); return err }
	err := parseRacker(t, build, "run", "--name", "web", "--hostname", "box", "-d", "--boot", "always",
		"--pull", "never", "--boot-timeout", "5s", "--fast-boot=false", "-v", dir+":/data:ro",
		"-e", "A=1", "-w", "/srv", "-u", "nobody", "--platform", "linux/arm64",
		"debian:bookworm-slim", "sh", "-c", "echo hi")
	if err != nil {
		t.Fatal(err)
	}
	want := container.Options{
		Image: "debian:bookworm-slim", Pull: container.PullNever, Boot: container.BootAlways,
		Name: "web", Hostname: "box", Detach: true, BootTimeout: 5 * time.Second, FastBoot: false,
		Binds: []nspawn.Bind{{Host: dir, Container: "/data", ReadOnly: true}},
	}
	if got.Image != want.Image || got.Pull != want.Pull || got.Boot != want.Boot || got.Name != want.Name ||
		got.Hostname != want.Hostname || got.Detach != want.Detach || got.BootTimeout != want.BootTimeout ||
		got.FastBoot != want.FastBoot || !reflect.DeepEqual(got.Binds, want.Binds) {
		t.Errorf("options\n%+v\nwant\n%+v", got, want)
	}
	p := got.Process
	if !reflect.DeepEqual(p.Args, []string{"sh", "-c", "echo hi"}) || !reflect.DeepEqual(p.Env, []string{"A=1"}) ||
		p.Dir != "/srv" || p.User != "nobody" || p.Stdin != nil {
		t.Errorf("process %+v", p)
	}
	if pl := got.PullOpts.Platform; pl == nil || pl.String() != "linux/arm64" {
		t.Errorf("platform %v, want linux/arm64", pl)
	}

	// Defaults: what racker run IMAGE means.
	if err := parseRacker(t, build, "run", "-i", "debian"); err != nil {
		t.Fatal(err)
	}
	if got.Pull != container.PullMissing || got.Boot != container.BootAuto || !got.FastBoot ||
		got.BootTimeout != nspawn.DefaultBootTimeout || got.Name != "" || got.Detach || len(got.Process.Args) != 0 ||
		got.Process.Stdin != os.Stdin || got.PullOpts.Platform != nil {
		t.Errorf("defaults: %+v", got)
	}
}

func TestRunOptionsRefuses(t *testing.T) {
	dir := t.TempDir()
	build := func(c *cli.Context) error { _, err := runOptions(c); return err }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "run needs an IMAGE"},
		{[]string{"run", "--pull", "sometimes", "debian"}, `unexpected --pull "sometimes" (valid: missing, always, never)`},
		{[]string{"run", "--boot", "maybe", "debian"}, `unexpected --boot "maybe" (valid: auto, always, never)`},
		{[]string{"run", "--name", "-bad", "debian"}, `invalid container name "-bad"`},
		{[]string{"run", "-v", "relative:/x", "debian"}, "the host path must be absolute"},
		{[]string{"run", "-v", dir + ":/x:rx", "debian"}, `unexpected mode "rx"`},
		{[]string{"run", "-e", "=x", "debian"}, `invalid environment variable "=x"`},
		{[]string{"run", "--platform", "linux/arm64/v8/extra", "debian"}, "linux/arm64/v8/extra"},
		{[]string{"run", "--no-such-flag", "debian"}, "no-such-flag"},
	} {
		err := parseRacker(t, build, tt.args...)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestExecOptions(t *testing.T) {
	var got container.ExecOptions
	build := func(c *cli.Context) (err error) { got, err = execOptions(c); return err }
	if err := parseRacker(t, build, "exec", "-e", "GREETING=hello", "-w", "/srv/new", "-u", "nobody:nogroup", "web", "sh", "-c", "id"); err != nil {
		t.Fatal(err)
	}
	p := got.Process
	if got.Name != "web" || !reflect.DeepEqual(p.Args, []string{"sh", "-c", "id"}) || !reflect.DeepEqual(p.Env, []string{"GREETING=hello"}) ||
		p.Dir != "/srv/new" || p.User != "nobody:nogroup" || p.Stdin != nil || got.TTY {
		t.Errorf("exec options %+v", got)
	}
	for _, args := range [][]string{{"exec"}, {"exec", "web"}} {
		if err := parseRacker(t, build, args...); !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "exec needs a container NAME and a COMMAND") {
			t.Errorf("%q: error %v", args, err)
		}
	}
}

func TestStopAndRmOptions(t *testing.T) {
	var stop container.StopOptions
	buildStop := func(c *cli.Context) (err error) { stop, err = stopOptions(c); return err }
	if err := parseRacker(t, buildStop, "stop", "a", "b"); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stop.Names, []string{"a", "b"}) || stop.Teardown != container.Poweroff ||
		stop.Timeout != nspawn.DefaultStopTimeout || stop.Stdout == nil {
		t.Errorf("stop a b: %+v", stop)
	}
	if err := parseRacker(t, buildStop, "stop", "-t", "500ms", "a"); err != nil || stop.Timeout != 500*time.Millisecond || stop.Teardown != container.Poweroff {
		t.Errorf("stop -t 500ms: %+v, %v", stop, err)
	}
	// As docker's stop -t 0: no time to power off.
	if err := parseRacker(t, buildStop, "stop", "--time=0s", "a"); err != nil || stop.Teardown != container.Kill {
		t.Errorf("stop -t 0: %+v, %v", stop, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"stop"}, "stop needs at least one container NAME"},
		{[]string{"stop", "--time=-1s", "a"}, "--time must not be negative"},
		{[]string{"stop", "--time=soon", "a"}, "soon"},
	} {
		if err := parseRacker(t, buildStop, tt.args...); !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}

	var rm container.RemoveOptions
	buildRm := func(c *cli.Context) (err error) { rm, err = rmOptions(c); return err }
	if err := parseRacker(t, buildRm, "rm", "-f", "a", "b"); err != nil || !rm.Force || !reflect.DeepEqual(rm.Names, []string{"a", "b"}) || rm.Stdout == nil {
		t.Errorf("rm -f a b: %+v, %v", rm, err)
	}
	if err := parseRacker(t, buildRm, "rm", "a"); err != nil || rm.Force {
		t.Errorf("rm a: %+v, %v", rm, err)
	}
	if err := parseRacker(t, buildRm, "rm"); !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "rm needs at least one container NAME") {
		t.Errorf("rm: error %v", err)
	}
}

func TestPsOptions(t *testing.T) {
	var format string
	build := func(c *cli.Context) (err error) { format, err = psOptions(c); return err }
	for args, want := range map[string]string{"ps": "table", "ps --format json": "json", "ps --format=table": "table"} {
		if err := parseRacker(t, build, strings.Fields(args)...); err != nil || format != want {
			t.Errorf("%s: format %q, %v; want %q", args, format, err, want)
		}
	}
	for args, want := range map[string]string{"ps --format yaml": `unexpected --format "yaml" (valid: table, json)`, "ps web": `ps takes no arguments, got "web"`} {
		if err := parseRacker(t, build, strings.Fields(args)...); !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want a usage error containing %q", args, err, want)
		}
	}
}

func TestCommandExit(t *testing.T) {
	notFound := &nspawn.ExecError{Command: "nope", Code: 127, Err: errors.New("executable file not found in $PATH")}
	boom := errors.New("booting x: boot timed out")
	for _, tt := range []struct {
		code     int
		err      error
		wantCode int // -1: no exitError
		wantErr  error
	}{
		{0, nil, -1, nil},
		{5, nil, 5, nil},
		{-1, notFound, 127, notFound},
		{-1, boom, -1, boom},
	} {
		got := commandExit(tt.code, tt.err)
		var ee exitError
		switch {
		case tt.wantCode < 0 && tt.wantErr == nil && got != nil:
			t.Errorf("commandExit(%d, %v) = %v, want nil", tt.code, tt.err, got)
		case tt.wantCode < 0 && tt.wantErr != nil && (got != tt.wantErr):
			t.Errorf("commandExit(%d, %v) = %v, want the error itself", tt.code, tt.err, got)
		case tt.wantCode >= 0 && (!errors.As(got, &ee) || ee.code != tt.wantCode || !errors.Is(got, tt.wantErr) && tt.wantErr != nil):
			t.Errorf("commandExit(%d, %v) = %#v, want exit code %d", tt.code, tt.err, got, tt.wantCode)
		}
	}
}
