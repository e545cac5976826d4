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
		{"queued, job unknown", show("inactive", "dead", "success"), Waiting, "", "inactive (dead)"},
		{"queued", show("inactive", "dead", "success", "Job=238"), Waiting, "", "inactive (dead)"},
		{"failed before, queued", show("failed", "failed", "exit-code", "Job=238"), Waiting, "", "failed (failed)"},
		{"inactive, no job", show("inactive", "dead", "success", "Job="), Broken,
			"inactive with no start job pending: it stopped again right away, or nothing started it", "inactive (dead)"},
		{"condition failed", show("inactive", "dead", "success", "Job=", "ConditionResult=no", "ConditionTimestampMonotonic=123"), Broken,
			"systemd skipped starting it: a Condition or Assert of the unit does not hold", "inactive (dead)"},
		{"condition not checked yet", show("inactive", "dead", "success", "Job=", "ConditionResult=no", "ConditionTimestampMonotonic=0"), Broken,
			"inactive with no start job pending: it stopped again right away, or nothing started it", "inactive (dead)"},
		{"failed", show("failed", "failed", "exit-code", "ExecMainStatus=3", "ExecMainExitTimestampMonotonic=123"), Broken,
			"the unit failed: result exit-code, main process exited with status 3", "failed (failed)"},
		{"failed after restarts", show("failed", "failed", "start-limit-hit", "NRestarts=5"), Broken,
			"the unit failed: result start-limit-hit, restarted 5 times", "failed (failed)"},
		{"inactive after failure", show("inactive", "dead", "exit-code", "Job="), Broken, "the unit failed: result exit-code", "inactive (dead)"},
		{"exited service", show("inactive", "dead", "success", "Job=", "Type=simple", "ExecMainExitTimestampMonotonic=99"), Broken,
			"its main process exited (status 0) and the unit is inactive", "inactive (dead)"},
		{"oneshot that ran", show("inactive", "dead", "success", "Job=", "Type=oneshot", "RemainAfterExit=no", "ExecMainExitTimestampMonotonic=99"),
			Ready, "", "inactive (dead)"},
		{"oneshot that failed", show("failed", "failed", "exit-code", "Job=", "Type=oneshot", "ExecMainStatus=1", "ExecMainExitTimestampMonotonic=99"),
			Broken, "the unit failed: result exit-code, main process exited with status 1", "failed (failed)"},
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

// at is a unit state the probe saw at a time (since it started the unit).
type at struct {
	t time.Duration
	s UnitState
}

// svc is a loaded service in state "active (sub)" with result success and
// no pending job; fields set on the result change it.
func svc(typ, active, sub string) UnitState {
	return UnitState{LoadState: "loaded", ActiveState: active, SubState: sub, Result: "success", Type: typ, Restart: "no", HasJob: true}
}

func (s UnitState) with(f func(*UnitState)) UnitState { f(&s); return s }

// replay feeds seq to a judge as the D-Bus watch does: every state when it
// arrives, and the last one again whenever the judge asked to be woken
// before the next arrives. It returns the outcome and when it was decided.
func replay(t *testing.T, w UnitWait, seq []at) (UnitOutcome, time.Duration) {
	t.Helper()
	const start = time.Hour // some monotonic time
	j := newJudge(w, start)
	var last UnitState
	var wake time.Duration
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("no verdict")
		}
		now := wake
		if len(seq) > 0 && (wake == 0 || start+seq[0].t <= wake) {
			last, now = seq[0].s, start+seq[0].t
			seq = seq[1:]
		} else if wake == 0 {
			t.Fatal("the judge waits for nothing")
		}
		var v Verdict
		v, wake = j.observe(last, now)
		if v != Waiting {
			return j.o, now - start
		}
	}
}

// The sequences below are what systemd 252 (Debian 12) signalled for the
// units of testdata/script/pkgprobe_unit_honest.txtar, times rounded.
func TestJudgeRecordedSequences(t *testing.T) {
	w := UnitWait{Timeout: 30 * time.Second, Settle: 500 * time.Millisecond, ShortSettle: 100 * time.Millisecond}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	const start = time.Hour
	queued := func(s UnitState) UnitState { return s.with(func(s *UnitState) { s.Job = "start" }) }
	done := func(s UnitState) UnitState { return s.with(func(s *UnitState) { s.JobResult = "done" }) }
	activeAt := func(s UnitState, t time.Duration) UnitState {
		return s.with(func(s *UnitState) { s.ActiveSince = start + t })
	}
	exited := func(s UnitState, status int) UnitState {
		return s.with(func(s *UnitState) { s.MainExited, s.MainStatus = true, status })
	}
	failed := func(s UnitState, result string) UnitState {
		return s.with(func(s *UnitState) { s.Result = result })
	}
	restarts := func(s UnitState, n int) UnitState {
		return s.with(func(s *UnitState) { s.NRestarts, s.Restart = n, "always" })
	}
	for _, tt := range []struct {
		name    string
		seq     []at
		ready   bool
		reason  string
		decided time.Duration // when the verdict came, at the latest
		seen    string
	}{
		{
			// systemd-journald, active since boot, long before the probe.
			name:  "notify, active since boot",
			seq:   []at{{ms(0), activeAt(svc("notify", "active", "running"), -ms(150))}},
			ready: true, decided: 0, seen: "active (running)",
		},
		{
			// A notify service the probe started: it is given ShortSettle.
			name: "notify, started now",
			seq: []at{{0, queued(svc("notify", "inactive", "dead"))}, {ms(5), queued(svc("notify", "activating", "start"))},
				{ms(40), done(activeAt(svc("notify", "active", "running"), ms(40)))}},
			ready: true, decided: ms(140), seen: "inactive (dead), activating (start), active (running)",
		},
		{
			// Type=simple, ExecStart=/bin/sleep 0.3: active at once, then
			// dead with result success.
			name: "active, then exited 0.3s later",
			seq: []at{{0, queued(svc("simple", "inactive", "dead"))},
				{ms(16), done(activeAt(svc("simple", "active", "running"), ms(15)))},
				{ms(325), done(exited(svc("simple", "inactive", "dead"), 0))}},
			reason: "became active, then inactive (dead) after 0.3s: its main process exited with status 0", decided: ms(325),
			seen: "inactive (dead), active (running), inactive (dead)",
		},
		{
			name: "active, then failed within the settle time",
			seq: []at{{0, queued(svc("simple", "inactive", "dead"))},
				{ms(10), done(activeAt(svc("simple", "active", "running"), ms(10)))},
				{ms(200), done(svc("simple", "deactivating", "stop-sigterm"))},
				{ms(260), done(exited(failed(svc("simple", "failed", "failed"), "exit-code"), 2))}},
			reason: "the unit failed: result exit-code, main process exited with status 2, 0.2s after it became active", decided: ms(260),
			seen: "inactive (dead), active (running), deactivating (stop-sigterm), failed (failed)",
		},
		{
			// Restart=always, RestartSec=100ms, ExecStart= exits 1: the
			// transient "failed" before each auto-restart is not the end.
			name: "restart loop",
			seq: []at{{0, queued(svc("simple", "inactive", "dead"))},
				{ms(62), done(restarts(exited(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 1), 0))},
				{ms(200), done(restarts(exited(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 1), 1))},
				{ms(212), done(restarts(activeAt(svc("simple", "active", "running"), ms(212)), 1))},
				{ms(215), done(restarts(exited(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 1), 1))},
				{ms(450), done(restarts(exited(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 1), 2))},
				{ms(458), done(restarts(activeAt(svc("simple", "active", "running"), ms(458)), 2))},
				{ms(459), done(restarts(exited(failed(svc("simple", "failed", "failed"), "exit-code"), 1), 2))},
				{ms(460), done(restarts(exited(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 1), 2))}},
			reason:  "restarting: systemd has restarted it 2 times (result exit-code, main process exited with status 1)",
			decided: ms(562),
			seen: "inactive (dead), activating (auto-restart), active (running), activating (auto-restart), active (running), " +
				"failed (failed), activating (auto-restart)",
		},
		{
			// The same loop, running again when the verdict is due: how it
			// ended before is still told.
			name: "restart loop, running when judged",
			seq: []at{{0, queued(svc("simple", "inactive", "dead"))},
				{ms(62), done(restarts(exited(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 1), 0))},
				{ms(200), done(restarts(exited(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 1), 1))},
				{ms(212), done(restarts(activeAt(svc("simple", "active", "running"), ms(212)), 1))},
				{ms(450), done(restarts(exited(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 1), 2))},
				{ms(458), done(restarts(activeAt(svc("simple", "active", "running"), ms(458)), 2))}},
			reason:  "restarting: systemd has restarted it 2 times (result exit-code, main process exited with status 1)",
			decided: ms(562),
			seen:    "inactive (dead), activating (auto-restart), active (running), activating (auto-restart), active (running)",
		},
		{
			name: "restart loop until the start limit",
			seq: []at{{0, queued(svc("simple", "inactive", "dead"))},
				{ms(20), done(restarts(failed(svc("simple", "activating", "auto-restart"), "exit-code"), 0))},
				{ms(80), done(restarts(failed(svc("simple", "failed", "failed"), "start-limit-hit"), 5))}},
			reason: "the unit failed: result start-limit-hit, restarted 5 times", decided: ms(80),
			seen: "inactive (dead), activating (auto-restart), failed (failed)",
		},
		{
			// A unit that restarted before the probe looked and is active
			// now: it did die, so it does not pass.
			name:   "restarted before the probe looked",
			seq:    []at{{0, restarts(activeAt(svc("simple", "active", "running"), -ms(2000)), 3)}},
			reason: "restarting: systemd has restarted it 3 times", decided: ms(500), seen: "active (running)",
		},
		{
			// Type=oneshot, RemainAfterExit=no, ExecStart=/bin/sleep 0.2.
			name: "oneshot that succeeded",
			seq: []at{{0, queued(svc("oneshot", "inactive", "dead"))}, {ms(13), queued(svc("oneshot", "activating", "start"))},
				{ms(223), queued(exited(svc("oneshot", "inactive", "dead"), 0))},
				{ms(227), done(exited(svc("oneshot", "inactive", "dead"), 0))}},
			ready: true, decided: ms(227), seen: "inactive (dead), activating (start), inactive (dead)",
		},
		{
			name: "oneshot that failed",
			seq: []at{{0, queued(svc("oneshot", "inactive", "dead"))}, {ms(10), queued(svc("oneshot", "activating", "start"))},
				{ms(15), exited(failed(svc("oneshot", "failed", "failed"), "exit-code"), 4).with(func(s *UnitState) { s.JobResult = "failed" })}},
			reason: "the unit failed: result exit-code, main process exited with status 4", decided: ms(15),
			seen: "inactive (dead), activating (start), failed (failed)",
		},
		{
			// ConditionPathExists=/etc/probe-skipped.conf: the job is done,
			// the unit stays inactive, never started.
			name: "condition does not hold",
			seq: []at{{0, queued(svc("simple", "inactive", "dead"))},
				{ms(20), done(svc("simple", "inactive", "dead")).with(func(s *UnitState) {
					s.ConditionFailed, s.FailedCondition = true, "ConditionPathExists=/etc/probe-skipped.conf"
				})}},
			reason: "systemd skipped starting it: ConditionPathExists=/etc/probe-skipped.conf does not hold", decided: ms(20),
			seen: "inactive (dead)",
		},
		{
			name: "dependency failed",
			seq: []at{{0, queued(svc("simple", "inactive", "dead"))},
				{ms(20), svc("simple", "inactive", "dead").with(func(s *UnitState) { s.JobResult = "dependency" })}},
			reason: "a unit it requires did not start", decided: ms(20), seen: "inactive (dead)",
		},
		{
			name:   "never starts",
			seq:    []at{{0, queued(svc("simple", "activating", "start-pre"))}},
			reason: "not active within 30s (state: activating (start-pre))", decided: 30 * time.Second, seen: "activating (start-pre)",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, decided := replay(t, w, tt.seq)
			if o.Ready != tt.ready || o.Reason != tt.reason || decided > tt.decided || strings.Join(o.Seen, ", ") != tt.seen {
				t.Errorf("got ready=%v reason=%q decided at %v, seen %q\nwant ready=%v reason=%q by %v, seen %q",
					o.Ready, o.Reason, decided, strings.Join(o.Seen, ", "), tt.ready, tt.reason, tt.decided, tt.seen)
			}
		})
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
		{"dies right after starting", []string{show("active", "running", "success", "Type=simple"),
			show("failed", "failed", "exit-code", "ExecMainStatus=3", "ExecMainExitTimestampMonotonic=5")}, false, false,
			"the unit failed: result exit-code, main process exited with status 3, 0.0s after it became active", "active (running), failed (failed)"},
		{"never starts", []string{show("activating", "start", "success")}, false, true,
			"not active within 300ms (state: activating (start))", "activating (start)"},
		{"crash loop", []string{show("activating", "auto-restart", "exit-code", "NRestarts=4")}, false, false,
			"restarting: systemd has restarted it 4 times (result exit-code)", "activating (auto-restart)"},
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
	states := []string{show("active", "running", "success", "Type=simple"), show("active", "running", "success", "Type=simple"),
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
	since := func(ago time.Duration) string {
		return "ActiveEnterTimestampMonotonic=" + strconv.FormatInt(int64((monotonic()-ago)/time.Microsecond), 10)
	}
	w := UnitWait{Timeout: 5 * time.Second, Settle: time.Second, ShortSettle: 200 * time.Millisecond, Interval: 10 * time.Millisecond}
	// Active for two seconds already (started at boot): ready at once.
	f := newFakeUnits(map[string][]string{"svc": {show("active", "running", "success", "Type=simple", since(2*time.Second))}})
	t0 := time.Now()
	o, err := WaitUnit(context.Background(), f, "svc", w)
	if err != nil || !o.Ready || time.Since(t0) > 500*time.Millisecond || f.shown["svc"] != 1 {
		t.Errorf("long-active unit: ready=%v err=%v after %v and %d checks", o.Ready, err, time.Since(t0), f.shown["svc"])
	}
	// Just became active: the whole settle time is waited.
	f = newFakeUnits(map[string][]string{"svc": {show("active", "running", "success", "Type=simple", since(0))}})
	t0 = time.Now()
	o, err = WaitUnit(context.Background(), f, "svc", w)
	if err != nil || !o.Ready || time.Since(t0) < 900*time.Millisecond {
		t.Errorf("fresh unit: ready=%v err=%v after %v", o.Ready, err, time.Since(t0))
	}
	// A notify unit that just became active: only the short settle time.
	f = newFakeUnits(map[string][]string{"svc": {show("active", "running", "success", "Type=notify", since(0))}})
	t0 = time.Now()
	o, err = WaitUnit(context.Background(), f, "svc", w)
	if d := time.Since(t0); err != nil || !o.Ready || d < 150*time.Millisecond || d > 800*time.Millisecond {
		t.Errorf("fresh notify unit: ready=%v err=%v after %v", o.Ready, err, d)
	}
}

func TestProberUnitWaitDefaults(t *testing.T) {
	w := (&Prober{}).unitWait(0)
	if w.Timeout != DefaultUnitTimeout || w.Settle != DefaultSettle || w.ShortSettle != DefaultSettle/10 {
		t.Errorf("defaults: %+v", w)
	}
	// The settle flag scales both windows; the short one never reaches the
	// long one's.
	w = (&Prober{Settle: 2 * time.Second}).unitWait(time.Minute)
	if w.Timeout != time.Minute || w.Settle != 2*time.Second || w.ShortSettle != 200*time.Millisecond {
		t.Errorf("--settle=2s: %+v", w)
	}
	// A notify unit active for 40ms is still settling; one active for 60ms
	// has settled.
	w = (&Prober{}).unitWait(0)
	for _, c := range []struct {
		ago  time.Duration
		want Verdict
	}{{40 * time.Millisecond, Waiting}, {60 * time.Millisecond, Ready}} {
		now := time.Hour
		s := UnitState{LoadState: "loaded", ActiveState: "active", SubState: "running", Type: "notify", ActiveSince: now - c.ago}
		if v, _ := newJudge(w, now).observe(s, now); v != c.want {
			t.Errorf("notify unit active for %v: verdict %v, want %v", c.ago, v, c.want)
		}
	}
}
