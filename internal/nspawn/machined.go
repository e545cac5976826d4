package nspawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// What racker asks of the host's systemd and systemd-machined, on hosts
// that run them (see Options.registers).

const (
	machinedDest      = "org.freedesktop.machine1"
	machinedPath      = dbus.ObjectPath("/org/freedesktop/machine1")
	machinedManager   = machinedDest + ".Manager"
	machinedMachine   = machinedDest + ".Machine"
	errNoSuchMachine  = machinedDest + ".NoSuchMachine"
	containerUnitPref = "racker-"
)

// registeredMachine is what machined knows of a machine.
type registeredMachine struct {
	Name    string
	Class   string
	Service string
	Unit    string
	Leader  int
}

// lookupMachine asks machined for the machine name; nil if it has none.
// Asking starts machined if it is not running (it is bus-activated), as
// nspawn's registration would.
func lookupMachine(ctx context.Context, name string) (*registeredMachine, error) {
	conn, err := dbus.ConnectSystemBus(dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("connecting to the system bus: %w", err)
	}
	defer conn.Close()
	var path dbus.ObjectPath
	err = conn.Object(machinedDest, machinedPath).CallWithContext(ctx, machinedManager+".GetMachine", 0, name).Store(&path)
	var derr dbus.Error
	if errors.As(err, &derr) && derr.Name == errNoSuchMachine {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("asking systemd-machined for %s: %w", name, err)
	}
	var props map[string]dbus.Variant
	err = conn.Object(machinedDest, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, machinedMachine).Store(&props)
	if errors.As(err, &derr) && derr.Name == "org.freedesktop.DBus.Error.UnknownObject" {
		return nil, nil // gone in between
	}
	if err != nil {
		return nil, fmt.Errorf("asking systemd-machined for %s: %w", name, err)
	}
	m := &registeredMachine{Name: name}
	props["Class"].Store(&m.Class)
	props["Service"].Store(&m.Service)
	props["Unit"].Store(&m.Unit)
	var leader uint32
	props["Leader"].Store(&leader)
	m.Leader = int(leader)
	return m, nil
}

// machinedGrace is how long a registration whose processes are gone may
// take to disappear from machined.
const machinedGrace = 3 * time.Second

// checkMachineName fails with ErrNameInUse if machined has a machine called
// name, which nspawn could not register again: a container someone else
// started, or one of ours whose nspawn was killed. A registration whose
// leader has just exited is waited for.
func checkMachineName(ctx context.Context, name string) error {
	deadline := time.Now().Add(machinedGrace)
	for {
		m, err := lookupMachine(ctx, name)
		if err != nil || m == nil {
			return err
		}
		if alive(m.Leader, 0) || time.Now().After(deadline) {
			return fmt.Errorf("%w: systemd-machined has a machine %q (class %s, service %s, unit %s, leader pid %d)",
				ErrNameInUse, name, m.Class, m.Service, m.Unit, m.Leader)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// containerUnit is the name of the service a detached container runs as.
func containerUnit(name string) string { return containerUnitPref + name + ".service" }

// startUnit runs nspawn (args, args[0] the binary) as a transient service
// of the host's systemd, in machine.slice with its cgroup delegated, as
// systemd-nspawn@.service runs: the container is then nobody's child and
// outlives whatever job started it, which a process of ours would not (a
// CI step's or session's cgroup is killed when it ends). env is the
// service's environment; console receives nspawn's output. It returns
// nspawn's pid once systemd has started it.
func startUnit(ctx context.Context, unit string, args, env []string, console *os.File) (int, error) {
	bin, err := exec.LookPath(args[0])
	if err != nil {
		return 0, fmt.Errorf("starting systemd-nspawn: %w", err)
	}
	conn, err := sdbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("connecting to the host's systemd: %w", err)
	}
	defer conn.Close()
	props := []sdbus.Property{
		sdbus.PropDescription("racker container " + strings.TrimSuffix(strings.TrimPrefix(unit, containerUnitPref), ".service")),
		sdbus.PropExecStart(append([]string{bin}, args[1:]...), true),
		sdbus.PropSlice("machine.slice"),
		{Name: "Delegate", Value: dbus.MakeVariant(true)},
		// SIGTERM to nspawn alone, which then SIGKILLs the container
		// (--kill-signal=SIGKILL); the rest of the cgroup after that.
		{Name: "KillMode", Value: dbus.MakeVariant("mixed")},
		// A unit that failed is not kept around to block the next
		// container of the name.
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
		{Name: "Environment", Value: dbus.MakeVariant(env)},
		{Name: "StandardInput", Value: dbus.MakeVariant("null")},
		{Name: "StandardOutputFileDescriptor", Value: dbus.MakeVariant(dbus.UnixFD(console.Fd()))},
		{Name: "StandardErrorFileDescriptor", Value: dbus.MakeVariant(dbus.UnixFD(console.Fd()))},
	}
	done := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, unit, "fail", props, done); err != nil {
		return 0, fmt.Errorf("starting unit %s: %w", unit, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return 0, fmt.Errorf("starting unit %s: job %s", unit, res)
		}
	case <-ctx.Done():
		stopUnit(conn, unit)
		return 0, ctx.Err()
	}
	p, err := conn.GetServicePropertyContext(ctx, unit, "MainPID")
	var pid uint32
	if err == nil {
		err = p.Value.Store(&pid)
	}
	if err != nil {
		stopUnit(conn, unit)
		return 0, fmt.Errorf("unit %s: reading MainPID: %w", unit, err)
	}
	if pid == 0 {
		return 0, fmt.Errorf("unit %s: systemd-nspawn exited at once", unit)
	}
	return int(pid), nil
}

// stopUnit stops unit without waiting; used when a start is abandoned.
func stopUnit(conn *sdbus.Conn, unit string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.StopUnitContext(ctx, unit, "replace", nil)
}

// unitEnv is the part of a process environment that nspawn's unit needs:
// the notify socket and nspawn's own settings (SYSTEMD_*). A service gets
// no other variables of the caller.
func unitEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "SYSTEMD_") {
			out = append(out, kv)
		}
	}
	return out
}

// ownUnit reports whether nspawn runs as a service of its own (startUnit):
// for detached containers on hosts that run systemd.
func (o *Options) ownUnit() bool { return o.Detach && o.registers() }

// unitGoneWait bounds how long a stop waits for systemd to remove a
// container unit's cgroup after nspawn has exited.
const unitGoneWait = 5 * time.Second

// waitUnitGone waits until unit's cgroup under machine.slice is gone, in
// whichever hierarchy the host mounts, or max has passed.
func waitUnitGone(ctx context.Context, unit string, max time.Duration) {
	dirs := []string{
		filepath.Join("/sys/fs/cgroup/machine.slice", unit),
		filepath.Join("/sys/fs/cgroup/unified/machine.slice", unit),
		filepath.Join("/sys/fs/cgroup/systemd/machine.slice", unit),
	}
	deadline := time.Now().Add(max)
	for {
		left := false
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				left = true
			}
		}
		if !left || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
