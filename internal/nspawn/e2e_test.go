package nspawn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testName returns a machine name no other test (or test run) uses.
func testName(t testing.TB) string {
	var b [4]byte
	rand.Read(b[:])
	return "rt-" + hex.EncodeToString(b[:])
}

// testLogger logs to t when -v is given.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startMachine boots a container of the test root filesystem with opts
// (Name, RootFS and StateDir filled in if empty) and shuts it down when the
// test ends, checking that nothing of it is left.
func startMachine(t *testing.T, opts Options) *Machine {
	t.Helper()
	if opts.RootFS == "" {
		opts.RootFS = testRootFS(t, false)
	}
	if opts.Name == "" {
		opts.Name = testName(t)
	}
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	traces := traceOf(m)
	t.Cleanup(func() {
		if err := m.Shutdown(context.Background(), 30*time.Second); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Shutdown: %v", err)
		}
		assertGone(t, opts.StateDir, traces)
	})
	return m
}

// trace identifies the processes and names of a container, to check that
// they are gone.
type trace struct {
	name                     string
	nspawnPID, leaderPID     int
	nspawnStart, leaderStart uint64
}

func traceOf(m *Machine) trace {
	return trace{name: m.rec.Name, nspawnPID: m.rec.NspawnPID, nspawnStart: m.rec.NspawnStart,
		leaderPID: m.rec.LeaderPID, leaderStart: m.rec.LeaderStart}
}

// assertGone checks that nothing of container tr is left: no nspawn, no
// init, no process naming the machine, no mount of it, no state, no
// propagate directory.
func assertGone(t *testing.T, stateDir string, tr trace) {
	t.Helper()
	if tr.nspawnPID != 0 && alive(tr.nspawnPID, tr.nspawnStart) {
		t.Errorf("systemd-nspawn (pid %d) of %s still runs", tr.nspawnPID, tr.name)
	}
	if tr.leaderPID != 0 && alive(tr.leaderPID, tr.leaderStart) {
		t.Errorf("init (pid %d) of %s still runs", tr.leaderPID, tr.name)
	}
	// Other containers may run on this machine: look for ours by name.
	if pids := processesWith("--machine=" + tr.name); len(pids) > 0 {
		t.Errorf("processes of %s still run: %v", tr.name, pids)
	}
	for _, pid := range []string{"self", "1"} {
		mi, err := os.ReadFile("/proc/" + pid + "/mountinfo")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(mi), "\n") {
			if strings.Contains(line, tr.name) || strings.Contains(line, testCache()) || strings.Contains(line, "/userns/mnt") {
				t.Errorf("mount left in /proc/%s/mountinfo: %s", pid, line)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join("/run/systemd/nspawn/propagate", tr.name)); err == nil {
		t.Errorf("/run/systemd/nspawn/propagate/%s is left", tr.name)
	}
	if stateDir != "" {
		if _, err := os.Lstat(filepath.Join(stateDir, "containers", tr.name)); err == nil {
			t.Errorf("state of %s is left", tr.name)
		}
		if r := reservationOf(stateDir, tr.name); r != nil {
			t.Errorf("user ID range %d of %s is still reserved", r.Base, tr.name)
		}
	}
	if cgs := cgroupsOf(tr.name); len(cgs) > 0 {
		t.Errorf("cgroups of %s are left: %v", tr.name, cgs)
	}
}

// reservationOf returns the ID range reserved for the container name of
// stateDir, or nil.
func reservationOf(stateDir, name string) *idRange {
	dir := usernsDir(stateDir)
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		if r, err := readRange(dir, filepath.Base(f)); err == nil && r.Name == name {
			return r
		}
	}
	return nil
}

// cgroupsOf returns the cgroups made for the container name (see
// makeCgroups) that exist.
func cgroupsOf(name string) []string {
	var out []string
	for _, pattern := range []string{"/sys/fs/cgroup/racker-", "/sys/fs/cgroup/*/racker-"} {
		m, _ := filepath.Glob(pattern + name + "-*")
		out = append(out, m...)
	}
	return out
}

// processesWith returns the pids of live processes with arg on their
// command line.
func processesWith(arg string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(cmdline) == 0 { // gone, or a zombie
			continue
		}
		for _, a := range strings.Split(string(cmdline), "\x00") {
			if a == arg {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// run runs args in m and returns the exit status and output.
func run(t *testing.T, m *Machine, p Process) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if p.Stdout == nil {
		p.Stdout = &stdout
	}
	if p.Stderr == nil {
		p.Stderr = &stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, err := m.Exec(ctx, p)
	var ee *ExecError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("Exec %q: %v", p.Args, err)
	}
	return code, stdout.String(), stderr.String()
}

func sh(script string) []string { return []string{"sh", "-c", script} }

// executors runs f against a container using each way into it.
func executors(t *testing.T, f func(t *testing.T, m *Machine)) {
	for _, e := range []struct {
		name string
		exec Executor
	}{{"dbus", ExecDBus}, {"nsenter", ExecNsenter}} {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			m := startMachine(t, Options{Executor: e.exec})
			if m.executor != e.exec {
				t.Fatalf("executor = %v, want %v", m.executor, e.exec)
			}
			f(t, m)
		})
	}
}

func TestExecExitStatus(t *testing.T) {
	executors(t, func(t *testing.T, m *Machine) {
		for _, tc := range []struct {
			args []string
			want int
			err  bool
		}{
			{[]string{"true"}, 0, false},
			{[]string{"false"}, 1, false},
			{sh("exit 7"), 7, false},
			{sh("kill -KILL $$"), 128 + 9, false},
			{sh("exit 203"), 203, false}, // systemd's EXIT_EXEC, but from the command
			{[]string{"no-such-command"}, 127, true},
			{[]string{"/usr/bin/no-such-command"}, 127, true},
			{[]string{"/etc/passwd"}, 126, true},
			{[]string{"/etc"}, 126, true},
		} {
			code, _, _ := run(t, m, Process{Args: tc.args})
			if code != tc.want {
				t.Errorf("%q: exit status %d, want %d", tc.args, code, tc.want)
			}
			_, err := m.Exec(context.Background(), Process{Args: tc.args})
			var ee *ExecError
			if got := errors.As(err, &ee); got != tc.err {
				t.Errorf("%q: error %v, want an *ExecError: %v", tc.args, err, tc.err)
			}
		}
	})
}

// TestExecLegacyBus follows units the way Exec does with systemd older than
// 236 (no AddRef, no CollectMode): through signals alone.
func TestExecLegacyBus(t *testing.T) {
	m := startMachine(t, Options{Executor: ExecDBus})
	m.bus.legacy.Store(true)
	for _, tc := range []struct {
		args []string
		want int
		out  string
	}{
		{[]string{"true"}, 0, ""},
		{sh("echo hi; exit 7"), 7, "hi\n"},
		{sh("kill -TERM $$"), 128 + 15, ""},
	} {
		for i := 0; i < 5; i++ { // races between signals and replies vary
			code, out, _ := run(t, m, Process{Args: tc.args})
			if code != tc.want || out != tc.out {
				t.Errorf("%q: %d %q, want %d %q", tc.args, code, out, tc.want, tc.out)
			}
		}
	}
	// Failed units are reset, not left behind.
	_, out, _ := run(t, m, Process{Args: []string{"systemctl", "list-units", "--all", "--plain", "--no-legend", "racker-exec-*"}})
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != 1 {
		t.Errorf("units left besides the listing one:\n%s", out)
	}
}

func TestExecWithoutDBus(t *testing.T) {
	// An image whose system bus never starts.
	rootfs := maskedRootFS(t, testRootFS(t, false), []string{"dbus.socket", "dbus.service"})
	m := startMachine(t, Options{RootFS: rootfs})
	if m.executor != ExecNsenter {
		t.Errorf("executor without D-Bus: %v, want nsenter", m.executor)
	}
	if code, out, _ := run(t, m, Process{Args: sh("echo via nsenter; exit 4")}); code != 4 || out != "via nsenter\n" {
		t.Errorf("Exec: %d %q", code, out)
	}
	// Asking for D-Bus explicitly fails the boot, and cleans up.
	state := t.TempDir()
	name := testName(t)
	_, err := Start(context.Background(), Options{Name: name, RootFS: rootfs, StateDir: state, Executor: ExecDBus})
	var be *BootError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "D-Bus") {
		t.Errorf("Start with ExecDBus: %v", err)
	}
	assertGone(t, state, trace{name: name})
}

func TestExecStdio(t *testing.T) {
	executors(t, func(t *testing.T, m *Machine) {
		input := make([]byte, 3<<20)
		rand.Read(input)
		// Through pipes (bytes.Buffer, bytes.Reader) ...
		var stdout, stderr bytes.Buffer
		code, err := m.Exec(context.Background(), Process{
			Args:  sh("cat; printf 'to stderr\\000\\n' >&2"),
			Stdin: bytes.NewReader(input), Stdout: &stdout, Stderr: &stderr,
		})
		if err != nil || code != 0 {
			t.Fatalf("Exec: %d, %v", code, err)
		}
		if !bytes.Equal(stdout.Bytes(), input) {
			t.Errorf("stdout: %d bytes differ from the %d bytes of stdin", stdout.Len(), len(input))
		}
		if got := stderr.String(); got != "to stderr\x00\n" {
			t.Errorf("stderr = %q", got)
		}
		// ... and handing over files.
		dir := t.TempDir()
		in := filepath.Join(dir, "in")
		os.WriteFile(in, input, 0o600)
		inF, _ := os.Open(in)
		defer inF.Close()
		outF, _ := os.Create(filepath.Join(dir, "out"))
		defer outF.Close()
		errF, _ := os.Create(filepath.Join(dir, "err"))
		defer errF.Close()
		code, err = m.Exec(context.Background(), Process{
			Args:  sh("cat; echo oops >&2; exit 3"),
			Stdin: inF, Stdout: outF, Stderr: errF,
		})
		if err != nil || code != 3 {
			t.Fatalf("Exec with files: %d, %v", code, err)
		}
		if got, _ := os.ReadFile(outF.Name()); !bytes.Equal(got, input) {
			t.Errorf("stdout file: %d bytes differ from the %d bytes of stdin", len(got), len(input))
		}
		if got, _ := os.ReadFile(errF.Name()); string(got) != "oops\n" {
			t.Errorf("stderr file = %q", got)
		}
		// No stdin: /dev/null.
		if code, out, _ := run(t, m, Process{Args: []string{"wc", "-c"}}); code != 0 || strings.TrimSpace(out) != "0" {
			t.Errorf("wc -c without stdin: %d %q", code, out)
		}
	})
}

func TestExecArgvVerbatim(t *testing.T) {
	args := []string{"$HOME", "${PATH}", "$$", "%n %i %%", `back\slash`, `"quoted" 'single'`, "", "new\nline", "tab\there", "ünïcode"}
	env := []string{"LITERAL=$HOME ${PATH} %n \\"}
	executors(t, func(t *testing.T, m *Machine) {
		code, out, _ := run(t, m, Process{Args: append([]string{"printf", "[%s]\n"}, args...)})
		want := ""
		for _, a := range args {
			want += "[" + a + "]\n"
		}
		if code != 0 || out != want {
			t.Errorf("printf of the arguments: %d\n%q\nwant\n%q", code, out, want)
		}
		code, out, _ = run(t, m, Process{Args: sh(`printf '%s' "$LITERAL"`), Env: env})
		if code != 0 || out != env[0][len("LITERAL="):] {
			t.Errorf("environment value: %q, want %q", out, env[0][len("LITERAL="):])
		}
	})
}

func TestExecEnvDirUser(t *testing.T) {
	executors(t, func(t *testing.T, m *Machine) {
		for _, tc := range []struct {
			p    Process
			want string
		}{
			{Process{Args: sh(`echo "$FOO|$BAR|$PATH|$HOME"`), Env: []string{"FOO=foo bar", "BAR="}},
				"foo bar||" + DefaultPath + "|/root\n"},
			{Process{Args: sh(`echo "$PATH"`), Env: []string{"PATH=/bin"}}, "/bin\n"},
			{Process{Args: []string{"pwd"}}, "/\n"},
			{Process{Args: []string{"pwd"}, Dir: "/usr/share"}, "/usr/share\n"},
			{Process{Args: []string{"pwd"}, Dir: "/made/by/racker"}, "/made/by/racker\n"},
			{Process{Args: []string{"../../bin/echo", "relative"}, Dir: "/usr/share"}, "relative\n"},
			{Process{Args: sh("id -u; id -g; id -un")}, "0\n0\nroot\n"},
			{Process{Args: sh("id -u; id -g; echo $HOME"), User: "nobody"}, "65534\n65534\n/nonexistent\n"},
			{Process{Args: sh("id -u; id -g"), User: "1234:4321"}, "1234\n4321\n"},
			{Process{Args: sh("id -u; id -gn"), User: "daemon:users"}, "1\nusers\n"},
		} {
			code, out, stderr := run(t, m, tc.p)
			if code != 0 || out != tc.want {
				t.Errorf("%q (user %q, dir %q, env %q): %d %q, want 0 %q; stderr %q",
					tc.p.Args, tc.p.User, tc.p.Dir, tc.p.Env, code, out, tc.want, stderr)
			}
		}
		code, _, _ := run(t, m, Process{Args: []string{"true"}, User: "no-such-user"})
		if code != 126 {
			t.Errorf("unknown user: exit status %d, want 126", code)
		}
	})
}

// readAll reads r until EOF or error in the background.
func readAll(r io.Reader) <-chan []byte {
	ch := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		ch <- b
	}()
	return ch
}

func TestExecTTY(t *testing.T) {
	executors(t, func(t *testing.T, m *Machine) {
		pty, err := m.OpenPTY()
		if err != nil {
			t.Fatal(err)
		}
		defer pty.Close()
		if !strings.HasPrefix(pty.Name, "/dev/pts/") {
			t.Fatalf("pty name %q", pty.Name)
		}
		if err := pty.Resize(33, 77); err != nil {
			t.Fatal(err)
		}
		out := readAll(pty.Master)
		io.WriteString(pty.Master, "typed\n")
		code, err := m.Exec(context.Background(), Process{
			Args: sh(`tty; stty size; read x; echo "got:$x"; echo "TERM=$TERM"; exit 5`), TTY: pty,
		})
		if err != nil || code != 5 {
			t.Fatalf("Exec: %d, %v", code, err)
		}
		var got string
		select {
		case b := <-out:
			got = strings.ReplaceAll(string(b), "\r\n", "\n")
		case <-time.After(10 * time.Second):
			t.Fatal("the pty master did not report the end of output")
		}
		for _, want := range []string{pty.Name + "\n", "33 77\n", "got:typed\n", "TERM=xterm\n"} {
			if !strings.Contains(got, want) {
				t.Errorf("terminal output %q lacks %q", got, want)
			}
		}
	})
}

func TestBootTimeout(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	name := testName(t)
	start := time.Now()
	m, err := Start(context.Background(), Options{Name: name, RootFS: rootfs, StateDir: state, BootTimeout: 150 * time.Millisecond, Logger: testLogger(t)})
	if err == nil {
		m.Close()
		t.Fatal("Start succeeded within 150ms")
	}
	var be *BootError
	if !errors.As(err, &be) || !errors.Is(err, ErrBootTimeout) {
		t.Fatalf("error %v (%T), want a *BootError wrapping ErrBootTimeout", err, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Start took %s to give up", d)
	}
	// The console tail: what nspawn and systemd printed, up to the end.
	console := strings.Join(be.Console, "\n")
	if len(be.Console) == 0 || len(be.Console) > consoleTail || strings.Contains(console, "\x1b") ||
		!strings.Contains(console, "Container "+name) ||
		!(strings.Contains(console, "Spawning container") || strings.Contains(console, "systemd")) {
		t.Errorf("console lines %q", be.Console)
	}
	if !strings.Contains(err.Error(), "lines of the console:\n    ") || !strings.Contains(err.Error(), be.Console[len(be.Console)-1]) {
		t.Errorf("error text does not show the console:\n%v", err)
	}
	assertGone(t, state, trace{name: name})
	if cs, _ := List(state); len(cs) != 0 {
		t.Errorf("List after failed boot: %+v", cs)
	}
}

func TestBootFailure(t *testing.T) {
	requireE2E(t)
	// Not an OS tree: nspawn exits at once.
	empty := t.TempDir()
	state := t.TempDir()
	name := testName(t)
	_, err := Start(context.Background(), Options{Name: name, RootFS: empty, StateDir: state})
	var be *BootError
	if !errors.As(err, &be) || errors.Is(err, ErrBootTimeout) {
		t.Fatalf("error %v, want a *BootError for an early exit", err)
	}
	if !strings.Contains(err.Error(), "exited") || len(be.Console) == 0 {
		t.Errorf("error does not explain the failure:\n%v", err)
	}
	assertGone(t, state, trace{name: name})
}

func TestCancelDuringBoot(t *testing.T) {
	rootfs := testRootFS(t, false)
	for _, delay := range []time.Duration{0, 50 * time.Millisecond, 200 * time.Millisecond} {
		state := t.TempDir()
		name := testName(t)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(delay, cancel)
		m, err := Start(ctx, Options{Name: name, RootFS: rootfs, StateDir: state, Logger: testLogger(t)})
		if err == nil {
			m.Close()
			t.Fatalf("Start cancelled after %s succeeded", delay)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancel after %s: error %v, want context.Canceled", delay, err)
		}
		assertGone(t, state, trace{name: name})
	}
}

func TestCancelDuringExec(t *testing.T) {
	executors(t, func(t *testing.T, m *Machine) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		// One sleep in a session of its own: killing the process group
		// is not enough.
		code, err := m.Exec(ctx, Process{Args: sh("setsid sleep 1000 & sleep 1000; echo not reached"), Stdout: io.Discard})
		if !errors.Is(err, context.DeadlineExceeded) || code != -1 {
			t.Errorf("Exec = %d, %v; want -1, context.DeadlineExceeded", code, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("cancelled Exec returned after %s", d)
		}
		// Cancelled before it starts: nothing runs, nothing breaks.
		done, stop := context.WithCancel(context.Background())
		stop()
		if code, err := m.Exec(done, Process{Args: sh("sleep 1000"), Stdout: io.Discard}); !errors.Is(err, context.Canceled) || code != -1 {
			t.Errorf("Exec with a cancelled context = %d, %v; want -1, context.Canceled", code, err)
		}
		// The command is gone from the container, and so is its unit: no
		// sleep, not even a zombie, and no zombie whose parent is outside
		// the container (nsenter's child, orphaned to the host's init,
		// which kept the container's PID namespace from ending).
		code, out, _ := run(t, m, Process{Args: sh(`for p in /proc/[0-9]*; do cat $p/comm; done 2>/dev/null | grep -c '^sleep$'`)})
		if strings.TrimSpace(out) != "0" {
			t.Errorf("sleep processes left in the container: %q (%d)", out, code)
		}
		code, out, _ = run(t, m, Process{Args: sh(`grep -h ') Z 0 ' /proc/[0-9]*/stat`)})
		if code != 1 {
			t.Errorf("zombies orphaned outside the container: %q (%d)", out, code)
		}
		if m.executor == ExecDBus {
			_, out, _ = run(t, m, Process{Args: []string{"systemctl", "list-units", "--all", "--plain", "--no-legend", "racker-exec-*"}})
			if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != 1 {
				t.Errorf("units left besides the listing one:\n%s", out)
			}
		}
	})
}

func TestShutdownIsClean(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	m, err := Start(context.Background(), Options{Name: testName(t), RootFS: rootfs, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	tr := traceOf(m)
	if code, _, _ := run(t, m, Process{Args: []string{"true"}}); code != 0 {
		t.Fatalf("true: %d", code)
	}
	start := time.Now()
	if err := m.Shutdown(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("orderly shutdown took %s", time.Since(start))
	// Powered off, not killed: systemd logged its way down.
	select {
	case <-m.Done():
	default:
		t.Error("Done not closed after Shutdown")
	}
	if ps := m.cmd.ProcessState; ps == nil || ps.ExitCode() != 0 {
		t.Errorf("nspawn exit: %v, want 0 after a poweroff", ps)
	}
	assertGone(t, state, tr)
	if err := m.Shutdown(context.Background(), 0); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if _, err := m.Exec(context.Background(), Process{Args: []string{"true"}}); !errors.Is(err, ErrStopped) {
		t.Errorf("Exec after Shutdown: %v, want ErrStopped", err)
	}
}

func TestPoweroffFromInside(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	m, err := Start(context.Background(), Options{Name: testName(t), RootFS: rootfs, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tr := traceOf(m)
	m.Exec(context.Background(), Process{Args: []string{"systemctl", "--no-block", "poweroff"}})
	select {
	case <-m.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("container did not power off")
	}
	// The state is released by the machine's own watcher.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cs, _ := List(state); len(cs) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	assertGone(t, state, tr)
}

func TestTwoMachinesAndNameClash(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	var a, b *Machine
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a, _ = Start(context.Background(), Options{Name: testName(t), RootFS: rootfs, StateDir: state, Hostname: "alpha"})
	}()
	go func() {
		defer wg.Done()
		b, _ = Start(context.Background(), Options{Name: testName(t), RootFS: rootfs, StateDir: state, Hostname: "beta"})
	}()
	wg.Wait()
	if a == nil || b == nil {
		t.Fatal("starting two machines at once failed")
	}
	for _, m := range []*Machine{a, b} {
		tr := traceOf(m)
		t.Cleanup(func() {
			m.Shutdown(context.Background(), 0)
			assertGone(t, state, tr)
		})
	}
	if _, out, _ := run(t, a, Process{Args: []string{"hostname"}}); out != "alpha\n" {
		t.Errorf("hostname in a: %q", out)
	}
	if _, out, _ := run(t, b, Process{Args: []string{"hostname"}}); out != "beta\n" {
		t.Errorf("hostname in b: %q", out)
	}
	cs, err := List(state)
	if err != nil || len(cs) != 2 {
		t.Fatalf("List: %+v, %v", cs, err)
	}
	// Same name again: refused, and the running one is unharmed.
	_, err = Start(context.Background(), Options{Name: a.Name(), RootFS: rootfs, StateDir: state})
	if !errors.Is(err, ErrNameInUse) || !strings.Contains(err.Error(), a.Name()) {
		t.Errorf("second container named %s: %v, want ErrNameInUse", a.Name(), err)
	}
	_, err = Run(context.Background(), Options{Name: a.Name(), RootFS: rootfs, StateDir: state}, Process{Args: []string{"true"}})
	if !errors.Is(err, ErrNameInUse) {
		t.Errorf("Run named %s: %v, want ErrNameInUse", a.Name(), err)
	}
	if code, _, _ := run(t, a, Process{Args: []string{"true"}}); code != 0 {
		t.Errorf("a after the clash: %d", code)
	}
	if cs, _ := List(state); len(cs) != 2 {
		t.Errorf("List after the clash: %+v", cs)
	}
}

func TestBindsAndPrivateNetwork(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), []byte("from host\n"), 0o644)
	m := startMachine(t, Options{
		Binds: []Bind{
			{Host: dir, Container: "/mnt/ro", ReadOnly: true},
			{Host: dir, Container: "/mnt/rw"},
		},
		PrivateNetwork: true,
	})
	if _, out, _ := run(t, m, Process{Args: []string{"cat", "/mnt/ro/file"}}); out != "from host\n" {
		t.Errorf("bound file: %q", out)
	}
	if code, _, _ := run(t, m, Process{Args: sh("echo x > /mnt/ro/new")}); code == 0 {
		t.Error("wrote through a read-only bind")
	}
	if code, _, _ := run(t, m, Process{Args: sh("echo x > /mnt/rw/new")}); code != 0 {
		t.Error("could not write through a read-write bind")
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err != nil {
		t.Errorf("write through the bind did not reach the host: %v", err)
	}
	_, out, _ := run(t, m, Process{Args: sh("ls /sys/class/net")})
	if strings.TrimSpace(out) != "lo" {
		t.Errorf("interfaces with PrivateNetwork: %q", out)
	}
}

func TestVolatileRootFS(t *testing.T) {
	rootfs := testRootFS(t, false)
	m := startMachine(t, Options{RootFS: rootfs})
	if code, _, stderr := run(t, m, Process{Args: sh("echo changed > /etc/racker-volatile && rm /etc/hostname")}); code != 0 {
		t.Fatalf("writing in the container: %s", stderr)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "etc/racker-volatile")); err == nil {
		t.Error("a write in the container reached the stored root filesystem")
	}
	if _, err := os.Stat(filepath.Join(rootfs, "etc/hostname")); err != nil {
		t.Error("a removal in the container reached the stored root filesystem")
	}
}

// The helper process of TestDetached and TestOwnerKilled: it starts a
// container (detached or attached) as racker would, prints its pids, and
// exits (detached) or waits to be killed (attached).
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("RACKER_NSPAWN_HELPER")
	if mode == "" {
		return // not run as a helper
	}
	m, err := Start(context.Background(), Options{
		Name: os.Getenv("RACKER_NSPAWN_NAME"), RootFS: os.Getenv("RACKER_NSPAWN_ROOTFS"),
		StateDir: os.Getenv("RACKER_NSPAWN_STATE"), Image: "test/image:1", Detach: mode == "detach",
	})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready", m.rec.NspawnPID, m.rec.NspawnStart, m.rec.LeaderPID, m.rec.LeaderStart)
	if mode == "detach" {
		m.Close()
		os.Exit(0)
	}
	select {}
}

// startHelper runs TestHelperProcess in a new process and returns the trace
// of the container it started.
func startHelper(t *testing.T, mode, name, rootfs, state string) (*exec.Cmd, trace) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "RACKER_NSPAWN_HELPER="+mode, "RACKER_NSPAWN_NAME="+name,
		"RACKER_NSPAWN_ROOTFS="+rootfs, "RACKER_NSPAWN_STATE="+state)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	tr := trace{name: name}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 5 && f[0] == "ready" {
			tr.nspawnPID, _ = strconv.Atoi(f[1])
			tr.nspawnStart, _ = strconv.ParseUint(f[2], 10, 64)
			tr.leaderPID, _ = strconv.Atoi(f[3])
			tr.leaderStart, _ = strconv.ParseUint(f[4], 10, 64)
			go io.Copy(io.Discard, out)
			return cmd, tr
		}
		if len(f) > 0 && f[0] == "error" {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatalf("helper did not start the container")
	return nil, tr
}

func TestDetached(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	name := testName(t)
	helper, tr := startHelper(t, "detach", name, rootfs, state)
	if err := helper.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	t.Cleanup(func() {
		Stop(context.Background(), state, name, time.Second)
		assertGone(t, state, tr)
	})
	// The starting process is gone; the container is not.
	if !alive(tr.nspawnPID, tr.nspawnStart) || !alive(tr.leaderPID, tr.leaderStart) {
		t.Fatal("the detached container died with the process that started it")
	}
	cs, err := List(state)
	if err != nil || len(cs) != 1 {
		t.Fatalf("List: %+v, %v", cs, err)
	}
	c := cs[0]
	if c.Name != name || c.Image != "test/image:1" || c.RootFS != rootfs || !c.Detached || !c.Booted ||
		c.Status != "running" || c.LeaderPID != tr.leaderPID || c.NspawnPID != tr.nspawnPID || time.Since(c.Started) > time.Minute {
		t.Errorf("List: %+v", c)
	}
	// Exec into it from this process, as racker exec would.
	m, err := Open(context.Background(), state, name, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if code, out, _ := run(t, m, Process{Args: []string{"cat", "/etc/hostname"}}); code != 0 || out == "" {
		t.Errorf("Exec in the opened container: %d %q", code, out)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !alive(tr.leaderPID, tr.leaderStart) {
		t.Fatal("Close of an opened machine stopped the container")
	}
	// The console went to the state directory.
	if lines := tailFile(filepath.Join(state, "containers", name, "console.log"), 100); !strings.Contains(strings.Join(lines, "\n"), "Spawning container") {
		t.Errorf("console log: %q", lines)
	}
	start := time.Now()
	if err := Stop(context.Background(), state, name, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %s", time.Since(start))
	assertGone(t, state, tr)
	if cs, _ := List(state); len(cs) != 0 {
		t.Errorf("List after Stop: %+v", cs)
	}
	if err := Stop(context.Background(), state, name, time.Second); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("second Stop: %v, want ErrNoSuchContainer", err)
	}
	if _, err := Open(context.Background(), state, name, nil); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("Open after Stop: %v, want ErrNoSuchContainer", err)
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	m := startMachine(t, Options{RootFS: rootfs, StateDir: state, Detach: true})
	tr := traceOf(m)
	// A service that refuses to stop holds up the poweroff.
	code, _, stderr := run(t, m, Process{Args: []string{"systemd-run", "--unit=stubborn", "-p", "KillSignal=SIGCONT",
		"-p", "TimeoutStopSec=600", "sleep", "infinity"}})
	if code != 0 {
		t.Fatalf("systemd-run: %s", stderr)
	}
	start := time.Now()
	if err := Stop(context.Background(), state, m.Name(), 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("Stop with a 500ms timeout took %s", d)
	}
	assertGone(t, state, tr)
}

func TestOwnerKilled(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	name := testName(t)
	helper, tr := startHelper(t, "attach", name, rootfs, state)
	nspawn, err := openProc(tr.nspawnPID, tr.nspawnStart)
	if err != nil {
		t.Fatal(err)
	}
	defer nspawn.close()
	// racker dies without any chance to clean up.
	helper.Process.Signal(syscall.SIGKILL)
	helper.Wait()
	if !nspawn.wait(context.Background(), 30*time.Second) {
		t.Fatal("nspawn outlived the process that started it (attached)")
	}
	// The dead owner's state is pruned by the next List.
	if cs, err := List(state); err != nil || len(cs) != 0 {
		t.Errorf("List: %+v, %v", cs, err)
	}
	assertGone(t, state, tr)
}

func TestRunWithoutBoot(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	runIt := func(p Process) (int, string, string, error) {
		var stdout, stderr bytes.Buffer
		if p.Stdout == nil {
			p.Stdout = &stdout
		}
		p.Stderr = &stderr
		code, err := Run(context.Background(), Options{Name: testName(t), RootFS: rootfs, StateDir: state, Logger: testLogger(t)}, p)
		return code, stdout.String(), stderr.String(), err
	}
	for _, tc := range []struct {
		p          Process
		code       int
		out, serr  string
		wantExecEr bool
	}{
		{p: Process{Args: []string{"true"}}, code: 0},
		{p: Process{Args: sh("echo out; echo err >&2; exit 7")}, code: 7, out: "out\n", serr: "err\n"},
		{p: Process{Args: sh(`echo "$FOO $PATH"; pwd; id -un`), Env: []string{"FOO=bar"}, Dir: "/usr", User: "nobody"},
			out: "bar " + DefaultPath + "\n/usr\nnobody\n"},
		{p: Process{Args: []string{"no-such-command"}}, code: 127, wantExecEr: true},
		{p: Process{Args: []string{"/etc/passwd"}}, code: 126, wantExecEr: true},
		{p: Process{Args: []string{"true"}, Dir: "/no/such/dir"}, code: 126, wantExecEr: true},
		{p: Process{Args: []string{"true"}, User: "no-such-user"}, code: 126, wantExecEr: true},
		{p: Process{Args: []string{"true"}, User: "4242"}, code: 126, wantExecEr: true},
		{p: Process{Args: []string{"id", "-u"}, User: "65534"}, out: "65534\n"},
	} {
		code, out, serr, err := runIt(tc.p)
		var ee *ExecError
		if code != tc.code || out != tc.out || serr != tc.serr || errors.As(err, &ee) != tc.wantExecEr ||
			(err != nil && !tc.wantExecEr) {
			t.Errorf("Run %q: %d %q %q %v; want %d %q %q (ExecError %v)", tc.p.Args, code, out, serr, err, tc.code, tc.out, tc.serr, tc.wantExecEr)
		}
	}
	// stdin in, stdout out, byte-exact.
	input := make([]byte, 1<<20)
	rand.Read(input)
	var stdout bytes.Buffer
	code, _, serr, err := runIt(Process{Args: []string{"cat"}, Stdin: bytes.NewReader(input), Stdout: &stdout})
	if code != 0 || err != nil || !bytes.Equal(stdout.Bytes(), input) || serr != "" {
		t.Errorf("cat: %d %v, %d bytes out of %d, stderr %q", code, err, stdout.Len(), len(input), serr)
	}
	if cs, _ := List(state); len(cs) != 0 {
		t.Errorf("List after Run: %+v", cs)
	}
}

func TestRunListedAndCancelled(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	name := testName(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{Name: name, RootFS: rootfs, StateDir: state}, Process{Args: []string{"sleep", "1000"}})
		done <- err
	}()
	var c Container
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cs, _ := List(state); len(cs) == 1 && cs[0].NspawnPID != 0 {
			c = cs[0]
			break
		}
	}
	if c.Name != name || c.Booted {
		t.Fatalf("List while running: %+v", c)
	}
	start, _ := startTime(c.NspawnPID)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cancelled Run did not return")
	}
	assertGone(t, state, trace{name: name, nspawnPID: c.NspawnPID, nspawnStart: start})
}

// hostPTY opens a pseudo-terminal on the host: the master, and the slave
// standing in for the user's terminal.
func hostPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := m.SyscallConn()
	var n uint32
	var ierr error
	rc.Control(func(fd uintptr) {
		if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr == nil {
			n, ierr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
		}
	})
	if ierr != nil {
		t.Fatal(ierr)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

func TestRunTerminal(t *testing.T) {
	rootfs := testRootFS(t, false)
	master, slave := hostPTY(t)
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 41, Col: 101}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	code, err := Run(context.Background(), Options{Name: testName(t), RootFS: rootfs, StateDir: t.TempDir()},
		Process{Args: sh(`tty; stty size; echo "TERM=$TERM"; exit 3`), Stdin: slave, Stdout: slave, Terminal: true})
	if err != nil || code != 3 {
		t.Fatalf("Run: %d, %v", code, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := strings.ReplaceAll(out.String(), "\r\n", "\n")
		mu.Unlock()
		if strings.Contains(got, "41 101\n") && strings.Contains(got, "/dev/") && strings.Contains(got, "TERM=") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("terminal output %q lacks the tty, its size or TERM", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAssertGoneSeesLeftovers checks that assertGone's process check can
// fail: a live container is reported.
func TestAssertGoneSeesLeftovers(t *testing.T) {
	m := startMachine(t, Options{})
	if pids := processesWith("--machine=" + m.Name()); len(pids) != 1 || pids[0] != m.rec.NspawnPID {
		t.Errorf("processes of a running container: %v, want [%d]", pids, m.rec.NspawnPID)
	}
}

func TestOpenAndShutdown(t *testing.T) {
	state := t.TempDir()
	started := startMachine(t, Options{StateDir: state, Detach: true})
	tr := traceOf(started)
	if err := started.Close(); err != nil {
		t.Fatal(err)
	}
	if !alive(tr.leaderPID, tr.leaderStart) {
		t.Fatal("Close of a detached machine stopped it")
	}
	m, err := Open(context.Background(), state, started.Name(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.Leader() != tr.leaderPID {
		t.Errorf("opened leader %d, want %d", m.Leader(), tr.leaderPID)
	}
	pty, err := m.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer pty.Close()
	out := readAll(pty.Master)
	if code, err := m.Exec(context.Background(), Process{Args: []string{"tty"}, TTY: pty}); code != 0 || err != nil {
		t.Errorf("Exec on a pty of the opened machine: %d %v", code, err)
	}
	if got := strings.TrimSpace(string(<-out)); got != pty.Name {
		t.Errorf("tty printed %q, want %q", got, pty.Name)
	}
	if err := m.Shutdown(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Error("Done of the opened machine not closed after Shutdown")
	}
	assertGone(t, state, tr)
}
