package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/testtree"
)

// Trees without a package manager to install systemd with cannot be
// prepared; distro.Detect's own tests cover detection.
func TestPrepareNotBootable(t *testing.T) {
	st := newStore(t)
	run := func(ctx context.Context, rootfs, script string, out io.Writer) (int, error) {
		t.Fatalf("ran %q", script)
		return 0, nil
	}
	for i, tt := range []struct {
		entries []string
		want    string
	}{
		{[]string{"sbin/apk"}, "image cannot be booted: no supported package manager: Alpine has no systemd"},
		{[]string{"bin/sh"}, "image cannot be booted: no supported package manager (apt-get, dnf, yum, microdnf, zypper, pacman)"},
	} {
		img := Image{Reference: "test/none:1", Digest: "sha256:" + strings.Repeat(fmt.Sprint(i+2), 64), RootFS: testtree.Make(t, tt.entries...)}
		os.MkdirAll(st.imageDir(img.Digest), 0o700)
		_, err := st.Prepare(context.Background(), img, PrepareOptions{Run: run})
		if !errors.Is(err, ErrNotBootable) || !strings.HasSuffix(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want ErrNotBootable saying %q", tt.entries, err, tt.want)
		}
	}
	assertTmpEmpty(t, st)
}

func TestPrepare(t *testing.T) {
	st := newStore(t)
	base := testtree.Make(t, "usr/bin/apt-get", "usr/lib/systemd/systemd")
	img := Image{Reference: "test/prep:1", Digest: "sha256:" + sixtyFour, RootFS: base}
	os.MkdirAll(st.imageDir(img.Digest), 0o700)

	var scripts []string
	run := func(ctx context.Context, rootfs, script string, out io.Writer) (int, error) {
		scripts = append(scripts, script)
		io.WriteString(out, "installing\n")
		if strings.Contains(script, "fail") {
			return 100, nil
		}
		for _, p := range []string{"sbin/init", "usr/bin/dbus-daemon", "usr/bin/curl", "etc/ssl/certs/ca-certificates.crt"} {
			os.MkdirAll(filepath.Join(rootfs, filepath.Dir(p)), 0o755)
			os.WriteFile(filepath.Join(rootfs, p), nil, 0o755)
		}
		return 0, nil
	}
	p, err := st.Prepare(context.Background(), img, PrepareOptions{Run: run})
	if err != nil {
		t.Fatal(err)
	}
	if p.RootFS == base || p.Manager != "apt-get" || !reflect.DeepEqual(p.Installed, []string{"systemd-sysv", "dbus", "curl", "ca-certificates"}) {
		t.Fatalf("Prepare = %+v", p)
	}
	if !strings.Contains(scripts[0], "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-unsafe-io systemd-sysv dbus curl ca-certificates") {
		t.Errorf("script = %q", scripts[0])
	}
	if m, _ := distro.Missing(base); len(m) != 4 {
		t.Errorf("the stored image was changed: missing %v", m)
	}
	// A second call reuses the prepared tree.
	if p2, err := st.Prepare(context.Background(), img, PrepareOptions{Run: run}); err != nil || p2.RootFS != p.RootFS || len(scripts) != 1 {
		t.Errorf("second Prepare = %+v, %v after %d runs", p2, err, len(scripts))
	}
	assertTmpEmpty(t, st)

	// A complete image is used as it is.
	full := testtree.Make(t, "usr/lib/systemd/systemd", "sbin/init", "usr/bin/dbus-daemon", "usr/bin/curl", "etc/ssl/cert.pem")
	if p, err := st.Prepare(context.Background(), Image{Digest: "sha256:" + strings.Repeat("1", 64), RootFS: full}, PrepareOptions{}); err != nil || p.RootFS != full {
		t.Errorf("complete image: %+v %v", p, err)
	}
}

func TestPrepareFailureLeavesNothing(t *testing.T) {
	st := newStore(t)
	img := Image{Reference: "test/prep:1", Digest: "sha256:" + sixtyFour, RootFS: testtree.Make(t, "usr/bin/apt-get")}
	os.MkdirAll(st.imageDir(img.Digest), 0o700)
	run := func(ctx context.Context, rootfs, script string, out io.Writer) (int, error) {
		io.WriteString(out, "E: Unable to locate package systemd\n")
		return 100, nil
	}
	_, err := st.Prepare(context.Background(), img, PrepareOptions{Run: run})
	if err == nil || !strings.Contains(err.Error(), "preparing test/prep:1: apt-get install systemd systemd-sysv dbus curl ca-certificates failed with status 100: E: Unable to locate package systemd") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(st.imageDir(img.Digest), "prepared")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed preparation was kept: %v", err)
	}
	assertTmpEmpty(t, st)
}

func TestRunnableRootFS(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	img := Image{Reference: "test/hello:1", Digest: "sha256:" + sixtyFour, RootFS: testtree.Make(t, "hello")}
	os.MkdirAll(st.imageDir(img.Digest), 0o700)
	got, err := st.RunnableRootFS(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if got == img.RootFS {
		t.Fatal("tree without /usr used as it is")
	}
	if fi, err := os.Stat(filepath.Join(got, "usr")); err != nil || !fi.IsDir() {
		t.Errorf("no /usr in %s: %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(img.RootFS, "usr")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stored image was changed: %v", err)
	}
	if again, err := st.RunnableRootFS(ctx, img); err != nil || again != got {
		t.Errorf("second call: %q, %v", again, err)
	}
	assertTmpEmpty(t, st)
	full := Image{Digest: "sha256:" + strings.Repeat("2", 64), RootFS: testtree.Make(t, "usr/bin/sh")}
	if got, err := st.RunnableRootFS(ctx, full); err != nil || got != full.RootFS {
		t.Errorf("tree with /usr: %q, %v", got, err)
	}
}
