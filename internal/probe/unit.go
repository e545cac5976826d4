package probe

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/nspawn"
	"golang.org/x/sys/unix"
)

// Executor runs commands in a booted container; *nspawn.Machine is one.
type Executor interface {
	Exec(ctx context.Context, p nspawn.Process) (int, error)
}

// UnitState is what `systemctl show` reports about a unit.
type UnitState struct {
	LoadState   string `json:"loadState"`   // loaded, not-found, masked, bad-setting, error
	ActiveState string `json:"activeState"` // active, activating, failed, inactive, ...
	SubState    string `json:"subState"`    // running, exited, start-pre, auto-restart, dead, ...
	Result      string `json:"result"`      // success, exit-code, timeout, ...
	NRestarts   int    `json:"restarts"`
	// MainExited is set once the unit's main process has exited.
	MainExited bool `json:"-"`
	MainStatus int  `json:"-"`
	// Job is the id of the unit's queued or running job, "" if none;
	// HasJob says whether systemd reported the property at all.
	Job    string `json:"-"`
	HasJob bool   `json:"-"`
	// ConditionFailed is set when a Condition...= or Assert...= of the
	// unit did not hold, so that systemd skipped starting it.
	ConditionFailed bool `json:"-"`
	// ActiveSince is when the unit last became active, on CLOCK_MONOTONIC
	// (which a container shares with the host); 0 if unknown.
	ActiveSince time.Duration `json:"-"`
}

// showProperties are the properties readUnit asks systemctl for.
const showProperties = "LoadState,ActiveState,SubState,Result,NRestarts,ExecMainStatus,ExecMainExitTimestampMonotonic,ActiveEnterTimestampMonotonic,Job,ConditionResult,AssertResult"

// ParseShow parses `systemctl show --property=...` output (KEY=VALUE
// lines).
func ParseShow(out string) UnitState {
	var s UnitState
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
		case "ConditionResult", "AssertResult":
			if v == "no" {
				s.ConditionFailed = true
			}
		}
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

// Verdict is what a unit state means for a probe waiting for the unit.
type Verdict int

const (
	Waiting Verdict = iota // not yet active, may still get there
	Ready                  // active
	Broken                 // will not become active by itself
)

// Evaluate says whether s, read after the unit was told to start, is
// active, may become active, or will not; for Broken, why.
func (s UnitState) Evaluate() (Verdict, string) {
	switch s.LoadState {
	case "not-found":
		return Broken, "no such unit"
	case "masked":
		return Broken, "the unit is masked"
	case "bad-setting", "error":
		return Broken, "the unit file is invalid (load state " + s.LoadState + ")"
	}
	switch s.ActiveState {
	case "active", "reloading":
		return Ready, ""
	case "failed":
		return Broken, failedReason(s)
	case "inactive":
		// Before its start job runs a unit is inactive too; once its main
		// process has exited it stays so.
		if s.Result != "" && s.Result != "success" {
			return Broken, failedReason(s)
		}
		if s.MainExited {
			return Broken, fmt.Sprintf("its main process exited (status %d) and the unit is inactive", s.MainStatus)
		}
		if s.ConditionFailed && s.Job == "" {
			return Broken, "systemd skipped starting it: a Condition or Assert of the unit does not hold"
		}
		if s.HasJob && s.Job == "" {
			return Broken, "inactive with no start job pending: it stopped again right away, or nothing started it"
		}
	}
	return Waiting, ""
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
		parts = append(parts, fmt.Sprintf("restarted %d times", s.NRestarts))
	}
	if len(parts) == 0 {
		return "the unit failed"
	}
	return "the unit failed: " + strings.Join(parts, ", ")
}

// UnitWait configures WaitUnit.
type UnitWait struct {
	// Timeout bounds the wait for the unit to become active.
	Timeout time.Duration
	// Settle is how long an active unit must stay active (a service that
	// exits right after starting is active for a moment).
	Settle time.Duration
	// Interval is the polling period (200ms if zero).
	Interval time.Duration
}

// UnitOutcome is what WaitUnit saw.
type UnitOutcome struct {
	State   UnitState
	Ready   bool
	Reason  string        // why not, when not Ready
	Seen    []string      // the distinct states in order, e.g. activating (start-pre), active (running)
	Waited  time.Duration // until active, or until giving up
	Timeout bool          // gave up because Timeout passed
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

// WaitUnit polls the unit until it is active and has stayed active for
// w.Settle, until it cannot become active, or until w.Timeout. The error
// is for failures to ask (the container went away, ctx ended), not for
// units that do not become active.
func WaitUnit(ctx context.Context, m Executor, unit string, w UnitWait) (UnitOutcome, error) {
	interval := w.Interval
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	start := time.Now()
	var o UnitOutcome
	var activeSince time.Time
	for {
		wait := interval
		s, err := readUnit(ctx, m, unit)
		if err != nil {
			return o, err
		}
		o.State = s
		if str := s.String(); len(o.Seen) == 0 || o.Seen[len(o.Seen)-1] != str {
			o.Seen = append(o.Seen, str)
		}
		v, reason := s.Evaluate()
		now := time.Now()
		switch v {
		case Broken:
			o.Reason, o.Waited = reason, now.Sub(start)
			return o, nil
		case Ready:
			if activeSince.IsZero() {
				activeSince = now
				// A unit that was active before we looked (started at
				// boot, or by its package) has been settling since then.
				if up, ok := monotonicNow(); ok && s.ActiveSince > 0 && s.ActiveSince <= up {
					activeSince = now.Add(-(up - s.ActiveSince))
				}
				o.Waited = now.Sub(start)
			}
			if left := w.Settle - now.Sub(activeSince); left <= 0 {
				o.Ready = true
				return o, nil
			} else if left < interval {
				wait = left
			}
		default:
			activeSince = time.Time{}
			if now.Sub(start) >= w.Timeout {
				o.Timeout, o.Waited = true, now.Sub(start)
				o.Reason = fmt.Sprintf("not active within %s (state: %s)", w.Timeout, s)
				if s.NRestarts > 0 {
					o.Reason += fmt.Sprintf(", restarted %d times", s.NRestarts)
				}
				return o, nil
			}
		}
		select {
		case <-ctx.Done():
			return o, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// monotonicNow reads CLOCK_MONOTONIC, the clock of systemd's *Monotonic
// timestamps.
func monotonicNow() (time.Duration, bool) {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
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
