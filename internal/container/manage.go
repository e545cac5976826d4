package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/racker-postroj/racker/internal/nspawn"
)

// Open returns the running booted container name of the runtime's state
// directory, which another process may have started (racker run -d), so
// that commands can be run in it. Close releases it and leaves it running.
// The error wraps nspawn.ErrNoSuchContainer when no such container runs.
func (r *Runtime) Open(ctx context.Context, name string) (*Container, error) {
	m, err := nspawn.Open(ctx, r.stateDir(), name, r.Logger)
	if err != nil {
		return nil, err
	}
	return &Container{m: m}, nil
}

// List returns the running containers of the runtime's state directory,
// oldest first, booted or not. State that running processes no longer back
// (a racker killed with SIGKILL) is removed on the way.
func (r *Runtime) List(ctx context.Context) ([]nspawn.Container, error) {
	return nspawn.List(r.stateDir())
}

// ExecOptions describe a command to run in a running container (racker
// exec).
type ExecOptions struct {
	Name    string // the container (required)
	Process nspawn.Process
	// TTY runs the command on a terminal inside the container
	// (Container.ExecTerminal); Terminal, if set, is the caller's terminal
	// whose size is followed.
	TTY      bool
	Terminal *os.File
}

// Exec runs opts.Process in the running container opts.Name and returns its
// exit status, as Container.Exec does.
func (r *Runtime) Exec(ctx context.Context, opts ExecOptions) (int, error) {
	c, err := r.Open(ctx, opts.Name)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	if opts.TTY {
		return c.ExecTerminal(ctx, opts.Process, opts.Terminal)
	}
	return c.Exec(ctx, opts.Process)
}

// StopOptions say which containers Runtime.Stop ends, and how.
type StopOptions struct {
	Names    []string
	Teardown Teardown
	// Timeout is how long a Poweroff may take before the container is
	// killed (nspawn.DefaultStopTimeout if zero).
	Timeout time.Duration
	// Stdout, if set, receives the name of each container once it is gone.
	Stdout io.Writer
}

// Stop ends the named running containers of the runtime's state directory,
// from any process, one after the other, and returns once each is gone.
// A name that fails does not keep the others from being stopped; the
// errors are joined, each naming its container (nspawn.ErrNoSuchContainer
// for a name no container has).
func (r *Runtime) Stop(ctx context.Context, opts StopOptions) error {
	var errs []error
	for _, name := range opts.Names {
		if err := r.stop(ctx, name, opts.Teardown, opts.Timeout); err != nil {
			errs = append(errs, err)
			continue
		}
		if opts.Stdout != nil {
			fmt.Fprintln(opts.Stdout, name)
		}
	}
	return errors.Join(errs...)
}

func (r *Runtime) stop(ctx context.Context, name string, how Teardown, timeout time.Duration) error {
	switch how {
	case Poweroff:
		return nspawn.Stop(ctx, r.stateDir(), name, timeout)
	case Kill:
		return nspawn.Kill(ctx, r.stateDir(), name)
	}
	return fmt.Errorf("stopping %s: unexpected teardown %v (valid: Poweroff, Kill)", name, how)
}

// ErrRunning is returned by Remove without Force for a running container.
var ErrRunning = errors.New("container is running")

// RemoveOptions say which containers Runtime.Remove removes.
type RemoveOptions struct {
	Names []string
	// Force kills running containers. Without it, Remove refuses them:
	// containers are volatile, so a stopped one is already gone.
	Force  bool
	Stdout io.Writer // receives the name of each container removed
}

// Remove removes the named containers (racker rm): with Force, running
// ones are killed (Kill); without, a running container is refused with
// ErrRunning and a name no container has with nspawn.ErrNoSuchContainer.
// Errors are joined as in Stop.
func (r *Runtime) Remove(ctx context.Context, opts RemoveOptions) error {
	if opts.Force {
		return r.Stop(ctx, StopOptions{Names: opts.Names, Teardown: Kill, Stdout: opts.Stdout})
	}
	running, err := r.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range opts.Names {
		if err := nspawn.ValidName(name); err != nil {
			errs = append(errs, err)
			continue
		}
		err := fmt.Errorf("removing %s: %w", name, nspawn.ErrNoSuchContainer)
		for _, c := range running {
			if c.Name == name {
				err = fmt.Errorf("removing %s: %w: stop it first, or use rm -f to kill it", name, ErrRunning)
			}
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
