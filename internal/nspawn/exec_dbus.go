package nspawn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/racker-postroj/racker/internal/rootfs"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

const (
	systemdDest    = "org.freedesktop.systemd1"
	systemdPath    = dbus.ObjectPath("/org/freedesktop/systemd1")
	managerIface   = "org.freedesktop.systemd1.Manager"
	unitIface      = "org.freedesktop.systemd1.Unit"
	serviceIface   = "org.freedesktop.systemd1.Service"
	propertiesIfc  = "org.freedesktop.DBus.Properties"
	jobRemoved     = managerIface + ".JobRemoved"
	propsChanged   = propertiesIfc + ".PropertiesChanged"
	busSocketPath  = "/run/dbus/system_bus_socket"
	unitNamePrefix = "racker-exec-"
	unitPathPrefix = dbus.ObjectPath("/org/freedesktop/systemd1/unit")
)

// wait(2) si_code values, as systemd reports them in ExecMainCode.
const (
	cldExited = 1
	cldKilled = 2
	cldDumped = 3
)

// exitExec is systemd's exit status for a service whose command could not
// be executed (systemd.exec(5), "Process Exit Codes").
const exitExec = 203

// bus is a connection to the system bus of a container.
type bus struct {
	conn *dbus.Conn
	// legacy is set once systemd rejected AddRef or CollectMode (systemd <
	// 236): units are then followed through signals alone.
	legacy atomic.Bool
}

// dialBus connects to the container's system bus through its socket,
// resolved inside the container, authenticates, and subscribes to
// systemd's job signals. idBase is the host ID of the container's root
// for a private user namespace (0 for the host's): the connection is made
// as that root (see dialAs), so that privileged calls are allowed.
func dialBus(ctx context.Context, root *rootfs.Root, idBase uint32) (*bus, error) {
	f, err := root.Open(busSocketPath, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%s is not a socket", busSocketPath)
	}
	// Connecting through the O_PATH descriptor keeps the host's view of
	// the path out of it.
	conn, err := dialAs("unix:path=/proc/self/fd/"+strconv.Itoa(int(f.Fd())), idBase)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))})
		if err == nil {
			err = conn.Hello()
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		conn.Close() // unblocks Auth or Hello
		<-done
		err = ctx.Err()
	}
	if err == nil && !conn.SupportsUnixFDs() {
		err = errors.New("the bus does not pass file descriptors")
	}
	if err == nil {
		err = conn.AddMatchSignalContext(ctx, dbus.WithMatchObjectPath(systemdPath),
			dbus.WithMatchInterface(managerIface), dbus.WithMatchMember("JobRemoved"))
	}
	if err == nil {
		// One match for the property changes of all units, instead of one
		// per command: saves two round trips per command.
		err = conn.AddMatchSignalContext(ctx, dbus.WithMatchPathNamespace(unitPathPrefix),
			dbus.WithMatchInterface(propertiesIfc), dbus.WithMatchMember("PropertiesChanged"))
	}
	if err == nil {
		// Without a subscriber systemd sends no unit signals.
		err = conn.Object(systemdDest, systemdPath).CallWithContext(ctx, managerIface+".Subscribe", 0).Err
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &bus{conn: conn}, nil
}

func (b *bus) close() { b.conn.Close() }

// execStart is one ExecStart= entry: (sasb) on the bus.
type execStart struct {
	Path             string
	Args             []string
	UncleanIsFailure bool
}

// unitStdio turns a Process's streams into unit properties, with pipes for
// streams that are not files.
type unitStdio struct {
	props  []sdbus.Property
	passed []*os.File // our ends of pipes handed to systemd: closed after the start call
	output sync.WaitGroup
	mu     sync.Mutex
	err    error
}

func (s *unitStdio) setup(p *Process) error {
	if p.TTY != nil {
		s.props = append(s.props,
			sdbus.Property{Name: "TTYPath", Value: dbus.MakeVariant(p.TTY.Name)},
			sdbus.Property{Name: "StandardInput", Value: dbus.MakeVariant("tty")},
			sdbus.Property{Name: "StandardOutput", Value: dbus.MakeVariant("tty")},
			sdbus.Property{Name: "StandardError", Value: dbus.MakeVariant("tty")},
		)
		return nil
	}
	if err := s.input(p.Stdin); err != nil {
		return err
	}
	if err := s.outputTo("StandardOutput", p.Stdout); err != nil {
		return err
	}
	return s.outputTo("StandardError", p.Stderr)
}

func (s *unitStdio) input(r io.Reader) error {
	const name = "StandardInput"
	switch r := r.(type) {
	case nil:
		s.props = append(s.props, sdbus.Property{Name: name, Value: dbus.MakeVariant("null")})
	case *os.File:
		s.fd(name, r)
	default:
		pr, pw, err := os.Pipe()
		if err != nil {
			return err
		}
		s.fd(name, pr)
		s.passed = append(s.passed, pr)
		// Not waited for: the reader may block long after the command
		// exited, as with exec.Cmd.
		go func() {
			io.Copy(pw, r)
			pw.Close()
		}()
	}
	return nil
}

func (s *unitStdio) outputTo(name string, w io.Writer) error {
	switch w := w.(type) {
	case nil:
		s.props = append(s.props, sdbus.Property{Name: name, Value: dbus.MakeVariant("null")})
	case *os.File:
		s.fd(name, w)
	default:
		pr, pw, err := os.Pipe()
		if err != nil {
			return err
		}
		s.fd(name, pw)
		s.passed = append(s.passed, pw)
		s.output.Add(1)
		go func() {
			defer s.output.Done()
			_, err := io.Copy(w, pr)
			pr.Close()
			if err != nil {
				s.mu.Lock()
				s.err = fmt.Errorf("copying %s: %w", strings.ToLower(name[len("Standard"):]), err)
				s.mu.Unlock()
			}
		}()
	}
	return nil
}

// fd hands f to the unit as NAMEFileDescriptor.
func (s *unitStdio) fd(name string, f *os.File) {
	s.props = append(s.props, sdbus.Property{Name: name + "FileDescriptor", Value: dbus.MakeVariant(dbus.UnixFD(f.Fd()))})
}

// closePassed closes our ends of the pipes systemd now holds copies of.
func (s *unitStdio) closePassed() {
	for _, f := range s.passed {
		f.Close()
	}
	s.passed = nil
}

// unitResult is what systemd told about a finished unit.
type unitResult struct {
	job        string // result of the start job: done, failed, ...
	active     string // ActiveState
	code       int32  // ExecMainCode
	status     int32  // ExecMainStatus
	haveStatus bool
}

func (r *unitResult) finished() bool {
	return r.job != "" && (r.active == "inactive" || r.active == "failed")
}

// exec runs p (resolved to file) as a transient service and waits for it.
func (b *bus) exec(ctx context.Context, log *slog.Logger, root *rootfs.Root, p *Process, acct account, file, dir string, env []string) (int, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	name := unitNamePrefix + hex.EncodeToString(rnd[:]) + ".service"
	unitPath := unitPathPrefix + "/" + dbus.ObjectPath(sdbus.PathBusEscape(name))
	begin := time.Now()

	var stdio unitStdio
	defer stdio.closePassed()
	if err := stdio.setup(p); err != nil {
		return -1, err
	}

	signals := make(chan *dbus.Signal, 256)
	b.conn.Signal(signals)
	defer b.conn.RemoveSignal(signals)

	props := []sdbus.Property{
		sdbus.PropDescription("racker exec: " + strings.Join(p.Args, " ")),
		{Name: "ExecStart", Value: dbus.MakeVariant([]execStart{{Path: file, Args: escapeDollars(p.Args)}})},
		{Name: "Environment", Value: dbus.MakeVariant(env)},
		{Name: "WorkingDirectory", Value: dbus.MakeVariant(dir)},
		// Always set, so that systemd sets USER, LOGNAME and SHELL.
		{Name: "User", Value: dbus.MakeVariant(acct.name)},
		// systemd ignores SIGPIPE in services by default; commands expect it.
		{Name: "IgnoreSIGPIPE", Value: dbus.MakeVariant(false)},
	}
	if acct.group != "" {
		props = append(props, sdbus.Property{Name: "Group", Value: dbus.MakeVariant(acct.group)})
	}
	props = append(props, stdio.props...)
	modern := []sdbus.Property{
		// The unit stays until we have read its exit status and dropped
		// the reference (or disconnected), then it is collected even when
		// it failed.
		{Name: "AddRef", Value: dbus.MakeVariant(true)},
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
	mgr := b.conn.Object(systemdDest, systemdPath)
	start := func(props []sdbus.Property) error {
		return mgr.CallWithContext(ctx, managerIface+".StartTransientUnit", 0,
			name, "fail", props, []sdbus.PropertyCollection{}).Err
	}
	var err error
	if !b.legacy.Load() {
		err = start(append(props, modern...))
		var derr dbus.Error
		if errors.As(err, &derr) && derr.Name == "org.freedesktop.DBus.Error.InvalidArgs" &&
			(strings.Contains(derr.Error(), "AddRef") || strings.Contains(derr.Error(), "CollectMode")) {
			log.Debug("systemd does not know AddRef or CollectMode", "err", err)
			b.legacy.Store(true)
			err = start(props)
		}
	} else {
		err = start(props)
	}
	stdio.closePassed()
	if err != nil {
		return -1, fmt.Errorf("starting %s: %w", name, err)
	}
	log.Debug("started unit", "unit", name, "command", p.Args)

	res := &unitResult{}
	if werr := b.wait(ctx, name, unitPath, signals, res); werr != nil {
		// ctx ended or the bus failed: kill what runs, and wait until
		// systemd has seen all of it go (the unit is inactive or failed
		// only when its last process has been reaped), then give up.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		err := mgr.CallWithContext(cctx, managerIface+".KillUnit", 0, name, "all", int32(unix.SIGKILL)).Err
		if err == nil {
			err = b.wait(cctx, name, unitPath, signals, res)
		}
		cancel()
		if err != nil {
			log.Warn("killing the unit of a cancelled command", "unit", name, "err", err)
		}
		b.release(name, unitPath)
		return -1, werr
	}
	if !res.haveStatus && !b.legacy.Load() {
		// The unit ended before the signals told its status: AddRef kept
		// it for us to ask.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		props, err := b.getAll(cctx, unitPath, serviceIface)
		cancel()
		if err != nil {
			b.release(name, unitPath)
			return -1, fmt.Errorf("reading the exit status of %s: %w", name, err)
		}
		res.code, _ = props["ExecMainCode"].Value().(int32)
		res.status, _ = props["ExecMainStatus"].Value().(int32)
		res.haveStatus = res.code != 0
	}
	b.release(name, unitPath)
	log.Debug("unit finished", "unit", name, "code", res.code, "status", res.status, "elapsed", time.Since(begin))

	// Output still in the pipes is the command's: copy all of it.
	copied := make(chan struct{})
	go func() {
		stdio.output.Wait()
		close(copied)
	}()
	select {
	case <-copied:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	if stdio.err != nil {
		return -1, stdio.err
	}
	return b.status(res, root, p, file)
}

// wait follows the unit's signals into res until it has finished. The exit
// status comes with the signals (systemd sends a unit's Service properties
// before its Unit properties); haveStatus is false if the end was learnt
// otherwise. After an error, res holds what was learnt, so a second wait
// can go on from there.
func (b *bus) wait(ctx context.Context, name string, unitPath dbus.ObjectPath, signals <-chan *dbus.Signal, res *unitResult) error {
	for !res.finished() {
		select {
		case sig, ok := <-signals:
			if !ok {
				return errors.New("lost the connection to the container's D-Bus")
			}
			switch {
			case sig.Name == jobRemoved && len(sig.Body) == 4:
				if unit, _ := sig.Body[2].(string); unit != name {
					continue
				}
				res.job, _ = sig.Body[3].(string)
				// The unit may have ended before the job did, with its
				// signals queued behind: ask.
				v, err := b.conn.Object(systemdDest, unitPath).GetProperty(unitIface + ".ActiveState")
				if err == nil {
					res.active, _ = v.Value().(string)
				} else if b.legacy.Load() {
					res.active = "inactive" // already collected
				}
				if res.finished() {
					res.haveStatus = false // the signals may lag behind
					if b.legacy.Load() {
						// No AddRef: the unit may be gone; its last
						// signals are on their way.
						b.drainStatus(ctx, unitPath, signals, res)
					}
				}
			case sig.Name == propsChanged && sig.Path == unitPath && len(sig.Body) >= 2:
				iface, _ := sig.Body[0].(string)
				changed, _ := sig.Body[1].(map[string]dbus.Variant)
				switch iface {
				case unitIface:
					if v, ok := changed["ActiveState"]; ok {
						res.active, _ = v.Value().(string)
					}
				case serviceIface:
					code, ok1 := changed["ExecMainCode"].Value().(int32)
					status, ok2 := changed["ExecMainStatus"].Value().(int32)
					if ok1 && ok2 && code != 0 {
						res.code, res.status, res.haveStatus = code, status, true
					}
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// drainStatus waits briefly for the exit status of unitPath in signals.
func (b *bus) drainStatus(ctx context.Context, unitPath dbus.ObjectPath, signals <-chan *dbus.Signal, res *unitResult) {
	timeout := time.NewTimer(time.Second)
	defer timeout.Stop()
	for !res.haveStatus {
		select {
		case sig, ok := <-signals:
			if !ok {
				return
			}
			if sig.Name == propsChanged && sig.Path == unitPath && len(sig.Body) >= 2 {
				if iface, _ := sig.Body[0].(string); iface == serviceIface {
					changed, _ := sig.Body[1].(map[string]dbus.Variant)
					code, ok1 := changed["ExecMainCode"].Value().(int32)
					status, ok2 := changed["ExecMainStatus"].Value().(int32)
					if ok1 && ok2 && code != 0 {
						res.code, res.status, res.haveStatus = code, status, true
					}
				}
			}
		case <-timeout.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (b *bus) getAll(ctx context.Context, unitPath dbus.ObjectPath, iface string) (map[string]dbus.Variant, error) {
	var props map[string]dbus.Variant
	err := b.conn.Object(systemdDest, unitPath).CallWithContext(ctx, propertiesIfc+".GetAll", 0, iface).Store(&props)
	return props, err
}

// release drops our reference to the unit (AddRef), so that systemd
// collects it, or with older systemd resets it if it failed. Nothing waits
// for the answer.
func (b *bus) release(name string, unitPath dbus.ObjectPath) {
	if b.legacy.Load() {
		b.conn.Object(systemdDest, systemdPath).Go(managerIface+".ResetFailedUnit", dbus.FlagNoReplyExpected, nil, name)
		return
	}
	b.conn.Object(systemdDest, unitPath).Go(unitIface+".Unref", dbus.FlagNoReplyExpected, nil)
}

// escapeDollars protects arguments from systemd's substitution of
// $VARIABLES in command lines: "$$" stands for "$".
func escapeDollars(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, "$", "$$")
	}
	return out
}

// status maps a finished unit to an exit status. Exec checked the command,
// user and working directory beforehand, so systemd's own exit codes for
// failing to set them up do not occur, except 203 (EXIT_EXEC) for a file
// the kernel cannot execute or one changed since; a command may also exit
// 203 itself, so that is only an ExecError if the file is now unusable.
func (b *bus) status(res *unitResult, root *rootfs.Root, p *Process, file string) (int, error) {
	if !res.haveStatus {
		return -1, fmt.Errorf("the command's unit ended without running it (job %s)", res.job)
	}
	switch res.code {
	case cldExited:
		if res.status == exitExec {
			if err := checkExecutable(root, file); err != nil {
				return err.Code, err.withCommand(p.Args[0])
			}
		}
		return int(res.status), nil
	case cldKilled, cldDumped:
		return 128 + int(res.status), nil
	}
	return -1, fmt.Errorf("the command's unit ended without running it (job %s, code %d)", res.job, res.code)
}
