package probe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/nspawn"
	"golang.org/x/sys/unix"
)

// Executor runs commands in a booted container; *container.Container is one.
type Executor interface {
	Exec(ctx context.Context, p nspawn.Process) (int, error)
}

// unitWatcher is a container whose systemd can be asked over D-Bus;
// *container.Container is one (it returns nspawn.ErrNoBus when it has no
// bus).
type unitWatcher interface {
	WatchUnit(ctx context.Context, name string) (*nspawn.UnitWatch, error)
}

// The containers probes run in are watched over D-Bus, not polled.
var _ unitWatcher = (*container.Container)(nil)

// UnitState is what systemd reports about a unit.
type UnitState struct {
	LoadState   string `json:"loadState"`   // loaded, not-found, masked, bad-setting, error
	ActiveState string `json:"activeState"` // active, activating, failed, inactive, ...
	SubState    string `json:"subState"`    // running, exited, start-pre, auto-restart, dead, ...
	Result      string `json:"result"`      // success, exit-code, timeout, ...
	NRestarts   int    `json:"restarts"`
	// Type is the service's Type= (simple, notify, oneshot, ...), "" for
	// other units.
	Type            string `json:"type,omitempty"`
	Restart         string `json:"-"` // Restart=: no, always, on-failure, ...
	RemainAfterExit bool   `json:"-"`
	// MainExited is set once the unit's main process has exited.
	MainExited bool `json:"-"`
	MainStatus int  `json:"-"`
	// Job is the id of the unit's queued or running job, "" if none;
	// HasJob says whether systemd reported the property at all.
	Job    string `json:"-"`
	HasJob bool   `json:"-"`
	// JobResult is the result of the probe's start job once it ended
	// (done, failed, dependency, ...); only known over D-Bus.
	JobResult string `json:"-"`
	// ConditionFailed is set when a Condition...= or Assert...= of the
	// unit did not hold, so that systemd skipped starting it;
	// FailedCondition names it when known ("ConditionPathExists=/x").
	ConditionFailed bool   `json:"-"`
	FailedCondition string `json:"-"`
	// LoadError is systemd's message for a unit that did not load.
	LoadError string `json:"-"`
	// ActiveSince is when the unit last became active, on CLOCK_MONOTONIC
	// (which a container shares with the host); 0 if unknown.
	ActiveSince time.Duration `json:"-"`
}

// showProperties are the properties readUnit asks systemctl for.
const showProperties = "LoadState,ActiveState,SubState,Result,NRestarts,Type,Restart,RemainAfterExit,ExecMainStatus,ExecMainExitTimestampMonotonic," +
	"ActiveEnterTimestampMonotonic,Job,ConditionResult,ConditionTimestampMonotonic,AssertResult,AssertTimestampMonotonic"

// ParseShow parses `systemctl show --property=...` output (KEY=VALUE
// lines).
func ParseShow(out string) UnitState {
	var s UnitState
	cond := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "LoadState":
			s.LoadState = v
		case "ActiveState":
			s.ActiveState = v
		case "SubState":
			s.SubState = v
		case "Result":
			s.Result = v
		case "NRestarts":
			s.NRestarts, _ = strconv.Atoi(v)
		case "Type":
			s.Type = v
		case "Restart":
			s.Restart = v
		case "RemainAfterExit":
			s.RemainAfterExit = v == "yes"
		case "ExecMainStatus":
			s.MainStatus, _ = strconv.Atoi(v)
		case "ExecMainExitTimestampMonotonic":
			n, _ := strconv.ParseInt(v, 10, 64)
			s.MainExited = n > 0
		case "ActiveEnterTimestampMonotonic":
			n, _ := strconv.ParseInt(v, 10, 64)
			s.ActiveSince = time.Duration(n) * time.Microsecond
		case "Job":
			s.Job, s.HasJob = v, true
		case "ConditionResult", "AssertResult", "ConditionTimestampMonotonic", "AssertTimestampMonotonic":
			cond[k] = v
		}
	}
	// A result of "no" counts once the conditions were checked (systemd
	// says "no" before that too); without timestamps, take it as it is.
	for _, kind := range []string{"Condition", "Assert"} {
		ts, hasTS := cond[kind+"TimestampMonotonic"]
		if cond[kind+"Result"] == "no" && (!hasTS || (ts != "" && ts != "0")) {
			s.ConditionFailed = true
		}
	}
	return s
}

// stateFromBus converts what nspawn read over D-Bus.
// While the probe's start job is pending (pending), Job is set even if the
// properties read do not show it yet.
func stateFromBus(u nspawn.UnitState, jobResult string, pending bool) UnitState {
	s := UnitState{
		LoadState: u.LoadState, ActiveState: u.ActiveState, SubState: u.SubState, Result: u.Result,
		NRestarts: u.NRestarts, Type: u.Type, Restart: u.Restart, RemainAfterExit: u.RemainAfterExit,
		MainExited: u.MainExit > 0, MainStatus: int(u.MainStatus),
		HasJob: true, JobResult: jobResult,
		ConditionFailed: u.ConditionFailed || u.AssertFailed, FailedCondition: u.FailedCondition,
		LoadError: u.LoadError, ActiveSince: u.ActiveEnter,
	}
	if u.Job != 0 {
		s.Job = strconv.FormatUint(uint64(u.Job), 10)
	} else if pending {
		s.Job = "start"
	}
	if s.Result == "" && s.LoadState == "loaded" && !strings.HasSuffix(u.ID, ".service") {
		s.Result = "success" // only services have a Result
	}
	return s
}

// String is the state as systemctl status shows it: "active (running)".
func (s UnitState) String() string {
	if s.ActiveState == "" {
		return "unknown"
	}
	if s.SubState == "" {
		return s.ActiveState
	}
	return s.ActiveState + " (" + s.SubState + ")"
}

func (s UnitState) active() bool { return s.ActiveState == "active" || s.ActiveState == "reloading" }

// restarting says whether systemd has restarted the unit by itself
// (Restart=) or is about to.
func (s UnitState) restarting() bool { return s.NRestarts > 0 || s.SubState == "auto-restart" }

// jobPending says whether the unit may still be waiting for its start job
// (or, when systemd did not say, whether that is unknown).
func (s UnitState) jobPending() bool {
	if s.JobResult != "" {
		return s.Job != ""
	}
	return !s.HasJob || s.Job != ""
}

// Verdict is what a unit state means for a probe waiting for the unit.
type Verdict int

const (
	Waiting Verdict = iota // not decided yet
	Ready                  // passed: active and settled, or a oneshot that succeeded
	Broken                 // failed: will not become active by itself, or did not stay so
)

// loadProblem says why a unit that did not load cannot be started, "" if
// it loaded.
func (s UnitState) loadProblem() string {
	switch s.LoadState {
	case "not-found":
		return "no such unit"
	case "masked":
		return "the unit is masked"
	case "bad-setting", "error":
		r := "the unit file is invalid (load state " + s.LoadState + ")"
		if s.LoadError != "" {
			r += ": " + s.LoadError
		}
		return r
	}
	return ""
}

func failedReason(s UnitState) string {
	var parts []string
	if s.Result != "" && s.Result != "success" {
		parts = append(parts, "result "+s.Result)
	}
	if s.MainExited {
		parts = append(parts, fmt.Sprintf("main process exited with status %d", s.MainStatus))
	}
	if s.NRestarts > 0 {
		parts = append(parts, restartedTimes(s.NRestarts))
	}
	if len(parts) == 0 {
		return "the unit failed"
	}
	return "the unit failed: " + strings.Join(parts, ", ")
}

func restartedTimes(n int) string {
	if n == 1 {
		return "restarted 1 time"
	}
	return fmt.Sprintf("restarted %d times", n)
}

// jobResults explain the results of a start job that did not succeed.
var jobResults = map[string]string{
	"dependency":  "a unit it requires did not start",
	"timeout":     "the start job timed out",
	"canceled":    "the start job was canceled",
	"failed":      "the unit failed to start",
	"assert":      "an Assert of the unit does not hold",
	"unsupported": "the unit cannot be started",
	"skipped":     "systemd skipped the start job",
}

// UnitWait configures waiting for a unit.
type UnitWait struct {
	// Timeout bounds the wait for the unit to become active.
	Timeout time.Duration
	// Settle is how long a unit must have been active (since systemd's
	// ActiveEnterTimestamp) before it passes: a service that exits right
	// after starting is active for a moment. It applies to Type=simple,
	// exec and idle services, which are active once their process runs;
	// for units whose readiness systemd learns from the unit itself
	// (Type=notify, dbus, forking, oneshot, and units that are not
	// services) ShortSettle applies instead.
	Settle      time.Duration
	ShortSettle time.Duration
	// Interval is the polling period without D-Bus (200ms if zero).
	Interval time.Duration
}

// settleFor is the settle time for a unit of state s.
func (w UnitWait) settleFor(s UnitState) time.Duration {
	switch s.Type {
	case "simple", "exec", "idle":
		return w.Settle
	}
	return w.ShortSettle
}

// UnitOutcome is what waiting for a unit saw.
type UnitOutcome struct {
	State   UnitState
	Ready   bool
	Reason  string        // why not, when not Ready
	Note    string        // what else a passed unit should say ("ran and exited with status 0")
	Seen    []string      // the distinct states in order, e.g. activating (start-pre), active (running)
	Waited  time.Duration // until active, or until giving up
	Timeout bool          // gave up because Timeout passed
}

// unitJudge turns the states a unit goes through after the probe started
// it into a verdict. Times are on CLOCK_MONOTONIC, the clock of systemd's
// *TimestampMonotonic properties.
type unitJudge struct {
	w     UnitWait
	start time.Duration // when the probe started the unit
	o     UnitOutcome
	// activeAt is when the unit became active (0: not yet seen active).
	activeAt time.Duration
	// restartSeen is when the probe first saw systemd restart the unit.
	restartSeen time.Duration
	// failedSeen is when a unit that systemd may restart was first seen
	// failed (0: it is not).
	failedSeen time.Duration
	// restartCause is how the unit last ended while restarting ("result
	// exit-code, main process exited with status 1"): by the time the
	// verdict is reached it may be running again.
	restartCause string
}

// restartGrace is how long a failed unit with Restart= is given to show
// that systemd restarts it: it sets both states in one go.
const restartGrace = 100 * time.Millisecond

func newJudge(w UnitWait, start time.Duration) *unitJudge {
	return &unitJudge{w: w, start: start}
}

// observe takes the unit's state at now and returns the verdict; while it
// is Waiting, wake is when to look again if nothing changes.
func (j *unitJudge) observe(s UnitState, now time.Duration) (v Verdict, wake time.Duration) {
	j.o.State = s
	if str := s.String(); len(j.o.Seen) == 0 || j.o.Seen[len(j.o.Seen)-1] != str {
		j.o.Seen = append(j.o.Seen, str)
	}
	v, reason, wake := j.judge(s, now)
	timeout := j.start + j.w.Timeout
	if v == Waiting && now >= timeout {
		v, j.o.Timeout = Broken, true
		reason = fmt.Sprintf("not active within %s (state: %s)", j.w.Timeout, s)
		if s.NRestarts > 0 {
			reason += ", " + restartedTimes(s.NRestarts)
		}
	}
	if v != Waiting {
		j.o.Ready, j.o.Reason = v == Ready, reason
		if !j.o.Ready || j.activeAt == 0 {
			j.o.Waited = now - j.start
		}
		return v, 0
	}
	if wake == 0 || wake > timeout {
		wake = timeout
	}
	return Waiting, wake
}

func (j *unitJudge) judge(s UnitState, now time.Duration) (Verdict, string, time.Duration) {
	if r := s.loadProblem(); r != "" {
		return Broken, r, 0
	}
	// A service with Restart= that dies shows as failed for a moment
	// before systemd schedules the restart (auto-restart).
	if s.ActiveState == "failed" && s.Restart != "" && s.Restart != "no" && s.Result != "start-limit-hit" {
		if j.failedSeen == 0 {
			j.failedSeen = now
		}
		if end := j.failedSeen + restartGrace; now < end {
			return Waiting, "", end
		}
	} else {
		j.failedSeen = 0
	}
	// Restarts: whatever the unit does now, systemd found it dead and
	// restarted it. The probe keeps watching for a settle time to count
	// how often, unless the unit fails for good first.
	if s.restarting() {
		if j.restartSeen == 0 {
			j.restartSeen = now
		}
		if s.ActiveState == "failed" { // for good: see restartGrace
			return Broken, failedReason(s), 0
		}
		if d := strings.TrimPrefix(failedReason(UnitState{Result: s.Result, MainExited: s.MainExited, MainStatus: s.MainStatus}), "the unit failed"); d != "" {
			j.restartCause = strings.TrimPrefix(d, ": ")
		}
		if end := j.restartSeen + j.w.Settle; now < end {
			return Waiting, "", end
		}
		r := fmt.Sprintf("restarting: systemd has restarted it %d times", s.NRestarts)
		switch s.NRestarts {
		case 0:
			r = "restarting: it exited and systemd is about to restart it"
		case 1:
			r = "restarting: systemd has restarted it once"
		}
		if j.restartCause != "" {
			r += " (" + j.restartCause + ")"
		}
		return Broken, r, 0
	}
	if s.active() {
		if j.activeAt == 0 {
			j.activeAt = now
			// A unit that was active before the probe looked (started at
			// boot, or by its package) has been settling since then.
			if s.ActiveSince > 0 && s.ActiveSince <= now {
				j.activeAt = s.ActiveSince
			}
			j.o.Waited = max(0, now-j.start)
		}
		if end := j.activeAt + j.w.settleFor(s); now < end {
			return Waiting, "", end
		}
		return Ready, "", 0
	}
	if j.activeAt != 0 {
		if s.ActiveState == "deactivating" {
			return Waiting, "", 0 // to see how it ends
		}
		if s.ActiveState == "failed" || (s.Result != "" && s.Result != "success") {
			return Broken, fmt.Sprintf("%s, %.1fs after it became active", failedReason(s), (now - j.activeAt).Seconds()), 0
		}
		r := fmt.Sprintf("became active, then %s after %.1fs", s, (now - j.activeAt).Seconds())
		if s.MainExited {
			r += fmt.Sprintf(": its main process exited with status %d", s.MainStatus)
		}
		return Broken, r, 0
	}
	// Until its start job runs a unit is as it was: inactive, or failed
	// from an earlier start.
	if s.Job != "" {
		return Waiting, "", 0
	}
	switch s.ActiveState {
	case "failed":
		return Broken, failedReason(s), 0
	case "inactive":
		if s.Result != "" && s.Result != "success" {
			return Broken, failedReason(s), 0
		}
		if s.jobPending() {
			return Waiting, "", 0
		}
		if s.ConditionFailed {
			r := "systemd skipped starting it: a Condition or Assert of the unit does not hold"
			if s.FailedCondition != "" {
				r = "systemd skipped starting it: " + s.FailedCondition + " does not hold"
			}
			return Broken, r, 0
		}
		if s.JobResult != "" && s.JobResult != "done" {
			r := jobResults[s.JobResult]
			if r == "" {
				r = "the start job ended with result " + s.JobResult
			}
			return Broken, r, 0
		}
		if s.MainExited {
			if s.Type == "oneshot" && !s.RemainAfterExit && s.MainStatus == 0 {
				j.o.Note = "ran and exited with status 0"
				return Ready, "", 0
			}
			return Broken, fmt.Sprintf("its main process exited (status %d) and the unit is inactive", s.MainStatus), 0
		}
		return Broken, "inactive with no start job pending: it stopped again right away, or nothing started it", 0
	}
	return Waiting, "", 0
}

// Evaluate judges s as the probe's first look at a unit it just started
// (no settle time): active, may become active, or will not; for Broken,
// why.
func (s UnitState) Evaluate() (Verdict, string) {
	j := newJudge(UnitWait{Timeout: time.Hour}, 1)
	v, _ := j.observe(s, 1)
	return v, j.o.Reason
}

// readUnit asks systemctl in the container for the state of unit.
func readUnit(ctx context.Context, m Executor, unit string) (UnitState, error) {
	code, out, err := runCapture(ctx, m, "systemctl", "show", "--property="+showProperties, "--", unit)
	if err != nil {
		return UnitState{}, err
	}
	if code != 0 {
		return UnitState{}, fmt.Errorf("systemctl show %s exited with status %d: %s", unit, code, lastLines(out, 3))
	}
	return ParseShow(out), nil
}

// WaitUnit polls the unit with systemctl until it passes (active for
// w.Settle, see UnitWait), until it cannot, or until w.Timeout. It is how
// containers without D-Bus are probed. The error is for failures to ask
// (the container went away, ctx ended), not for units that do not become
// active.
func WaitUnit(ctx context.Context, m Executor, unit string, w UnitWait) (UnitOutcome, error) {
	interval := w.Interval
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	j := newJudge(w, monotonic())
	for {
		s, err := readUnit(ctx, m, unit)
		if err != nil {
			return j.o, err
		}
		now := monotonic()
		v, wake := j.observe(s, now)
		if v != Waiting {
			return j.o, nil
		}
		wait := min(interval, wake-now)
		select {
		case <-ctx.Done():
			return j.o, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// watchUnit enables and starts unit over the container's D-Bus and
// follows its signals until it passes or fails; notes are what enabling
// said. It returns nspawn.ErrNoBus when the container has no bus.
func watchUnit(ctx context.Context, m unitWatcher, unit string, w UnitWait, log *slog.Logger) (o UnitOutcome, notes []string, err error) {
	t0 := time.Now()
	uw, err := m.WatchUnit(ctx, unit)
	if err != nil {
		return o, nil, err
	}
	defer uw.Close()
	st := uw.State()
	j := newJudge(w, monotonic())
	if stateFromBus(st, "", false).loadProblem() != "" {
		j.observe(stateFromBus(st, "", false), monotonic())
		return j.o, nil, nil
	}
	enabled, note, err := uw.Enable(ctx)
	switch {
	case ctx.Err() != nil:
		return o, nil, ctx.Err()
	case errors.Is(err, nspawn.ErrBusDenied):
		return o, nil, err
	case err != nil:
		notes = append(notes, "enable: "+err.Error())
	case note != "":
		notes = append(notes, "enable: "+note)
	}
	log.Debug("unit", "unit", st.ID, "unitFileState", st.UnitFileState, "enabled", enabled, "state", stateFromBus(st, "", false).String(), "took", time.Since(t0))
	if err := uw.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return o, nil, ctx.Err()
		}
		if errors.Is(err, nspawn.ErrBusDenied) {
			return o, notes, err // the probe's access, not the unit, is at fault
		}
		// systemd refused: the state tells why (masked, bad setting) or
		// the error does.
		s := stateFromBus(uw.State(), "", false)
		if r := s.loadProblem(); r != "" {
			j.observe(s, monotonic())
			return j.o, notes, nil
		}
		j.o.State, j.o.Reason, j.o.Seen = s, err.Error(), []string{s.String()}
		return j.o, notes, nil
	}
	log.Debug("unit start queued", "unit", st.ID, "took", time.Since(t0))
	for {
		s := stateFromBus(uw.State(), uw.JobResult(), uw.JobResult() == "")
		now := monotonic()
		v, wake := j.observe(s, now)
		log.Debug("unit state", "unit", st.ID, "state", s.String(), "job", s.JobResult, "restarts", s.NRestarts, "verdict", v, "took", time.Since(t0))
		if v != Waiting {
			return j.o, notes, nil
		}
		if _, err := uw.Wait(ctx, time.Now().Add(wake-now)); err != nil {
			return j.o, notes, err
		}
	}
}

// unit enables and starts u, waits for it, and on failure collects its
// status and journal. Over D-Bus nothing is polled; containers without it
// are asked with systemctl.
func (p *Prober) unit(ctx context.Context, m Machine, u string, timeout time.Duration, s *Step) error {
	w := p.unitWait(timeout)
	var (
		o     UnitOutcome
		notes []string
		err   = nspawn.ErrNoBus
	)
	if ub, ok := m.(unitWatcher); ok {
		o, notes, err = watchUnit(ctx, ub, u, w, p.logger())
	}
	if errors.Is(err, nspawn.ErrNoBus) {
		o, notes, err = systemctlUnit(ctx, m, u, w)
	}
	s.Unit = &o.State
	s.States = o.Seen
	if err != nil {
		s.endErr(Errored, err)
		return err
	}
	if o.Ready {
		summary := o.State.String()
		if o.Note != "" {
			summary += ": " + o.Note
		}
		if len(o.Seen) > 1 {
			summary = fmt.Sprintf("%s after %.1fs (%s)", summary, o.Waited.Seconds(), strings.Join(o.Seen, " -> "))
		}
		s.end(Passed, summary)
		return nil
	}
	reason := strings.Join(append([]string{o.Reason}, notes...), "; ")
	_, status, err := runCapture(ctx, m, "systemctl", "status", "--no-pager", "--full", "--lines=0", "--", u)
	if err == nil {
		s.Status = status
		_, s.Journal, err = runCapture(ctx, m, "journalctl", "--no-pager", "--lines="+fmt.Sprint(journalLines), "--unit="+u)
	}
	if err != nil {
		s.endErr(Errored, err)
		return err
	}
	s.Error = reason
	s.end(Failed, o.State.String())
	return nil
}

// unitWait is how the probe waits for a unit: timeout (DefaultUnitTimeout
// if zero) and p.Settle (DefaultSettle if zero).
func (p *Prober) unitWait(timeout time.Duration) UnitWait {
	w := UnitWait{Timeout: timeout, Settle: p.Settle}
	if w.Timeout <= 0 {
		w.Timeout = DefaultUnitTimeout
	}
	if w.Settle <= 0 {
		w.Settle = DefaultSettle
	}
	// Units that say themselves when they are ready fail at start-up before
	// they are active; the short window is for a crash right after.
	w.ShortSettle = w.Settle / 10
	return w
}

// systemctlUnit enables, starts and polls u with systemctl.
func systemctlUnit(ctx context.Context, m Executor, u string, w UnitWait) (UnitOutcome, []string, error) {
	// enable, then start: `enable --now` does not start units that SysV
	// init scripts generate. --no-block: the wait, not systemctl, bounds a
	// slow start. A unit without [Install] (enable only warns), or one the
	// package started already, is fine.
	var notes []string
	for _, verb := range [][]string{{"enable"}, {"--no-block", "start"}} {
		args := append(append([]string{"systemctl"}, verb...), "--", u)
		code, out, err := runCapture(ctx, m, args...)
		if err != nil {
			return UnitOutcome{}, nil, err
		}
		if code != 0 && strings.TrimSpace(out) != "" {
			notes = append(notes, strings.Join(args[:len(args)-2], " ")+": "+lastLines(out, 2))
		}
	}
	o, err := WaitUnit(ctx, m, u, w)
	return o, notes, err
}

// monotonic reads CLOCK_MONOTONIC, the clock of systemd's *Monotonic
// timestamps.
func monotonic() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		panic("no CLOCK_MONOTONIC")
	}
	return time.Duration(ts.Nano())
}

// runCapture runs args in the container and returns its exit status and
// combined output.
func runCapture(ctx context.Context, m Executor, args ...string) (int, string, error) {
	var out bytes.Buffer
	w := &syncWriter{w: &out}
	code, err := m.Exec(ctx, nspawn.Process{Args: args, Stdout: w, Stderr: w, Env: []string{"SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "LANG=C.UTF-8"}})
	if err != nil {
		return code, out.String(), fmt.Errorf("running %s: %w", strings.Join(args, " "), err)
	}
	return code, out.String(), nil
}

// lastLines returns the last n non-empty lines of s, joined by "; ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
