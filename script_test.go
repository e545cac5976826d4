package racker_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/cli"
	"github.com/racker-postroj/racker/internal/testregistry"
)

// The end-to-end tests: testdata/script/*.txtar drive the real racker and
// postroj (this test binary, re-executed under those names) against a real
// docker-registry on loopback.
//
// Environment:
//   RACKER_E2E=1       every prerequisite condition must hold: a missing one
//                      fails the script instead of skipping it (CI sets it).
//   UPDATE_SCRIPTS=1   rewrite cmp'd files inside the scripts from the output.
//   RACKER_TEST_CACHE  where built Debian images are cached
//                      (default /var/cache/racker-test).
//
// Conditions: [root], [nspawn], [registry], [mmdebstrap] (see condition).
// A script that uses the registry says so with [registry], which makes
// setup start and seed the shared one. Commands besides testscript's own,
// each documented at its cmd function: mkimage, cmpimage, json, setenv,
// rootfs, exitcode, lstree, emptydir, waitsize, closedport, warmstore,
// nomounts, noprocs, waitfor, signal, signaled. Layer specs for mkimage are
// described by testregistry.SpecDoc. Programs besides racker and postroj:
// pty (see ptyMain), to run a command on a real terminal.
//
// Containers a script leaves running, by failing half-way or on purpose,
// are removed when it ends, whatever happened (see teardown).

func TestMain(m *testing.M) {
	testscript.Main(closeAfter{m}, map[string]func(){
		"racker":  func() { os.Exit(cli.RackerMain()) },
		"postroj": func() { os.Exit(cli.PostrojMain()) },
		"pty":     func() { os.Exit(ptyMain(os.Args[1:])) },
	})
}

// closeAfter stops the shared registry once every test has run:
// testscript.Main exits the process right after m.Run.
type closeAfter struct{ m *testing.M }

func (c closeAfter) Run() int {
	code := c.m.Run()
	shared.close()
	warm.close()
	return code
}

// e2e is set in CI, where a skipped script would hide a broken setup.
var e2e = os.Getenv("RACKER_E2E") == "1"

func TestScripts(t *testing.T) {
	p := testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		UpdateScripts:       os.Getenv("UPDATE_SCRIPTS") != "",
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
	maps.Copy(p.Cmds, probeCmds) // script_probe_test.go
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
	"root":       {func() bool { return os.Geteuid() == 0 }, "run the tests as root"},
	"nspawn":     {func() bool { return onPath("systemd-nspawn") }, "apt-get install systemd-container"},
	"registry":   {func() bool { return onPath("docker-registry") }, "apt-get install docker-registry"},
	"mmdebstrap": {func() bool { return onPath("mmdebstrap") }, "apt-get install mmdebstrap"},
}

func onPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// condition evaluates [root], [nspawn], [registry] and [mmdebstrap]. An
// unknown name is an error, not false. Under RACKER_E2E=1 a prerequisite
// that does not hold is an error too, so `[!root] skip` fails instead.
func condition(cond string) (bool, error) {
	p, ok := prerequisites[cond]
	if !ok {
		return false, fmt.Errorf("unknown condition %q (known: root, nspawn, registry, mmdebstrap, and testscript's own)", cond)
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
	home := filepath.Join(e.WorkDir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	e.Setenv("HOME", home)
	e.Setenv("RACKER_ROOT", filepath.Join(e.WorkDir, "state"))
	e.Setenv("HOST_PLATFORM", platformString(testregistry.HostPlatform()))
	e.Setenv("OTHER_PLATFORM", platformString(testregistry.OtherPlatform()))
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
	for _, ext := range []string{".txtar", ".txt"} {
		if data, err := os.ReadFile(filepath.Join("testdata", "script", base+ext)); err == nil {
			return string(data), nil
		}
	}
	return "", fmt.Errorf("script %s not found in testdata/script", base)
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// harness is the registry shared by all scripts of this test process,
// started and seeded by the first script that needs it.
type harness struct {
	once sync.Once
	dir  string
	srv  *testregistry.Server
	env  []string
	err  error

	mu        sync.Mutex
	owners    map[string]string // image reference → script that pushed it
	corrupted map[v1.Hash]bool  // blobs whose stored bytes were replaced
}

var shared = &harness{owners: map[string]string{}, corrupted: map[v1.Hash]bool{}}

func (h *harness) start(t testscript.T) ([]string, error) {
	h.once.Do(func() {
		start := time.Now()
		h.err = h.seed()
		t.Log(fmt.Sprintf("registry %s seeded in %.1fs: %v", h.addr(), time.Since(start).Seconds(), h.env))
	})
	return h.env, h.err
}

func (h *harness) addr() string {
	if h.srv == nil {
		return "(none)"
	}
	return h.srv.Addr()
}

func (h *harness) seed() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var err error
	if h.dir, err = os.MkdirTemp("", "racker-test-registry-"); err != nil {
		return err
	}
	if h.srv, err = testregistry.Start(ctx, h.dir); err != nil {
		return err
	}
	h.env = append(h.env, "REGISTRY="+h.srv.Addr())

	// debian:bookworm-slim is, as on Docker Hub, an index: the real image for
	// this host plus a small one for another platform.
	cache := &testregistry.Cache{Dir: testregistry.DefaultCacheDir()}
	layer, err := cache.Layer(ctx, testregistry.BookwormSlim)
	if errors.Is(err, testregistry.ErrNoMmdebstrap) {
		return nil // scripts that need it skip at [mmdebstrap]
	}
	if err != nil {
		return err
	}
	host, err := testregistry.NewImage(testregistry.HostPlatform(), types.DockerManifestSchema2, layer)
	if err != nil {
		return err
	}
	otherLayer, err := specLayer("dir etc 0755\nfile etc/platform 0644 "+platformString(testregistry.OtherPlatform())+"\n", gzip.DefaultCompression, types.DockerLayer)
	if err != nil {
		return err
	}
	other, err := testregistry.NewImage(testregistry.OtherPlatform(), types.DockerManifestSchema2, otherLayer)
	if err != nil {
		return err
	}
	idx, err := testregistry.NewIndex(host, other)
	if err != nil {
		return err
	}
	idxDigest, err := h.srv.WriteIndex(ctx, "library/debian:bookworm-slim", idx)
	if err != nil {
		return err
	}
	hostDigest, _ := host.Digest()
	otherDigest, _ := other.Digest()
	h.env = append(h.env,
		"DEBIAN_DIGEST="+hostDigest.String(),
		"DEBIAN_HEX="+hostDigest.Hex,
		"DEBIAN_INDEX_DIGEST="+idxDigest.String(),
		"DEBIAN_OTHER_DIGEST="+otherDigest.String(),
	)
	return nil
}

func (h *harness) close() {
	if h.srv != nil {
		h.srv.Close()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}

// server returns the registry, failing the script if it has none.
func (h *harness) server(ts *testscript.TestScript) *testregistry.Server {
	if ts.Getenv("REGISTRY") == "" || h.srv == nil {
		ts.Fatalf("no registry for this script: start it with a [registry] condition, e.g. `[!registry] skip`")
	}
	return h.srv
}

// claim records that script pushes ref, and fails if another script did:
// scripts run in parallel against one registry.
func (h *harness) claim(ref, script string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if other, ok := h.owners[ref]; ok && other != script {
		return fmt.Errorf("%s was already pushed by script %s: use another name", ref, other)
	}
	h.owners[ref] = script
	return nil
}

func specLayer(spec string, level int, mt types.MediaType) (*testregistry.MemLayer, error) {
	entries, err := testregistry.ParseSpec(spec, nil)
	if err != nil {
		return nil, err
	}
	data, err := testregistry.WriteTar(entries)
	if err != nil {
		return nil, err
	}
	return testregistry.NewMemLayer(data, level, mt)
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

func parsePlatform(s string) (*v1.Platform, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return nil, fmt.Errorf("bad platform %q (want OS/ARCH[/VARIANT])", s)
	}
	p := &v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// mkimage [--corrupt-layer=N] [--platform=OS/ARCH[/VARIANT]] REF LAYER...
//
// Pushes to the script's registry an OCI image whose layers are built from
// the LAYER files, in order: layer specs (see testregistry.SpecDoc; $VARs in
// names and targets expand from the script's environment) or, for names
// ending in .tar, raw tar archives. REF is written as for docker
// ("name:tag" is docker.io/library/name:tag, which racker finds through
// $RACKER_REGISTRY_MIRRORS). Prints the manifest digest.
//
// --corrupt-layer=N replaces the stored bytes of layer N (from 1) with
// different bytes of the same length, a valid gzip of a valid tar, so only
// checking the digest reveals it. Layers shared with other images are
// corrupted for them too; mkimage refuses to reuse a corrupted blob.
func cmdMkimage(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "mkimage [--corrupt-layer=N] [--platform=OS/ARCH[/VARIANT]] REF LAYER..."
	if neg {
		ts.Fatalf("unsupported: ! mkimage")
	}
	fset := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	corrupt := fset.Int("corrupt-layer", 0, "")
	platformFlag := fset.String("platform", "", "")
	parseFlags(ts, fset, args, 2, -1, usage)
	ref, files := fset.Arg(0), fset.Args()[1:]
	if *corrupt < 0 || *corrupt > len(files) {
		ts.Fatalf("--corrupt-layer=%d: the image has layers 1 to %d\nusage: %s", *corrupt, len(files), usage)
	}
	platform, err := parsePlatform(*platformFlag)
	ts.Check(err)
	if platform == nil {
		hp := testregistry.HostPlatform()
		platform = &hp
	}
	srv := shared.server(ts)
	ts.Check(shared.claim(ref, ts.Name()))

	var layers []v1.Layer
	var corruptTar []byte
	for i, file := range files {
		data := ts.ReadFile(file)
		var entries []testregistry.SpecEntry
		tarData := []byte(data)
		if !strings.HasSuffix(file, ".tar") {
			entries, err = testregistry.ParseSpec(data, ts.Getenv)
			if err != nil {
				ts.Fatalf("%s: %v", file, err)
			}
			tarData, err = testregistry.WriteTar(entries)
			ts.Check(err)
		}
		level := gzip.DefaultCompression
		if i+1 == *corrupt {
			if entries == nil {
				ts.Fatalf("--corrupt-layer=%d: %s is a raw tar; corrupting needs a layer spec", *corrupt, file)
			}
			bad, err := testregistry.Corrupt(entries)
			if err != nil {
				ts.Fatalf("%s: %v", file, err)
			}
			corruptTar, err = testregistry.WriteTar(bad)
			ts.Check(err)
			// Stored deflate blocks: the same tar length gives the same
			// gzip length.
			level = gzip.NoCompression
		}
		l, err := testregistry.NewMemLayer(tarData, level, types.OCILayer)
		ts.Check(err)
		d, _ := l.Digest()
		shared.mu.Lock()
		bad := shared.corrupted[d]
		shared.mu.Unlock()
		if bad {
			ts.Fatalf("%s: the same layer was corrupted by --corrupt-layer in another image; change its content", file)
		}
		layers = append(layers, l)
	}
	img, err := testregistry.NewImage(*platform, types.OCIManifestSchema1, layers...)
	ts.Check(err)
	ctx, cancel := commandContext()
	defer cancel()
	digest, err := srv.Write(ctx, ref, img)
	ts.Check(err)
	if *corrupt > 0 {
		l := layers[*corrupt-1].(*testregistry.MemLayer)
		bad, err := testregistry.NewMemLayer(corruptTar, gzip.NoCompression, types.OCILayer)
		ts.Check(err)
		d, _ := l.Digest()
		shared.mu.Lock()
		shared.corrupted[d] = true
		shared.mu.Unlock()
		ts.Check(srv.ReplaceBlob(d, bad.Gzip))
		ts.Logf("layer %d (%s) now serves different bytes of the same length", *corrupt, d)
	}
	fmt.Fprintln(ts.Stdout(), digest)
}

// cmpimage [--platform=OS/ARCH[/VARIANT]] REF ROOTFS
//
// Fetches REF (written as for docker) from the script's registry with
// go-containerregistry, flattens it, and compares it with the directory
// ROOTFS entry by entry (see testregistry.Compare). Fails listing up to 20
// differences; with !, fails if there are none.
func cmdCmpimage(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "cmpimage [--platform=OS/ARCH[/VARIANT]] REF ROOTFS"
	fset := flag.NewFlagSet("cmpimage", flag.ContinueOnError)
	platformFlag := fset.String("platform", "", "")
	parseFlags(ts, fset, args, 2, 2, usage)
	platform, err := parsePlatform(*platformFlag)
	ts.Check(err)
	ref, rootfs := fset.Arg(0), ts.MkAbs(fset.Arg(1))
	if st, err := os.Stat(rootfs); err != nil || !st.IsDir() {
		ts.Fatalf("cmpimage: %s is not a directory", rootfs)
	}
	srv := shared.server(ts)
	ctx, cancel := commandContext()
	defer cancel()
	img, err := srv.Image(ctx, ref, platform)
	ts.Check(err)
	diffs, err := testregistry.Compare(ctx, img, rootfs)
	ts.Check(err)
	switch {
	case neg && len(diffs) == 0:
		ts.Fatalf("%s and %s do not differ", ref, rootfs)
	case neg:
		ts.Logf("%d differences, as expected; first: %s", len(diffs), diffs[0])
	case len(diffs) > 0:
		shown := diffs[:min(len(diffs), 20)]
		more := ""
		if len(diffs) > len(shown) {
			more = fmt.Sprintf("\n... and %d more", len(diffs)-len(shown))
		}
		ts.Fatalf("%s and %s differ in %d entries:\n%s%s", ref, rootfs, len(diffs), strings.Join(shown, "\n"), more)
	}
}

// json FILE EXPR [WANT]
//
// Evaluates EXPR on the JSON document in FILE ("stdout" and "stderr" name
// the last command's output). Without WANT it prints the value, strings
// unquoted, and `! json` passes only if EXPR selects nothing. With WANT it
// passes if the value equals WANT, and `! json` if it does not (or if EXPR
// selects nothing). EXPR is a small jq subset: `.`, `.field`, `[N]`,
// `[field=value]` (the first array element whose field prints as value),
// `[field!=value]` (the first whose field does not), chained, and a final
// `|length`; e.g. `.[0].digest`, `.|length`,
// `.[reference=docker.io/library/debian:bookworm-slim].rootfs`, and
// `! json stdout '.[digest!=sha256:...]'` for "every element has that digest".
func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "json FILE EXPR [WANT]"
	if len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: %s", usage)
	}
	var doc any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &doc); err != nil {
		ts.Fatalf("%s is not JSON: %v", args[0], err)
	}
	v, err := evalJSON(doc, args[1])
	var syntax *jsonSyntaxError
	if errors.As(err, &syntax) {
		ts.Fatalf("%v\nusage: %s", err, usage)
	}
	got := ""
	if err == nil {
		got = jsonString(v)
	}
	switch {
	case len(args) == 2 && neg && err == nil:
		ts.Fatalf("%s selects %s in %s, want nothing", args[1], got, args[0])
	case len(args) == 2 && !neg && err != nil:
		ts.Fatalf("%s: %v", args[0], err)
	case len(args) == 2:
		if err == nil {
			fmt.Fprintln(ts.Stdout(), got)
		}
	case neg && err == nil && got == args[2]:
		ts.Fatalf("%s of %s is %s, want anything else", args[1], args[0], got)
	case !neg && err != nil:
		ts.Fatalf("%s: %v", args[0], err)
	case !neg && got != args[2]:
		ts.Fatalf("%s of %s is %q, want %q", args[1], args[0], got, args[2])
	}
}

type jsonSyntaxError struct{ expr, msg string }

func (e *jsonSyntaxError) Error() string { return fmt.Sprintf("bad EXPR %q: %s", e.expr, e.msg) }

func evalJSON(v any, expr string) (any, error) {
	p, ok := strings.CutPrefix(expr, ".")
	if !ok {
		return nil, &jsonSyntaxError{expr, "must start with ."}
	}
	p, length := strings.CutSuffix(p, "|length")
	for p != "" {
		switch {
		case p[0] == '.':
			p = p[1:]
		case p[0] == '[':
			end := strings.IndexByte(p, ']')
			if end < 0 {
				return nil, &jsonSyntaxError{expr, "unclosed ["}
			}
			inner := p[1:end]
			p = p[end+1:]
			arr, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("[%s] applied to %s, not an array", inner, jsonString(v))
			}
			if n, err := strconv.Atoi(inner); err == nil {
				if n < 0 || n >= len(arr) {
					return nil, fmt.Errorf("index %d out of range: the array has %d elements", n, len(arr))
				}
				v = arr[n]
				continue
			}
			key, want, ok := strings.Cut(inner, "=")
			if !ok {
				return nil, &jsonSyntaxError{expr, "want [N], [field=value] or [field!=value]"}
			}
			key, differ := strings.CutSuffix(key, "!")
			found := false
			for _, el := range arr {
				if obj, ok := el.(map[string]any); ok && obj[key] != nil && (jsonString(obj[key]) == want) != differ {
					v, found = el, true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("no element with %s", inner)
			}
		default:
			end := strings.IndexAny(p, ".[")
			if end < 0 {
				end = len(p)
			}
			field := p[:end]
			p = p[end:]
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf(".%s applied to %s, not an object", field, jsonString(v))
			}
			if v, ok = obj[field]; !ok {
				return nil, fmt.Errorf("no field %q", field)
			}
		}
	}
	if length {
		switch x := v.(type) {
		case []any:
			return float64(len(x)), nil
		case map[string]any:
			return float64(len(x)), nil
		case string:
			return float64(len(x)), nil
		default:
			return nil, fmt.Errorf("|length of %s, which is no array, object or string", jsonString(v))
		}
	}
	return v, nil
}

func jsonString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	data, _ := json.Marshal(v)
	return string(data)
}

// setenv VAR FILE
//
// Sets VAR to the content of FILE ("stdout" for the last command's output),
// which must be one non-empty line.
func cmdSetenv(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: setenv VAR FILE")
	}
	v := strings.TrimSuffix(ts.ReadFile(args[1]), "\n")
	if v == "" || strings.Contains(v, "\n") {
		ts.Fatalf("setenv %s: %s must be one non-empty line, is %q", args[0], args[1], v)
	}
	ts.Setenv(args[0], v)
}

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

// lstree [-inodes] DIR FILE
//
// Writes to FILE one line per entry under DIR, DIR itself first as ".":
// type, mode, owner, size and SHA-256 of files, symlink targets, and mtime
// in nanoseconds; with -inodes also the inode. Compare two listings with cmp
// to prove that nothing changed (or, with -inodes, that nothing was
// rewritten). It writes a file, not stdout, to keep thousands of lines out
// of the log.
func cmdLstree(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "lstree [-inodes] DIR FILE"
	if neg {
		ts.Fatalf("unsupported: ! lstree")
	}
	fset := flag.NewFlagSet("lstree", flag.ContinueOnError)
	inodes := fset.Bool("inodes", false, "")
	parseFlags(ts, fset, args, 2, 2, usage)
	root := ts.MkAbs(fset.Arg(0))
	var out strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s %s %04o %d:%d", strconv.Quote(rel), fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			size, sum, err := hashFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %s", size, sum)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + strconv.Quote(target)
		}
		line += fmt.Sprintf(" mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		if *inodes {
			line += fmt.Sprintf(" ino=%d", st.Ino)
		}
		fmt.Fprintln(&out, line)
		return nil
	})
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(fset.Arg(1)), []byte(out.String()), 0o644))
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return "other"
}

func hashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h, n, err := v1.SHA256(f)
	return n, h.Hex, err
}

// emptydir DIR
//
// Passes if DIR is empty or does not exist; `! emptydir DIR` passes if DIR
// has entries. On failure lists up to 10 of them.
func cmdEmptydir(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: emptydir DIR")
	}
	dir := ts.MkAbs(args[0])
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		ts.Fatalf("emptydir: %v", err)
	}
	switch {
	case neg && len(entries) == 0:
		ts.Fatalf("%s is empty or missing, want entries", args[0])
	case !neg && len(entries) > 0:
		var names []string
		for _, e := range entries[:min(10, len(entries))] {
			names = append(names, e.Name())
		}
		ts.Fatalf("%s has %d entries, want none: %s", args[0], len(entries), strings.Join(names, " "))
	}
}

// waitsize DIR BYTES
//
// Waits until the files under DIR hold at least BYTES bytes (e.g. 30M), so a
// script can interrupt a pull once it is well under way. Gives up after two
// minutes.
func cmdWaitsize(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "waitsize DIR BYTES"
	if neg || len(args) != 2 {
		ts.Fatalf("usage: %s", usage)
	}
	want, err := parseBytes(args[1])
	if err != nil {
		ts.Fatalf("%v\nusage: %s", err, usage)
	}
	dir := ts.MkAbs(args[0])
	start := time.Now()
	for {
		var total int64
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if info, err := d.Info(); err == nil {
					total += info.Size()
				}
			}
			return nil // entries come and go while racker works
		})
		if total >= want {
			ts.Logf("%s holds %d bytes after %v", args[0], total, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 2*time.Minute {
			ts.Fatalf("%s holds %d bytes after %v, want %d", args[0], total, time.Since(start).Round(time.Second), want)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q (want N, NK or NM)", s)
	}
	return n * mult, nil
}

// closedport VAR
//
// Sets VAR to 127.0.0.1:PORT for a port that nothing listens on, for
// "registry unreachable" cases.
func cmdClosedport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: closedport VAR")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	addr := l.Addr().String()
	ts.Check(l.Close())
	ts.Setenv(args[0], addr)
}

// rootfs VAR DIGEST
//
// Sets VAR to where racker keeps the unpacked tree of the manifest DIGEST:
// $RACKER_ROOT/images/sha256/HEX/rootfs. It does not check that it exists.
func cmdRootfs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: rootfs VAR DIGEST")
	}
	h, err := v1.NewHash(args[1])
	if err != nil {
		ts.Fatalf("rootfs: %v\nusage: rootfs VAR DIGEST", err)
	}
	root := ts.Getenv("RACKER_ROOT")
	if root == "" {
		ts.Fatalf("rootfs: RACKER_ROOT is not set")
	}
	ts.Setenv(args[0], filepath.Join(root, "images", h.Algorithm, h.Hex, "rootfs"))
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

// teardown returns what runs when a script ends, passed or failed: every
// container racker lists in root is removed with `racker rm -f`; then, in
// case racker lost track of some, any systemd-nspawn whose root directory
// is under work is killed and anything still mounted under work is
// detached, so that removing work cannot reach into a container or a bind
// mount. What it had to clean up is logged; scripts assert on leftovers
// themselves (noprocs, nomounts), this only keeps them from piling up.
func teardown(t testscript.T, work, root string) func() {
	return func() {
		logf := func(format string, args ...any) { t.Log(fmt.Sprintf("teardown: "+format, args...)) }
		if entries, _ := os.ReadDir(filepath.Join(root, "containers")); len(entries) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "racker", "--root", root, "ps", "--format", "json").Output()
			var list []struct{ Name string }
			if err == nil {
				err = json.Unmarshal(out, &list)
			}
			if err != nil {
				logf("racker ps: %v", err)
			}
			var names []string
			for _, c := range list {
				names = append(names, c.Name)
			}
			if len(names) > 0 {
				out, err := exec.CommandContext(ctx, "racker", append([]string{"--root", root, "rm", "-f"}, names...)...).CombinedOutput()
				logf("racker rm -f %s: %v\n%s", strings.Join(names, " "), err, out)
			}
		}
		for _, p := range processes() {
			if filepath.Base(p.args[0]) != "systemd-nspawn" {
				continue
			}
			for _, a := range p.args[1:] {
				if dir, ok := strings.CutPrefix(a, "--directory="); ok && within(dir, work) {
					logf("killing leftover pid %d: %s", p.pid, strings.Join(p.args, " "))
					killAndWait(p.pid)
					break
				}
			}
		}
		mounts, err := mountPoints()
		if err != nil {
			logf("%v", err)
		}
		for i := len(mounts) - 1; i >= 0; i-- { // the innermost first
			if within(mounts[i], work) {
				err := unix.Unmount(mounts[i], unix.MNT_DETACH)
				logf("unmounting leftover %s: %v", mounts[i], err)
			}
		}
	}
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// killAndWait sends SIGTERM to pid (systemd-nspawn kills its container on
// SIGTERM as racker starts it), then SIGKILL if it is still there after 5 s.
func killAndWait(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(pfd, 5000); n > 0 {
		return
	}
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	unix.Poll(pfd, 5000)
}

type process struct {
	pid  int
	args []string
}

// processes lists the processes of the host with their arguments, this one
// and zombies (which have none) excepted.
func processes() []process {
	entries, _ := os.ReadDir("/proc")
	var out []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		out = append(out, process{pid, strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")})
	}
	return out
}

// mountPoints returns the mount points of this process's mount namespace,
// in the order of /proc/self/mountinfo (parents before children).
func mountPoints() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			out = append(out, unescapeMountinfo(f[4]))
		}
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a blank) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var nameUnsafe = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// warm holds the template stores of warmstore, built once per test process
// in a temporary directory that is removed when the tests end.
var warm = &warmStores{stores: map[string]*warmStore{}}

type warmStores struct {
	mu     sync.Mutex
	dir    string
	stores map[string]*warmStore
}

type warmStore struct {
	once sync.Once
	root string
	err  error
}

func (w *warmStores) get(image string) (*warmStore, string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dir == "" {
		dir, err := os.MkdirTemp("", "racker-test-warm-")
		if err != nil {
			return nil, "", err
		}
		w.dir = dir
	}
	s, ok := w.stores[image]
	if !ok {
		s = &warmStore{}
		w.stores[image] = s
	}
	return s, w.dir, nil
}

func (w *warmStores) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dir != "" {
		os.RemoveAll(w.dir)
	}
}

// warmstore IMAGE
//
// Puts IMAGE (written as for docker), pulled from the script's registry and
// prepared for booting, into $RACKER_ROOT, which must not hold it yet. The
// first script to ask for IMAGE makes a template store with the real
// racker (`racker --root TEMPLATE run --rm IMAGE true`: pull, real apt-get,
// boot); every script then gets a copy made of hard links (cp -al), which
// takes a fraction of a second. Containers never write to a stored tree
// (they boot on a volatile overlay), so the copies cannot affect each
// other. Templates live in a temporary directory of this test process and
// are made anew by every `go test` run: preparation is exercised each time.
func cmdWarmstore(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: warmstore IMAGE")
	}
	image := args[0]
	shared.server(ts)
	s, dir, err := warm.get(image)
	ts.Check(err)
	s.once.Do(func() {
		start := time.Now()
		s.root = filepath.Join(dir, "store-"+nameUnsafe.ReplaceAllString(image, "-"))
		s.err = buildWarmStore(s.root, filepath.Join(dir, "home"), image, ts.Getenv("RACKER_REGISTRY_MIRRORS"))
		ts.Logf("warmstore: made the template store of %s in %.1fs", image, time.Since(start).Seconds())
	})
	if s.err != nil {
		ts.Fatalf("warmstore %s: %v", image, s.err)
	}
	dest := ts.Getenv("RACKER_ROOT")
	ts.Check(os.MkdirAll(dest, 0o700))
	ctx, cancel := commandContext()
	defer cancel()
	for _, d := range []string{"images", "refs"} {
		out, err := exec.CommandContext(ctx, "cp", "-al", filepath.Join(s.root, d), dest+"/").CombinedOutput()
		if err != nil {
			ts.Fatalf("warmstore %s: copying %s: %v: %s", image, d, err, out)
		}
	}
}

// buildWarmStore pulls and prepares image into the store root.
func buildWarmStore(root, home, image, mirrors string) error {
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "racker", "--root", root, "run", "--rm", "--quiet", image, "true")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RACKER_") && !strings.HasPrefix(kv, "HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+home, "RACKER_REGISTRY_MIRRORS="+mirrors)
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("racker --root %s run --rm %s true: %v\n%s", root, image, err, out)
	}
	prepared, _ := filepath.Glob(filepath.Join(root, "images", "sha256", "*", "prepared", "prepared.json"))
	if len(prepared) == 0 {
		return fmt.Errorf("racker run %s left no prepared tree in %s", image, root)
	}
	return nil
}

// nomounts DIR
//
// Passes if nothing is mounted at or below DIR in this process's mount
// namespace (the host's); `! nomounts DIR` if something is. Lists what is.
func cmdNomounts(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: nomounts DIR")
	}
	dir := ts.MkAbs(args[0])
	all, err := mountPoints()
	ts.Check(err)
	var found []string
	for _, m := range all {
		if within(m, dir) {
			found = append(found, m)
		}
	}
	switch {
	case neg && len(found) == 0:
		ts.Fatalf("nothing is mounted under %s", dir)
	case !neg && len(found) > 0:
		ts.Fatalf("mounted under %s:\n%s", dir, strings.Join(found, "\n"))
	}
}

// noprocs PATTERN
//
// Passes if no process's command line (its arguments joined by blanks)
// matches the regular expression PATTERN, looking once; `! noprocs PATTERN`
// passes once one does (waiting up to 10s for a process being started).
// Zombies and this test process are not looked at. Lists the matches, e.g.
// `noprocs 'systemd-nspawn .*--machine=web1( |$)'`.
func cmdNoprocs(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: noprocs PATTERN")
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
		if !neg || len(found) > 0 || time.Since(start) > 10*time.Second {
			break
		}
	}
	switch {
	case neg && len(found) == 0:
		ts.Fatalf("no process matches %q after 10s", args[0])
	case !neg && len(found) > 0:
		ts.Fatalf("processes match %q:\n%s", args[0], strings.Join(found, "\n"))
	}
}

// waitfor [-timeout DUR] FILE [REGEXP]
//
// Waits until FILE exists and, with REGEXP, until its content matches it
// (multi-line mode, as for stdout). Gives up after DUR (default 1m).
func cmdWaitfor(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "waitfor [-timeout DUR] FILE [REGEXP]"
	if neg {
		ts.Fatalf("unsupported: ! waitfor")
	}
	fset := flag.NewFlagSet("waitfor", flag.ContinueOnError)
	timeout := fset.Duration("timeout", time.Minute, "")
	parseFlags(ts, fset, args, 1, 2, usage)
	file := ts.MkAbs(fset.Arg(0))
	var re *regexp.Regexp
	if fset.NArg() == 2 {
		var err error
		if re, err = regexp.Compile("(?m)" + fset.Arg(1)); err != nil {
			ts.Fatalf("waitfor: %v\nusage: %s", err, usage)
		}
	}
	start := time.Now()
	for {
		data, err := os.ReadFile(file)
		if err == nil && (re == nil || re.Match(data)) {
			ts.Logf("waitfor: %s ready after %v", fset.Arg(0), time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > *timeout {
			if err != nil {
				ts.Fatalf("waitfor: %v after %v", err, *timeout)
			}
			ts.Fatalf("waitfor: %s does not match %q after %v; it holds:\n%s", fset.Arg(0), fset.Arg(1), *timeout, data)
		}
		time.Sleep(20 * time.Millisecond)
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

// ptyMain is the program pty, which scripts run with exec:
//
//	pty [-rows R] [-cols C] [-input TEXT] [-timeout DUR] PROG [ARG...]
//
// It runs PROG on a new pseudo-terminal of the host, as an interactive
// shell would: the terminal is PROG's stdin, stdout, stderr and controlling
// terminal, in a session of its own, sized R x C (default 24 x 80). TEXT,
// with Go escapes (\n, \r, \x04, ...) decoded, is typed in as soon as PROG
// starts. Everything PROG writes to the terminal (the terminal's own echo
// and CRLF line ends included) is copied to pty's stdout once PROG has
// exited, and pty exits with PROG's status (128+N after signal N). pty's
// stderr gets one line telling whether PROG left the terminal's settings
// as it found them: "pty: terminal settings restored" or "pty: terminal
// settings changed: ...". After DUR (default 1m) PROG is killed.
func ptyMain(args []string) int {
	fset := flag.NewFlagSet("pty", flag.ContinueOnError)
	rows := fset.Uint("rows", 24, "")
	cols := fset.Uint("cols", 80, "")
	input := fset.String("input", "", "")
	timeout := fset.Duration("timeout", time.Minute, "")
	if err := fset.Parse(args); err != nil || fset.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: pty [-rows R] [-cols C] [-input TEXT] [-timeout DUR] PROG [ARG...]")
		return 2
	}
	text, err := strconv.Unquote(`"` + strings.ReplaceAll(*input, `"`, `\"`) + `"`)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pty: -input %q: %v\n", *input, err)
		return 2
	}
	master, slave, err := openPTY(uint16(*rows), uint16(*cols))
	if err != nil {
		fmt.Fprintf(os.Stderr, "pty: %v\n", err)
		return 2
	}
	defer master.Close()
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pty: %v\n", err)
		return 2
	}
	cmd := exec.Command(fset.Arg(0), fset.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "pty: %v\n", err)
		return 127
	}
	// Only PROG and its children hold the terminal now: reading the master
	// fails (EIO) once they all have closed it.
	slave.Close()
	var out strings.Builder
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 32<<10)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	if text != "" {
		master.Write([]byte(text))
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(*timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		fmt.Fprintf(os.Stderr, "pty: killed %s after %v\n", fset.Arg(0), *timeout)
	}
	// Output may still be in the terminal; a process PROG left behind may
	// keep it open: then give up after a while.
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-read
	after, err := unix.IoctlGetTermios(int(master.Fd()), unix.TCGETS)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "pty: reading the terminal settings: %v\n", err)
	case after.Iflag != before.Iflag || after.Oflag != before.Oflag || after.Lflag != before.Lflag || after.Cflag != before.Cflag:
		fmt.Fprintf(os.Stderr, "pty: terminal settings changed: iflag %#o -> %#o, oflag %#o -> %#o, lflag %#o -> %#o, cflag %#o -> %#o\n",
			before.Iflag, after.Iflag, before.Oflag, after.Oflag, before.Lflag, after.Lflag, before.Cflag, after.Cflag)
	default:
		fmt.Fprintln(os.Stderr, "pty: terminal settings restored")
	}
	os.Stdout.WriteString(out.String())
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// openPTY allocates a pseudo-terminal pair of the host's devpts, sized
// rows x cols.
func openPTY(rows, cols uint16) (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("ptsname: %w", err)
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("setting the window size: %w", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

func TestEvalJSON(t *testing.T) {
	var doc any
	if err := json.Unmarshal([]byte(`[{"reference":"a","digest":"sha256:1","size":170000000,"tags":["x"]},{"reference":"b","digest":"sha256:2","size":3}]`), &doc); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ expr, want, err string }{
		{".|length", "2", ""},
		{".[0].reference", "a", ""},
		{".[1].size", "3", ""},
		{".[0].size", "170000000", ""},
		{".[0].tags", `["x"]`, ""},
		{".[0].tags|length", "1", ""},
		{".[reference=b].digest", "sha256:2", ""},
		{".[digest!=sha256:1].reference", "b", ""},
		{".[reference=c]", "", "no element with reference=c"},
		{".[2]", "", "index 2 out of range: the array has 2 elements"},
		{".[0].nope", "", `no field "nope"`},
		{".reference", "", "not an object"},
		{".[0].reference|length", "1", ""},
		{"[0]", "", "must start with ."},
		{".[0", "", "unclosed ["},
		{".[x]", "", "want [N]"},
	} {
		v, err := evalJSON(doc, tt.expr)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want %q", tt.expr, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.expr, err)
		case tt.err == "" && jsonString(v) != tt.want:
			t.Errorf("%s = %s, want %s", tt.expr, jsonString(v), tt.want)
		}
	}
}
