package probe

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/nspawn"
)

func show(active, sub, result string, extra ...string) string {
	s := fmt.Sprintf("LoadState=loaded\nActiveState=%s\nSubState=%s\nResult=%s\nNRestarts=0\nExecMainStatus=0\nExecMainExitTimestampMonotonic=0\n", active, sub, result)
	for _, e := range extra {
		s += e + "\n"
	}
	return s
}

func TestParseShowAndEvaluate(t *testing.T) {
	for _, tt := range []struct {
		name   string
		out    string
		want   Verdict
		reason string
		str    string
	}{
		{"running", show("active", "running", "success"), Ready, "", "active (running)"},
		{"oneshot remaining", show("active", "exited", "success"), Ready, "", "active (exited)"},
		{"reloading", show("reloading", "reload", "success"), Ready, "", "reloading (reload)"},
		{"start-pre", show("activating", "start-pre", "success"), Waiting, "", "activating (start-pre)"},
		{"auto-restart", show("activating", "auto-restart", "exit-code", "NRestarts=2"), Waiting, "", "activating (auto-restart)"},
		{"queued, job unknown", show("inactive", "dead", "success"), Waiting, "", "inactive (dead)"},
		{"queued", show("inactive", "dead", "success", "Job=238"), Waiting, "", "inactive (dead)"},
		{"inactive, no job", show("inactive", "dead", "success", "Job="), Broken,
			"inactive with no start job pending: it stopped again right away, or nothing started it", "inactive (dead)"},
		{"condition failed", show("inactive", "dead", "success", "Job=", "ConditionResult=no"), Broken,
			"systemd skipped starting it: a Condition or Assert of the unit does not hold", "inactive (dead)"},
		{"failed", show("failed", "failed", "exit-code", "ExecMainStatus=3", "ExecMainExitTimestampMonotonic=123"), Broken,
			"the unit failed: result exit-code, main process exited with status 3", "failed (failed)"},
		{"failed after restarts", show("failed", "failed", "start-limit-hit", "NRestarts=5"), Broken,
			"the unit failed: result start-limit-hit, restarted 5 times", "failed (failed)"},
		{"inactive after failure", show("inactive", "dead", "exit-code"), Broken, "the unit failed: result exit-code", "inactive (dead)"},
		{"exited oneshot", show("inactive", "dead", "success", "ExecMainExitTimestampMonotonic=99"), Broken,
			"its main process exited (status 0) and the unit is inactive", "inactive (dead)"},
		{"not found", "LoadState=not-found\nActiveState=inactive\nSubState=dead\nResult=success\n", Broken, "no such unit", "inactive (dead)"},
		{"masked", "LoadState=masked\nActiveState=inactive\nSubState=dead\n", Broken, "the unit is masked", "inactive (dead)"},
		{"bad unit file", "LoadState=bad-setting\nActiveState=inactive\n", Broken, "the unit file is invalid (load state bad-setting)", "inactive"},
	} {
		s := ParseShow(tt.out)
		v, reason := s.Evaluate()
		if v != tt.want || reason != tt.reason || s.String() != tt.str {
			t.Errorf("%s: %v %q %q, want %v %q %q", tt.name, v, reason, s.String(), tt.want, tt.reason, tt.str)
		}
	}
}

// fakeUnits answers systemctl and journalctl like a container whose units
// go through scripted states, one per `systemctl show`, the last repeated.
type fakeUnits struct {
	mu       sync.Mutex
	states   map[string][]string
	shown    map[string]int
	enabled  []string
	started  []string
	commands [][]string
	// exec, when set, answers commands not handled here.
	exec func(p nspawn.Process) int
}

func (f *fakeUnits) Exec(ctx context.Context, p nspawn.Process) (int, error) {
	f.mu.Lock()
	f.commands = append(f.commands, p.Args)
	f.mu.Unlock()
	out := func(s string) {
		if p.Stdout != nil {
			io.WriteString(p.Stdout, s)
		}
	}
	unit := p.Args[len(p.Args)-1]
	switch {
	case len(p.Args) > 2 && p.Args[0] == "systemctl" && p.Args[1] == "show":
		f.mu.Lock()
		seq := f.states[unit]
		i := min(f.shown[unit], len(seq)-1)
		f.shown[unit]++
		f.mu.Unlock()
		if len(seq) == 0 {
			out("LoadState=not-found\nActiveState=inactive\nSubState=dead\nResult=success\n")
			return 0, nil
		}
		out(seq[i])
		return 0, nil
	case p.Args[0] == "systemctl" && p.Args[1] == "enable":
		f.mu.Lock()
		f.enabled = append(f.enabled, unit)
		_, known := f.states[unit]
		f.mu.Unlock()
		if !known {
			out("Failed to enable unit: Unit file " + unit + ".service does not exist.\n")
			return 1, nil
		}
		return 0, nil
	case p.Args[0] == "systemctl" && p.Args[1] == "--no-block" && p.Args[2] == "start":
		f.mu.Lock()
		f.started = append(f.started, unit)
		_, known := f.states[unit]
		f.mu.Unlock()
		if !known {
			out("Failed to start " + unit + ".service: Unit " + unit + ".service not found.\n")
			return 5, nil
		}
		return 0, nil
	case p.Args[0] == "systemctl" && p.Args[1] == "status":
		out("× " + unit + ".service - Test unit\n     Active: failed (Result: exit-code)\n")
		return 3, nil
	case p.Args[0] == "journalctl":
		out("probe-fail: config missing\n" + unit + ".service: Main process exited, code=exited, status=3/NOTIMPLEMENTED\n")
		return 0, nil
	}
	if f.exec != nil {
		return f.exec(p), nil
	}
	return 0, nil
}

func (f *fakeUnits) Stop(ctx context.Context, how container.Teardown, timeout time.Duration) error {
	return nil
}

// fakeStarter starts fake containers.
type fakeStarter func(ctx context.Context, opts container.StartOptions) (Machine, error)

func (f fakeStarter) Start(ctx context.Context, opts container.StartOptions) (Machine, error) {
	return f(ctx, opts)
}

func newFakeUnits(states map[string][]string) *fakeUnits {
	return &fakeUnits{states: states, shown: map[string]int{}}
}

func TestWaitUnit(t *testing.T) {
	fast := UnitWait{Timeout: 300 * time.Millisecond, Settle: 30 * time.Millisecond, Interval: 10 * time.Millisecond}
	for _, tt := range []struct {
		name    string
		states  []string
		ready   bool
		timeout bool
		reason  string
		seen    string
	}{
		{"active at once", []string{show("active", "running", "success")}, true, false, "", "active (running)"},
		{"slow start", []string{show("inactive", "dead", "success"), show("activating", "start-pre", "success"),
			show("activating", "start-pre", "success"), show("active", "running", "success")}, true, false, "",
			"inactive (dead), activating (start-pre), active (running)"},
		{"dies right after starting", []string{show("active", "running", "success"),
			show("failed", "failed", "exit-code", "ExecMainStatus=3", "ExecMainExitTimestampMonotonic=5")}, false, false,
			"the unit failed: result exit-code, main process exited with status 3", "active (running), failed (failed)"},
		{"never starts", []string{show("activating", "start", "success")}, false, true,
			"not active within 300ms (state: activating (start))", "activating (start)"},
		{"crash loop", []string{show("activating", "auto-restart", "exit-code", "NRestarts=4")}, false, true,
			"not active within 300ms (state: activating (auto-restart)), restarted 4 times", "activating (auto-restart)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeUnits(map[string][]string{"svc": tt.states})
			o, err := WaitUnit(context.Background(), f, "svc", fast)
			if err != nil {
				t.Fatal(err)
			}
			if o.Ready != tt.ready || o.Timeout != tt.timeout || o.Reason != tt.reason || strings.Join(o.Seen, ", ") != tt.seen {
				t.Errorf("got ready=%v timeout=%v reason=%q seen=%q\nwant ready=%v timeout=%v reason=%q seen=%q",
					o.Ready, o.Timeout, o.Reason, strings.Join(o.Seen, ", "), tt.ready, tt.timeout, tt.reason, tt.seen)
			}
		})
	}
}

func TestWaitUnitSettles(t *testing.T) {
	// Active for less than Settle, then failed: not ready.
	states := []string{show("active", "running", "success"), show("active", "running", "success"),
		show("failed", "failed", "exit-code")}
	f := newFakeUnits(map[string][]string{"svc": states})
	o, err := WaitUnit(context.Background(), f, "svc", UnitWait{Timeout: time.Second, Settle: time.Second, Interval: 5 * time.Millisecond})
	if err != nil || o.Ready {
		t.Fatalf("ready=%v err=%v, want a unit that failed within the settle time", o.Ready, err)
	}
}

func TestWaitUnitCancelled(t *testing.T) {
	f := newFakeUnits(map[string][]string{"svc": {show("activating", "start", "success")}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := WaitUnit(ctx, f, "svc", UnitWait{Timeout: time.Minute, Interval: 10 * time.Millisecond})
	if err == nil {
		t.Fatal("WaitUnit returned no error after ctx ended")
	}
}

func TestWaitUnitCountsTimeAlreadyActive(t *testing.T) {
	up, ok := monotonicNow()
	if !ok {
		t.Skip("no CLOCK_MONOTONIC")
	}
	since := func(ago time.Duration) string {
		return "ActiveEnterTimestampMonotonic=" + strconv.FormatInt(int64((up-ago)/time.Microsecond), 10)
	}
	w := UnitWait{Timeout: 5 * time.Second, Settle: time.Second, Interval: 10 * time.Millisecond}
	// Active for two seconds already (started at boot): ready at once.
	f := newFakeUnits(map[string][]string{"svc": {show("active", "running", "success", since(2*time.Second))}})
	t0 := time.Now()
	o, err := WaitUnit(context.Background(), f, "svc", w)
	if err != nil || !o.Ready || time.Since(t0) > 500*time.Millisecond || f.shown["svc"] != 1 {
		t.Errorf("long-active unit: ready=%v err=%v after %v and %d checks", o.Ready, err, time.Since(t0), f.shown["svc"])
	}
	// Just became active: the whole settle time is waited.
	f = newFakeUnits(map[string][]string{"svc": {show("active", "running", "success", since(0))}})
	t0 = time.Now()
	o, err = WaitUnit(context.Background(), f, "svc", w)
	if err != nil || !o.Ready || time.Since(t0) < 900*time.Millisecond {
		t.Errorf("fresh unit: ready=%v err=%v after %v", o.Ready, err, time.Since(t0))
	}
}
