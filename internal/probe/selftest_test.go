package probe

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// killHook is a fake container that runs onKill when it is torn down.
type killHook struct {
	*fakeUnits
	onKill func()
}

func (k killHook) Stop(ctx context.Context, how container.Teardown, timeout time.Duration) error {
	if k.onKill != nil {
		k.onKill()
	}
	return nil
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strings.TrimPrefix(l.Addr().String(), "127.0.0.1:")
}

func TestSelftestSerializesPortsAndSkipsUnreachable(t *testing.T) {
	port := freePort(t)
	addr := mustAddress(t, "http://127.0.0.1:"+port+"/")
	var mu sync.Mutex
	serving, most := 0, 0
	var listenErrs []error
	prober := &Prober{Settle: time.Millisecond, Network: container.NetworkHost,
		Containers: fakeStarter(func(ctx context.Context, opts container.StartOptions) (Machine, error) {
			m := killHook{fakeUnits: newFakeUnits(map[string][]string{
				"systemd-journald": {show("active", "running", "success")},
				"apache2":          {show("activating", "start", "success"), show("active", "running", "success")},
			})}
			var srv *http.Server
			// Installing Apache starts it on the shared port, as its
			// Debian package does; the container's end stops it.
			m.exec = func(p nspawn.Process) int {
				if p.Args[0] != "/bin/sh" || !strings.Contains(p.Args[2], "apt-get install") { // not the refresh
					return 0
				}
				l, err := net.Listen("tcp", addr.HostPort())
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					listenErrs = append(listenErrs, err)
					return 1
				}
				serving++
				most = max(most, serving)
				srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
				go srv.Serve(l)
				return 0
			}
			m.onKill = func() {
				if srv != nil {
					time.Sleep(20 * time.Millisecond) // a slow teardown widens any overlap
					srv.Close()
					mu.Lock()
					serving--
					mu.Unlock()
				}
			}
			return m, nil
		})}
	acquired := func(ctx context.Context) (Image, error) {
		return Image{Reference: "mirror.local/debian:test", RootFS: fakeRoot(t, "usr/bin/apt-get")}, nil
	}
	unreachable := func(ctx context.Context) (Image, error) {
		return Image{}, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	}
	broken := func(ctx context.Context) (Image, error) {
		return Image{}, errors.New("building debian-sid: mmdebstrap failed")
	}
	images := []SelftestImage{
		{Name: "debian-a", Manager: "apt-get", Acquire: acquired},
		{Name: "far-away", Manager: "dnf", Acquire: unreachable, SkipUnreachable: true},
		{Name: "debian-b", Manager: "apt-get", Acquire: acquired},
		{Name: "debian-c", Manager: "apt-get", Acquire: acquired},
		{Name: "debian-sid", Manager: "apt-get", Acquire: broken, SkipUnreachable: true},
	}
	st := &Selftest{Prober: prober, Jobs: 4, specs: func(suite string, img SelftestImage) ([]Spec, error) {
		specs, err := SuiteSpecs(suite, img)
		for i := range specs {
			if len(specs[i].Network) > 0 {
				specs[i].Network = []Address{addr} // instead of port 80
			}
		}
		return specs, err
	}}
	rep, err := st.Run(context.Background(), SuitePkgprobe, images)
	if err != nil {
		t.Fatal(err)
	}
	if most != 1 || len(listenErrs) > 0 {
		t.Errorf("%d Apache probes served at once (listen errors: %v), want 1", most, listenErrs)
	}
	got := map[string]Result{}
	for _, r := range rep.Probes {
		got[r.Image+" "+r.Probe] = r.Result
	}
	for k, want := range map[string]Result{
		"debian-a journald": Passed, "debian-a apache": Passed, "debian-b apache": Passed, "debian-c apache": Passed,
		"far-away journald": Skipped, "far-away apache": Skipped,
		"debian-sid journald": Errored, "debian-sid apache": Errored,
	} {
		if got[k] != want {
			t.Errorf("%s: %s, want %s", k, got[k], want)
		}
	}
	if len(rep.Probes) != 10 || rep.Result != Errored {
		t.Errorf("%d probes, result %s; want 10, error (an image could not be acquired)", len(rep.Probes), rep.Result)
	}
	var table bytes.Buffer
	rep.WriteTable(&table)
	for _, want := range []string{
		"IMAGE       PROBE     RESULT   TIME  DETAIL",
		"far-away    journald  skipped  0.0s  dial tcp: connect: connection refused",
		"debian-sid  apache    error    0.0s  building debian-sid: mmdebstrap failed",
		"ERROR: 6 passed, 0 failed, 2 errors, 2 skipped in",
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if !strings.Contains(table.String(), "debian-a    apache    passed") || !strings.Contains(table.String(), "http://127.0.0.1:"+port+"/: HTTP/1.1 200 OK") {
		t.Errorf("table:\n%s", table.String())
	}
	var ir []string
	for _, i := range rep.Images {
		ir = append(ir, i.Name+"="+string(i.Result))
	}
	if strings.Join(ir, " ") != "debian-a=passed far-away=skipped debian-b=passed debian-c=passed debian-sid=error" {
		t.Errorf("images: %v", ir)
	}
}

func TestSelftestResult(t *testing.T) {
	r := func(res ...Result) *SelftestReport {
		rep := &SelftestReport{}
		for _, x := range res {
			rep.Probes = append(rep.Probes, &Report{Result: x})
		}
		return rep
	}
	for _, tt := range []struct {
		rep  *SelftestReport
		want Result
	}{
		{r(Passed, Passed, Skipped), Passed},
		{r(Passed, Failed, Errored), Failed}, // a finding beats trouble
		{r(Passed, Errored), Errored},
		{r(Skipped, Skipped), Errored}, // nothing tested
		{r(), Errored},
	} {
		if got := selftestResult(tt.rep); got != tt.want {
			t.Errorf("%v: %s, want %s", tt.rep.Probes, got, tt.want)
		}
	}
}

func TestSuiteSpecs(t *testing.T) {
	for _, tt := range []struct{ manager, pkg, unit string }{
		{"apt-get", "apache2", "apache2"}, {"dnf", "httpd", "httpd"}, {"yum", "httpd", "httpd"},
		{"zypper", "apache2", "apache2"}, {"pacman", "apache", "httpd"},
	} {
		specs, err := SuiteSpecs(SuitePkgprobe, SelftestImage{Name: "x", Manager: tt.manager})
		if err != nil || len(specs) != 2 {
			t.Fatalf("%s: %v %v", tt.manager, specs, err)
		}
		ap := specs[1]
		if ap.Probe != "apache" || ap.Install[0] != tt.pkg || ap.Units[0] != tt.unit || ap.Network[0].Raw != "http://localhost:80" {
			t.Errorf("%s: %+v", tt.manager, ap)
		}
		if specs[0].Probe != "journald" || specs[0].Units[0] != "systemd-journald" {
			t.Errorf("%s: %+v", tt.manager, specs[0])
		}
	}
	specs, err := SuiteSpecs(SuiteHostnamectl, SelftestImage{Name: "x"})
	if err != nil || len(specs) != 1 || strings.Join(specs[0].Commands[0], " ") != "hostnamectl" {
		t.Errorf("hostnamectl: %+v %v", specs, err)
	}
	if _, err := SuiteSpecs("nope", SelftestImage{}); err == nil || !strings.Contains(err.Error(), "valid: hostnamectl, pkgprobe") {
		t.Errorf("unknown suite: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&net.DNSError{Name: "quay.io", Err: "no such host"}, true},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{errors.New("pulling docker.io/library/fedora:43: registry unreachable: cannot resolve index.docker.io"), true},
		{errors.New("pulling x: manifest unknown"), false},
		{&net.OpError{Op: "read", Err: errors.New("reset")}, false},
	} {
		if got := Unreachable(tt.err); got != tt.want {
			t.Errorf("Unreachable(%v) = %v", tt.err, got)
		}
	}
}

// netMachine is a fake container with a network of its own: its
// "localhost:8000" is its own server, and its proxy refused one host.
type netMachine struct {
	killHook
	addr string
}

func (m netMachine) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if addr != "localhost:8000" {
		return nil, errors.New("unexpected address " + addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, m.addr)
}

func (m netMachine) Egress() ([]egress.Rule, egress.Record, bool) {
	return []egress.Rule{{Host: "deb.debian.org"}}, egress.Record{
		Requests: []egress.Request{{Method: "GET", URL: "http://deb.debian.org/debian/pool/x.deb", Status: 200, Cache: egress.CacheHit}},
		Refused:  []egress.Refusal{{Host: "telemetry.invalid:80", Requests: 1, Example: "http://telemetry.invalid/ping"}},
	}, true
}

func TestMatrixRunsCellsOnOnePortAtOnce(t *testing.T) {
	var mu sync.Mutex
	serving, most := 0, 0
	prober := &Prober{Settle: time.Millisecond,
		Containers: fakeStarter(func(ctx context.Context, opts container.StartOptions) (Machine, error) {
			if opts.Isolation.Network.Mode != container.NetworkPrivate {
				t.Errorf("network %q, want private by default", opts.Isolation.Network.Mode)
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			m := netMachine{killHook: killHook{fakeUnits: newFakeUnits(map[string][]string{
				"webfs": {show("active", "running", "success")},
			})}, addr: srv.Listener.Addr().String()}
			m.exec = func(p nspawn.Process) int {
				if p.Args[0] != "/bin/sh" {
					return 0
				}
				mu.Lock()
				serving++
				most = max(most, serving)
				mu.Unlock()
				time.Sleep(100 * time.Millisecond)
				mu.Lock()
				serving--
				mu.Unlock()
				if strings.Contains(opts.Name, "debian-c") {
					return 100 // the install fails on this one
				}
				return 0
			}
			m.onKill = srv.Close
			return m, nil
		})}
	target := func(name string) Target {
		return Target{Name: name, Acquire: func(ctx context.Context) (Image, error) {
			return Image{Reference: "mirror.local/" + name, RootFS: fakeRoot(t, "usr/bin/apt-get")}, nil
		}}
	}
	spec := Spec{Install: []string{"webfs"}, Units: []string{"webfs"}, Network: []Address{mustAddress(t, "http://localhost:8000")}}
	mx := &Matrix{Prober: prober, Jobs: 2}
	rep, err := mx.Run(context.Background(), spec, []Target{target("debian-a"), target("debian-b"), target("debian-c")})
	if err != nil {
		t.Fatal(err)
	}
	if most != 2 {
		t.Errorf("%d cells installed at once, want 2 (--jobs 2; nothing serializes port 8000 on private networks)", most)
	}
	var got []string
	for _, r := range rep.Cells {
		got = append(got, r.Image+" "+string(r.Result))
	}
	if strings.Join(got, ", ") != "debian-a passed, debian-b passed, debian-c failed" || rep.Result != Failed {
		t.Fatalf("cells %v, result %s", got, rep.Result)
	}
	a := rep.Cells[0]
	if a.Network != "private" || a.Egress == nil || a.Egress.Cached != 1 || a.Egress.Total != 1 {
		t.Fatalf("egress of a cell: %q %+v", a.Network, a.Egress)
	}
	if a.Machine == rep.Cells[1].Machine {
		t.Fatalf("two cells named %s", a.Machine)
	}
	var text, junit, table bytes.Buffer
	a.WriteText(&text)
	WriteJUnit(&junit, "postroj", rep.Cells)
	rep.WriteTable(&table)
	for _, want := range []string{
		"egress (network private): 1 requests: 1 from the package cache, 0 revalidated, 0 fetched; 1 hosts refused",
		"refused telemetry.invalid:80 (1 requests, first http://telemetry.invalid/ping): allow it with --allow-host=telemetry.invalid",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	for _, want := range []string{
		`<property name="egress.refused" value="telemetry.invalid:80"></property>`,
		`<testcase name="egress" classname="postroj.pkgprobe.debian-a"`,
		`<testsuite name="pkgprobe debian-c" tests="7" failures="1" errors="0" skipped="2"`,
	} {
		if !strings.Contains(junit.String(), want) {
			t.Errorf("JUnit lacks %q:\n%s", want, junit.String())
		}
	}
	if !strings.Contains(table.String(), "debian-c  pkgprobe  failed") || !strings.Contains(table.String(), "FAILED: 2 passed, 1 failed, 0 errors, 0 skipped") {
		t.Errorf("table:\n%s", table.String())
	}
}
