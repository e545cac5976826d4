package autopkgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// NormalUser is the account Open creates on every testbed for tests that
// must not run as root (advertised as suggested-normal-user=).
const NormalUser = "autopkgtest"

// MaskedUnits are the units masked on a testbed's boot: those a throw-away
// container does without (nspawn.DefaultMaskedUnits), except
// systemd-logind, which autopkgtest's specification says container testbeds
// usually provide for tests that need a login session.
func MaskedUnits() []string {
	var out []string
	for _, u := range nspawn.DefaultMaskedUnits() {
		if u != "systemd-logind.service" {
			out = append(out, u)
		}
	}
	return out
}

// Image is a bootable root filesystem, the reference it came from and how
// commands enter a container of it (nspawn.ExecAuto unless the catalogue
// says otherwise).
type Image struct {
	Reference string
	RootFS    string
	Executor  nspawn.Executor
}

// Racker is a Testbed made of booted racker containers: Open boots the image
// on a throw-away overlay, Revert replaces the container with a fresh one
// (so files, packages and processes are all pristine again), Close kills it.
type Racker struct {
	Runtime *container.Runtime
	// Acquire returns the image to boot, pulling, building and preparing it
	// as needed; it is called once, at the first Open.
	Acquire func(ctx context.Context) (Image, error)
	// Start is the template of every container's options (isolation,
	// boot timeout); RootFS, Image and Name are filled in.
	Start container.StartOptions
	// ExecPrefix is the argv that runs a command in a running container
	// of Runtime given its name: the execute command is ExecPrefix, the
	// name and "--".
	ExecPrefix []string
	Logger     *slog.Logger

	img     *Image
	c       *container.Container
	downtmp string
}

func (r *Racker) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Capabilities: the testbed is a booted systemd in its own container
// (isolation-container, not isolation-machine: it shares the host's
// kernel), reverting boots a fresh overlay (revert, revert-full-system),
// and commands run as root.
func (r *Racker) Capabilities() []string {
	caps := []string{"revert", "revert-full-system", "root-on-testbed", "isolation-container"}
	if r.c != nil {
		caps = append(caps, "suggested-normal-user="+NormalUser)
	}
	return caps
}

// Open boots the testbed and prepares its scratch directory and normal user.
func (r *Racker) Open(ctx context.Context) (string, error) {
	if r.c != nil {
		return "", errors.New("the testbed is already open")
	}
	if r.img == nil {
		t0 := time.Now()
		img, err := r.Acquire(ctx)
		if err != nil {
			return "", err
		}
		r.img = &img
		r.log().Info("image", "ref", img.Reference, "took", time.Since(t0))
	}
	if r.downtmp == "" {
		// One path for the whole session: built trees refer to it.
		b := make([]byte, 4)
		rand.Read(b)
		r.downtmp = "/tmp/autopkgtest." + hex.EncodeToString(b)
	}
	if err := r.boot(ctx); err != nil {
		return "", err
	}
	return r.downtmp, nil
}

func (r *Racker) boot(ctx context.Context) error {
	t0 := time.Now()
	opts := r.Start
	opts.RootFS, opts.Image, opts.Executor = r.img.RootFS, r.img.Reference, r.img.Executor
	opts.Name = container.DefaultName("autopkgtest-", r.img.Reference)
	c, err := r.Runtime.Start(ctx, opts)
	if err != nil {
		return err
	}
	r.c = c
	// The scratch directory is world-writable and sticky, as autopkgtest
	// makes it, and the normal user exists with a home directory.
	setup := `mkdir --mode=1777 --parents "$1"
if ! getent passwd "$2" >/dev/null; then
	useradd --create-home --user-group --shell /bin/sh "$2" 2>/dev/null ||
	adduser -D "$2" 2>/dev/null
fi
getent passwd "$2" >/dev/null`
	var out strings.Builder
	code, err := r.run(ctx, []string{"sh", "-ec", setup, "sh", r.downtmp, NormalUser}, nil, &out, &out)
	if err == nil && code != 0 {
		err = fmt.Errorf("preparing the testbed: exit status %d: %s", code, humanize.OneLine(out.String()))
	}
	if err != nil {
		r.kill()
		return err
	}
	r.log().Info("open", "machine", c.Name(), "took", time.Since(t0))
	return nil
}

// Revert kills the container and boots a fresh one from the same image.
func (r *Racker) Revert(ctx context.Context) (string, error) {
	t0 := time.Now()
	if err := r.kill(); err != nil {
		return "", err
	}
	if err := r.boot(ctx); err != nil {
		return "", err
	}
	r.log().Info("revert", "took", time.Since(t0))
	return r.downtmp, nil
}

// Close kills the container: nothing of it is left.
func (r *Racker) Close(ctx context.Context) error { return r.kill() }

func (r *Racker) kill() error {
	if r.c == nil {
		return nil
	}
	c := r.c
	r.c = nil
	return c.Stop(context.Background(), container.Kill, 0)
}

// ExecuteCommand is ExecPrefix, the container's name and "--".
func (r *Racker) ExecuteCommand() []string {
	name := ""
	if r.c != nil {
		name = r.c.Name()
	}
	return append(append(append([]string{}, r.ExecPrefix...), name), "--")
}

// run is the Runner of copies and setup: argv as root in the container.
func (r *Racker) run(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if r.c == nil {
		return -1, errors.New("the testbed is not open")
	}
	return r.c.Exec(ctx, nspawn.Process{Args: argv, Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

func (r *Racker) copier() Copier { return Copier{Run: r.run} }

func (r *Racker) CopyDown(ctx context.Context, host, tb string, dir bool) error {
	return r.copier().CopyDown(ctx, host, tb, dir)
}

func (r *Racker) CopyUp(ctx context.Context, tb, host string, dir bool) error {
	return r.copier().CopyUp(ctx, tb, host, dir)
}

// Shell runs bash (or sh) on the caller's terminal, /dev/tty, in dir.
func (r *Racker) Shell(ctx context.Context, dir string, env []string) error {
	if r.c == nil {
		return errors.New("the testbed is not open")
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("no terminal to run a shell on: %w", err)
	}
	defer tty.Close()
	p := nspawn.Process{
		Args:   []string{"sh", "-c", `if command -v bash >/dev/null; then exec bash -i; fi; exec sh -i`},
		Dir:    dir,
		Env:    env,
		Stdin:  tty,
		Stdout: tty,
	}
	if t := os.Getenv("TERM"); t != "" {
		p.Env = append(p.Env, "TERM="+t)
	}
	_, err = r.c.ExecTerminal(ctx, p, tty)
	return err
}

// Exec runs argv in the running container name of rt with this process's
// standard streams and returns the exit status for the execute command:
// the command's status (a signal as 128+N) with 255 changed to 253, and
// 255 when racker itself fails (autopkgtest's rule for the program's own
// failure).
func Exec(ctx context.Context, rt *container.Runtime, name string, argv []string, stderr io.Writer) int {
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "autopkgtest-virt-racker: --exec needs a command after --")
		return 255
	}
	code, err := rt.Exec(ctx, container.ExecOptions{Name: name, Process: nspawn.Process{
		Args: argv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
	}})
	var ee *nspawn.ExecError
	switch {
	case errors.As(err, &ee):
		fmt.Fprintf(stderr, "autopkgtest-virt-racker: %s\n", humanize.OneLine(err.Error()))
		return ee.Code // 126, 127: what a shell says, too
	case err != nil:
		fmt.Fprintf(stderr, "autopkgtest-virt-racker: %s\n", humanize.OneLine(err.Error()))
		return 255
	case code == 255:
		return 253
	}
	return code
}
