package nspawn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/racker-postroj/racker/internal/rootfs"

	"golang.org/x/sys/unix"
)

// Run runs p in opts.RootFS without booting it (systemd-nspawn
// --volatile=overlay, no --boot) and returns its exit status like
// Machine.Exec does. The command is the container's PID 1 and sees the
// caller's streams directly (nspawn --pipe), or the terminal with
// p.Terminal. When ctx ends the container is killed and ctx.Err() is
// returned (wrapped).
//
// The name is claimed in opts.StateDir, if given, for as long as the
// command runs, so that List shows it and Stop can end it. p.User takes a
// user name or uid of the container's passwd file, not uid:gid; p.Dir must
// exist (the stored root filesystem is not written to create it).
func Run(ctx context.Context, opts Options, p Process) (int, error) {
	if err := opts.validate(); err != nil {
		return -1, err
	}
	if err := p.validate(); err != nil {
		return -1, err
	}
	if p.TTY != nil {
		return -1, errors.New("Process.TTY is for Exec; Run uses Process.Terminal")
	}
	if strings.Contains(p.User, ":") {
		return -1, fmt.Errorf("user %q: a group cannot be given without booting", p.User)
	}
	root, err := rootfs.Open(opts.RootFS)
	if err != nil {
		return -1, err
	}
	if st, err := root.Stat("/usr"); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		root.Close()
		return -1, fmt.Errorf("running %s: %s has no /usr directory, which systemd-nspawn requires", opts.Name, opts.RootFS)
	}
	env := processEnv(p.Env, p.Terminal)
	dir := p.Dir
	if dir == "" {
		dir = "/"
	}
	file, err := lookPath(root, p.Args[0], lookupEnv(env, "PATH"), dir)
	if err == nil {
		if st, serr := root.Stat(dir); serr != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			err = &ExecError{Command: p.Args[0], Code: 126, Err: fmt.Errorf("working directory %s does not exist", dir)}
		}
	}
	if err == nil && p.User != "" {
		var acct account
		acct, err = lookupUser(root, p.User)
		if err == nil && !acct.userKnown {
			// nspawn --user takes users of the container's database only.
			err = &ExecError{Command: p.Args[0], Code: 126, Err: fmt.Errorf("user %s has no entry in the passwd file, which running without boot needs", p.User)}
		}
	}
	root.Close()
	if err != nil {
		return execCode(err), err
	}

	// What is set up is released once the command has exited, side by
	// side: the user namespace's range and cgroups and the state are
	// independent, each behind its own lock.
	var release sync.WaitGroup
	defer release.Wait()
	// The user namespace first: the process it takes is made while the
	// name is claimed (see pendingUserNS).
	if !opts.HostUserNS {
		if opts.StateDir == "" {
			return -1, fmt.Errorf("running %s: a private user namespace needs a state directory", opts.Name)
		}
		u, err := opts.setupUserNS(ctx)
		if err != nil {
			return -1, fmt.Errorf("running %s: %w", opts.Name, err)
		}
		defer release.Go(func() { u.release() })
		opts.userns = u
	}
	if opts.registers() {
		if err := checkMachineName(ctx, opts.Name); err != nil {
			return -1, fmt.Errorf("running %s: %w", opts.Name, err)
		}
	}
	var rec *record
	var state containers
	if opts.StateDir != "" {
		state = containersDir(opts.StateDir)
		rec = &record{Name: opts.Name, Image: opts.Image, RootFS: opts.RootFS, Started: time.Now(), Status: statusRunning,
			PrivateNet: opts.PrivateNetwork}
		if opts.userns != nil {
			rec.UIDBase = opts.userns.ids.Base
		}
		if err := ownRecord(rec); err != nil {
			return -1, err
		}
		if err := state.claim(rec); err != nil {
			return -1, fmt.Errorf("running %s: %w", opts.Name, err)
		}
		defer release.Go(func() { state.release(rec) })
		if err := opts.writeHostname(state.dir(opts.Name)); err != nil {
			return -1, err
		}
	}

	args := opts.runArgs(&p, file)
	opts.logger().Debug("running nspawn", "args", args)
	cmd := command(ctx, args...)
	stderr := p.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	filter := newNoiseFilter(stderr, opts.Name)
	p.Stderr = filter
	// The command's streams are nspawn's: under a private user namespace
	// pipes of the container's root (see containerStdio).
	var stdio *containerStdio
	if opts.userns != nil {
		if stdio, err = wrapStdio(&p, opts.userns.ids.Base); err != nil {
			stdio.finish(ctx)
			return -1, err
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.Stdin, p.Stdout, p.Stderr
	// --kill-signal=SIGKILL: SIGTERM makes nspawn kill the command. What
	// nspawn says about that is not the command's output.
	cmd.Cancel = func() error {
		filter.mute()
		return cmd.Process.Signal(syscall.SIGTERM)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if !p.Terminal {
		// Keeps the terminal's Ctrl-C to us; with a terminal, nspawn must
		// stay in the foreground process group to read it.
		cmd.SysProcAttr.Setpgid = true
	}
	waited, err := opts.startNspawn(cmd)
	if waited == nil {
		if stdio != nil {
			stdio.finish(ctx)
		}
		return -1, fmt.Errorf("running %s: %w", opts.Name, err)
	}
	if err != nil {
		cmd.Process.Signal(syscall.SIGTERM)
		<-waited
		if stdio != nil {
			stdio.finish(ctx)
		}
		return -1, fmt.Errorf("running %s: %w", opts.Name, err)
	}
	if rec != nil {
		rec.NspawnPID = cmd.Process.Pid
		rec.NspawnStart, _ = startTime(cmd.Process.Pid)
		state.write(rec)
	}
	werr := <-waited
	if stdio != nil {
		stdio.finish(ctx)
	}
	filter.flush()
	if ctx.Err() != nil {
		return -1, fmt.Errorf("running %s: %w", opts.Name, ctx.Err())
	}
	code, err := exitStatus(werr)
	if err != nil {
		return -1, fmt.Errorf("running %s: %w", opts.Name, err)
	}
	return code, nil
}
