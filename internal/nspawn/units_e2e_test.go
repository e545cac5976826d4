package nspawn

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWatchUnit follows units of a booted container over its D-Bus: one
// active since boot, a oneshot started here, one whose condition does not
// hold, and one that does not exist; without D-Bus (nsenter) there is
// nothing to watch.
func TestWatchUnit(t *testing.T) {
	m := startMachine(t, Options{Executor: ExecDBus})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	w, err := m.WatchUnit(ctx, "systemd-journald")
	if err != nil {
		t.Fatal(err)
	}
	s := w.State()
	if s.ID != "systemd-journald.service" || s.LoadState != "loaded" || s.ActiveState != "active" ||
		s.Type != "notify" || s.UnitFileState != "static" || s.ActiveEnter == 0 {
		t.Errorf("journald: %+v", s)
	}
	if enabled, note, err := w.Enable(ctx); enabled || note != "" || err != nil {
		t.Errorf("enabling a static unit: %v %q %v, want nothing done", enabled, note, err)
	}
	w.Close()

	// Units written into /run/systemd/system now, loaded on demand: a
	// oneshot that has run and is inactive must still show its exit
	// (WatchUnit holds a reference, so systemd does not unload it), and a
	// unit skipped for its condition must say which.
	script := `printf '[Service]\nType=oneshot\nExecStart=/bin/sh -c "exit 0"\n' > /run/systemd/system/watch-once.service
printf '[Unit]\nConditionPathExists=/etc/watch-none.conf\n[Service]\nExecStart=/bin/sleep infinity\n' > /run/systemd/system/watch-skipped.service`
	if code, err := m.Exec(ctx, Process{Args: []string{"/bin/sh", "-c", script}}); code != 0 || err != nil {
		t.Fatalf("writing units: %d %v", code, err)
	}
	run := func(name string) (UnitState, string) {
		t.Helper()
		w, err := m.WatchUnit(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for w.JobResult() == "" && time.Now().Before(deadline) {
			if _, err := w.Wait(ctx, deadline); err != nil {
				t.Fatal(err)
			}
		}
		return w.State(), w.JobResult()
	}
	if s, job := run("watch-once"); job != "done" || s.ActiveState != "inactive" || s.Result != "success" ||
		s.MainExit == 0 || s.MainCode != 1 || s.MainStatus != 0 || s.Type != "oneshot" {
		t.Errorf("oneshot after its run: job %q, %+v", job, s)
	}
	if s, job := run("watch-skipped"); job != "done" || s.ActiveState != "inactive" || !s.ConditionFailed ||
		s.FailedCondition != "ConditionPathExists=/etc/watch-none.conf" {
		t.Errorf("skipped unit: job %q, %+v", job, s)
	}

	w2, err := m.WatchUnit(ctx, "nonesuch")
	if err != nil {
		t.Fatal(err)
	}
	if s := w2.State(); s.LoadState != "not-found" {
		t.Errorf("nonesuch: %+v", s)
	}
	w2.Close()

	n := startMachine(t, Options{Executor: ExecNsenter})
	if _, err := n.WatchUnit(ctx, "systemd-journald"); !errors.Is(err, ErrNoBus) {
		t.Errorf("WatchUnit without D-Bus: %v, want ErrNoBus", err)
	}
}
