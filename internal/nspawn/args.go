package nspawn

import (
	"io"
	"os"

	"strings"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// hostRunsSystemd reports whether the host was booted with systemd, the
// test sd_booted(3) makes: only then are machined and a system bus there to
// register with.
func hostRunsSystemd() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// hostCgroupUnified reports whether the host mounts only cgroup v2.
func hostCgroupUnified() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// minCgroup2OnlyVersion is the systemd release that stopped booting on
// cgroup v1 (256).
const minCgroup2OnlyVersion = 256

// cgroupEnv is what nspawn's environment needs so that the container's
// systemd gets a cgroup hierarchy it can run on: on a host with cgroup v1
// or a hybrid layout, a systemd of 256 or newer only boots if nspawn gives
// it the unified hierarchy, while one older than 230 (CentOS 7) only boots
// on the legacy one, which nspawn picks by default.
func cgroupEnv(version int, known, hostUnified bool) []string {
	if hostUnified || !known || version < minCgroup2OnlyVersion {
		return nil
	}
	return []string{"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1"}
}

// registers decides whether nspawn registers the container with machined.
func (o *Options) registers() bool {
	switch o.Register {
	case RegisterYes:
		return true
	case RegisterNo:
		return false
	}
	if o.hostHasSystemd != nil {
		return o.hostHasSystemd()
	}
	return hostRunsSystemd()
}

// commonArgs are the systemd-nspawn arguments shared by booted and unbooted
// containers.
func (o *Options) commonArgs() []string {
	var args []string
	if o.userns != nil {
		args = append(args, o.userns.args(o.RootFS)...)
	} else {
		args = append(args, "--directory="+o.RootFS)
	}
	args = append(args, "--machine="+o.Name)
	if !o.Writable && o.userns == nil {
		// The image stays read-only; writes go to a tmpfs overlay that
		// vanishes with the container.
		args = append(args, "--volatile=overlay")
	}
	args = append(args,
		// Host-side .nspawn files and journal links would make a container
		// depend on host configuration and write to the host.
		"--settings=no",
		"--link-journal=no",
	)
	if o.registers() {
		args = append(args, "--register=yes")
		if o.ownUnit() {
			// Registered with the unit nspawn runs in (startUnit), rather
			// than a scope of its own for the container's processes.
			args = append(args, "--keep-unit")
		}
	} else {
		// Without machined nspawn must neither register nor ask for a scope.
		args = append(args, "--register=no", "--keep-unit")
	}
	if o.Hostname != "" {
		args = append(args, "--hostname="+o.Hostname)
	}
	// Under a private user namespace binds are idmapped: host files keep
	// their owners inside, the container's root writes as the host's.
	idmap := ""
	if o.userns != nil {
		idmap = ":idmap"
	}
	if o.hostnameFile != "" {
		args = append(args, "--bind-ro="+o.hostnameFile+":/etc/hostname"+idmap)
	}
	if o.PrivateNetwork {
		args = append(args, "--private-network")
	}
	for _, b := range o.Binds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		spec := b.Host
		switch {
		case idmap != "" && b.Container == "":
			spec += ":" + b.Host + idmap
		case idmap != "":
			spec += ":" + b.Container + idmap
		case b.Container != "" && b.Container != b.Host:
			spec += ":" + b.Container
		}
		args = append(args, flag+spec)
	}
	return args
}

// bootArgs is the systemd-nspawn command line that boots the container.
func (o *Options) bootArgs() []string {
	args := append([]string{o.nspawn()}, o.commonArgs()...)
	args = append(args,
		"--boot",
		// READY=1 (and X_NSPAWN_LEADER_PID) arrive on $NOTIFY_SOCKET.
		"--notify-ready=yes",
		// The console is copied to nspawn's stdout (a log file) and nothing
		// is read from stdin, which works without a terminal.
		"--console=read-only",
		// SIGTERM to nspawn kills the container at once, at every stage of
		// boot; an orderly poweroff is SIGRTMIN+4 to the container's init.
		// So the parent-death signal (SIGTERM) cannot leave an orphaned
		// container behind, which SIGKILL to nspawn would.
		"--kill-signal=SIGKILL",
	)
	if o.Hostname != "" {
		// systemd would set the image's /etc/hostname over nspawn's
		// --hostname; its command line, which nspawn passes to it, wins.
		args = append(args, "systemd.hostname="+o.Hostname)
	}
	for _, u := range o.MaskUnits {
		// systemd-debug-generator reads init's command line in a container.
		args = append(args, "systemd.mask="+u)
	}
	for _, kv := range o.InitEnv {
		args = append(args, "systemd.setenv="+kv)
	}
	return args
}

// runArgs is the systemd-nspawn command line that runs p without booting.
// path is the command resolved in the root filesystem.
func (o *Options) runArgs(p *Process, path string) []string {
	args := append([]string{o.nspawn()}, o.commonArgs()...)
	// nspawn's own status lines would mix with the command's output, and
	// SIGTERM to nspawn (cancellation, our death) must end the command even
	// if, as PID 1, it ignores SIGTERM.
	args = append(args, "--quiet", "--kill-signal=SIGKILL")
	switch {
	case p.Terminal && isTerminal(p.Stdin):
		args = append(args, "--console=interactive")
	case p.Terminal:
		// A terminal for the command, but no input from ours (-t without
		// -i): an interactive console would end at the empty input.
		args = append(args, "--console=read-only")
	default:
		// The command gets nspawn's stdin, stdout and stderr as they are.
		args = append(args, "--console=pipe")
	}
	for _, kv := range processEnv(p.Env, p.Terminal) {
		args = append(args, "--setenv="+kv)
	}
	if p.Dir != "" {
		args = append(args, "--chdir="+p.Dir)
	}
	if p.User != "" {
		args = append(args, "--user="+p.User)
	}
	args = append(args, "--", path)
	return append(args, p.Args[1:]...)
}

// processEnv is the environment a command gets on top of what the container
// sets: env with PATH defaulted, and TERM defaulted when it runs on a
// terminal.
func processEnv(env []string, terminal bool) []string {
	// A later value of a key replaces an earlier one (the image's PATH by
	// -e PATH=...); systemd refuses environment blocks with repeated keys.
	last := make(map[string]int, len(env))
	for i, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		last[k] = i
	}
	out := make([]string, 0, len(env)+2)
	if _, ok := last["PATH"]; !ok {
		out = append(out, "PATH="+DefaultPath)
	}
	if _, ok := last["TERM"]; terminal && !ok {
		out = append(out, "TERM=xterm")
	}
	for i, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); last[k] == i {
			out = append(out, kv)
		}
	}
	return out
}

// isTerminal reports whether r is a terminal.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// lookupEnv returns the value of key in env (last one wins), or "".
func lookupEnv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
