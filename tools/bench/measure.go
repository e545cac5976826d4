package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/racker-postroj/racker/internal/humanize"
)

// sample is one timed run of a case.
type sample struct {
	Wall   time.Duration
	CPU    time.Duration // user + system time of the commands run started, and their children
	MaxRSS int64         // bytes; the largest single process among them
	// Phases splits Wall for cases that can tell (see phaseNames); nil
	// for the others.
	Phases map[string]time.Duration
}

// runner runs a case's commands and adds up what they cost.
type runner struct {
	env    []string // the commands' environment; nil: the bench's own
	cpu    time.Duration
	maxRSS int64
	phases map[string]time.Duration
}

// phasesOf records phases of a run that took wall, and what they leave of
// it as "other".
func (r *runner) phasesOf(wall time.Duration, phases map[string]time.Duration) {
	other := wall
	for name, d := range phases {
		r.phase(name, d)
		other -= d
	}
	r.phase("other", other)
}

// phase records how long a part of the run took.
func (r *runner) phase(name string, d time.Duration) {
	if r.phases == nil {
		r.phases = map[string]time.Duration{}
	}
	r.phases[name] += d
}

// account adds what a finished command cost.
func (r *runner) account(ps *os.ProcessState) {
	if ps == nil {
		return
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		// wait4 reports the process and the descendants it waited for:
		// a shell pipeline's figures cover every command in it.
		r.cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		r.maxRSS = max(r.maxRSS, ru.Maxrss*1024) // Linux counts KiB
	}
}

// exec runs name with args and returns its stdout. The error carries the
// tail of its stderr. A command still running when ctx ends is killed.
func (r *runner) exec(ctx context.Context, name string, args ...string) (string, error) {
	stdout, _, err := r.exec2(ctx, name, args...)
	return stdout, err
}

// exec2 is exec that returns stderr as well.
func (r *runner) exec2(ctx context.Context, name string, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = r.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	r.account(cmd.ProcessState)
	if err != nil {
		return stdout.String(), stderr.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, humanize.Last(stderr.Bytes(), 10))
	}
	return stdout.String(), stderr.String(), nil
}

// summary condenses the samples of one case.
type summary struct {
	Median, Min, Max time.Duration // wall
	CPUMedian        time.Duration
	PeakRSS          int64 // the largest of all samples
	// Phases are the medians of the phases every sample reported.
	Phases map[string]time.Duration
}

func summarize(samples []sample) summary {
	if len(samples) == 0 {
		return summary{}
	}
	walls := make([]time.Duration, len(samples))
	cpus := make([]time.Duration, len(samples))
	var s summary
	for i, x := range samples {
		walls[i], cpus[i] = x.Wall, x.CPU
		s.PeakRSS = max(s.PeakRSS, x.MaxRSS)
	}
	s.Median, s.CPUMedian = median(walls), median(cpus)
	s.Min, s.Max = slices.Min(walls), slices.Max(walls)
	for name := range samples[0].Phases {
		var ds []time.Duration
		for _, x := range samples {
			if d, ok := x.Phases[name]; ok {
				ds = append(ds, d)
			}
		}
		if len(ds) == len(samples) {
			if s.Phases == nil {
				s.Phases = map[string]time.Duration{}
			}
			s.Phases[name] = median(ds)
		}
	}
	return s
}

// median returns the middle value of ds, or the mean of the two middle
// values when there is an even number of them. ds must not be empty.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
