package probe

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/humanize"
)

// Result is the outcome of a step or a whole probe.
type Result string

const (
	Passed  Result = "passed"
	Failed  Result = "failed"  // the package or service under test is at fault
	Errored Result = "error"   // the infrastructure failed (download, image, boot)
	Skipped Result = "skipped" // not run: an earlier step did not pass, or nothing to run
)

// Step kinds, in the order a probe runs them.
const (
	KindDownload = "download"
	KindImage    = "image"
	KindBoot     = "boot"
	KindInstall  = "install"
	KindCommand  = "command"
	KindUnit     = "unit"
	KindNetwork  = "network"
	KindTeardown = "teardown"
)

// Step is one step of a probe and what came of it.
type Step struct {
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Result  Result    `json:"result"`
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	// Summary is one line: "cached: not modified", "active (running)",
	// "HTTP/1.1 404 Not Found", ...
	Summary string `json:"summary,omitempty"`
	// Error says why a step that did not pass failed.
	Error string `json:"error,omitempty"`
	// Output is the tail of a command's output (install, command).
	Output string `json:"output,omitempty"`
	// IndexCache says what the index cache did in an install step: apt's
	// lists of an earlier probe of the image put back, refused (and why),
	// kept for the next one, or unchanged.
	IndexCache string `json:"indexCache,omitempty"`
	// Status and Journal are `systemctl status` and the unit's last
	// journal lines, for units that did not become active.
	Status  string `json:"status,omitempty"`
	Journal string `json:"journal,omitempty"`
	// Package, Unit and Network carry the details of their kinds.
	Package *Package   `json:"package,omitempty"`
	Unit    *UnitState `json:"unit,omitempty"`
	States  []string   `json:"states,omitempty"` // the unit states seen while waiting
	Network *NetResult `json:"network,omitempty"`
}

// Report is the record of one probe on one image.
type Report struct {
	Probe     string `json:"probe"` // "pkgprobe", or a selftest's probe name
	Image     string `json:"image"`
	Reference string `json:"reference,omitempty"` // the image reference booted
	Machine   string `json:"machine,omitempty"`
	Manager   string `json:"packageManager,omitempty"`
	// Network is the container's network: private, host or none.
	Network string `json:"network,omitempty"`
	// Egress is what the proxy of a private network let through, served
	// from the package cache, and refused.
	Egress  *Egress   `json:"egress,omitempty"`
	Result  Result    `json:"result"`
	Error   string    `json:"error,omitempty"` // for Errored and Failed: the first cause
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Steps   []*Step   `json:"steps"`
}

// Egress is the record of a private container's way out.
type Egress struct {
	// Allowed are the allowlist's rules (the image's repository hosts,
	// the hosts of package URLs, --allow-host).
	Allowed []string `json:"allowed"`
	// Total counts requests; Cached those served from the package cache
	// without asking upstream, Revalidated those upstream confirmed with
	// 304 Not Modified, Fetched those downloaded and stored.
	Total       int `json:"total"`
	Cached      int `json:"cached"`
	Revalidated int `json:"revalidated"`
	Fetched     int `json:"fetched"`
	egress.Record
}

// newEgress summarizes a proxy's record.
func newEgress(allowed []egress.Rule, rec egress.Record) *Egress {
	e := &Egress{Record: rec, Total: len(rec.Requests) + rec.Dropped,
		Cached: rec.Hits(egress.CacheHit), Revalidated: rec.Hits(egress.CacheRevalidated), Fetched: rec.Hits(egress.CacheMiss)}
	for _, r := range allowed {
		e.Allowed = append(e.Allowed, r.String())
	}
	return e
}

// summary is the one-line account of the proxy's work.
func (e *Egress) summary() string {
	s := fmt.Sprintf("%d requests: %d from the package cache, %d revalidated, %d fetched", e.Total, e.Cached, e.Revalidated, e.Fetched)
	if n := len(e.Refused); n > 0 {
		s += fmt.Sprintf("; %d hosts refused", n)
	}
	if n := len(e.Failures); n > 0 {
		s += fmt.Sprintf("; %d hosts failed", n)
	}
	return s
}

// problems lists refused and failed hosts, one line each.
func (e *Egress) problems() []string {
	var out []string
	for _, r := range e.Refused {
		host, _, _ := strings.Cut(r.Host, ":")
		if strings.HasPrefix(r.Host, "[") {
			host, _, _ = strings.Cut(strings.TrimPrefix(r.Host, "["), "]")
		}
		out = append(out, fmt.Sprintf("refused %s (%d requests, first %s): allow it with --allow-host=%s", r.Host, r.Requests, r.Example, host))
	}
	for _, f := range e.Failures {
		out = append(out, fmt.Sprintf("failed %s (%d requests): %s", f.Host, f.Requests, f.Error))
	}
	return out
}

// begin appends a step that starts now.
func (r *Report) begin(kind, name string) *Step {
	s := &Step{Kind: kind, Name: name, Started: time.Now()}
	r.Steps = append(r.Steps, s)
	return s
}

// end records the outcome of s.
func (s *Step) end(res Result, summary string) {
	s.Result = res
	if summary != "" {
		s.Summary = summary
	}
	s.Seconds = roundSeconds(time.Since(s.Started))
}

func (s *Step) endErr(res Result, err error) {
	s.Error = humanize.OneLine(err.Error())
	s.end(res, "")
}

// skip records a step that was not run.
func (r *Report) skip(kind, name, why string) {
	r.Steps = append(r.Steps, &Step{Kind: kind, Name: name, Result: Skipped, Started: time.Now(), Summary: why})
}

func roundSeconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

// finish sets the overall result from the steps: Errored if any step
// errored, else Failed if any failed, else Passed.
func (r *Report) finish() {
	r.Seconds = roundSeconds(time.Since(r.Started))
	r.Result = Passed
	for _, s := range r.Steps {
		switch {
		case s.Result == Errored:
			r.Result = Errored
		case s.Result == Failed && r.Result != Errored:
			r.Result = Failed
		}
	}
	if r.Error == "" {
		for _, s := range r.Steps {
			if s.Result == r.Result && s.Error != "" {
				r.Error = fmt.Sprintf("%s %s: %s", s.Kind, s.Name, s.Error)
				if strings.Contains(s.Error, s.Name) {
					r.Error = s.Error // "downloading URL: ..." names it already
				}
				break
			}
		}
	}
}

// WriteText writes the human report: one line per step, the details of
// steps that did not pass indented below them, and a verdict.
func (r *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "%s %s", r.Probe, r.Image)
	if r.Reference != "" && r.Reference != r.Image {
		fmt.Fprintf(w, " (%s)", r.Reference)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range r.Steps {
		what := s.Summary
		if s.Error != "" {
			if what != "" {
				what += ": "
			}
			what += s.Error
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.Kind, s.Name, strings.ToUpper(string(s.Result)), seconds(s.Seconds), what)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Steps {
		if s.Network != nil && s.Network.Response != "" {
			fmt.Fprintf(w, "\n  %s %s: %s\n", s.Kind, s.Name, s.Network.Response)
			writeIndented(w, strings.Join(s.Network.Headers, "\n"))
		}
		if s.Result != Failed && s.Result != Errored {
			continue
		}
		if s.Output != "" {
			fmt.Fprintf(w, "\n  %s %s: last lines of output\n", s.Kind, s.Name)
			writeIndented(w, s.Output)
		}
		if s.Status != "" {
			fmt.Fprintf(w, "\n  systemctl status %s\n", s.Name)
			writeIndented(w, s.Status)
		}
		if s.Journal != "" {
			fmt.Fprintf(w, "\n  journalctl -u %s\n", s.Name)
			writeIndented(w, s.Journal)
		}
	}
	if e := r.Egress; e != nil {
		fmt.Fprintf(w, "\n  egress (network %s): %s\n", r.Network, e.summary())
		for _, l := range e.problems() {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	for _, s := range r.Steps {
		if s.Kind == KindInstall && s.IndexCache != "" {
			fmt.Fprintf(w, "  apt lists (index cache): %s\n", s.IndexCache)
		}
	}
	verdict := map[Result]string{Passed: "PASSED", Failed: "FAILED", Errored: "ERROR"}[r.Result]
	if r.Error != "" && r.Result != Passed {
		verdict += ": " + r.Error
	}
	_, err := fmt.Fprintf(w, "%s in %s\n", verdict, seconds(r.Seconds))
	return err
}

func writeIndented(w io.Writer, text string) {
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(w, "    | %s\n", l)
	}
}

func seconds(s float64) string { return fmt.Sprintf("%.1fs", s) }

// WriteJSON writes v (a *Report or *SelftestReport) as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// JUnit XML, as Jenkins, GitLab and GitHub test reporters read it.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     float64      `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string          `xml:"name,attr"`
	Tests     int             `xml:"tests,attr"`
	Failures  int             `xml:"failures,attr"`
	Errors    int             `xml:"errors,attr"`
	Skipped   int             `xml:"skipped,attr"`
	Time      float64         `xml:"time,attr"`
	Timestamp string          `xml:"timestamp,attr"`
	Props     []junitProperty `xml:"properties>property,omitempty"`
	Cases     []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      float64       `xml:"time,attr"`
	Failure   *junitProblem `xml:"failure,omitempty"`
	Error     *junitProblem `xml:"error,omitempty"`
	Skipped   *junitSkip    `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitProblem struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

type junitSkip struct {
	Message string `xml:"message,attr"`
}

// WriteJUnit writes reports as JUnit XML: a test suite per report (probe
// on an image), a test case per step. Failed steps are <failure>, errored
// ones <error>, skipped ones <skipped>.
func WriteJUnit(w io.Writer, name string, reports []*Report) error {
	out := junitSuites{Name: name}
	for _, r := range reports {
		suite := junitSuite{
			Name:      r.Probe + " " + r.Image,
			Time:      r.Seconds,
			Timestamp: r.Started.UTC().Format("2006-01-02T15:04:05"),
			Props:     []junitProperty{{"image", r.Image}, {"result", string(r.Result)}},
		}
		if r.Reference != "" {
			suite.Props = append(suite.Props, junitProperty{"reference", r.Reference})
		}
		if r.Network != "" {
			suite.Props = append(suite.Props, junitProperty{"network", r.Network})
		}
		if r.Egress != nil {
			for _, f := range r.Egress.Refused {
				suite.Props = append(suite.Props, junitProperty{"egress.refused", f.Host})
			}
			for _, f := range r.Egress.Failures {
				suite.Props = append(suite.Props, junitProperty{"egress.failed", f.Host + ": " + f.Error})
			}
		}
		for _, s := range r.Steps {
			c := junitCase{Name: s.Kind + " " + s.Name, Classname: "postroj." + r.Probe + "." + r.Image, Time: s.Seconds}
			detail := stepDetail(s)
			switch s.Result {
			case Failed:
				c.Failure = &junitProblem{Message: firstNonEmpty(s.Error, s.Summary), Type: s.Kind, Text: detail}
				suite.Failures++
			case Errored:
				c.Error = &junitProblem{Message: firstNonEmpty(s.Error, s.Summary), Type: s.Kind, Text: detail}
				suite.Errors++
			case Skipped:
				c.Skipped = &junitSkip{Message: s.Summary}
				suite.Skipped++
			default:
				c.SystemOut = firstNonEmpty(detail, s.Summary)
			}
			suite.Tests++
			suite.Cases = append(suite.Cases, c)
		}
		if e := r.Egress; e != nil && (e.Total > 0 || len(e.Refused) > 0 || len(e.Failures) > 0) {
			// Refusals do not fail a probe (see Prober.Run), but CI
			// readers see them next to the checks.
			out := e.summary()
			for _, l := range e.problems() {
				out += "\n" + l
			}
			suite.Tests++
			suite.Cases = append(suite.Cases, junitCase{Name: "egress", Classname: "postroj." + r.Probe + "." + r.Image, SystemOut: out})
		}
		out.Tests += suite.Tests
		out.Failures += suite.Failures
		out.Errors += suite.Errors
		out.Skipped += suite.Skipped
		out.Time += suite.Time
		out.Suites = append(out.Suites, suite)
	}
	out.Time = float64(int64(out.Time*1000)) / 1000
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// stepDetail is what a JUnit test case shows beyond its message.
func stepDetail(s *Step) string {
	var b strings.Builder
	if s.Network != nil && s.Network.Response != "" {
		b.WriteString(s.Network.Response + "\n" + strings.Join(s.Network.Headers, "\n") + "\n")
	}
	if s.Output != "" {
		b.WriteString(s.Output)
	}
	if s.Status != "" {
		b.WriteString("systemctl status " + s.Name + ":\n" + s.Status)
	}
	if s.Journal != "" {
		b.WriteString("journalctl -u " + s.Name + ":\n" + s.Journal)
	}
	return b.String()
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
