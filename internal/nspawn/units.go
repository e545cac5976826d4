package nspawn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// ErrNoBus is returned by WatchUnit for a container that Exec enters with
// nsenter: there is no D-Bus connection to ask its systemd over.
var ErrNoBus = errors.New("no D-Bus connection to the container's systemd")

// ErrBusDenied is wrapped by UnitWatch's errors when the container's
// systemd refused a call because the caller is not privileged on its bus
// (as host root is not, in a container with its own user namespace).
var ErrBusDenied = errors.New("the container's systemd refused the call")

// denied wraps err in ErrBusDenied if systemd refused for want of
// privileges.
func denied(err error) error {
	var derr dbus.Error
	if errors.As(err, &derr) && (derr.Name == "org.freedesktop.DBus.Error.AccessDenied" ||
		derr.Name == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired") {
		return fmt.Errorf("%w: %v", ErrBusDenied, err)
	}
	return err
}

// unitSuffixes are the unit types systemd knows; a name without one of
// them is a service, as systemctl takes it.
var unitSuffixes = []string{".service", ".socket", ".target", ".device", ".mount", ".automount",
	".swap", ".timer", ".path", ".slice", ".scope"}

// UnitName returns name as systemd names the unit: "webfs" is
// "webfs.service".
func UnitName(name string) string {
	for _, s := range unitSuffixes {
		if strings.HasSuffix(name, s) && len(name) > len(s) {
			return name
		}
	}
	return name + ".service"
}

// UnitState is what the container's systemd says about a unit, from its
// org.freedesktop.systemd1.Unit and, for services, .Service properties.
type UnitState struct {
	ID            string
	LoadState     string // loaded, not-found, masked, bad-setting, error
	LoadError     string // systemd's message when the unit did not load
	ActiveState   string // active, reloading, inactive, failed, activating, deactivating
	SubState      string // running, exited, start-pre, auto-restart, dead, ...
	UnitFileState string // enabled, disabled, static, generated, masked, ...
	Job           uint32 // the id of the unit's pending job, 0 if none
	// ConditionFailed and AssertFailed are set once a Condition...= or an
	// Assert...= of the unit was checked and did not hold; FailedCondition
	// names the first one, as in the unit file ("ConditionPathExists=/x").
	ConditionFailed bool
	AssertFailed    bool
	FailedCondition string
	// What ConditionFailed and AssertFailed are made of: a result counts
	// only once checked (a timestamp), systemd says false before.
	conditionResult, assertResult   bool
	conditionChecked, assertChecked time.Duration
	// ActiveEnter is when the unit last became active, on CLOCK_MONOTONIC
	// (which the container shares with the host); 0 if never.
	ActiveEnter time.Duration

	// The rest is for services only.
	Type            string // simple, exec, forking, oneshot, dbus, notify, idle
	Restart         string // Restart=: no, always, on-failure, ...
	Result          string // success, exit-code, signal, timeout, start-limit-hit, ...
	RemainAfterExit bool
	NRestarts       int
	MainCode        int32         // ExecMainCode: 1 exited, 2 killed, 3 dumped
	MainStatus      int32         // ExecMainStatus
	MainExit        time.Duration // ExecMainExitTimestampMonotonic; 0 if running or never ran
}

// UnitWatch follows one unit of a container through the container's D-Bus
// (the Machine's own connection): its property changes as systemd signals
// them, and the end of the start job Start queued. A UnitWatch is for one
// goroutine.
type UnitWatch struct {
	b       *bus
	path    dbus.ObjectPath
	state   UnitState
	signals chan *dbus.Signal
	// job is the start job queued by Start; jobResult is its result once
	// systemd removed it (done, failed, dependency, timeout, canceled, ...).
	job       dbus.ObjectPath
	jobResult string
	// removed are the results of jobs of this unit that ended while the
	// start call was on its way, by job path.
	removed map[dbus.ObjectPath]string
	ref     bool // the unit was referenced (Ref), to be unreferenced on Close
}

// WatchUnit loads the unit name (UnitName) in the container's systemd and
// follows it until Close. It returns ErrNoBus for a container without a
// D-Bus connection (Options.Executor).
func (m *Machine) WatchUnit(ctx context.Context, name string) (*UnitWatch, error) {
	if err := m.usable(); err != nil {
		return nil, err
	}
	if m.bus == nil {
		return nil, ErrNoBus
	}
	w := &UnitWatch{b: m.bus, signals: make(chan *dbus.Signal, 1024), removed: map[dbus.ObjectPath]string{}}
	w.state.ID = UnitName(name)
	// Subscribed before anything is asked, so that no change is missed.
	w.b.conn.Signal(w.signals)
	err := w.b.conn.Object(systemdDest, systemdPath).CallWithContext(ctx, managerIface+".LoadUnit", 0, w.state.ID).Store(&w.path)
	if err == nil && !w.b.legacy.Load() {
		// A reference keeps systemd from unloading the unit once it is
		// inactive (a oneshot that ran, a unit skipped for a condition)
		// before its properties are read: unloaded, it would read as
		// never run. systemd < 236 has no references.
		if rerr := w.b.conn.Object(systemdDest, w.path).CallWithContext(ctx, unitIface+".Ref", 0).Err; rerr == nil {
			w.ref = true
		}
	}
	if err == nil {
		_, err = w.Refresh(ctx)
	}
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("loading unit %s: %w", w.state.ID, err)
	}
	return w, nil
}

// Close stops following the unit.
func (w *UnitWatch) Close() {
	w.b.conn.RemoveSignal(w.signals)
	if w.ref {
		w.b.conn.Object(systemdDest, w.path).Go(unitIface+".Unref", dbus.FlagNoReplyExpected, nil)
	}
}

// State returns the unit's state as last read or signalled.
func (w *UnitWatch) State() UnitState { return w.state }

// JobResult is the result of the start job (done, failed, dependency,
// timeout, canceled, ...), "" before Start or while the job is pending.
func (w *UnitWatch) JobResult() string { return w.jobResult }

// Refresh reads all of the unit's properties.
func (w *UnitWatch) Refresh(ctx context.Context) (UnitState, error) {
	obj := w.b.conn.Object(systemdDest, w.path)
	var props map[string]dbus.Variant
	if err := obj.CallWithContext(ctx, propertiesIfc+".GetAll", 0, unitIface).Store(&props); err != nil {
		return w.state, err
	}
	w.state.apply(unitIface, props)
	if strings.HasSuffix(w.state.ID, ".service") && w.state.LoadState == "loaded" {
		props = nil
		if err := obj.CallWithContext(ctx, propertiesIfc+".GetAll", 0, serviceIface).Store(&props); err != nil {
			return w.state, err
		}
		w.state.apply(serviceIface, props)
	}
	return w.state, nil
}

// Enable enables the unit the way `systemctl enable` does, without the
// daemon reload (the probe starts the unit itself), unless there is
// nothing to enable: units that are static, generated (SysV init scripts),
// transient, masked, not found, or enabled already. It returns whether it
// enabled the unit, and a note when the unit file has no [Install]
// section. A unit file that cannot be enabled is an error from systemd.
func (w *UnitWatch) Enable(ctx context.Context) (enabled bool, note string, err error) {
	switch w.state.UnitFileState {
	case "disabled", "indirect":
	default:
		return false, "", nil
	}
	var carries bool
	var changes [][]any
	call := w.b.conn.Object(systemdDest, systemdPath).CallWithContext(ctx, managerIface+".EnableUnitFiles", 0,
		[]string{w.state.ID}, false, false)
	if err := call.Store(&carries, &changes); err != nil {
		return false, "", fmt.Errorf("enabling %s: %w", w.state.ID, denied(err))
	}
	if !carries {
		note = "the unit file has no [Install] section: not enabled"
	}
	return len(changes) > 0, note, nil
}

// Start queues a start job for the unit (mode "replace", as systemctl
// start); JobResult tells its result once Wait has seen it end.
func (w *UnitWatch) Start(ctx context.Context) error {
	var job dbus.ObjectPath
	err := w.b.conn.Object(systemdDest, systemdPath).CallWithContext(ctx, managerIface+".StartUnit", 0,
		w.state.ID, "replace").Store(&job)
	if err != nil {
		return fmt.Errorf("starting %s: %w", w.state.ID, denied(err))
	}
	w.job = job
	ended := w.drain()
	if r, ok := w.removed[job]; ok {
		w.jobResult, ended = r, true
	}
	if ended {
		// The job ended before Wait could see it (a unit skipped for its
		// condition ends at once): read what its signals do not carry.
		if _, err := w.Refresh(ctx); err != nil {
			return fmt.Errorf("reading unit %s: %w", w.state.ID, err)
		}
	}
	return nil
}

// Wait blocks until systemd signals a change of the unit or the end of the
// start job, until the deadline (none if zero) or until ctx ends; changed
// says whether anything arrived. After the start job ended the unit's
// properties are read again: its last changes may still be on their way.
func (w *UnitWatch) Wait(ctx context.Context, deadline time.Time) (changed bool, err error) {
	var timer <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timer = t.C
	}
	select {
	case sig, ok := <-w.signals:
		if !ok {
			return false, errors.New("lost the connection to the container's D-Bus")
		}
		jobEnded := w.handle(sig)
		jobEnded = w.drain() || jobEnded
		if jobEnded {
			if _, err := w.Refresh(ctx); err != nil {
				return true, fmt.Errorf("reading unit %s: %w", w.state.ID, err)
			}
		}
		return true, nil
	case <-timer:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// drain handles the signals already queued; it reports whether the start
// job ended among them.
func (w *UnitWatch) drain() (jobEnded bool) {
	for {
		select {
		case sig, ok := <-w.signals:
			if !ok {
				return jobEnded
			}
			jobEnded = w.handle(sig) || jobEnded
		default:
			return jobEnded
		}
	}
}

// handle applies one signal; it reports whether it was the end of the
// start job.
func (w *UnitWatch) handle(sig *dbus.Signal) (jobEnded bool) {
	switch {
	case sig.Name == jobRemoved && len(sig.Body) == 4:
		if unit, _ := sig.Body[2].(string); unit != w.state.ID {
			return false
		}
		job, _ := sig.Body[1].(dbus.ObjectPath)
		result, _ := sig.Body[3].(string)
		if w.job == "" {
			w.removed[job] = result
			return false
		}
		if job == w.job && w.jobResult == "" {
			w.jobResult = result
			return true
		}
	case sig.Name == propsChanged && sig.Path == w.path && len(sig.Body) >= 2:
		iface, _ := sig.Body[0].(string)
		changed, _ := sig.Body[1].(map[string]dbus.Variant)
		w.state.apply(iface, changed)
	}
	return false
}

// apply sets the properties of iface found in props.
func (s *UnitState) apply(iface string, props map[string]dbus.Variant) {
	str := func(k string, dst *string) {
		if v, ok := props[k].Value().(string); ok {
			*dst = v
		}
	}
	mono := func(k string, dst *time.Duration) {
		if v, ok := props[k].Value().(uint64); ok {
			*dst = time.Duration(v) * time.Microsecond
		}
	}
	switch iface {
	case unitIface:
		str("Id", &s.ID)
		str("LoadState", &s.LoadState)
		str("ActiveState", &s.ActiveState)
		str("SubState", &s.SubState)
		str("UnitFileState", &s.UnitFileState)
		mono("ActiveEnterTimestampMonotonic", &s.ActiveEnter)
		if v, ok := props["LoadError"].Value().([]any); ok && len(v) == 2 {
			s.LoadError, _ = v[1].(string)
		}
		if v, ok := props["Job"].Value().([]any); ok && len(v) == 2 {
			s.Job, _ = v[0].(uint32)
		}
		mono("ConditionTimestampMonotonic", &s.conditionChecked)
		mono("AssertTimestampMonotonic", &s.assertChecked)
		if v, ok := props["ConditionResult"].Value().(bool); ok {
			s.conditionResult = v
		}
		if v, ok := props["AssertResult"].Value().(bool); ok {
			s.assertResult = v
		}
		s.ConditionFailed = !s.conditionResult && s.conditionChecked > 0
		s.AssertFailed = !s.assertResult && s.assertChecked > 0
		if v, ok := props["Conditions"]; ok {
			s.FailedCondition = failedCondition(v)
		}
		if s.FailedCondition == "" {
			if v, ok := props["Asserts"]; ok {
				s.FailedCondition = failedCondition(v)
			}
		}
	case serviceIface:
		str("Type", &s.Type)
		str("Restart", &s.Restart)
		str("Result", &s.Result)
		if v, ok := props["RemainAfterExit"].Value().(bool); ok {
			s.RemainAfterExit = v
		}
		if v, ok := props["NRestarts"].Value().(uint32); ok {
			s.NRestarts = int(v)
		}
		if v, ok := props["ExecMainCode"].Value().(int32); ok {
			s.MainCode = v
		}
		if v, ok := props["ExecMainStatus"].Value().(int32); ok {
			s.MainStatus = v
		}
		mono("ExecMainExitTimestampMonotonic", &s.MainExit)
	}
}

// failedCondition returns the first condition of a Conditions or Asserts
// property, a(sbbsi): type, trigger, negate, parameter, state, whose state
// says it failed, written as in a unit file; "" if none.
func failedCondition(v dbus.Variant) string {
	list, _ := v.Value().([][]any)
	for _, c := range list {
		if len(c) != 5 {
			continue
		}
		typ, _ := c[0].(string)
		negate, _ := c[2].(bool)
		param, _ := c[3].(string)
		state, _ := c[4].(int32)
		if state < 0 {
			if negate {
				param = "!" + param
			}
			return typ + "=" + param
		}
	}
	return ""
}
