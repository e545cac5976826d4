package scripttest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/mirror"
	"github.com/racker-postroj/racker/internal/nspawn"
	"github.com/racker-postroj/racker/internal/testenv"
	"github.com/racker-postroj/racker/internal/testregistry"
)

// Commands for the pkgprobe_* and selftest_* scripts, added to
// TestScripts' by its probeCmds hook:
//
//	curatedstore NAME...            catalogue images built from Debian's mirror, into $RACKER_ROOT
//	debimage [-include P,Q] SUITE REF   a Debian image with extra packages, pushed to the registry
//	serve DIR VAR                   an HTTP server of DIR's files; VAR=http://127.0.0.1:PORT
//	waitrunning [-timeout DUR]      until $RACKER_ROOT has a running container
//	nooverlap FILE PROBE            PROBE's runs in a selftest report never overlapped (! : some did)
var probeCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"curatedstore": cmdCuratedstore,
	"debimage":     cmdDebimage,
	"serve":        cmdServe,
	"waitrunning":  cmdWaitrunning,
	"nooverlap":    cmdNooverlap,
}

// curatedMaxAge is how long a template store of curatedstore is reused
// before it is built again from the mirror.
const curatedMaxAge = 7 * 24 * time.Hour

// curatedTemplates are the template stores of curatedstore, one per
// catalogue name, built at most once per test process.
var curatedTemplates = struct {
	sync.Mutex
	m map[string]*curatedTemplate
}{m: map[string]*curatedTemplate{}}

type curatedTemplate struct {
	once sync.Once
	dir  string
	err  error
}

// curatedstore NAME...
//
// Puts the catalogue images NAME..., as built from Debian's package mirror
// (`postroj pull --source=mirror NAME`, so mirror.local/debian:SUITE), into
// $RACKER_ROOT, which must not hold them yet. Each is built once into a
// template store under $RACKER_TEST_CACHE/postroj-stores (see
// testenv.CacheDir), reused by later runs for a week; other processes
// building the same one wait for it. Scripts get copies made of hard links
// (cp -al), which take a fraction of a second: containers never write to a
// stored tree (they boot on a volatile overlay).
func cmdCuratedstore(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: curatedstore NAME...")
	}
	dest := ts.Getenv("RACKER_ROOT")
	if dest == "" {
		ts.Fatalf("curatedstore: RACKER_ROOT is not set")
	}
	ts.Check(os.MkdirAll(dest, 0o700))
	for _, name := range args {
		curatedTemplates.Lock()
		tmpl, ok := curatedTemplates.m[name]
		if !ok {
			tmpl = &curatedTemplate{}
			curatedTemplates.m[name] = tmpl
		}
		curatedTemplates.Unlock()
		tmpl.once.Do(func() {
			start := time.Now()
			tmpl.dir, tmpl.err = curatedTemplateStore(name)
			ts.Logf("curatedstore: template store of %s ready in %.1fs", name, time.Since(start).Seconds())
		})
		if tmpl.err != nil {
			ts.Fatalf("curatedstore %s: %v", name, tmpl.err)
		}
		ts.Check(copyTemplate(tmpl.dir, dest))
	}
}

// copyTemplate copies the template store dir into dest with hard links,
// holding the template's lock so that no other test process rebuilds it
// meanwhile.
func copyTemplate(dir, dest string) error {
	ctx, cancel := commandContext()
	defer cancel()
	unlock, err := flock.Lock(ctx, dir+".lock", nil)
	if err != nil {
		return err
	}
	defer unlock()
	for _, d := range []string{"images", "refs"} {
		out, err := exec.CommandContext(ctx, "cp", "-al", filepath.Join(dir, d), dest+"/").CombinedOutput()
		if err != nil {
			return fmt.Errorf("curatedstore: copying %s of %s: %v: %s", d, dir, err, out)
		}
	}
	return nil
}

// curatedTemplateStore returns the template store of name, building it
// when it is missing or older than curatedMaxAge.
func curatedTemplateStore(name string) (string, error) {
	base := filepath.Join(testenv.CacheDir(), "postroj-stores")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	// Keyed by what mirror builds install, so a change there rebuilds.
	sum := sha256.Sum256([]byte(strings.Join(mirror.Packages(), ",")))
	dir := filepath.Join(base, name+"-"+hex.EncodeToString(sum[:4]))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	unlock, err := flock.Lock(ctx, dir+".lock", nil)
	if err != nil {
		return "", err
	}
	defer unlock()
	stamp := filepath.Join(dir, "built")
	if st, err := os.Stat(stamp); err == nil && time.Since(st.ModTime()) < curatedMaxAge {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	home := filepath.Join(tmp, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "postroj", "--root", filepath.Join(tmp, "store"), "pull", "--source=mirror", name)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RACKER_") && !strings.HasPrefix(kv, "HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+home)
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("postroj pull --source=mirror %s: %v\n%s", name, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "store"), dir); err != nil {
		return "", err
	}
	os.RemoveAll(tmp)
	return dir, os.WriteFile(stamp, []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644)
}

// debimage [-include PKG,PKG...] SUITE REF
//
// Builds a Debian SUITE root filesystem with mmdebstrap (variant minbase
// plus what booting needs, systemd, dbus, curl and ca-certificates, plus
// -include), cached like the other test images, and pushes it to the
// script's registry as REF (written as for docker: "name:tag" is
// docker.io/library/name:tag, which racker finds through
// $RACKER_REGISTRY_MIRRORS).
func cmdDebimage(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "debimage [-include PKG,PKG...] SUITE REF"
	if neg {
		ts.Fatalf("unsupported: ! debimage")
	}
	fset := flag.NewFlagSet("debimage", flag.ContinueOnError)
	include := fset.String("include", "", "")
	parseFlags(ts, fset, args, 2, 2, usage)
	srv := shared.server(ts)
	ref := fset.Arg(1)
	ts.Check(shared.claim(ref, ts.Name()))
	pkgs := []string{"systemd", "dbus", "curl", "ca-certificates"}
	if *include != "" {
		pkgs = append(pkgs, strings.Split(*include, ",")...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	cache := &testregistry.Cache{Dir: testenv.CacheDir()}
	img, err := srv.PushDebian(ctx, cache, testregistry.Recipe{Suite: fset.Arg(0), Variant: "minbase", Include: pkgs}, ref, false)
	ts.Check(err)
	ts.Logf("debimage: %s (%s) pushed in %.1fs", ref, img.Digest, time.Since(start).Seconds())
}

// serve DIR VAR
//
// Serves the files of DIR over HTTP on 127.0.0.1 until the script ends
// (with Range, ETag-less Last-Modified and conditional requests, as
// net/http's file server does; missing files are 404) and sets VAR to the
// server's base URL, http://127.0.0.1:PORT.
func cmdServe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: serve DIR VAR")
	}
	dir := ts.MkAbs(args[0])
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		ts.Fatalf("serve: %s is not a directory", args[0])
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	ts.Defer(func() { srv.Close() })
	ts.Setenv(args[1], "http://"+l.Addr().String())
}

// waitrunning [-timeout DUR]
//
// Waits until a container of $RACKER_ROOT is running (booted and ready),
// e.g. to interrupt a probe while its container is up. Gives up after DUR
// (default 2m).
func cmdWaitrunning(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "waitrunning [-timeout DUR]"
	if neg {
		ts.Fatalf("unsupported: ! waitrunning")
	}
	fset := flag.NewFlagSet("waitrunning", flag.ContinueOnError)
	timeout := fset.Duration("timeout", 2*time.Minute, "")
	parseFlags(ts, fset, args, 0, 0, usage)
	start := time.Now()
	for {
		list, err := nspawn.List(ts.Getenv("RACKER_ROOT"))
		ts.Check(err)
		for _, c := range list {
			if c.Status == "running" {
				ts.Logf("waitrunning: %s is running after %v", c.Name, time.Since(start).Round(time.Millisecond))
				return
			}
		}
		if time.Since(start) > *timeout {
			ts.Fatalf("waitrunning: no running container after %v", *timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nooverlap FILE PROBE
//
// Reads the JSON report of a selftest (postroj selftest --report=FILE) and
// passes if the runs of the probes named PROBE (e.g. apache), from their
// start to their end, never overlapped in time (give or take the
// millisecond reports round to), and there were at least two of them;
// `! nooverlap` passes if two did. A pkgprobe matrix report (its cells)
// works too.
func cmdNooverlap(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: nooverlap FILE PROBE")
	}
	type probeRun struct {
		Probe, Image string
		Started      time.Time
		Seconds      float64
	}
	var rep struct{ Probes, Cells []probeRun }
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &rep); err != nil {
		ts.Fatalf("nooverlap: %s: %v", args[0], err)
	}
	rep.Probes = append(rep.Probes, rep.Cells...)
	type run struct {
		image      string
		start, end time.Time
	}
	var runs []run
	for _, p := range rep.Probes {
		if p.Probe == args[1] {
			runs = append(runs, run{p.Image, p.Started, p.Started.Add(time.Duration(p.Seconds * float64(time.Second)))})
		}
	}
	if len(runs) < 2 {
		ts.Fatalf("nooverlap: %s has %d %s probes, want at least 2", args[0], len(runs), args[1])
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].start.Before(runs[j].start) })
	for i := 1; i < len(runs); i++ {
		// Reports round seconds to the millisecond.
		if runs[i].start.Add(time.Millisecond).Before(runs[i-1].end) {
			if neg {
				return
			}
			ts.Fatalf("nooverlap: %s on %s started at %s, before %s on %s ended at %s", args[1], runs[i].image,
				runs[i].start.Format(time.StampMilli), args[1], runs[i-1].image, runs[i-1].end.Format(time.StampMilli))
		}
	}
	if neg {
		ts.Fatalf("nooverlap: no two %s probes of %s ran at the same time", args[1], args[0])
	}
}
