package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// probeEnv runs Prober.Run against a fake container.
type probeEnv struct {
	t        *testing.T
	prober   *Prober
	machine  *fakeUnits
	booted   []container.StartOptions
	acquired int
	rootfs   string
	install  int // the install script's exit status
}

// fakeRoot makes a root filesystem with the given files, usr-merged like
// current distributions (bin -> usr/bin).
func fakeRoot(t *testing.T, files ...string) string {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.Symlink("usr/bin", filepath.Join(root, "bin"))
	for _, f := range files {
		p := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func newProbeEnv(t *testing.T, rootFiles ...string) *probeEnv {
	e := &probeEnv{t: t, rootfs: fakeRoot(t, rootFiles...)}
	e.machine = newFakeUnits(map[string][]string{
		"systemd-journald": {show("active", "running", "success")},
		"webfs":            {show("activating", "start", "success"), show("active", "running", "success")},
		"broken":           {show("activating", "start", "success"), show("failed", "failed", "exit-code")},
	})
	e.machine.exec = func(p nspawn.Process) int {
		if p.Args[0] == "/bin/sh" {
			p.Stdout.Write([]byte("Reading package lists...\nE: Unable to locate package\n"))
			return e.install
		}
		return 0
	}
	e.prober = &Prober{
		Cache:  &Cache{Dir: filepath.Join(t.TempDir(), "cache")},
		Settle: 10 * time.Millisecond,
		Containers: fakeStarter(func(ctx context.Context, opts container.StartOptions) (Machine, error) {
			e.booted = append(e.booted, opts)
			return e.machine, nil
		}),
	}
	return e
}

func (e *probeEnv) target(pt Type) Target {
	return Target{Name: "debian-bookworm", PackageType: pt, Acquire: func(ctx context.Context) (Image, error) {
		e.acquired++
		return Image{Reference: "docker.io/library/debian:bookworm-slim", RootFS: e.rootfs}, nil
	}}
}

func (e *probeEnv) run(spec Spec) (*Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.prober.Run(ctx, spec)
}

// steps renders the steps as "kind name result" lines.
func steps(r *Report) string {
	var b strings.Builder
	for _, s := range r.Steps {
		b.WriteString(s.Kind + " " + s.Name + " " + string(s.Result) + "\n")
	}
	return b.String()
}

func localDeb(t *testing.T, name string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, fakeDeb(name), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunPasses(t *testing.T) {
	e := newProbeEnv(t, "usr/bin/apt-get")
	deb := localDeb(t, "webfs_1.21_amd64.deb")
	r, err := e.run(Spec{Target: e.target(Deb), Packages: []string{deb}, Units: []string{"webfs"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "download webfs_1.21_amd64.deb passed\nimage debian-bookworm passed\nboot " + r.Machine + " passed\n" +
		"install webfs_1.21_amd64.deb passed\nunit webfs passed\nteardown " + r.Machine + " passed\n"
	if got := steps(r); got != want || r.Result != Passed || r.Manager != "apt-get" {
		t.Fatalf("result %s, steps:\n%s\nwant:\n%s", r.Result, got, want)
	}
	// The package is bound read-only, not copied.
	opts := e.booted[0]
	wantBind := nspawn.Bind{Host: deb, Container: "/run/postroj/packages/webfs_1.21_amd64.deb", ReadOnly: true}
	if len(opts.Binds) != 1 || opts.Binds[0] != wantBind {
		t.Errorf("binds %+v, want %+v", opts.Binds, wantBind)
	}
	if strings.Join(e.machine.enabled, " ") != "webfs" || strings.Join(e.machine.started, " ") != "webfs" {
		t.Errorf("enabled %q, started %q; want webfs for both", e.machine.enabled, e.machine.started)
	}
	if len(opts.MaskUnits) == 0 || !strings.HasPrefix(opts.Name, "postroj-debian-bookworm-") {
		t.Errorf("boot options %+v: want fast-boot masking and a postroj- name", opts)
	}
	unit := r.Steps[4]
	if unit.Summary == "" || !strings.Contains(unit.Summary, "activating (start) -> active (running)") {
		t.Errorf("unit summary %q, want the states seen", unit.Summary)
	}
	var script string
	for _, c := range e.machine.commands {
		if c[0] == "/bin/sh" {
			script = c[2]
		}
	}
	if !strings.Contains(script, "apt-get install -y -q /run/postroj/packages/webfs_1.21_amd64.deb") {
		t.Errorf("install script:\n%s", script)
	}
}

func TestRunFailingUnitShowsStatusAndJournal(t *testing.T) {
	e := newProbeEnv(t, "usr/bin/apt-get")
	r, err := e.run(Spec{Target: e.target(Deb), Units: []string{"broken", "systemd-journald", "nonexistent"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Result != Failed {
		t.Fatalf("result %s, want failed:\n%s", r.Result, steps(r))
	}
	broken := r.Steps[2]
	if broken.Name != "broken" || broken.Result != Failed || !strings.Contains(broken.Status, "Active: failed") ||
		!strings.Contains(broken.Journal, "probe-fail: config missing") {
		t.Errorf("failed unit step: %+v", broken)
	}
	if r.Steps[3].Result != Passed {
		t.Errorf("a later unit was not checked: %+v", r.Steps[3])
	}
	missing := r.Steps[4]
	if missing.Result != Failed || missing.Error != "no such unit; systemctl enable: Failed to enable unit: Unit file nonexistent.service does not exist.; "+
		"systemctl --no-block start: Failed to start nonexistent.service: Unit nonexistent.service not found." {
		t.Errorf("missing unit: %+v", missing)
	}
	var text bytes.Buffer
	r.WriteText(&text)
	for _, want := range []string{"unit      broken", "FAILED", "systemctl status broken", "| probe-fail: config missing", "FAILED: unit broken: the unit failed"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

func TestRunInstallFailureSkipsChecks(t *testing.T) {
	e := newProbeEnv(t, "usr/bin/apt-get")
	e.install = 100
	r, err := e.run(Spec{Target: e.target(Deb), Install: []string{"apache2"}, Units: []string{"apache2"},
		Network: []Address{mustAddress(t, "http://127.0.0.1:1/")}})
	if err != nil {
		t.Fatal(err)
	}
	want := "image debian-bookworm passed\nboot " + r.Machine + " passed\ninstall apache2 failed\n" +
		"unit apache2 skipped\nnetwork http://127.0.0.1:1/ skipped\nteardown " + r.Machine + " passed\n"
	if got := steps(r); got != want || r.Result != Failed {
		t.Fatalf("result %s, steps:\n%s\nwant:\n%s", r.Result, got, want)
	}
	if in := r.Steps[2]; !strings.Contains(in.Output, "E: Unable to locate package") || in.Error != "apt-get exited with status 100" {
		t.Errorf("install step: %+v", in)
	}
}

func TestRunRefusesBeforeAnyContainer(t *testing.T) {
	srv := newPkgServer(t)
	srv.put("/x.rpm", fakeRPM("x"))
	for _, tt := range []struct {
		name     string
		pt       Type
		root     []string
		pkg      string
		input    bool
		acquired int
		msg      string
	}{
		{"404", Deb, []string{"usr/bin/apt-get"}, srv.URL + "/missing.deb", false, 0, "404 Not Found"},
		{"rpm for a deb catalogue image", Deb, []string{"usr/bin/apt-get"}, srv.URL + "/x.rpm", true, 0,
			"x.rpm is a rpm package, but debian-bookworm installs deb packages"},
		{"rpm for an image without rpm tools", "", []string{"usr/bin/apt-get"}, srv.URL + "/x.rpm", true, 1,
			"rpm packages cannot be installed with apt-get"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newProbeEnv(t, tt.root...)
			r, err := e.run(Spec{Target: e.target(tt.pt), Packages: []string{tt.pkg}, Units: []string{"webfs"}})
			var ie *InputError
			var de *DownloadError
			switch {
			case err == nil:
				t.Fatal("Run succeeded")
			case tt.input && (!errors.As(err, &ie) || !errors.Is(err, distro.ErrIncompatible)):
				t.Fatalf("error %v, want an InputError wrapping ErrIncompatible", err)
			case !tt.input && !errors.As(err, &de):
				t.Fatalf("error %v, want a DownloadError", err)
			case !strings.Contains(err.Error(), tt.msg):
				t.Fatalf("error %q does not say %q", err, tt.msg)
			}
			if len(e.booted) != 0 || e.acquired != tt.acquired {
				t.Errorf("booted %d containers, acquired %d images; want none booted, %d acquired", len(e.booted), e.acquired, tt.acquired)
			}
			if r.Result != Errored || !strings.Contains(r.Error, tt.msg) || r.Steps[len(r.Steps)-1].Result != Skipped {
				t.Errorf("report: result %s error %q steps:\n%s", r.Result, r.Error, steps(r))
			}
		})
	}
}

func TestRunRefusesBusyPort(t *testing.T) {
	srv := newPkgServer(t) // something answers on this port already
	e := newProbeEnv(t, "usr/bin/apt-get")
	e.prober.Network = container.NetworkHost
	_, err := e.run(Spec{Target: e.target(Deb), Network: []Address{mustAddress(t, srv.URL)}})
	if err == nil || !strings.Contains(err.Error(), "already answers on this host before the container started") || len(e.booted) != 0 {
		t.Fatalf("error %v, booted %d; want a refusal before booting", err, len(e.booted))
	}

	// A private network has a port of its own: the host's does not matter.
	e = newProbeEnv(t, "usr/bin/apt-get")
	e.prober.Allow = []egress.Rule{{Host: "extra.example"}}
	r, _ := e.run(Spec{Target: e.target(Deb), Network: []Address{mustAddress(t, srv.URL)},
		Packages: []string{"http://127.0.0.1:1/nothing.deb"}})
	if len(e.booted) != 0 || r.Steps[0].Kind != KindDownload {
		t.Fatalf("booted %d: a failed download must come first", len(e.booted))
	}
	r, _ = e.run(Spec{Target: e.target(Deb), Network: []Address{mustAddress(t, "tcp://localhost:1")}})
	if len(e.booted) != 1 {
		t.Fatalf("booted %d, want 1", len(e.booted))
	}
	n := e.booted[0].Isolation.Network
	if n.Mode != container.NetworkPrivate || len(n.Allow) != 1 || n.Allow[0].Host != "extra.example" || r.Network != "private" {
		t.Fatalf("network %+v, report %q", n, r.Network)
	}
	if spec := (Spec{Packages: []string{"http://pkgs.example:8080/a.deb", "/local/b.deb"}}); len(e.prober.network(spec).Allow) != 2 {
		t.Fatalf("allow %v: want the package URL's host and extra.example", e.prober.network(spec).Allow)
	}
}

func TestReportJSONAndJUnit(t *testing.T) {
	e := newProbeEnv(t, "usr/bin/apt-get")
	deb := localDeb(t, "webfs_1.21_amd64.deb")
	r, err := e.run(Spec{Target: e.target(Deb), Packages: []string{deb}, Units: []string{"webfs", "broken"}})
	if err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Probe, Image, Reference, Machine, Result, Error, PackageManager string
		Started                                                         time.Time
		Seconds                                                         *float64
		Steps                                                           []struct {
			Kind, Name, Result, Summary, Error, Status, Journal string
			Started                                             time.Time
			Seconds                                             *float64
			Package                                             *struct{ Type, Sha256, How, Path string }
			Unit                                                *struct{ ActiveState string }
		}
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Probe != "pkgprobe" || doc.Image != "debian-bookworm" || doc.Result != "failed" || doc.PackageManager != "apt-get" ||
		doc.Reference != "docker.io/library/debian:bookworm-slim" || doc.Seconds == nil || doc.Started.IsZero() ||
		doc.Error != "unit broken: the unit failed: result exit-code" {
		t.Errorf("report fields: %+v", doc)
	}
	kinds := ""
	for _, s := range doc.Steps {
		kinds += s.Kind + " "
		if s.Seconds == nil || s.Started.IsZero() {
			t.Errorf("step %s %s lacks timing", s.Kind, s.Name)
		}
	}
	if kinds != "download image boot install unit unit teardown " {
		t.Errorf("step kinds %q", kinds)
	}
	if p := doc.Steps[0].Package; p == nil || p.Type != "deb" || len(p.Sha256) != 64 || p.How != "local" {
		t.Errorf("download step package: %+v", p)
	}
	if u := doc.Steps[5]; u.Unit == nil || u.Unit.ActiveState != "failed" || u.Journal == "" || u.Status == "" {
		t.Errorf("failed unit step: %+v", u)
	}

	buf.Reset()
	if err := WriteJUnit(&buf, "postroj pkgprobe", []*Report{r}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), `<?xml version="1.0" encoding="UTF-8"?>`) {
		t.Errorf("no XML header:\n%s", buf.String())
	}
	var ju struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Suites   []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
			Cases    []struct {
				Name      string `xml:"name,attr"`
				Classname string `xml:"classname,attr"`
				Time      string `xml:"time,attr"`
				Failure   *struct {
					Message string `xml:"message,attr"`
					Text    string `xml:",chardata"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(buf.Bytes(), &ju); err != nil {
		t.Fatalf("JUnit XML does not parse: %v\n%s", err, buf.String())
	}
	if ju.Tests != 7 || ju.Failures != 1 || ju.Errors != 0 || len(ju.Suites) != 1 || ju.Suites[0].Name != "pkgprobe debian-bookworm" {
		t.Fatalf("JUnit totals: %+v", ju)
	}
	c := ju.Suites[0].Cases[5]
	if c.Name != "unit broken" || c.Classname != "postroj.pkgprobe.debian-bookworm" || c.Failure == nil ||
		!strings.Contains(c.Failure.Text, "probe-fail: config missing") || !strings.Contains(c.Failure.Message, "exit-code") {
		t.Errorf("failed test case: %+v", c)
	}
}

func TestTailBuffer(t *testing.T) {
	var tb humanize.Tail
	tb.Write([]byte(strings.Repeat("line\n", outputTail) + "(Reading database ... \r(Reading database ... 50%\r(Reading database ... 9744 files.)\r\nfour\nfi"))
	tb.Write([]byte("ve"))
	want := strings.Repeat("line\n", outputTail-3) + "(Reading database ... 9744 files.)\nfour\nfive\n"
	if got := commandOutput(&tb); got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
}

// The original tool's grafana example on centos-8, with a stand-in image:
// an .rpm on an image with dnf and yum goes to dnf, from its bind mount.
func TestRunRPMOnDnfImage(t *testing.T) {
	e := newProbeEnv(t, "usr/bin/dnf", "usr/bin/yum", "usr/bin/rpm")
	e.machine.states["grafana-server"] = []string{show("active", "running", "success")}
	rpm := filepath.Join(t.TempDir(), "grafana-8.5.1-1.x86_64.rpm")
	os.WriteFile(rpm, fakeRPM("grafana"), 0o644)
	target := e.target(RPM)
	target.Name = "centos-8"
	r, err := e.run(Spec{Target: target, Packages: []string{rpm}, Units: []string{"grafana-server"}})
	if err != nil || r.Result != Passed || r.Manager != "dnf" {
		t.Fatalf("result %s, manager %s, err %v:\n%s", r.Result, r.Manager, err, steps(r))
	}
	var script string
	for _, c := range e.machine.commands {
		if c[0] == "/bin/sh" {
			script = c[2]
		}
	}
	if want := "dnf install -y /run/postroj/packages/grafana-8.5.1-1.x86_64.rpm\n"; !strings.HasSuffix(script, want) || strings.Contains(script, "apt-get") {
		t.Errorf("install script:\n%s\nwant it to end with %q", script, want)
	}
	if b := e.booted[0].Binds; len(b) != 1 || b[0].Host != rpm || !b[0].ReadOnly {
		t.Errorf("binds %+v", b)
	}
}

// How commands enter the container is the image's to say (the catalogue
// knows for CentOS 7): it reaches the boot.
func TestImageExecutorReachesBoot(t *testing.T) {
	e := newProbeEnv(t, "usr/bin/apt-get")
	target := Target{Name: "centos-7", Acquire: func(ctx context.Context) (Image, error) {
		return Image{Reference: "docker.io/library/centos:7", RootFS: e.rootfs, Executor: nspawn.ExecNsenter}, nil
	}}
	if _, err := e.run(Spec{Target: target, Units: []string{"systemd-journald"}}); err != nil {
		t.Fatal(err)
	}
	if len(e.booted) != 1 || e.booted[0].Executor != nspawn.ExecNsenter {
		t.Errorf("boot options %+v, want Executor nsenter", e.booted)
	}
}
