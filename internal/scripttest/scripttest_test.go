package scripttest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/racker-postroj/racker/internal/cli"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/testenv"
	"github.com/racker-postroj/racker/internal/testregistry"
)

// scriptDir holds the scripts, at the repository root; tests run in the
// package's directory.
var scriptDir = filepath.Join("..", "..", "testdata", "script")

// soakDir holds the opt-in soak scripts (see TestSoak).
var soakDir = filepath.Join("..", "..", "testdata", "soak")

func TestMain(m *testing.M) {
	testscript.Main(closeAfter{m}, map[string]func(){
		"racker":  func() { os.Exit(cli.RackerMain()) },
		"postroj": func() { os.Exit(cli.PostrojMain()) },
		"pty":     func() { os.Exit(ptyMain(os.Args[1:])) },
		// autopkgtest finds its virtualisation server on PATH by this name;
		// postroj answers to it (a link to postroj once installed).
		cli.VirtServerName: func() { os.Exit(cli.PostrojMain()) },
	})
}

// closeAfter stops the shared registry once every test has run:
// testscript.Main exits the process right after m.Run.
type closeAfter struct{ m *testing.M }

func (c closeAfter) Run() int {
	code := c.m.Run()
	writeSummary()
	shared.close()
	warm.close()
	return code
}

// e2e is set in CI, where a skipped script would hide a broken setup.
var e2e = testenv.E2E()

func TestScripts(t *testing.T) {
	runScripts(t, scriptDir)
}

// TestSoak runs the scripts of testdata/soak (the soak: many containers in
// a row leave nothing behind) when RACKER_SOAK=1 asks for it; they take
// minutes.
func TestSoak(t *testing.T) {
	if os.Getenv("RACKER_SOAK") != "1" {
		t.Skip("opt-in: RACKER_SOAK=1 runs the soak")
	}
	runScripts(t, soakDir)
}

func runScripts(t *testing.T, dir string) {
	p := testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		UpdateScripts:       testenv.UpdateScripts(),
		Setup:               setup,
		Condition:           condition,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkimage":    cmdMkimage,
			"cmpimage":   cmdCmpimage,
			"json":       cmdJSON,
			"setenv":     cmdSetenv,
			"exitcode":   cmdExitcode,
			"lstree":     cmdLstree,
			"emptydir":   cmdEmptydir,
			"waitsize":   cmdWaitsize,
			"closedport": cmdClosedport,
			"rootfs":     cmdRootfs,
			"warmstore":  cmdWarmstore,
			"nomounts":   cmdNomounts,
			"noprocs":    cmdNoprocs,
			"waitfor":    cmdWaitfor,
			"signal":     cmdSignal,
			"signaled":   cmdSignaled,
		},
	}
	maps.Copy(p.Cmds, probeCmds)     // probe_test.go
	maps.Copy(p.Cmds, faultCmds)     // faults_test.go
	maps.Copy(p.Cmds, debsourceCmds) // debsource_test.go
	maps.Copy(p.Cmds, hostCmds)      // hosts_test.go
	if dir == soakDir {
		p.Cmds["soak"] = cmdSoak
	}
	if !e2e {
		testscript.Run(t, p)
		return
	}
	if d, ok := t.Deadline(); ok {
		p.Deadline = d
	}
	testscript.RunT(noSkipT{t}, p)
}

// noSkipT turns a script's skip into a failure: with RACKER_E2E=1 nothing
// may be skipped, not even by a condition this file does not know about.
type noSkipT struct{ *testing.T }

func (t noSkipT) Skip(args ...any) {
	t.Helper()
	t.Fatal(append([]any{"script skipped, and RACKER_E2E=1 forbids skipping:"}, args...)...)
}

func (t noSkipT) Run(name string, f func(testscript.T)) {
	t.T.Run(name, func(t *testing.T) { f(noSkipT{t}) })
}

func (t noSkipT) Verbose() bool { return testing.Verbose() }

// prerequisites are the conditions scripts may use besides testscript's own,
// with what makes each one true.
var prerequisites = map[string]struct {
	have func() bool
	hint string
}{
	"root":     {func() bool { return os.Geteuid() == 0 }, "run the tests as root"},
	"nspawn":   {func() bool { return onPath("systemd-nspawn") }, "apt-get install systemd-container"},
	"registry": {func() bool { return onPath("docker-registry") }, "apt-get install docker-registry"},
	// Inside a test host (see TestHosts) the outer harness has built the
	// Debian images with mmdebstrap already, into the shared cache.
	"mmdebstrap":  {func() bool { return onPath("mmdebstrap") || testenv.Host() != "" }, "apt-get install mmdebstrap"},
	"autopkgtest": {func() bool { return onPath("autopkgtest") }, "apt-get install autopkgtest"},
}

func onPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// condition evaluates [root], [nspawn], [registry], [mmdebstrap] and [autopkgtest]. An
// unknown name is an error, not false. Under RACKER_E2E=1 a prerequisite
// that does not hold is an error too, so `[!root] skip` fails instead.
func condition(cond string) (bool, error) {
	p, ok := prerequisites[cond]
	if !ok {
		return false, fmt.Errorf("unknown condition %q (known: root, nspawn, registry, mmdebstrap, autopkgtest, and testscript's own)", cond)
	}
	if p.have() {
		return true, nil
	}
	if e2e {
		return false, fmt.Errorf("prerequisite %s does not hold, and RACKER_E2E=1 requires it (%s)", cond, p.hint)
	}
	return false, nil
}

// usesRegistry matches the condition by which a script says it needs the
// registry; Setup starts the shared one for such scripts only.
var usesRegistry = regexp.MustCompile(`\[\s*!?\s*registry\s*\]`)

// setup gives every script its own racker state and home, and scripts that
// use the registry its address and the digests of the seeded images:
//
//	RACKER_ROOT=$WORK/state  HOME=$WORK/home
//	HOST_PLATFORM, OTHER_PLATFORM   e.g. linux/amd64, linux/arm64
//	REGISTRY=127.0.0.1:PORT  RACKER_REGISTRY_MIRRORS=docker.io=$REGISTRY
//	DEBIAN_DIGEST, DEBIAN_HEX       bookworm-slim for HOST_PLATFORM
//	DEBIAN_INDEX_DIGEST             the index debian:bookworm-slim names
//	DEBIAN_OTHER_DIGEST             the small image for OTHER_PLATFORM in it
//	GOCACHE, GOTOOLCHAIN=local, GOPROXY=off   for `exec go build`
func setup(e *testscript.Env) error {
	e.Defer(func() { recordScript(e.T()) }) // deferred first: runs last
	home := filepath.Join(e.WorkDir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	e.Setenv("HOME", home)
	e.Setenv("RACKER_ROOT", filepath.Join(e.WorkDir, "state"))
	e.Setenv("HOST_PLATFORM", image.HostPlatform().String())
	e.Setenv("OTHER_PLATFORM", testregistry.OtherPlatform().String())
	// `exec go build` in a script: the host's build cache, and never the
	// network.
	if cache := goCache(); cache != "" {
		e.Setenv("GOCACHE", cache)
	}
	e.Setenv("GOTOOLCHAIN", "local")
	e.Setenv("GOPROXY", "off")
	e.Defer(teardown(e.T(), e.WorkDir, e.Getenv("RACKER_ROOT")))

	script, err := scriptText(e)
	if err != nil {
		return err
	}
	if !usesRegistry.MatchString(script) || !onPath("docker-registry") {
		return nil // the script skips, or fails under RACKER_E2E=1, at [registry]
	}
	env, err := shared.start(e.T())
	if err != nil {
		return err
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		e.Setenv(k, v)
	}
	e.Setenv("RACKER_REGISTRY_MIRRORS", "docker.io="+shared.srv.Addr())
	return nil
}

// scriptText reads the script that e belongs to.
func scriptText(e *testscript.Env) (string, error) {
	named, ok := e.T().(interface{ Name() string })
	if !ok {
		return "", errors.New("cannot tell which script runs")
	}
	base := filepath.Base(named.Name())
	for _, dir := range []string{scriptDir, soakDir, hostScriptDir} {
		for _, ext := range []string{".txtar", ".txt"} {
			if data, err := os.ReadFile(filepath.Join(dir, base+ext)); err == nil {
				return string(data), nil
			}
		}
	}
	return "", fmt.Errorf("script %s not found in %s", base, scriptDir)
}

func commandContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Minute)
}

// parseFlags parses a custom command's flags; usage is its synopsis.
func parseFlags(ts *testscript.TestScript, fset *flag.FlagSet, args []string, minArgs, maxArgs int, usage string) {
	fset.SetOutput(io.Discard)
	err := fset.Parse(args)
	if err == nil && (fset.NArg() < minArgs || maxArgs >= 0 && fset.NArg() > maxArgs) {
		switch {
		case maxArgs < 0:
			err = fmt.Errorf("want at least %d arguments, got %d", minArgs, fset.NArg())
		case minArgs == maxArgs:
			err = fmt.Errorf("want %d arguments, got %d", minArgs, fset.NArg())
		default:
			err = fmt.Errorf("want %d to %d arguments, got %d", minArgs, maxArgs, fset.NArg())
		}
	}
	if err != nil {
		ts.Fatalf("%v\nusage: %s", err, usage)
	}
}

// goCache is the host's Go build cache, so that `exec go build` in a
// script (whose HOME is its own) does not rebuild the standard library.
var goCache = sync.OnceValue(func() string {
	if c := os.Getenv("GOCACHE"); c != "" {
		return c
	}
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
})
