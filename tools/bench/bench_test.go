package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/nspawn"
)

func TestMedian(t *testing.T) {
	s := time.Second
	for _, tt := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{[]time.Duration{3 * s}, 3 * s},
		{[]time.Duration{5 * s, 1 * s, 3 * s}, 3 * s},
		{[]time.Duration{4 * s, 1 * s, 2 * s, 100 * s}, 3 * s},
	} {
		in := append([]time.Duration(nil), tt.in...)
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
		for i := range in {
			if in[i] != tt.in[i] {
				t.Fatalf("median reordered its argument: %v", tt.in)
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]sample{
		{Wall: 3 * time.Second, CPU: 2 * time.Second, MaxRSS: 10},
		{Wall: 1 * time.Second, CPU: 1 * time.Second, MaxRSS: 30},
		{Wall: 2 * time.Second, CPU: 4 * time.Second, MaxRSS: 20},
	})
	want := summary{Median: 2 * time.Second, Min: time.Second, Max: 3 * time.Second, CPUMedian: 2 * time.Second, PeakRSS: 30}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
}

func TestCheckTargets(t *testing.T) {
	r := &report{}
	r.Cases = []caseRes{
		{ID: "a", MedianSeconds: 1, PeakRSSBytes: 150 << 20},
		{ID: "b", MedianSeconds: 4},
		{ID: "c", MedianSeconds: 0.9},
	}
	r.checkTargets([]target{
		{name: "a/b", caseID: "a", over: "b", maxRatio: 0.25}, // 0.25: pass, the limit is inclusive
		{name: "a/c", caseID: "a", over: "c", maxRatio: 1.1},  // 1.11: miss
		{name: "a rss", caseID: "a", maxRSS: 150 << 20},       // equal: miss, the limit is exclusive
		{name: "a/x", caseID: "a", over: "x", maxRatio: 1},    // x did not run: left out
		{name: "y rss", caseID: "y", maxRSS: 1},               // y did not run: left out
	})
	var got []string
	for _, tr := range r.Targets {
		verdict := "MISS"
		if tr.Pass {
			verdict = "PASS"
		}
		got = append(got, tr.Name+" "+verdict)
	}
	if want := "a/b PASS, a/c MISS, a rss MISS"; strings.Join(got, ", ") != want {
		t.Errorf("targets: %s, want %s", strings.Join(got, ", "), want)
	}
}

func TestRunnerExec(t *testing.T) {
	var r runner
	out, err := r.exec(context.Background(), "sh", "-c", `echo out; echo err >&2; head -c 1000000 /dev/zero | tail -c 1 >/dev/null`)
	if err != nil {
		t.Fatal(err)
	}
	if out != "out\n" {
		t.Errorf("stdout %q, want %q", out, "out\n")
	}
	// The rusage of the shell covers the pipeline it waited for.
	if r.maxRSS <= 0 {
		t.Errorf("maxRSS %d, want > 0", r.maxRSS)
	}
	_, err = r.exec(context.Background(), "sh", "-c", "echo broken >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("error %v, want the exit status and stderr", err)
	}
}

func TestCasesAreWellFormed(t *testing.T) {
	ids := map[string]bool{}
	for _, c := range cases() {
		if c.id == "" || c.name == "" || c.cmd == "" || c.run == nil {
			t.Errorf("case %q lacks an id, name, cmd or run", c.id)
		}
		if ids[c.id] {
			t.Errorf("case id %q is used twice", c.id)
		}
		ids[c.id] = true
	}
	for _, tg := range targets {
		if !ids[tg.caseID] || (tg.maxRatio > 0 && !ids[tg.over]) {
			t.Errorf("target %q names a case that does not exist", tg.name)
		}
		set := 0
		for _, v := range []bool{tg.maxRSS > 0, tg.maxRatio > 0, tg.maxSeconds > 0} {
			if v {
				set++
			}
		}
		if set != 1 {
			t.Errorf("target %q must set exactly one of maxRatio, maxSeconds and maxRSS", tg.name)
		}
	}
}

func TestCheckRootfs(t *testing.T) {
	dir := t.TempDir()
	if err := checkRootfs(dir); err == nil {
		t.Error("an empty directory passes as a Debian root filesystem")
	}
	for _, f := range []struct{ name, data string }{
		{"etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"},
		{"usr/bin/bash", ""},
	} {
		if err := checkRootfs(dir); err == nil {
			t.Errorf("passes without %s", f.name)
		}
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkRootfs(dir); err != nil {
		t.Error(err)
	}
}

func TestSelectCases(t *testing.T) {
	all := cases()
	ids := func(cs []benchCase) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.id)
		}
		return strings.Join(s, ",")
	}
	for _, tt := range []struct{ list, want string }{
		{"pull", "racker-pull,racker-pull-uptodate,skopeo-umoci,gzip-tar"},
		{"run", "racker-run,racker-run-hostusers,nspawn-boot,racker-run-nomask,nspawn-boot-nomask,racker-run-noboot,nspawn-noboot"},
		{"probe", "postroj-pkgprobe,postroj-pkgprobe-hostusers,probe-floor,probe-cold"},
		// Table order, whatever the order of the list; no duplicates.
		{"gzip-tar, racker-pull,gzip-tar", "racker-pull,gzip-tar"},
		{"nspawn-noboot,pull", "racker-pull,racker-pull-uptodate,skopeo-umoci,gzip-tar,nspawn-noboot"},
	} {
		got, err := selectCases(all, tt.list)
		if err != nil {
			t.Errorf("selectCases(%q): %v", tt.list, err)
			continue
		}
		if ids(got) != tt.want {
			t.Errorf("selectCases(%q) = %s, want %s", tt.list, ids(got), tt.want)
		}
	}
	if got, err := selectCases(all, "pull,run,probe,net"); err != nil || len(got) != len(all) {
		t.Errorf("pull,run,probe,net selects %d of %d cases (%v)", len(got), len(all), err)
	}
	for _, bad := range []string{"boot", "", ","} {
		if _, err := selectCases(all, bad); err == nil {
			t.Errorf("selectCases(%q) succeeded", bad)
		}
	}
}

func TestGroups(t *testing.T) {
	for _, c := range cases() {
		if !slices.Contains(groups, c.group) {
			t.Errorf("case %s: group %q is not one of %v", c.id, c.group, groups)
		}
		if c.group == "run" && !c.short {
			t.Errorf("case %s: run cases are short", c.id)
		}
		// Warm cases share a store that a setup makes; the cold probe
		// makes its own every time.
		if (c.group == "run" || c.group == "probe") && c.short != (c.setup != nil) {
			t.Errorf("case %s: a short run or probe case sets its store up, and only those", c.id)
		}
	}
}

func TestRackerPhases(t *testing.T) {
	log := `time=2026-11-29T13:38:34.033Z level=INFO msg=prepare ref=docker.io/library/debian:bookworm-slim installed="systemd dbus curl ca-certificates" took=34.542µs
time=2026-11-29T13:38:34.284Z level=INFO msg=boot machine=debian-bookworm-slim-7ca937 took=250.849526ms
time=2026-11-29T13:38:34.393Z level=INFO msg=stop machine=debian-bookworm-slim-7ca937 took=98.610885ms
`
	got := rackerPhases(log)
	want := map[string]time.Duration{"boot": 250849526 * time.Nanosecond, "stop": 98610885 * time.Nanosecond}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rackerPhases = %v, want %v", got, want)
	}
	if got := rackerPhases("no log at all\n"); len(got) != 0 {
		t.Errorf("rackerPhases of no log = %v", got)
	}
}

func TestLogRecords(t *testing.T) {
	got := logRecords(`time=2026-12-01T12:05:04.952Z level=INFO msg="copied image" took=2.218151407s
Setting up dbus (1.14.10-1~deb12u1) ...
time=2026-12-01T12:05:10.701Z level=INFO msg="preparation egress" requests=39 cached=0 refused="" note="a \"quoted\" word"
`)
	want := []map[string]string{
		{"time": "2026-12-01T12:05:04.952Z", "level": "INFO", "msg": "copied image", "took": "2.218151407s"},
		{"time": "2026-12-01T12:05:10.701Z", "level": "INFO", "msg": "preparation egress", "requests": "39", "cached": "0", "refused": "", "note": `a "quoted" word`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("logRecords =\n%v\nwant\n%v", got, want)
	}
}

// coldLog is what a cold pkgprobe --verbose logged (shortened).
const coldLog = `time=2026-12-01T12:05:00.288Z level=INFO msg=resolved ref=docker.io/library/debian:bookworm-slim source=127.0.0.1:46835 took=3.745207ms
time=2026-12-01T12:05:02.734Z level=INFO msg=pull name=debian-bookworm ref=docker.io/library/debian:bookworm-slim up_to_date=false took=2.449608492s
time=2026-12-01T12:05:04.952Z level=INFO msg="copied image" took=2.218151407s
Setting up dbus (1.14.10-1~deb12u1) ...
time=2026-12-01T12:05:10.701Z level=INFO msg="preparation egress" requests=39 cached=0 refused=""
time=2026-12-01T12:05:11.017Z level=INFO msg=prepare name=debian-bookworm ref=docker.io/library/debian:bookworm-slim installed="systemd systemd-sysv dbus curl ca-certificates" took=8.283539755s
time=2026-12-01T12:05:11.187Z level=INFO msg=boot machine=postroj-debian-bookworm-b9bbc5 took=169.754714ms
`

func TestColdPhases(t *testing.T) {
	got, err := coldPhases(coldLog)
	want := map[string]time.Duration{"pull": 2449608492, "copy": 2218151407, "prepare": 8283539755 - 2218151407}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("coldPhases = %v, %v; want %v", got, err, want)
	}
	// A run that did not start from nothing, or left out a part, fails.
	for _, tt := range []struct{ old, new string }{
		{"up_to_date=false", "up_to_date=true"},
		{"msg=pull", "msg=resolved"},
		{"cached=0", "cached=3"},
		{"requests=39", "requests=0"},
		{`msg="preparation egress"`, `msg="other egress"`},
		{`installed="systemd systemd-sysv dbus`, `installed="dbus`},
	} {
		log := strings.Replace(coldLog, tt.old, tt.new, 1)
		if got, err := coldPhases(log); err == nil {
			t.Errorf("coldPhases with %s for %s = %v, want an error", tt.new, tt.old, got)
		}
	}
}

func TestSummarizePhases(t *testing.T) {
	ms := time.Millisecond
	s := summarize([]sample{
		{Wall: 3 * ms, Phases: map[string]time.Duration{"boot": 1 * ms, "stop": 5 * ms}},
		{Wall: 2 * ms, Phases: map[string]time.Duration{"boot": 3 * ms}},
		{Wall: 1 * ms, Phases: map[string]time.Duration{"boot": 2 * ms, "stop": 1 * ms}},
	})
	// stop is missing from one sample: no median for it.
	if want := map[string]time.Duration{"boot": 2 * ms}; !reflect.DeepEqual(s.Phases, want) {
		t.Errorf("phases %v, want %v", s.Phases, want)
	}
}

func TestCompare(t *testing.T) {
	r := &report{Cases: []caseRes{
		{ID: "a", MedianSeconds: 0.3, PhaseMedianSeconds: map[string]float64{"boot": 0.2}},
		{ID: "b", MedianSeconds: 0.6, PhaseMedianSeconds: map[string]float64{"boot": 0.4}},
		{ID: "c", MedianSeconds: 0.5},
	}}
	r.compare([]comparison{
		{name: "wall", caseID: "a", over: "b"},
		{name: "boot", caseID: "a", over: "b", phase: "boot"},
		{name: "no phase", caseID: "a", over: "c", phase: "boot"},
		{name: "no case", caseID: "a", over: "x"},
	})
	if len(r.Comparisons) != 2 || r.Comparisons[0].Value != 0.5 || r.Comparisons[1].Value != 0.5 {
		t.Errorf("comparisons %+v, want wall 0.5 and boot 0.5 only", r.Comparisons)
	}
}

func TestFloorArgs(t *testing.T) {
	got := strings.Join(floorArgs("/r", "bench1", []string{"a.service", "b.timer"}), " ")
	want := "--register=no --keep-unit --boot --volatile=overlay --notify-ready=yes --console=read-only --kill-signal=SIGKILL " +
		"-D /r --machine=bench1 systemd.mask=a.service systemd.mask=b.timer"
	if got != want {
		t.Errorf("floorArgs:\n got %s\nwant %s", got, want)
	}
	for _, tg := range comparisons {
		ids := map[string]bool{}
		for _, c := range cases() {
			ids[c.id] = true
		}
		if !ids[tg.caseID] || !ids[tg.over] {
			t.Errorf("comparison %q names a case that does not exist", tg.name)
		}
	}
}

func TestPairedRatio(t *testing.T) {
	for _, tt := range []struct {
		a, b []float64
		want float64
	}{
		{[]float64{1, 2, 3}, []float64{1, 1, 1}, 2},
		{[]float64{1, 4}, []float64{2, 2}, 1.25},
		{[]float64{1, 2}, []float64{1}, 0}, // not paired
		{nil, nil, 0},
		{[]float64{1}, []float64{0}, 0},
	} {
		if got := pairedRatio(tt.a, tt.b); got != tt.want {
			t.Errorf("pairedRatio(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// A floor whose nspawn fails must report it, not hang.
func TestBootFloorFails(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Skip("needs systemd-nspawn")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r runner
	err := bootFloor(ctx, &r, t.TempDir(), t.TempDir(), nil) // an empty root filesystem
	if !errors.Is(err, nspawn.ErrExitedEarly) {
		t.Errorf("bootFloor of an empty directory: %v, want an error saying nspawn exited", err)
	}
	if ctx.Err() != nil {
		t.Error("bootFloor took until the deadline")
	}
}

func TestProbeReport(t *testing.T) {
	dir := t.TempDir()
	write := func(doc string) string {
		p := filepath.Join(dir, "r.json")
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := `{"probe":"pkgprobe","image":"debian-bookworm","result":"passed","seconds":0.5,"steps":[
{"kind":"image","name":"debian-bookworm","result":"passed","seconds":0.01},
{"kind":"boot","name":"m","result":"passed","seconds":0.25},
{"kind":"unit","name":"systemd-journald","result":"passed","seconds":0.1},
{"kind":"teardown","name":"m","result":"passed","seconds":0.05}]}`
	rep, err := readProbeReport(write(good))
	if err != nil {
		t.Fatal(err)
	}
	ms := time.Millisecond
	want := map[string]time.Duration{"image": 10 * ms, "boot": 250 * ms, "exec": 100 * ms, "stop": 50 * ms}
	got := probePhases(rep)
	for k, d := range got {
		got[k] = d.Round(ms)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("probePhases = %v, want %v", got, want)
	}
	for _, bad := range []string{
		strings.Replace(good, `"result":"passed","seconds":0.5`, `"result":"failed","seconds":0.5`, 1),
		strings.Replace(good, `"systemd-journald"`, `"webfs"`, 1),
		strings.Replace(good, `"kind":"unit"`, `"kind":"network"`, 1),
		`{"result":"passed","steps":[]}`,
		`not json`,
	} {
		if _, err := readProbeReport(write(bad)); err == nil {
			t.Errorf("readProbeReport accepts %s", bad)
		}
	}
	for id := range references {
		if !slices.ContainsFunc(cases(), func(c benchCase) bool { return c.id == id }) {
			t.Errorf("reference for %q, a case that does not exist", id)
		}
	}
}
