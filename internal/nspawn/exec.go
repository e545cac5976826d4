package nspawn

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path"
	"strings"
	"syscall"
	"time"
)

// Exec runs p in the container and returns its exit status once it has
// exited and its output has been copied: the command's exit code, or 128+N
// if signal N killed it. A command that cannot be started returns 127 (not
// found) or 126 (not executable, unknown user, ...) with an *ExecError.
// Other failures return -1 and an error; when ctx ends the command is killed
// and ctx.Err() is returned (wrapped).
//
// The command runs as a transient systemd service of the container (its
// D-Bus) or, for containers without usable D-Bus, through nsenter(1); see
// Options.Executor.
func (m *Machine) Exec(ctx context.Context, p Process) (int, error) {
	if err := p.validate(); err != nil {
		return -1, err
	}
	root, err := m.Root()
	if err != nil {
		return -1, err
	}
	defer root.Close()
	acct, err := lookupUser(root, p.User)
	if err != nil {
		return execCode(err), err
	}
	env := processEnv(p.Env, p.TTY != nil)
	if !hasEnv(p.Env, "HOME") {
		env = append([]string{"HOME=" + acct.home}, env...)
	}
	dir := p.Dir
	if dir == "" {
		dir = "/"
	}
	file, err := lookPath(root, p.Args[0], lookupEnv(env, "PATH"), dir)
	if err != nil {
		return execCode(err), err
	}
	if err := root.MkdirAll(dir, 0o755); err != nil {
		err = &ExecError{Command: p.Args[0], Code: 126, Err: fmt.Errorf("working directory %s: %w", dir, err)}
		return 126, err
	}
	// systemd runs commands only as users and groups its user database
	// knows; docker also takes unknown numeric ids, which nsenter can do.
	stdio, err := wrapStdio(&p, m.rec.UIDBase)
	if err != nil {
		stdio.finish(ctx)
		return -1, err
	}
	var code int
	if m.executor == ExecDBus && acct.userKnown && acct.groupKnown {
		code, err = m.bus.exec(ctx, m.log, root, &p, acct, file, dir, env)
	} else {
		code, err = m.execNsenter(ctx, root, &p, acct, file, dir, env)
	}
	if ferr := stdio.finish(ctx); err == nil && ferr != nil {
		return -1, ferr
	}
	return code, err
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

func execCode(err error) int {
	var ee *ExecError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return -1
}

func (p *Process) validate() error {
	if len(p.Args) == 0 {
		return errors.New("no command given")
	}
	if p.Dir != "" && !path.IsAbs(p.Dir) {
		return fmt.Errorf("working directory %q is not an absolute path", p.Dir)
	}
	for _, kv := range p.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("environment entry %q is not KEY=VALUE", kv)
		}
	}
	if p.TTY != nil && p.Terminal {
		return errors.New("TTY (Exec) and Terminal (Run) are exclusive")
	}
	return nil
}

// command is how this package runs programs: killed with SIGKILL when ctx
// ends (unless the caller sets another Cancel), and Wait gives up on
// output-copying goroutines after killGrace.
func command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.WaitDelay = killGrace
	return cmd
}

// exitStatus turns the result of Cmd.Wait into an exit status the way a
// shell does: the exit code, or 128+N for death by signal N. Errors other
// than a non-zero exit return -1 and the error.
func exitStatus(err error) (int, error) {
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return -1, err
}

// cleanupTimeout bounds the D-Bus calls that clean up after a command when
// the caller's context has ended.
const cleanupTimeout = 5 * time.Second
