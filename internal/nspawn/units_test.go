package nspawn

import (
	"errors"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

func TestUnitName(t *testing.T) {
	for in, want := range map[string]string{
		"webfs": "webfs.service", "webfs.service": "webfs.service", "dbus.socket": "dbus.socket",
		"getty@tty1": "getty@tty1.service", "multi-user.target": "multi-user.target", ".service": ".service.service",
		"foo.bar": "foo.bar.service",
	} {
		if got := UnitName(in); got != want {
			t.Errorf("UnitName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnitStateApply(t *testing.T) {
	v := dbus.MakeVariant
	var s UnitState
	s.apply(unitIface, map[string]dbus.Variant{
		"Id": v("probe.service"), "LoadState": v("loaded"), "ActiveState": v("inactive"), "SubState": v("dead"),
		"UnitFileState": v("static"), "Job": v([]any{uint32(0), dbus.ObjectPath("/")}),
		"ActiveEnterTimestampMonotonic": v(uint64(1500)),
		"ConditionResult":               v(false), "ConditionTimestampMonotonic": v(uint64(0)),
		"Conditions": v([][]any{{"ConditionPathExists", false, false, "/etc/probe.conf", int32(0)}}),
	})
	if s.ConditionFailed || s.FailedCondition != "" || s.ActiveEnter != 1500*time.Microsecond || s.UnitFileState != "static" {
		t.Errorf("before the conditions were checked: %+v", s)
	}
	// The result alone, signalled later, with the timestamp read before.
	s.apply(unitIface, map[string]dbus.Variant{"ConditionTimestampMonotonic": v(uint64(99))})
	s.apply(unitIface, map[string]dbus.Variant{
		"ConditionResult": v(false), "Job": v([]any{uint32(7), dbus.ObjectPath("/org/freedesktop/systemd1/job/7")}),
		"Conditions": v([][]any{{"ConditionPathExists", false, true, "/etc/probe.conf", int32(-1)}}),
	})
	if !s.ConditionFailed || s.FailedCondition != "ConditionPathExists=!/etc/probe.conf" || s.Job != 7 {
		t.Errorf("after a failed check: %+v", s)
	}
	s.apply(serviceIface, map[string]dbus.Variant{
		"Type": v("oneshot"), "Restart": v("no"), "Result": v("exit-code"), "NRestarts": v(uint32(2)),
		"ExecMainCode": v(int32(1)), "ExecMainStatus": v(int32(4)), "ExecMainExitTimestampMonotonic": v(uint64(2000)),
		"RemainAfterExit": v(true),
	})
	if s.Type != "oneshot" || s.Result != "exit-code" || s.NRestarts != 2 || s.MainStatus != 4 || s.MainExit != 2*time.Millisecond || !s.RemainAfterExit {
		t.Errorf("service properties: %+v", s)
	}
}

func TestDenied(t *testing.T) {
	err := denied(dbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied", Body: []any{"Access denied"}})
	if !errors.Is(err, ErrBusDenied) {
		t.Errorf("AccessDenied: %v does not wrap ErrBusDenied", err)
	}
	err = denied(dbus.Error{Name: "org.freedesktop.systemd1.UnitMasked", Body: []any{"Unit x.service is masked."}})
	if errors.Is(err, ErrBusDenied) {
		t.Errorf("UnitMasked: %v wraps ErrBusDenied", err)
	}
}
