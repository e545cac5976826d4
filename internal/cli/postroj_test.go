package cli

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/racker-postroj/racker/internal/acquire"
	"github.com/racker-postroj/racker/internal/container"
)

// parsePostroj runs postroj with args, but with the subcommand's action
// replaced by build, so that flag handling is tested without a store.
func parsePostroj(t *testing.T, build func(c *cli.Context) error, args ...string) error {
	t.Helper()
	app := postrojApp()
	app.Name = "postroj"
	return parseApp(t, app, build, args...)
}

func TestPullOptions(t *testing.T) {
	t.Setenv("RACKER_REGISTRY_MIRRORS", "docker.io=127.0.0.1:5000")
	t.Setenv("POSTROJ_MIRROR_CACHE", "/var/cache/x")
	var got acquire.PullOptions
	build := func(c *cli.Context) (err error) { got, err = pullOptions(c); return err }
	if err := parsePostroj(t, build, "--verbose", "--stall-timeout", "7s", "pull", "--all", "--include-eol", "--family", "debian", "--family", "ubuntu",
		"--source", "mirror", "--rebuild", "-j", "3"); err != nil {
		t.Fatal(err)
	}
	want := acquire.Selection{Names: []string{}, All: true, IncludeEOL: true, Families: []string{"debian", "ubuntu"}}
	if !reflect.DeepEqual(got.Selection, want) || got.Source != acquire.SourceMirror || !got.Rebuild || got.Jobs != 3 || !got.Verbose ||
		got.Pull != container.PullAlways || got.MirrorCache != "/var/cache/x" || got.PullOpts.Mirrors["docker.io"][0] != "127.0.0.1:5000" ||
		got.PullOpts.Retry.Stall != 7*time.Second {
		t.Errorf("options %+v", got)
	}

	// Defaults: what postroj pull NAME... means.
	if err := parsePostroj(t, build, "pull", "debian-12", "centos-9"); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Names, []string{"debian-12", "centos-9"}) || got.All || got.Source != acquire.SourceAuto || got.Jobs != 2 ||
		got.Rebuild || got.Verbose || got.Stdout == nil || got.Stderr == nil {
		t.Errorf("defaults: %+v", got)
	}
}

func TestPullOptionsRefuses(t *testing.T) {
	build := func(c *cli.Context) error { _, err := pullOptions(c); return err }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"pull"}, "pull needs NAME arguments or --all"},
		{[]string{"pull", "--jobs", "0", "--all"}, "--jobs must be at least 1, not 0"},
		{[]string{"pull", "--source", "ftp", "debian-12"}, `unexpected --source "ftp" (valid: auto, registry, mirror)`},
		{[]string{"pull", "--jobs", "x", "--all"}, "jobs"},
	} {
		err := parsePostroj(t, build, tt.args...)
		if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want a usage error containing %q", tt.args, err, tt.want)
		}
	}
}

// The libraries' usage errors are postroj's bad usage; others are not.
func TestPostrojError(t *testing.T) {
	ue := &acquire.UsageError{Err: errors.New("unknown image")}
	if err := postrojError(ue); !errors.As(err, new(usageError)) || err.Error() != "unknown image (see --help)" {
		t.Errorf("postrojError(usage) = %v", err)
	}
	plain := errors.New("registry unreachable")
	if err := postrojError(plain); err != plain {
		t.Errorf("postrojError(plain) = %v", err)
	}
	if postrojError(nil) != nil {
		t.Error("postrojError(nil) != nil")
	}
}
