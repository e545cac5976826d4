package scripttest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/racker-postroj/racker/internal/testregistry"
)

// faultCmds are the commands for scripts about download faults.
var faultCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"faultproxy": cmdFaultproxy,
	"nocgroups":  cmdNocgroups,
}

// faultProxies are the running proxies, by script and variable name.
var faultProxies sync.Map // faultKey -> *testregistry.FaultProxy

type faultKey struct {
	ts   *testscript.TestScript
	name string
}

// faultproxy VAR UPSTREAM [RULE...]
// faultproxy -rules VAR [RULE...]
// faultproxy -log VAR
//
// The first form starts a fault-injecting proxy (testregistry.FaultProxy)
// on 127.0.0.1 in front of UPSTREAM (host:port or http://host:port) and
// sets $VAR to its host:port; it is stopped when the script ends. -rules
// replaces the rules of the proxy in $VAR, -log prints one line per request
// it has served so far (method, path, range, rule applied) to stdout. Rules:
//
//	[COUNT*|**]KIND[=ARG][,retry-after=SECONDS][@PATH]: KIND is drop=BYTES, stall=BYTES,
//	status=CODE, norange, length=DELTA or corrupt=BYTES (see testregistry.FaultSyntax).
func cmdFaultproxy(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "usage: faultproxy VAR UPSTREAM [RULE...] | faultproxy -rules VAR [RULE...] | faultproxy -log VAR"
	if neg {
		ts.Fatalf("unsupported: ! faultproxy")
	}
	if len(args) < 2 {
		ts.Fatalf("%s", usage)
	}
	rules := func(specs []string) []*testregistry.FaultRule {
		rs, err := testregistry.ParseFaultRules(specs...)
		if err != nil {
			ts.Fatalf("faultproxy: %v\nrules: %s", err, testregistry.FaultSyntax)
		}
		return rs
	}
	lookup := func(name string) *testregistry.FaultProxy {
		p, ok := faultProxies.Load(faultKey{ts, name})
		if !ok {
			ts.Fatalf("faultproxy: no proxy was started as %s", name)
		}
		return p.(*testregistry.FaultProxy)
	}
	switch args[0] {
	case "-log":
		if len(args) != 2 {
			ts.Fatalf("%s", usage)
		}
		for _, l := range lookup(args[1]).Log() {
			fmt.Fprintln(ts.Stdout(), l)
		}
		return
	case "-rules":
		lookup(args[1]).SetRules(rules(args[2:])...)
		return
	}
	if strings.HasPrefix(args[0], "-") {
		ts.Fatalf("%s", usage)
	}
	up := args[1]
	if !strings.Contains(up, "://") {
		up = "http://" + up
	}
	p, err := testregistry.StartFaultProxy(up, rules(args[2:])...)
	ts.Check(err)
	key := faultKey{ts, args[0]}
	faultProxies.Store(key, p)
	ts.Defer(func() {
		faultProxies.Delete(key)
		p.Close()
	})
	ts.Setenv(args[0], p.Addr())
}

// nocgroups WORD
//
// Passes if no control group under /sys/fs/cgroup (any hierarchy, six
// levels deep) has WORD in its name, e.g. a container's name after it is
// gone; lists those that do. Without /sys/fs/cgroup it fails.
func cmdNocgroups(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 || args[0] == "" {
		ts.Fatalf("usage: nocgroups WORD")
	}
	const root = "/sys/fs/cgroup"
	if _, err := os.Stat(root); err != nil {
		ts.Fatalf("nocgroups: %v", err)
	}
	var found []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.Count(strings.TrimPrefix(p, root), "/") > 6 {
			return fs.SkipDir
		}
		if strings.Contains(d.Name(), args[0]) {
			found = append(found, p)
			return fs.SkipDir
		}
		return nil
	})
	if len(found) > 0 {
		ts.Fatalf("control groups named after %q:\n%s", args[0], strings.Join(found, "\n"))
	}
}

// soak N PROG [ARG...]
//
// Runs PROG N times in a row, as exec would, and prints the time per run at the start and at the end (medians
// of the first and the last tenth, at least one run each) to stdout:
// "soak: 100 runs of racker: first 10 0.412s, last 10 0.405s, median
// 0.409s". Fails if any run failed, listing each with the last line of its
// stderr. Only for the opt-in soak (see TestSoak): speed is measured in
// make bench, so the figures are recorded, not judged.
func cmdSoak(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: soak N PROG [ARG...]")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		ts.Fatalf("soak: bad count %q", args[0])
	}
	took := make([]time.Duration, n)
	var failed []string
	for i := range n {
		t0 := time.Now()
		if err := ts.Exec(args[1], args[2:]...); err != nil {
			last := strings.TrimSpace(ts.ReadFile("stderr"))
			if j := strings.LastIndex(last, "\n"); j >= 0 {
				last = last[j+1:]
			}
			failed = append(failed, fmt.Sprintf("run %d: %v: %s", i+1, err, last))
		}
		took[i] = time.Since(t0)
	}
	k := max(n/10, 1)
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	line := fmt.Sprintf("soak: %d runs of %s: first %d %.3fs, last %d %.3fs, median %.3fs", n, args[1],
		k, median(took[:k]).Seconds(), k, median(took[n-k:]).Seconds(), median(took).Seconds())
	ts.Logf("%s", line)
	if len(failed) > 0 {
		ts.Fatalf("%s\n%d of %d runs failed:\n%s", line, len(failed), n, strings.Join(failed, "\n"))
	}
	fmt.Fprintln(ts.Stdout(), line)
}
