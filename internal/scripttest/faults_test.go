package scripttest

import (
	"fmt"
	"strings"
	"sync"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/racker-postroj/racker/internal/testregistry"
)

// faultCmds are the commands for scripts about download faults.
var faultCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"faultproxy": cmdFaultproxy,
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
		var rs []*testregistry.FaultRule
		for _, s := range specs {
			r, err := testregistry.ParseFaultRule(s)
			if err != nil {
				ts.Fatalf("faultproxy: %v\nrules: %s", err, testregistry.FaultSyntax)
			}
			rs = append(rs, r)
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
