package scripttest

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// exitcode N PROG [ARG...]
//
// Runs PROG like exec and passes if it exits with status N; its stdout and
// stderr are then checked with stdout and stderr, as after exec.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N PROG [ARG...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("usage: exitcode N PROG [ARG...] (N %q is not a number)", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		got = exitErr.ExitCode() // -1 if killed by a signal
		if !exitErr.Exited() {
			ts.Fatalf("%s: %v, want exit status %d", args[1], err, want)
		}
	case err != nil:
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// noprocs [-wait DUR] PATTERN
//
// Passes if no process's command line (its arguments joined by blanks)
// matches the regular expression PATTERN, looking once (with -wait: until
// none does, for up to DUR, for processes on their way out); `! noprocs
// PATTERN` passes once one does (waiting up to 10s, or -wait DUR, for a
// process being started). Zombies and this test process are not looked at. Lists the
// matches, e.g. `noprocs 'systemd-nspawn .*--machine=web1( |$)'`.
func cmdNoprocs(ts *testscript.TestScript, neg bool, args []string) {
	var wait time.Duration
	appear := 10 * time.Second
	if len(args) == 3 && args[0] == "-wait" {
		d, err := time.ParseDuration(args[1])
		if err != nil {
			ts.Fatalf("noprocs: -wait: %v", err)
		}
		wait, args = d, args[2:]
		if neg {
			appear, wait = wait, 0
		}
	}
	if len(args) != 1 {
		ts.Fatalf("usage: noprocs [-wait DUR] PATTERN")
	}
	re, err := regexp.Compile(args[0])
	if err != nil {
		ts.Fatalf("noprocs: %v", err)
	}
	var found []string
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		for _, p := range processes() {
			if line := strings.Join(p.args, " "); re.MatchString(line) {
				found = append(found, fmt.Sprintf("pid %d: %s", p.pid, line))
			}
		}
		if !neg && len(found) > 0 && time.Since(start) < wait {
			found = nil
			continue
		}
		if !neg || len(found) > 0 || time.Since(start) > appear {
			break
		}
	}
	switch {
	case neg && len(found) == 0:
		ts.Fatalf("no process matches %q after %s", args[0], appear)
	case !neg && len(found) > 0:
		ts.Fatalf("processes match %q:\n%s", args[0], strings.Join(found, "\n"))
	}
}

// signals are what signal sends; testscript's kill has only INT and KILL.
var signals = map[string]syscall.Signal{
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP,
	"QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
}

// signaledCmds remembers, per script and WORD, the command that signal
// signaled and when, for signaled.
var signaledCmds = struct {
	sync.Mutex
	m map[*testscript.TestScript]map[string]signaledCmd
}{m: map[*testscript.TestScript]map[string]signaledCmd{}}

type signaledCmd struct {
	cmd  *exec.Cmd
	sent time.Time
}

// signal SIG WORD
//
// Sends SIG (INT, TERM, HUP, QUIT or KILL) to the one background command of
// this script (`exec ... &NAME&`) that has WORD among its arguments. Check
// how it ended with `wait NAME`, then signaled.
func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: signal SIG WORD")
	}
	sig, ok := signals[args[0]]
	if !ok {
		ts.Fatalf("signal: unknown signal %q (valid: INT, TERM, HUP, QUIT, KILL)", args[0])
	}
	var found []*exec.Cmd
	for _, c := range ts.BackgroundCmds() {
		if slices.Contains(c.Args[1:], args[1]) {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		ts.Fatalf("signal: %d background commands have the argument %q, want 1", len(found), args[1])
	}
	sent := time.Now()
	ts.Check(found[0].Process.Signal(sig))
	signaledCmds.Lock()
	defer signaledCmds.Unlock()
	if signaledCmds.m[ts] == nil {
		signaledCmds.m[ts] = map[string]signaledCmd{}
		ts.Defer(func() {
			signaledCmds.Lock()
			delete(signaledCmds.m, ts)
			signaledCmds.Unlock()
		})
	}
	signaledCmds.m[ts][args[1]] = signaledCmd{found[0], sent}
}

// signaled WORD N WITHIN
//
// After `signal SIG WORD` and `wait` for that command: passes if it exited
// with status N (128+S for death by signal S, as a shell says) at most
// WITHIN (e.g. 3s) after the signal was sent, as far as `wait` returning
// tells.
func cmdSignaled(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "signaled WORD N WITHIN"
	if neg || len(args) != 3 {
		ts.Fatalf("usage: %s", usage)
	}
	want, err := strconv.Atoi(args[1])
	if err != nil {
		ts.Fatalf("signaled: N %q is not a number\nusage: %s", args[1], usage)
	}
	limit, err := time.ParseDuration(args[2])
	if err != nil {
		ts.Fatalf("signaled: %v\nusage: %s", err, usage)
	}
	signaledCmds.Lock()
	sc, ok := signaledCmds.m[ts][args[0]]
	signaledCmds.Unlock()
	if !ok {
		ts.Fatalf("signaled: no `signal SIG %s` before", args[0])
	}
	if sc.cmd.ProcessState == nil {
		ts.Fatalf("signaled: the command with %q has not been waited for: `wait` for it first", args[0])
	}
	took := time.Since(sc.sent)
	ts.Logf("%s: %v, %v after the signal", filepath.Base(sc.cmd.Args[0]), sc.cmd.ProcessState, took.Round(time.Millisecond))
	got := sc.cmd.ProcessState.ExitCode()
	if ws, ok := sc.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		got = 128 + int(ws.Signal())
	}
	if got != want {
		ts.Fatalf("the command with %q ended with %v, want exit status %d", args[0], sc.cmd.ProcessState, want)
	}
	if took > limit {
		ts.Fatalf("the command with %q took %v after the signal to exit, want at most %v", args[0], took.Round(time.Millisecond), limit)
	}
}
