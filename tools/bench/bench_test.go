package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	if s != want {
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
		if !ids[tg.caseID] || (tg.maxRSS == 0 && !ids[tg.over]) {
			t.Errorf("target %q names a case that does not exist", tg.name)
		}
		if (tg.maxRSS > 0) == (tg.maxRatio > 0) {
			t.Errorf("target %q must set exactly one of maxRatio and maxRSS", tg.name)
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
