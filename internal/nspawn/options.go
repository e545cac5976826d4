package nspawn

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultBootTimeout is how long Start waits for READY=1 when
// Options.BootTimeout is zero.
const DefaultBootTimeout = 60 * time.Second

// DefaultStopTimeout is how long Shutdown, Close and Stop give a container to
// power off before it is killed, when they are given no timeout.
const DefaultStopTimeout = 10 * time.Second

// DefaultPath is the PATH a command gets unless Process.Env sets one; it is
// also the PATH used to look the command up in the container (as docker does).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Bind is a bind mount from the host into the container.
type Bind struct {
	Host      string // absolute path on the host
	Container string // absolute path in the container; Host if empty
	ReadOnly  bool
}

// Registration says whether the container is registered with
// systemd-machined (so that machinectl shows it).
type Registration int

const (
	// RegisterAuto registers when the host runs systemd (/run/systemd/system
	// exists) and does not otherwise.
	RegisterAuto Registration = iota
	// RegisterYes always registers; nspawn fails without a system bus.
	RegisterYes
	// RegisterNo never registers (--register=no --keep-unit).
	RegisterNo
)

// Executor chooses how Machine.Exec enters a booted container.
type Executor int

const (
	// ExecAuto uses the container's D-Bus when its systemd can take file
	// descriptors (systemd >= 225 with a system bus socket), nsenter otherwise.
	ExecAuto Executor = iota
	// ExecDBus always starts transient units through the container's D-Bus.
	ExecDBus
	// ExecNsenter always enters the container's namespaces with nsenter(1).
	ExecNsenter
)

func (r Registration) String() string {
	switch r {
	case RegisterAuto:
		return "auto"
	case RegisterYes:
		return "yes"
	case RegisterNo:
		return "no"
	}
	return fmt.Sprintf("Registration(%d)", int(r))
}

func (e Executor) String() string {
	switch e {
	case ExecAuto:
		return "auto"
	case ExecDBus:
		return "dbus"
	case ExecNsenter:
		return "nsenter"
	}
	return fmt.Sprintf("Executor(%d)", int(e))
}

// Options describe a container to boot (Start) or a command to run without
// booting (Run).
type Options struct {
	// Name is the machine name: unique among running containers of StateDir,
	// 1-64 characters of [A-Za-z0-9.-], starting with a letter or digit.
	Name string
	// RootFS is the root filesystem directory. It is never written: the
	// container sees it read-only under a tmpfs overlay (--volatile=overlay).
	RootFS string
	// Image is the image reference the root filesystem came from; it is only
	// recorded for List.
	Image string
	// StateDir holds the per-container state below StateDir/containers/NAME
	// (required).
	StateDir string
	// Hostname is the container's hostname. If empty, the image's
	// /etc/hostname applies, or Name if it has none.
	Hostname string
	// Binds are bind mounts (--bind / --bind-ro).
	Binds []Bind
	// Writable lets the container write to RootFS (no --volatile=overlay):
	// for preparing an image, never for running one. With a private user
	// namespace RootFS is bound idmapped: files the container's root
	// writes are owned by the host's root, as without one.
	Writable bool
	// HostUserNS shares the host's user IDs with the container (docker's
	// --userns=host): its root is the host's root. By default a container
	// gets a private user namespace: its IDs 0-65535 are a range of host
	// IDs no other running container of StateDir holds (from 524288 up),
	// it sees RootFS through an idmapped mount, and binds are idmapped so
	// that host files keep their owners inside and what its root writes
	// there is owned by the host's root. Without idmapped mounts (kernel,
	// file system) Start and Run fail with ErrNoIDMap.
	HostUserNS bool
	// MaskUnits are units masked for this boot only (systemd.mask= on
	// init's command line); the root filesystem is not changed.
	MaskUnits []string
	// PrivateNetwork gives the container only a loopback interface; the
	// default shares the host's network.
	PrivateNetwork bool
	// InitEnv lists KEY=VALUE pairs for the environment of the container's
	// service manager, and so of every service and command it starts
	// (systemd.setenv= on init's command line).
	InitEnv []string
	// BootTimeout bounds the wait for READY=1 (default DefaultBootTimeout).
	BootTimeout time.Duration
	// Detach makes the container independent of this process: nspawn runs
	// in its own session and survives the caller's exit, and Machine.Close
	// only releases the caller's handles. Attached containers (the default)
	// are powered off by Close and killed if the caller dies.
	Detach bool
	// Register chooses machined registration (default RegisterAuto).
	Register Registration
	// Executor chooses how Exec enters the container (default ExecAuto).
	Executor Executor
	// Nspawn is the systemd-nspawn binary (default "systemd-nspawn" in PATH).
	Nspawn string
	// Logger receives debug records; nil discards them.
	Logger *slog.Logger

	// hostnameFile, when set, is bound over /etc/hostname so that the
	// container's static host name is Hostname, as docker does it.
	hostnameFile string

	// userns is set by Start and Run for a private user namespace.
	userns *userNS

	// hostHasSystemd overrides the /run/systemd/system check (tests).
	hostHasSystemd func() bool
}

// Process is a command to run in a container.
type Process struct {
	// Args is the command and its arguments (required). A command without a
	// slash is looked up in the container's PATH.
	Args []string
	// Env lists KEY=VALUE pairs added to the command's environment. PATH is
	// DefaultPath unless set here; HOME, USER, LOGNAME and SHELL come from the
	// container's user database.
	Env []string
	// Dir is the working directory in the container (default "/"). Exec
	// creates it if missing, as docker does; Run needs it to exist.
	Dir string
	// User is "name", "uid", "name:group" or "uid:gid" in the container
	// (default root), resolved in its /etc/passwd and /etc/group. Exec also
	// takes numeric ids without an entry, as docker does; since systemd
	// refuses those, such commands go through nsenter.
	User string
	// Stdin, Stdout and Stderr are the command's standard streams; nil means
	// /dev/null. An *os.File is handed to the command itself, anything else
	// is copied through a pipe. Ignored when TTY is set.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// TTY (Exec only), if set, becomes the command's controlling terminal
	// and standard streams. The caller copies data through its Master, and
	// must keep reading it while the command runs.
	TTY *PTY
	// Terminal (Run only) gives the command nspawn's interactive console:
	// Stdin and Stdout must then be the caller's terminal (*os.File), which
	// nspawn puts into raw mode while the command runs.
	Terminal bool
}

func (o *Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o *Options) nspawn() string {
	if o.Nspawn == "" {
		return "systemd-nspawn"
	}
	return o.Nspawn
}

func (o *Options) bootTimeout() time.Duration {
	if o.BootTimeout <= 0 {
		return DefaultBootTimeout
	}
	return o.BootTimeout
}

// validate checks the options shared by Start and Run.
func (o *Options) validate() error {
	if err := ValidName(o.Name); err != nil {
		return err
	}
	if o.RootFS == "" {
		return errors.New("no root filesystem given")
	}
	if !filepath.IsAbs(o.RootFS) {
		return fmt.Errorf("root filesystem %q is not an absolute path", o.RootFS)
	}
	for _, u := range o.MaskUnits {
		if !validUnitName(u) {
			return fmt.Errorf("masking %q: not a unit name", u)
		}
	}
	for _, kv := range o.InitEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsAny(kv, " \t\n") {
			return fmt.Errorf("init environment %q: want KEY=VALUE without spaces", kv)
		}
	}
	for _, b := range o.Binds {
		if !filepath.IsAbs(b.Host) {
			return fmt.Errorf("bind source %q is not an absolute path", b.Host)
		}
		if b.Container != "" && !filepath.IsAbs(b.Container) {
			return fmt.Errorf("bind target %q is not an absolute path", b.Container)
		}
		// nspawn separates source and target with a colon.
		if strings.Contains(b.Host, ":") || strings.Contains(b.Container, ":") {
			return fmt.Errorf("bind %s:%s: paths must not contain ':'", b.Host, b.Container)
		}
	}
	switch o.Register {
	case RegisterAuto, RegisterYes, RegisterNo:
	default:
		return fmt.Errorf("unexpected registration %v (valid: RegisterAuto, RegisterYes, RegisterNo)", o.Register)
	}
	switch o.Executor {
	case ExecAuto, ExecDBus, ExecNsenter:
	default:
		return fmt.Errorf("unexpected executor %v (valid: ExecAuto, ExecDBus, ExecNsenter)", o.Executor)
	}
	return nil
}

// ValidName reports whether name can name a container: 1-64 characters of
// letters, digits, '.' and '-', starting and ending with a letter or digit,
// without "..". These names are valid machine names and host names for
// systemd, and safe as a directory name.
func ValidName(name string) error {
	ok := len(name) >= 1 && len(name) <= 64 && !strings.Contains(name, "..")
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && ((c != '-' && c != '.') || i == 0 || i == len(name)-1) {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("invalid container name %q (valid: 1-64 of [A-Za-z0-9.-], starting and ending with a letter or digit)", name)
	}
	return nil
}

// writeHostname writes the host name file into the container's state
// directory dir, when a host name is set.
func (o *Options) writeHostname(dir string) error {
	if o.Hostname == "" {
		return nil
	}
	f := filepath.Join(dir, "hostname")
	if err := os.WriteFile(f, []byte(o.Hostname+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing host name: %w", err)
	}
	o.hostnameFile = f
	return nil
}
