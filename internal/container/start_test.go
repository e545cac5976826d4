package container

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/image"
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
		Isolation: Isolation{Network: Network{Mode: NetworkNone}}, Executor: nspawn.ExecNsenter,
	})
	want := nspawn.Options{
		Name: "web", RootFS: "/store/rootfs", Image: "docker.io/library/debian:bookworm-slim", StateDir: "/state",
		Hostname: "box", Binds: binds, MaskUnits: []string{"getty.target"}, BootTimeout: 5 * time.Second, Detach: true,
		PrivateNetwork: true, Executor: nspawn.ExecNsenter,
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("nspawnOptions:\n%+v, %v\nwant\n%+v", got, err, want)
	}

	// Defaults: a name from the image, the host named after it, the
	// host's network.
	got, err = r.nspawnOptions(StartOptions{RootFS: "/store/rootfs", Image: "docker.io/library/debian:bookworm-slim"})
	if err != nil || !regexp.MustCompile(`\Adebian-bookworm-slim-[0-9a-f]{6}\z`).MatchString(got.Name) ||
		got.Hostname != got.Name || got.PrivateNetwork || got.StateDir != "/state" || got.Executor != nspawn.ExecAuto {
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

func TestPlan(t *testing.T) {
	img := image.Image{Reference: "docker.io/library/web:1", Config: image.Config{
		Entrypoint: []string{"/entry"}, Cmd: []string{"serve"}, Env: []string{"PATH=/img/bin", "A=image"},
		WorkingDir: "/app", User: "www",
	}}
	plain := image.Image{Reference: "docker.io/library/debian:bookworm-slim", Config: image.Config{Cmd: []string{"bash"}}}
	binds := []nspawn.Bind{{Host: "/srv", Container: "/data"}}
	for _, tt := range []struct {
		name    string
		img     image.Image
		opts    Options
		boot    BootMode
		args    []string
		env     []string
		dir     string
		user    string
		wantErr string
	}{
		{name: "image command", img: img, boot: BootAlways,
			args: []string{"/entry", "serve"}, env: []string{"PATH=/img/bin", "A=image"}, dir: "/app", user: "www"},
		{name: "args follow the entrypoint, flags win", img: img, boot: BootAlways,
			opts: Options{Process: nspawn.Process{Args: []string{"status"}, Env: []string{"A=flag"}, Dir: "/tmp", User: "root"}},
			args: []string{"/entry", "status"}, env: []string{"PATH=/img/bin", "A=image", "A=flag"}, dir: "/tmp", user: "root"},
		{name: "args replace cmd", img: plain, boot: BootNever,
			opts: Options{Process: nspawn.Process{Args: []string{"cat", "/etc/debian_version"}}},
			args: []string{"cat", "/etc/debian_version"}, env: []string{}},
		{name: "detached", img: plain, boot: BootAlways, opts: Options{Detach: true}, env: []string{}},
		{name: "no command", img: image.Image{Reference: "x"}, boot: BootAlways, wantErr: "no command given and the image defines none"},
		{name: "detached with a command", img: plain, boot: BootAlways, opts: Options{Detach: true, Process: nspawn.Process{Args: []string{"true"}}},
			wantErr: "with --detach the booted system is the payload"},
		{name: "detached, never booted", img: plain, boot: BootNever, opts: Options{Detach: true},
			wantErr: "--detach needs a booted container (not --boot=never)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Binds, tt.opts.Hostname, tt.opts.BootTimeout = binds, "box", 3*time.Second
			pl, err := plan(tt.img, tt.opts, tt.boot)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := pl.process
			if !reflect.DeepEqual(p.Args, tt.args) || !reflect.DeepEqual(p.Env, tt.env) || p.Dir != tt.dir || p.User != tt.user {
				t.Errorf("process args %q env %q dir %q user %q; want %q %q %q %q", p.Args, p.Env, p.Dir, p.User, tt.args, tt.env, tt.dir, tt.user)
			}
			st := pl.start
			if !regexp.MustCompile(`\A[a-z0-9-]+-[0-9a-f]{6}\z`).MatchString(st.Name) || st.Image != tt.img.Reference ||
				st.Hostname != "box" || !reflect.DeepEqual(st.Binds, binds) || st.BootTimeout != 3*time.Second || st.Detach != tt.opts.Detach {
				t.Errorf("start options %+v", st)
			}
		})
	}
	// A given name is kept; a terminal without booting is nspawn's own.
	pl, err := plan(plain, Options{Name: "mine", TTY: true, Terminal: os.Stdin}, BootNever)
	if err != nil || pl.start.Name != "mine" || !pl.process.Terminal {
		t.Errorf("named, -t without booting: %+v, %v", pl, err)
	}
	if pl, _ := plan(plain, Options{TTY: true, Terminal: os.Stdin}, BootAlways); pl.process.Terminal {
		t.Error("booted: Process.Terminal set (Exec opens its own terminal)")
	}
}

func TestResolveBoot(t *testing.T) {
	tree := func(files ...string) string {
		dir := t.TempDir()
		for _, f := range files {
			p := filepath.Join(dir, f)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	withManager := tree("usr/bin/apt-get")
	bare := tree("hello")
	for _, tt := range []struct {
		mode   BootMode
		rootfs string
		want   BootMode
	}{
		{BootAuto, withManager, BootAlways},
		{"", withManager, BootAlways},
		{BootAuto, bare, BootNever},
		{BootAlways, bare, BootAlways},
		{BootNever, withManager, BootNever},
	} {
		if got := resolveBoot(tt.mode, tt.rootfs); got != tt.want {
			t.Errorf("resolveBoot(%q, %s) = %q, want %q", tt.mode, filepath.Base(tt.rootfs), got, tt.want)
		}
	}
}

// Start holds the image it boots (image.Store.UseTree): a tree removed
// since it was looked up is not booted.
func TestStartRefusesRemovedImage(t *testing.T) {
	st, err := image.OpenStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &Runtime{StateDir: t.TempDir(), Store: st}
	gone := filepath.Join(st.Root, "images", "sha256", strings.Repeat("ab", 32), "prepared", "rootfs")
	_, err = r.Start(context.Background(), StartOptions{RootFS: gone, Image: "debian-bookworm", Name: "gone-1", Isolation: Isolation{Network: Network{Mode: NetworkHost}}})
	if !errors.Is(err, image.ErrRemoved) || err.Error() != "starting gone-1: debian-bookworm: image was removed" {
		t.Fatalf("Start of a removed image: %v", err)
	}
}
