package nspawn

import (
	"context"
	"fmt"
	"strconv"
	"syscall"

	"github.com/racker-postroj/racker/internal/rootfs"

	"golang.org/x/sys/unix"
)

// execNsenter runs p (resolved to file) by entering the container's
// namespaces with nsenter(1): the fallback for containers whose systemd
// cannot take file descriptors over D-Bus (systemd < 225) or that have no
// D-Bus. The command is not a unit of the container's systemd and stays in
// the caller's cgroup.
func (m *Machine) execNsenter(ctx context.Context, root *rootfs.Root, p *Process, acct account, file, dir string, env []string) (int, error) {
	args := []string{"nsenter", "--target=" + strconv.Itoa(m.leader.pid), "--all", "--root", "--wdns=" + dir}
	if acct.uid != 0 || acct.gid != 0 {
		args = append(args, "--setgid="+strconv.Itoa(acct.gid), "--setuid="+strconv.Itoa(acct.uid))
	}
	args = append(args, "--", file)
	args = append(args, p.Args[1:]...)
	cmd := command(ctx, args...)
	// The environment a systemd service would get.
	cmd.Env = env
	if acct.userKnown {
		cmd.Env = append([]string{"USER=" + acct.name, "LOGNAME=" + acct.name, "SHELL=" + acct.shell}, env...)
	}
	if p.TTY != nil {
		tty, err := root.Open(p.TTY.Name, unix.O_RDWR|unix.O_NOCTTY)
		if err != nil {
			return -1, fmt.Errorf("opening %s: %w", p.TTY.Name, err)
		}
		defer tty.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	} else {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = p.Stdin, p.Stdout, p.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	// nsenter forks the command into the container's pid namespace: kill
	// the command's processes and let nsenter reap them (see kill.go).
	session := p.TTY != nil
	cmd.Cancel = func() error { return cancelNsenter(cmd.Process.Pid, session) }
	m.log.Debug("nsenter", "args", args)
	err := cmd.Run()
	if ctx.Err() != nil {
		if cmd.Process != nil && !awaitCommandGone(cmd.Process.Pid, session) {
			m.log.Warn("processes of a cancelled command are still there", "nsenter", cmd.Process.Pid)
		}
		return -1, ctx.Err()
	}
	code, err := exitStatus(err)
	if code == 126 || code == 127 {
		// nsenter's own codes for a failed exec; the file may have
		// changed since it was looked up.
		if eerr := checkExecutable(root, file); eerr != nil {
			return eerr.Code, eerr.withCommand(p.Args[0])
		}
	}
	if err != nil {
		return -1, fmt.Errorf("running nsenter: %w", err)
	}
	return code, nil
}
