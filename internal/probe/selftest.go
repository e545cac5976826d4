package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/racker-postroj/racker/internal/humanize"
)

// Selftest suites: what `postroj selftest` runs on every image.
const (
	SuiteHostnamectl = "hostnamectl"
	SuitePkgprobe    = "pkgprobe"
)

// Suites lists the selftest suites.
var Suites = []string{SuiteHostnamectl, SuitePkgprobe}

// SelftestImage is an image a selftest runs its probes on.
type SelftestImage struct {
	// Name is the catalogue name.
	Name string
	// Manager is the package manager the catalogue gives for the image
	// (apt-get, dnf, yum, microdnf, zypper, pacman): it decides which
	// package and unit the Apache probe uses.
	Manager string
	// Acquire returns the bootable image (required).
	Acquire func(ctx context.Context) (Image, error)
	// SkipUnreachable makes an image whose source cannot be reached
	// skipped, not errored: for images chosen by default, not by name.
	SkipUnreachable bool
}

// apache is the Apache web server's package and unit per package manager.
var apache = map[string][2]string{
	"apt-get":  {"apache2", "apache2"},
	"dnf":      {"httpd", "httpd"},
	"yum":      {"httpd", "httpd"},
	"microdnf": {"httpd", "httpd"},
	"zypper":   {"apache2", "apache2"},
	"pacman":   {"apache", "httpd"},
}

// ApacheAddress is what the Apache probe checks: the distribution's default
// configuration listens on port 80.
const ApacheAddress = "http://localhost:80"

// SuiteSpecs returns the probes a suite runs on img (Target.Acquire is
// left to the caller).
func SuiteSpecs(suite string, img SelftestImage) ([]Spec, error) {
	target := Target{Name: img.Name}
	switch suite {
	case SuiteHostnamectl:
		return []Spec{{Probe: "hostnamectl", Target: target, Commands: [][]string{{"hostnamectl"}}}}, nil
	case SuitePkgprobe:
		ap, ok := apache[img.Manager]
		if !ok {
			return nil, fmt.Errorf("%s: no Apache probe for package manager %q", img.Name, img.Manager)
		}
		addr, err := ParseAddress(ApacheAddress)
		if err != nil {
			return nil, err
		}
		return []Spec{
			{Probe: "journald", Target: target, Units: []string{"systemd-journald"}},
			{Probe: "apache", Target: target, Install: []string{ap[0]}, Units: []string{ap[1]}, Network: []Address{addr}},
		}, nil
	}
	return nil, fmt.Errorf("unexpected selftest %q (valid: %s)", suite, strings.Join(Suites, ", "))
}

// Selftest runs a suite's probes on several images.
type Selftest struct {
	Prober *Prober
	// Jobs bounds how many images are acquired and probes run at once (at
	// least 1). When the containers share the host's network (Prober's
	// Network is host), probes that check the same port never run at the
	// same time, whatever Jobs says; with networks of their own they do.
	Jobs int
	// Progress, when set, receives a line as each probe ends.
	Progress io.Writer

	// specs returns a suite's probes for an image; nil means SuiteSpecs.
	// Tests replace it.
	specs func(suite string, img SelftestImage) ([]Spec, error)
}

// ImageResult is how acquiring one image of a selftest went.
type ImageResult struct {
	Name      string  `json:"name"`
	Reference string  `json:"reference,omitempty"`
	Result    Result  `json:"result"` // passed (acquired), error, skipped
	Error     string  `json:"error,omitempty"`
	Seconds   float64 `json:"seconds"`
}

// SelftestReport is the record of a selftest.
type SelftestReport struct {
	Suite   string        `json:"suite"`
	Result  Result        `json:"result"`
	Started time.Time     `json:"started"`
	Seconds float64       `json:"seconds"`
	Images  []ImageResult `json:"images"`
	Probes  []*Report     `json:"probes"`
}

// Run runs suite on images and returns the report: Failed if a probe
// failed, else Errored if something could not be tested, else Passed
// (skipped images do not count, unless every image was skipped, which is
// Errored). The error is for a bad suite or an interruption.
func (st *Selftest) Run(ctx context.Context, suite string, images []SelftestImage) (*SelftestReport, error) {
	rep := &SelftestReport{Suite: suite, Started: time.Now(), Images: make([]ImageResult, len(images))}
	specs := make([][]Spec, len(images))
	suiteSpecs := st.specs
	if suiteSpecs == nil {
		suiteSpecs = SuiteSpecs
	}
	for i, img := range images {
		s, err := suiteSpecs(suite, img)
		if err != nil {
			return nil, err
		}
		specs[i] = s
	}
	jobs := make(chan struct{}, max(st.Jobs, 1))
	ports := &portLocks{held: map[string]*sync.Mutex{}}
	reports := make([][]*Report, len(images))
	var progress sync.Mutex
	var wg sync.WaitGroup
	for i, img := range images {
		reports[i] = make([]*Report, len(specs[i]))
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Acquire first, in a job slot; then the image's probes queue up.
			t0 := time.Now()
			var acquired Image
			var aerr error
			select {
			case jobs <- struct{}{}:
				acquired, aerr = img.Acquire(ctx)
				<-jobs
			case <-ctx.Done():
				aerr = ctx.Err()
			}
			ir := ImageResult{Name: img.Name, Reference: acquired.Reference, Result: Passed, Seconds: roundSeconds(time.Since(t0))}
			if aerr != nil {
				ir.Result, ir.Error = Errored, humanize.OneLine(aerr.Error())
				if img.SkipUnreachable && Unreachable(aerr) {
					ir.Result = Skipped
				}
			}
			rep.Images[i] = ir
			var pwg sync.WaitGroup
			for j, spec := range specs[i] {
				if aerr != nil {
					reports[i][j] = notRun(spec, ir)
					continue
				}
				spec.Target.Acquire = func(context.Context) (Image, error) { return acquired, nil }
				pwg.Add(1)
				go func() {
					defer pwg.Done()
					if st.Prober.sharesHostNetwork() {
						unlock := ports.lock(spec.Network)
						defer unlock()
					}
					select {
					case jobs <- struct{}{}:
					case <-ctx.Done():
						reports[i][j] = notRun(spec, ImageResult{Result: Errored, Error: ctx.Err().Error()})
						return
					}
					r, _ := st.Prober.Run(ctx, spec) // the report says it all
					<-jobs
					reports[i][j] = r
					if st.Progress != nil {
						progress.Lock()
						fmt.Fprintf(st.Progress, "%s %s: %s (%s)\n", r.Image, r.Probe, r.Result, seconds(r.Seconds))
						progress.Unlock()
					}
				}()
			}
			pwg.Wait()
		}()
	}
	wg.Wait()
	for _, rs := range reports {
		rep.Probes = append(rep.Probes, rs...)
	}
	rep.Seconds = roundSeconds(time.Since(rep.Started))
	rep.Result = selftestResult(rep)
	return rep, ctx.Err()
}

func selftestResult(rep *SelftestReport) Result {
	var failed, errored, ran bool
	for _, r := range rep.Probes {
		switch r.Result {
		case Failed:
			failed, ran = true, true
		case Errored:
			errored, ran = true, true
		case Passed:
			ran = true
		}
	}
	switch {
	case failed:
		return Failed
	case errored || !ran:
		return Errored
	}
	return Passed
}

// notRun is the report of a probe whose image could not be acquired.
func notRun(spec Spec, ir ImageResult) *Report {
	r := &Report{Probe: spec.Probe, Image: spec.Target.Name, Result: ir.Result, Error: ir.Error, Started: time.Now()}
	why := ir.Error
	if ir.Result == Skipped {
		why = "skipped: " + why
	}
	r.Steps = []*Step{{Kind: KindImage, Name: spec.Target.Name, Result: ir.Result, Started: r.Started, Error: why}}
	return r
}

// portLocks serializes probes that check the same host ports.
type portLocks struct {
	mu   sync.Mutex
	held map[string]*sync.Mutex
}

// lock takes the locks of the loopback ports among addrs, in a fixed
// order, and returns the function that releases them.
func (p *portLocks) lock(addrs []Address) func() {
	var keys []string
	for _, a := range addrs {
		if a.Loopback() && !slices.Contains(keys, a.Port) {
			keys = append(keys, a.Port)
		}
	}
	sort.Strings(keys)
	var locks []*sync.Mutex
	for _, k := range keys {
		p.mu.Lock()
		m, ok := p.held[k]
		if !ok {
			m = &sync.Mutex{}
			p.held[k] = m
		}
		p.mu.Unlock()
		m.Lock()
		locks = append(locks, m)
	}
	return func() {
		for _, m := range locks {
			m.Unlock()
		}
	}
}

// Unreachable reports whether err is about a server that could not be
// reached at all (name resolution, connection refused or timed out), as
// opposed to one that answered with an error.
func Unreachable(err error) bool {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.As(err, &dnsErr):
		return true
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return true
	}
	// Messages that lost their error chain on the way.
	msg := err.Error()
	return strings.Contains(msg, "registry unreachable") || strings.Contains(msg, "no such host")
}

// WriteTable writes one row per probe: image, probe, result, time, and
// what went wrong.
func (rep *SelftestReport) WriteTable(w io.Writer) error {
	return writeTable(w, rep.Probes, rep.Result, rep.Seconds)
}

func writeTable(w io.Writer, probes []*Report, result Result, secs float64) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tPROBE\tRESULT\tTIME\tDETAIL")
	for _, r := range probes {
		detail := r.Error
		if r.Result == Passed {
			detail = passDetail(r)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Image, r.Probe, r.Result, seconds(r.Seconds), detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := map[Result]int{}
	for _, r := range probes {
		counts[r.Result]++
	}
	_, err := fmt.Fprintf(w, "%s: %d passed, %d failed, %d errors, %d skipped in %s\n", strings.ToUpper(string(result)),
		counts[Passed], counts[Failed], counts[Errored], counts[Skipped], seconds(secs))
	return err
}

// passDetail summarizes a passed probe: the unit state or answer of its
// last check, or the first line of its command's output.
func passDetail(r *Report) string {
	for i := len(r.Steps) - 1; i >= 0; i-- {
		s := r.Steps[i]
		switch s.Kind {
		case KindNetwork, KindUnit:
			return s.Name + ": " + s.Summary
		case KindCommand:
			// hostnamectl's most telling line, else the first one.
			first := ""
			for _, l := range strings.Split(s.Output, "\n") {
				l = strings.TrimSpace(l)
				if strings.HasPrefix(l, "Operating System:") {
					return l
				}
				if first == "" {
					first = l
				}
			}
			return first
		}
	}
	return ""
}

// Matrix runs one probe on several images, Jobs at a time: postroj
// pkgprobe with more than one --image.
type Matrix struct {
	Prober *Prober
	// Jobs bounds how many cells run at once (at least 1); see
	// Selftest.Jobs for probes on the host's network.
	Jobs int
	// Progress, when set, receives a line as each cell ends.
	Progress io.Writer
}

// MatrixReport is the record of a matrix: one report per image, in the
// order the images were given.
type MatrixReport struct {
	Probe   string    `json:"probe"`
	Result  Result    `json:"result"`
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Cells   []*Report `json:"cells"`
	// Errs holds each cell's error (nil if none), for exit codes.
	Errs []error `json:"-"`
}

// Run runs spec on every target (spec.Target is ignored). The report's
// Result is Failed if a cell failed, else Errored if one errored, else
// Passed. The error is ctx's when interrupted.
func (mx *Matrix) Run(ctx context.Context, spec Spec, targets []Target) (*MatrixReport, error) {
	rep := &MatrixReport{Probe: spec.Probe, Started: time.Now(), Cells: make([]*Report, len(targets)), Errs: make([]error, len(targets))}
	if rep.Probe == "" {
		rep.Probe = "pkgprobe"
	}
	jobs := make(chan struct{}, max(mx.Jobs, 1))
	ports := &portLocks{held: map[string]*sync.Mutex{}}
	var progress sync.Mutex
	var wg sync.WaitGroup
	for i, t := range targets {
		cell := spec
		cell.Target = t
		wg.Add(1)
		go func() {
			defer wg.Done()
			if mx.Prober.sharesHostNetwork() {
				unlock := ports.lock(cell.Network)
				defer unlock()
			}
			select {
			case jobs <- struct{}{}:
			case <-ctx.Done():
				rep.Cells[i] = notRun(cell, ImageResult{Result: Errored, Error: ctx.Err().Error()})
				rep.Errs[i] = ctx.Err()
				return
			}
			r, err := mx.Prober.Run(ctx, cell)
			<-jobs
			rep.Cells[i], rep.Errs[i] = r, err
			if mx.Progress != nil {
				progress.Lock()
				fmt.Fprintf(mx.Progress, "%s %s: %s (%s)\n", r.Image, r.Probe, r.Result, seconds(r.Seconds))
				progress.Unlock()
			}
		}()
	}
	wg.Wait()
	rep.Seconds = roundSeconds(time.Since(rep.Started))
	rep.Result = selftestResult(&SelftestReport{Probes: rep.Cells})
	return rep, ctx.Err()
}

// WriteTable writes one row per cell and a verdict line.
func (rep *MatrixReport) WriteTable(w io.Writer) error {
	return writeTable(w, rep.Cells, rep.Result, rep.Seconds)
}
