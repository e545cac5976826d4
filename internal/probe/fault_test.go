package probe

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/testregistry"
	"github.com/racker-postroj/racker/internal/transfer"
)

// faultyPkgServer serves /x.deb through a fault proxy with rules.
func faultyPkgServer(t *testing.T, deb []byte, rules ...string) (*testregistry.FaultProxy, string) {
	t.Helper()
	srv := newPkgServer(t)
	srv.put("/x.deb", deb)
	rs, err := testregistry.ParseFaultRules(rules...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := testregistry.StartFaultProxy(srv.URL, rs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, "http://" + p.Addr() + "/x.deb"
}

func TestFetchSurvivesTransientFaults(t *testing.T) {
	deb := fakeDeb(strings.Repeat("t", 200000))
	for _, tc := range []struct {
		name  string
		rules []string
		line  string // progress line
		how   string
	}{
		{name: "drop", rules: []string{"drop=50k"}, line: "  package x.deb: connection dropped at 50.0 kB, resuming (attempt 2/5)\n", how: "resumed"},
		{name: "stall", rules: []string{"stall=50k"}, line: "  package x.deb: no bytes for 200ms at 50.0 kB, resuming (attempt 2/5)\n", how: "resumed"},
		{name: "500 then 429", rules: []string{"status=500", "status=429,retry-after=0"}, line: "HTTP 429 Too Many Requests, retrying (attempt 3/5)", how: "downloaded"},
		{name: "200 to a Range", rules: []string{"drop=50k", "norange"}, line: "resuming (attempt 2/5)", how: "downloaded"},
		{name: "long Content-Length", rules: []string{"length=100"}, line: "connection dropped at 200.", how: "downloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := faultyPkgServer(t, deb, tc.rules...)
			var progress bytes.Buffer
			c := testCache(t)
			c.Retry = transfer.Policy{Base: time.Millisecond, Stall: 200 * time.Millisecond}
			c.Progress = &progress
			pkg := mustFetch(t, c, url)
			checkContent(t, pkg, deb)
			if !strings.Contains(progress.String(), tc.line) {
				t.Errorf("progress lacks %q:\n%s", tc.line, progress.String())
			}
			if pkg.How != tc.how {
				t.Errorf("how %q, want %q", pkg.How, tc.how)
			}
		})
	}
}

func TestFetchFailsOnPersistentFaults(t *testing.T) {
	deb := fakeDeb(strings.Repeat("p", 200000))
	for _, tc := range []struct {
		name  string
		rules []string
		msg   string
	}{
		{name: "drop", rules: []string{"**drop=20k"}, msg: "connection to PROXY dropped after 100.0 kB of x.deb (5 attempts)"},
		{name: "503", rules: []string{"**status=503"}, msg: "PROXY answered HTTP 503 Service Unavailable for x.deb (5 attempts)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, url := faultyPkgServer(t, deb, tc.rules...)
			c := testCache(t)
			c.Retry = transfer.Policy{Base: time.Millisecond}
			_, err := tryFetch(t, c, url)
			var de *DownloadError
			want := "downloading " + url + ": " + strings.ReplaceAll(tc.msg, "PROXY", p.Addr())
			if !errors.As(err, &de) || err.Error() != want {
				t.Fatalf("err = %v\nwant %s", err, want)
			}
		})
	}
}
