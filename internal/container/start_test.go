package container

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/nspawn"
)

func TestDefaultName(t *testing.T) {
	for _, tt := range []struct{ prefix, ref, want string }{
		{"", "docker.io/library/debian:bookworm-slim", `debian-bookworm-slim`},
		{"", "quay.io/centos/centos@sha256:0123abcd", `centos`},
		{"", "registry.local:5000/a/b_c.d:1.0", `b-c-d-1-0`},
		{"", "///", `racker`},
		{"", strings.Repeat("x", 60), strings.Repeat("x", 40)},
		{"", strings.Repeat("x", 39) + "-y", strings.Repeat("x", 39)},
		{"postroj-", "debian-bookworm", `postroj-debian-bookworm`},
		{"postroj-", "postroj-rpm:bookworm", `postroj-postroj-rpm-bookworm`},
		{"postroj-", "quay.io/centos/centos:stream9", `postroj-centos-stream9`},
	} {
		got := DefaultName(tt.prefix, tt.ref)
		if !regexp.MustCompile(`\A` + regexp.QuoteMeta(tt.want) + `-[0-9a-f]{6}\z`).MatchString(got) {
			t.Errorf("DefaultName(%q, %q) = %q, want %s-XXXXXX", tt.prefix, tt.ref, got, tt.want)
		}
		if err := nspawn.ValidName(got); err != nil {
			t.Errorf("DefaultName(%q, %q): %v", tt.prefix, tt.ref, err)
		}
	}
	if a, b := DefaultName("", "debian"), DefaultName("", "debian"); a == b {
		t.Errorf("two default names are both %q", a)
	}
}

func TestNspawnOptions(t *testing.T) {
	r := &Runtime{StateDir: "/state"}
	binds := []nspawn.Bind{{Host: "/srv", Container: "/data", ReadOnly: true}}
	got, err := r.nspawnOptions(StartOptions{
		RootFS: "/store/rootfs", Image: "docker.io/library/debian:bookworm-slim", Name: "web", Hostname: "box",
		Binds: binds, MaskUnits: []string{"getty.target"}, BootTimeout: 5 * time.Second, Detach: true,
		Isolation: Isolation{Network: Network{Mode: NetworkNone}},
	})
	want := nspawn.Options{
		Name: "web", RootFS: "/store/rootfs", Image: "docker.io/library/debian:bookworm-slim", StateDir: "/state",
		Hostname: "box", Binds: binds, MaskUnits: []string{"getty.target"}, BootTimeout: 5 * time.Second, Detach: true,
		PrivateNetwork: true,
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("nspawnOptions:\n%+v, %v\nwant\n%+v", got, err, want)
	}

	// Defaults: a name from the image, the host named after it, the
	// host's network.
	got, err = r.nspawnOptions(StartOptions{RootFS: "/store/rootfs", Image: "docker.io/library/debian:bookworm-slim"})
	if err != nil || !regexp.MustCompile(`\Adebian-bookworm-slim-[0-9a-f]{6}\z`).MatchString(got.Name) ||
		got.Hostname != got.Name || got.PrivateNetwork || got.StateDir != "/state" {
		t.Errorf("defaults: %+v, %v", got, err)
	}
	if _, err := r.nspawnOptions(StartOptions{Name: "web"}); err == nil {
		t.Error("no root filesystem: accepted")
	}
}

func TestStopAndRemoveByName(t *testing.T) {
	ctx := context.Background()
	r := &Runtime{StateDir: t.TempDir()}
	var out bytes.Buffer
	for _, how := range []Teardown{Poweroff, Kill} {
		err := r.Stop(ctx, StopOptions{Names: []string{"gone-a", "gone-b"}, Teardown: how, Stdout: &out})
		if !errors.Is(err, nspawn.ErrNoSuchContainer) || !strings.Contains(err.Error(), "stopping gone-a: no such container") ||
			!strings.Contains(err.Error(), "stopping gone-b: no such container") {
			t.Errorf("stop (%v) of missing containers: %v", how, err)
		}
	}
	if err := r.Stop(ctx, StopOptions{Names: []string{"x"}, Teardown: Teardown(7)}); err == nil || !strings.Contains(err.Error(), "unexpected teardown") {
		t.Errorf("bad teardown: %v", err)
	}
	err := r.Remove(ctx, RemoveOptions{Names: []string{"gone"}, Stdout: &out})
	if !errors.Is(err, nspawn.ErrNoSuchContainer) || !strings.Contains(err.Error(), "removing gone: no such container") {
		t.Errorf("rm of a missing container: %v", err)
	}
	if err := r.Remove(ctx, RemoveOptions{Names: []string{"../x"}}); err == nil || !strings.Contains(err.Error(), "invalid container name") {
		t.Errorf("rm of a bad name: %v", err)
	}
	if err := r.Remove(ctx, RemoveOptions{Names: []string{"gone"}, Force: true, Stdout: &out}); !errors.Is(err, nspawn.ErrNoSuchContainer) {
		t.Errorf("rm -f of a missing container: %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q for containers that were not there", out.String())
	}
	if _, err := r.Open(ctx, "gone"); !errors.Is(err, nspawn.ErrNoSuchContainer) {
		t.Errorf("open of a missing container: %v", err)
	}
	if list, err := r.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("list: %v, %v", list, err)
	}
}
