package scripttest

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/nspawn"
	"github.com/racker-postroj/racker/internal/testenv"
	"github.com/racker-postroj/racker/internal/testregistry"
)

// The host matrix. TestHosts boots Debian trees that run systemd as PID 1
// (trixie: systemd 257; sid: 258 or newer, which supports cgroup v2 only)
// with systemd-nspawn on this machine, and runs a part of the end-to-end
// scripts inside each the way a CI runner runs a step: as a transient
// service of the host's systemd with a delegated cgroup
// (`systemd-run --wait --pipe --collect -p Delegate=yes`), entered with
// nsenter. Inside, racker registers with machined, and the scripts of
// hostScriptDir, which test what only such a host has, run too.
//
// What the host gets from here, bind-mounted: a static build of this test
// binary, the repository (read-only, for the scripts), docker-registry
// (the harness inside starts its own on 127.0.0.1: the host shares this
// machine's network), the Go toolchain and build cache (`exec go build`),
// the test image cache (testenv.CacheDir), and a scratch directory on disk
// for the scripts' work directories. The Debian images the scripts use are
// built here beforehand (prewarm): the hosts have no mmdebstrap.
//
// Host trees are built with mmdebstrap through testregistry.Cache (keyed
// by recipe and by ISO week, so rebuilt weekly; flock-guarded) and unpacked
// once per cache entry under $RACKER_TEST_CACHE/hosts. Under RACKER_E2E=1 a
// host that cannot be built or booted fails the test; otherwise it skips
// with the reason. $RACKER_TEST_HOSTS picks hosts (see testenv.HostsVar).

// hostScripts are the scripts that run in every host: of scriptDir, and
// every machined_* script of hostScriptDir.
const hostScripts = `^(pull_.*|run_.*|pkgprobe_webfs|pkgprobe_unit_fails|pkgprobe_unit_honest|pkgprobe_cache|selftest_bookworm|machined_.*)$`

// hostScriptDir holds the scripts that run only inside the test hosts.
var hostScriptDir = filepath.Join("..", "..", "testdata", "script-host")

// hostPackages are what a test host has on top of minbase (procps: scripts
// look at processes with ps, as on any installed system).
var hostPackages = []string{"systemd-sysv", "systemd-container", "dbus", "ca-certificates", "procps"}

// testHosts are the hosts of the matrix, by name.
var testHosts = []struct {
	name   string
	recipe testregistry.Recipe
}{
	{"trixie", testregistry.Recipe{Suite: "trixie", Variant: "minbase", Include: hostPackages, Weekly: true}},
	// A frozen mirror serves sid's Release file past its Valid-Until.
	{"sid", testregistry.Recipe{Suite: "sid", Variant: "minbase", Include: hostPackages, Weekly: true, IgnoreValidUntil: true}},
}

// prewarmCurated are the catalogue images the host scripts use through
// curatedstore.
var prewarmCurated = []string{"debian-bookworm", "debian-trixie"}

func TestHosts(t *testing.T) {
	if testenv.Host() != "" {
		t.Skipf("inside test host %s already", testenv.Host())
	}
	selected, err := selectedHosts(os.Getenv(testenv.HostsVar))
	if err != nil {
		t.Fatal(err)
	}
	if len(selected) == 0 {
		if e2e {
			t.Fatalf("%s=none, and RACKER_E2E=1 requires the host matrix", testenv.HostsVar)
		}
		t.Skipf("%s=none", testenv.HostsVar)
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"systemd-nspawn", "nsenter", "docker-registry", "go"} {
		if !onPath(bin) {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		testenv.Missing(t, strings.Join(missing, ", "), "see .ci/run")
	}
	cant := func(t *testing.T, format string, args ...any) {
		t.Helper()
		if e2e {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-time.Minute))
	}
	defer cancel()

	// What every host shares, prepared once.
	bin := filepath.Join(t.TempDir(), "scripttest.test")
	if err := buildStatic(ctx, bin); err != nil {
		cant(t, "building the test binary for the hosts: %v", err)
	}
	if err := prewarm(ctx, t); err != nil {
		cant(t, "building the test images for the hosts: %v", err)
	}
	for _, name := range selected {
		t.Run(name, func(t *testing.T) {
			for _, h := range testHosts {
				if h.name == name {
					runHost(ctx, t, name, h.recipe, bin, cant)
				}
			}
		})
	}
}

// selectedHosts parses $RACKER_TEST_HOSTS.
func selectedHosts(v string) ([]string, error) {
	var all []string
	for _, h := range testHosts {
		all = append(all, h.name)
	}
	switch v {
	case "":
		return all, nil
	case "none":
		return nil, nil
	}
	var out []string
	for _, n := range strings.Split(v, ",") {
		if n = strings.TrimSpace(n); !slices.Contains(all, n) {
			return nil, fmt.Errorf("unexpected host %q in %s (valid: %s, or none)", n, testenv.HostsVar, strings.Join(all, ", "))
		}
		out = append(out, n)
	}
	return out, nil
}

// buildStatic builds this package's test binary with CGO_ENABLED=0, so it
// runs on any host tree whatever its C library.
func buildStatic(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c: %v\n%s", err, b)
	}
	return nil
}

// prewarm builds here the Debian images that the host scripts use, so the
// hosts find them in the cache.
func prewarm(ctx context.Context, t *testing.T) error {
	cache := &testregistry.Cache{Dir: testenv.CacheDir()}
	if _, err := cache.Layer(ctx, testregistry.BookwormSlim); err != nil {
		return err
	}
	for _, name := range prewarmCurated {
		if _, err := curatedTemplateStore(name); err != nil {
			return err
		}
	}
	t.Logf("test images ready in %s", cache.Dir)
	return nil
}

// hostTree returns the unpacked tree of recipe, building and unpacking it
// once per cache entry.
func hostTree(ctx context.Context, recipe testregistry.Recipe) (string, error) {
	cache := &testregistry.Cache{Dir: testenv.CacheDir()}
	layer, err := cache.Layer(ctx, recipe)
	if err != nil {
		return "", err
	}
	base := filepath.Join(cache.Dir, "hosts")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	dir := filepath.Join(base, recipe.Suite+"-"+layer.Info.Digest.Hex[:16])
	unlock, err := flock.Lock(ctx, dir+".lock", nil)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, "usr")); err == nil {
		return dir, hostsFile(dir)
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "-xzf", layer.Path, "-C", tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("unpacking %s: %v: %s", layer.Path, err, b)
	}
	if err := hostsFile(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	pruneHostTrees(base, recipe.Suite, dir)
	return dir, nil
}

// pruneHostTrees removes the trees of suite other than keep (earlier
// weeks') that were unpacked more than eight days ago, so that no test
// that started before the week turned can still be booting one.
func pruneHostTrees(base, suite, keep string) {
	dirs, _ := filepath.Glob(filepath.Join(base, suite+"-*"))
	for _, dir := range dirs {
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() || dir == keep || strings.HasSuffix(dir, ".tmp") || time.Since(st.ModTime()) < 8*24*time.Hour {
			continue
		}
		unlock, ok := flock.TryLock(dir + ".lock")
		if !ok {
			continue
		}
		if os.RemoveAll(dir) == nil {
			os.Remove(dir + ".lock")
		}
		unlock()
	}
}

// hostsFile gives a host tree the /etc/hosts an installed system has and
// mmdebstrap does not write: without it, "localhost" does not resolve for
// racker and postroj (static binaries resolve through files and DNS only).
func hostsFile(tree string) error {
	p := filepath.Join(tree, "etc", "hosts")
	if _, err := os.Lstat(p); err == nil {
		return nil
	}
	return os.WriteFile(p, []byte("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"), 0o644)
}

// runHost builds and boots one host and runs the scripts in it.
func runHost(ctx context.Context, t *testing.T, name string, recipe testregistry.Recipe, bin string, cant func(*testing.T, string, ...any)) {
	start := time.Now()
	tree, err := hostTree(ctx, recipe)
	if err != nil {
		cant(t, "building host %s: %v", name, err)
	}
	t.Logf("host %s: tree %s ready in %.1fs", name, tree, time.Since(start).Seconds())

	binds, env, err := hostBinds(t, filepath.Dir(bin))
	if err != nil {
		t.Fatal(err)
	}
	hostLeader, stop, err := bootHost(ctx, t, name, tree, binds)
	if err != nil {
		cant(t, "booting host %s: %v", name, err)
	}
	defer stop()
	leader := strconv.Itoa(hostLeader)
	inHost := func(args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "nsenter", append([]string{"-t", leader, "-a"}, args...)...)
	}
	facts, err := inHost("sh", "-c", "systemctl --version | head -n1; stat -fc %T /sys/fs/cgroup").Output()
	if err != nil {
		t.Fatalf("host %s: reading its systemd version: %v", name, err)
	}
	t.Logf("host %s booted in %.1fs: %s", name, time.Since(start).Seconds(), strings.ReplaceAll(strings.TrimSpace(string(facts)), "\n", ", "))

	summary := filepath.Join(filepath.Dir(bin), "summary-"+name)
	args := []string{"systemd-run", "--quiet", "--wait", "--pipe", "--collect", "-p", "Delegate=yes",
		"-p", "WorkingDirectory=" + mustAbs(t, "."),
		"-E", testenv.HostVar + "=" + name,
		"-E", testenv.SummaryVar + "=" + summary,
	}
	for _, kv := range env {
		args = append(args, "-E", kv)
	}
	run := "^(TestScripts|TestHostScripts)$/" + hostScripts
	args = append(args, "--", bin, "-test.count=1", "-test.v", "-test.run", run, "-test.timeout", "50m")
	cmd := inHost(args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 10 * time.Second
	runErr := cmd.Run()
	inner, _ := os.ReadFile(summary)
	passed, total := countResults(out.String())
	result := strings.TrimSpace(string(inner))
	if result == "" {
		result = fmt.Sprintf("%s: %d/%d scripts passed (the harness inside wrote no summary)", name, passed, total)
	}
	appendSummary(result)
	t.Log(result)
	if runErr != nil || total == 0 || passed != total || len(inner) == 0 {
		t.Errorf("host %s: %v; the harness inside said:\n%s", name, runErr, out.String())
	}
}

// bootHost boots tree as a host, the way the issue checked by hand works:
// SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --register=no
// --keep-unit --boot, with all capabilities (a host's root has them; nspawn
// drops CAP_NET_ADMIN and others by default, without which the host's own
// nspawn cannot bring up a private network's loopback), on a volatile
// overlay so the cached tree is never written. Readiness is READY=1 through
// --notify-ready. It returns the host's init pid and what powers it off.
func bootHost(ctx context.Context, t *testing.T, name, tree string, binds []nspawn.Bind) (int, func(), error) {
	notify, err := nspawn.ListenNotify()
	if err != nil {
		return 0, nil, err
	}
	defer notify.Close()
	console := filepath.Join(t.TempDir(), "console.log")
	out, err := os.Create(console)
	if err != nil {
		return 0, nil, err
	}
	defer out.Close()
	args := []string{"--register=no", "--keep-unit", "--boot", "--directory=" + tree, "--volatile=overlay",
		fmt.Sprintf("--machine=racker-host-%s-%d", name, os.Getpid()), "--capability=all",
		"--settings=no", "--link-journal=no", "--notify-ready=yes", "--console=read-only", "--kill-signal=SIGKILL"}
	for _, b := range binds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		spec := b.Host
		if b.Container != "" {
			spec += ":" + b.Container
		}
		args = append(args, flag+spec)
	}
	cmd := exec.Command("systemd-nspawn", args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.Addr(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	cmd.Stdout, cmd.Stderr = out, out
	// SIGTERM makes nspawn kill the host (--kill-signal=SIGKILL): also
	// when this test process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	kill := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}
	leader, err := notify.WaitReady(ctx, cmd.Process.Pid, exited, 3*time.Minute)
	if err != nil {
		kill()
		b, _ := os.ReadFile(console)
		return 0, nil, fmt.Errorf("%w; console:\n%s", err, b)
	}
	stop := func() {
		// systemd powers off on SIGRTMIN+4.
		syscall.Kill(leader, syscall.Signal(34+4))
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("host %s did not power off within 30s; killed", name)
			kill()
		}
	}
	return leader, stop, nil
}

// hostBinds are the bind mounts of a host and the environment of the
// harness inside it.
func hostBinds(t *testing.T, hostio string) ([]nspawn.Bind, []string, error) {
	repo := mustAbs(t, filepath.Join("..", ".."))
	cache := testenv.CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, nil, err
	}
	// The scripts' work directories: on disk, not in the host's tmpfs, and
	// in the cache's mount, so curatedstore can hard-link from it.
	if err := os.MkdirAll(filepath.Join(cache, "hosts"), 0o755); err != nil {
		return nil, nil, err
	}
	pruneWork(filepath.Join(cache, "hosts"))
	work, err := os.MkdirTemp(filepath.Join(cache, "hosts"), "work-")
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	registry, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, nil, err
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	gr := strings.TrimSpace(string(goroot))
	binds := []nspawn.Bind{
		{Host: hostio},
		{Host: repo, ReadOnly: true},
		{Host: cache},
		{Host: registry, Container: "/usr/local/bin/docker-registry", ReadOnly: true},
		{Host: gr, ReadOnly: true},
	}
	env := []string{
		testenv.CacheVar + "=" + cache,
		"TMPDIR=" + work,
		"PATH=" + filepath.Join(gr, "bin") + ":" + nspawn.DefaultPath,
		"GOTOOLCHAIN=local",
	}
	if gc := goCache(); gc != "" {
		binds = append(binds, nspawn.Bind{Host: gc})
		env = append(env, "GOCACHE="+gc)
	}
	for _, k := range []string{testenv.E2EVar, testenv.MirrorVar, "CI"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return binds, env, nil
}

// pruneWork removes work directories of host runs that were killed before
// they could clean up: those not touched for a day.
func pruneWork(dir string) {
	old, _ := filepath.Glob(filepath.Join(dir, "work-*"))
	for _, w := range old {
		if st, err := os.Stat(w); err == nil && time.Since(st.ModTime()) > 24*time.Hour {
			os.RemoveAll(w)
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// cgroupLayout names the layout from the type of /sys/fs/cgroup.
func cgroupLayout(fsType string) string {
	switch fsType {
	case "cgroup2fs", "cgroup2":
		return "cgroup v2 only"
	case "tmpfs":
		if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
			return "cgroup hybrid (v1 + v2)"
		}
		return "cgroup v1"
	}
	return "cgroup " + fsType
}

var resultRE = regexp.MustCompile(`(?m)^\s*--- (PASS|FAIL|SKIP): Test(?:Host)?Scripts/([^ ]+) `)

// countResults counts the scripts that passed, of all that ran, in the
// verbose output of the harness.
func countResults(out string) (passed, total int) {
	for _, m := range resultRE.FindAllStringSubmatch(out, -1) {
		total++
		if m[1] == "PASS" {
			passed++
		}
	}
	return passed, total
}

// TestHostScripts runs the scripts of testdata/script-host, which need a
// host that runs systemd as PID 1 with machined: only inside the test
// hosts of TestHosts, which runs it there.
func TestHostScripts(t *testing.T) {
	if testenv.Host() == "" {
		t.Log("these scripts run inside the test hosts (TestHosts)")
		return
	}
	runScripts(t, hostScriptDir)
}

// The tally of this process's scripts, for the summary that make test
// prints (testenv.SummaryVar).
var tally = struct {
	sync.Mutex
	passed, total int
	failed        []string
	lines         []string
}{}

// recordScript notes how a script ended; setup defers it.
func recordScript(t testscript.T) {
	f, ok := t.(interface{ Failed() bool })
	named, ok2 := t.(interface{ Name() string })
	if !ok || !ok2 {
		return
	}
	tally.Lock()
	defer tally.Unlock()
	tally.total++
	if f.Failed() {
		tally.failed = append(tally.failed, filepath.Base(named.Name()))
	} else {
		tally.passed++
	}
}

// appendSummary adds a line to the summary.
func appendSummary(line string) {
	tally.Lock()
	defer tally.Unlock()
	tally.lines = append(tally.lines, line)
}

// writeSummary appends this process's lines to $RACKER_TEST_SUMMARY: one
// for the scripts that ran here, then those of the hosts.
func writeSummary() {
	path := os.Getenv(testenv.SummaryVar)
	if path == "" {
		return
	}
	tally.Lock()
	defer tally.Unlock()
	var lines []string
	if tally.total > 0 {
		name := testenv.Host()
		if name == "" {
			name = "bare"
		}
		l := fmt.Sprintf("%s (%s): %d/%d scripts passed", name, thisHost(), tally.passed, tally.total)
		if len(tally.failed) > 0 {
			l += " (failed: " + strings.Join(tally.failed, ", ") + ")"
		}
		lines = append(lines, l)
	}
	lines = append(lines, tally.lines...)
	if len(lines) == 0 {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "writing %s: %v\n", path, err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, strings.Join(lines, "\n"))
}

// thisHost describes the machine this process runs on.
func thisHost() string {
	var parts []string
	if f, err := nspawn.DetectNspawn(context.Background(), ""); err == nil {
		parts = append(parts, "systemd-nspawn "+strconv.Itoa(f.Version))
	}
	if fi, err := os.Lstat("/run/systemd/system"); err == nil && fi.IsDir() {
		parts = append(parts, "systemd as PID 1")
	} else {
		parts = append(parts, "no systemd as PID 1")
	}
	var st unix.Statfs_t
	fsType := "?"
	if unix.Statfs("/sys/fs/cgroup", &st) == nil {
		switch st.Type {
		case unix.CGROUP2_SUPER_MAGIC:
			fsType = "cgroup2fs"
		case unix.TMPFS_MAGIC:
			fsType = "tmpfs"
		}
	}
	parts = append(parts, cgroupLayout(fsType), runtime.GOARCH)
	return strings.Join(parts, ", ")
}

// Commands for the scripts of hostScriptDir, added to every script's:
//
//	waitmachine [-timeout DUR] NAME   until machined has a machine NAME
//	nomachine [-timeout DUR] NAME     until machined has no machine NAME
var hostCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"waitmachine": func(ts *testscript.TestScript, neg bool, args []string) { waitMachine(ts, neg, args, true) },
	"nomachine":   func(ts *testscript.TestScript, neg bool, args []string) { waitMachine(ts, neg, args, false) },
}

// waitMachine polls `machinectl show NAME` until it succeeds (present) or
// fails (not present); gives up after DUR (default 30s), showing
// machinectl's last answer.
func waitMachine(ts *testscript.TestScript, neg bool, args []string, present bool) {
	usage := "nomachine [-timeout DUR] NAME"
	if present {
		usage = "waitmachine [-timeout DUR] NAME"
	}
	if neg {
		ts.Fatalf("unsupported: ! %s", strings.Fields(usage)[0])
	}
	fset := flag.NewFlagSet("machine", flag.ContinueOnError)
	timeout := fset.Duration("timeout", 30*time.Second, "")
	parseFlags(ts, fset, args, 1, 1, usage)
	name := fset.Arg(0)
	deadline := time.Now().Add(*timeout)
	for {
		out, err := exec.Command("machinectl", "show", "--property=Name,Unit,Leader", name).CombinedOutput()
		if (err == nil) == present {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: after %s: machinectl show %s: %v\n%s", strings.Fields(usage)[0], *timeout, name, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPruneHostTrees(t *testing.T) {
	base := t.TempDir()
	old := time.Now().Add(-9 * 24 * time.Hour)
	mk := func(name string, mtime time.Time) string {
		dir := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Join(dir, "usr"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(dir+".lock", nil, 0o600)
		if err := os.Chtimes(dir, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	keep := mk("sid-3333", time.Now())
	stale := mk("sid-1111", old)
	recent := mk("sid-2222", time.Now().Add(-time.Hour))
	locked := mk("sid-4444", old)
	otherSuite := mk("trixie-1111", old)
	unlock, ok := flock.TryLock(locked + ".lock")
	if !ok {
		t.Fatal("locking")
	}
	defer unlock()
	pruneHostTrees(base, "sid", keep)
	for dir, want := range map[string]bool{keep: true, stale: false, recent: true, locked: true, otherSuite: true} {
		if _, err := os.Stat(dir); (err == nil) != want {
			t.Errorf("%s: there %v, want %v", filepath.Base(dir), err == nil, want)
		}
	}
	if _, err := os.Stat(stale + ".lock"); err == nil {
		t.Error("the removed tree's lock file is left")
	}
}
