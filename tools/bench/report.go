package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/testregistry"
)

// report is what a benchmark run found; its JSON form is what -json writes.
type report struct {
	Date   time.Time `json:"date"`
	Host   host      `json:"host"`
	Rounds int       `json:"rounds"`
	// KeepOutputs is -keep-outputs: trees were removed at the end, not
	// after each run.
	KeepOutputs bool `json:"keepOutputs"`
	Warmup      int  `json:"warmup"`
	// ShortReps is how often short cases ran per round.
	ShortReps int       `json:"shortReps"`
	Method    string    `json:"method"`
	Image     imageInfo `json:"image"`
	Cases     []caseRes `json:"cases"`
	Targets   []tgtRes  `json:"targets"`
	// Comparisons are ratios reported without a limit (what masking
	// units saves).
	Comparisons []cmpRes `json:"comparisons,omitempty"`
	// MaskedUnits are the units masked in the masked run cases.
	MaskedUnits []string `json:"maskedUnits,omitempty"`
}

type host struct {
	CPUs       int    `json:"cpus"`
	Kernel     string `json:"kernel"`
	Arch       string `json:"arch"`
	Go         string `json:"go"`
	Machine    string `json:"hostname"`
	Load       string `json:"loadavg"` // /proc/loadavg when the rounds started
	OutputDir  string `json:"outputDir"`
	Filesystem fsInfo `json:"filesystem"`
}

type imageInfo struct {
	Ref         string `json:"ref"`
	Index       string `json:"index"`
	Digest      string `json:"digest"`
	Layer       string `json:"layer"`
	LayerBytes  int64  `json:"layerBytes"`
	TarBytes    int64  `json:"tarBytes"`
	LayerSource string `json:"layerSource"`
}

type caseRes struct {
	ID               string    `json:"id"`
	Group            string    `json:"group"`
	Name             string    `json:"name"`
	Command          string    `json:"command"`
	WallSeconds      []float64 `json:"wallSeconds"`
	CPUSeconds       []float64 `json:"cpuSeconds"`
	MaxRSSBytes      []int64   `json:"maxRSSBytes"`
	MedianSeconds    float64   `json:"medianSeconds"`
	MinSeconds       float64   `json:"minSeconds"`
	MaxSeconds       float64   `json:"maxSeconds"`
	CPUMedianSeconds float64   `json:"cpuMedianSeconds"`
	PeakRSSBytes     int64     `json:"peakRSSBytes"`
	// PhaseSeconds splits the wall time of cases that can tell (see
	// phaseNames), one value per sample; PhaseMedianSeconds are their
	// medians.
	PhaseSeconds       map[string][]float64 `json:"phaseSeconds,omitempty"`
	PhaseMedianSeconds map[string]float64   `json:"phaseMedianSeconds,omitempty"`
	// Reference is what another tool reported for the same work on
	// another machine: for information, not a target.
	Reference *reference `json:"reference,omitempty"`

	sum summary
}

type cmpRes struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"` // ratio
	// Seconds and OverSeconds are the medians compared.
	Seconds     float64 `json:"seconds"`
	OverSeconds float64 `json:"overSeconds"`
}

type tgtRes struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit"` // "ratio" or "seconds" (value ≤ limit), or "bytes" (value < limit)
	Pass  bool    `json:"pass"`
	// Paired is, for ratios, the median of the ratios of the runs that
	// ran next to each other (sample i of both cases): less swayed by load
	// that comes and goes than the ratio of the medians, which decides.
	Paired float64 `json:"paired,omitempty"`
}

const method = "cases run interleaved, once per round (short cases shortReps times, among themselves), after unmeasured warm-up rounds; " +
	"output directories are new and empty for every run and removed (then sync) untimed, after each run or, with keepOutputs, at the end; " +
	"caches are not dropped, so the page cache is warm for every case alike; " +
	"CPU is user+system of the case's processes and their children; peak RSS is the largest single process"

func newReport(o options, work string, img *testregistry.DebianImage) *report {
	r := &report{
		Date:        time.Now().UTC().Truncate(time.Second),
		Rounds:      o.rounds,
		Warmup:      o.warmup,
		ShortReps:   o.shortReps,
		KeepOutputs: o.keepOutputs,
		Method:      method,
		Host: host{CPUs: runtime.NumCPU(), Arch: runtime.GOARCH, Go: runtime.Version(),
			OutputDir: work, Filesystem: describeFS(work)},
		Image: imageInfo{
			Ref:         img.Ref,
			Index:       img.Index.String(),
			Digest:      img.Digest.String(),
			Layer:       img.Layer.Info.Digest.String(),
			LayerBytes:  img.Layer.Info.Size,
			TarBytes:    img.Layer.Info.UncompressedSize,
			LayerSource: fmt.Sprintf("mmdebstrap --variant=minbase %s (%s)", img.Layer.Info.Recipe.Suite, img.Layer.Info.Recipe.Mmdebstrap),
		},
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		r.Host.Kernel = unix.ByteSliceToString(u.Release[:])
		r.Host.Machine = unix.ByteSliceToString(u.Nodename[:])
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.Host.Load = strings.Join(strings.Fields(string(data))[:3], " ")
	}
	return r
}

func (r *report) addCase(c benchCase, samples []sample) {
	s := summarize(samples)
	res := caseRes{
		ID: c.id, Group: c.group, Name: c.name, Command: c.cmd,
		MedianSeconds: s.Median.Seconds(), MinSeconds: s.Min.Seconds(), MaxSeconds: s.Max.Seconds(),
		CPUMedianSeconds: s.CPUMedian.Seconds(), PeakRSSBytes: s.PeakRSS,
		sum: s,
	}
	if ref, ok := references[c.id]; ok {
		res.Reference = &ref
	}
	for _, x := range samples {
		res.WallSeconds = append(res.WallSeconds, x.Wall.Seconds())
		res.CPUSeconds = append(res.CPUSeconds, x.CPU.Seconds())
		res.MaxRSSBytes = append(res.MaxRSSBytes, x.MaxRSS)
	}
	for name, d := range s.Phases {
		if res.PhaseMedianSeconds == nil {
			res.PhaseMedianSeconds, res.PhaseSeconds = map[string]float64{}, map[string][]float64{}
		}
		res.PhaseMedianSeconds[name] = d.Seconds()
		for _, x := range samples {
			res.PhaseSeconds[name] = append(res.PhaseSeconds[name], x.Phases[name].Seconds())
		}
	}
	r.Cases = append(r.Cases, res)
}

// compare evaluates the comparisons whose cases (and phases) are there.
func (r *report) compare(cs []comparison) {
	for _, cmp := range cs {
		a, b := r.find(cmp.caseID), r.find(cmp.over)
		if a == nil || b == nil {
			continue
		}
		va, vb := a.MedianSeconds, b.MedianSeconds
		if cmp.phase != "" {
			var ok1, ok2 bool
			va, ok1 = a.PhaseMedianSeconds[cmp.phase]
			vb, ok2 = b.PhaseMedianSeconds[cmp.phase]
			if !ok1 || !ok2 {
				continue
			}
		}
		if vb == 0 {
			continue
		}
		r.Comparisons = append(r.Comparisons, cmpRes{Name: cmp.name, Value: va / vb, Seconds: va, OverSeconds: vb})
	}
}

func (r *report) find(id string) *caseRes {
	for i := range r.Cases {
		if r.Cases[i].ID == id {
			return &r.Cases[i]
		}
	}
	return nil
}

// checkTargets evaluates the targets whose cases ran.
func (r *report) checkTargets(ts []target) {
	for _, t := range ts {
		c := r.find(t.caseID)
		if c == nil {
			continue
		}
		if t.maxRSS > 0 {
			r.Targets = append(r.Targets, tgtRes{Name: t.name, Value: float64(c.PeakRSSBytes), Limit: float64(t.maxRSS),
				Unit: "bytes", Pass: c.PeakRSSBytes < t.maxRSS})
			continue
		}
		if t.maxSeconds > 0 {
			r.Targets = append(r.Targets, tgtRes{Name: t.name, Value: c.MedianSeconds, Limit: t.maxSeconds,
				Unit: "seconds", Pass: c.MedianSeconds <= t.maxSeconds})
			continue
		}
		over := r.find(t.over)
		if over == nil || over.MedianSeconds == 0 {
			continue
		}
		if t.phase != "" {
			a, b := c.PhaseMedianSeconds[t.phase], over.PhaseMedianSeconds[t.phase]
			if b == 0 {
				continue
			}
			r.Targets = append(r.Targets, tgtRes{Name: t.name, Value: a / b, Limit: t.maxRatio, Unit: "ratio", Pass: a/b <= t.maxRatio,
				Paired: pairedRatio(c.PhaseSeconds[t.phase], over.PhaseSeconds[t.phase])})
			continue
		}
		v := c.MedianSeconds / over.MedianSeconds
		r.Targets = append(r.Targets, tgtRes{Name: t.name, Value: v, Limit: t.maxRatio, Unit: "ratio", Pass: v <= t.maxRatio,
			Paired: pairedRatio(c.WallSeconds, over.WallSeconds)})
	}
}

// pairedRatio returns the median of a[i]/b[i], or 0 unless a and b have as
// many samples.
func pairedRatio(a, b []float64) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	rs := make([]float64, len(a))
	for i := range a {
		if b[i] <= 0 {
			return 0
		}
		rs[i] = a[i] / b[i]
	}
	slices.Sort(rs)
	n := len(rs)
	if n%2 == 1 {
		return rs[n/2]
	}
	return (rs[n/2-1] + rs[n/2]) / 2
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	refs := slices.ContainsFunc(r.Cases, func(c caseRes) bool { return c.Reference != nil })
	fmt.Fprint(tw, "case\twall median\t")
	if refs {
		fmt.Fprint(tw, "reference\t")
	}
	fmt.Fprintln(tw, "min\tmax\tCPU median\tpeak RSS\t")
	for _, c := range r.Cases {
		fmt.Fprintf(tw, "%s\t%s\t", c.Name, seconds(c.sum.Median))
		if refs {
			if c.Reference != nil {
				fmt.Fprintf(tw, "(%.3fs)\t", c.Reference.Seconds)
			} else {
				fmt.Fprint(tw, "\t")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", seconds(c.sum.Min), seconds(c.sum.Max), seconds(c.sum.CPUMedian), humanize.Bytes(c.PeakRSSBytes))
	}
	tw.Flush()
	for _, c := range r.Cases {
		if c.Reference != nil {
			fmt.Fprintf(w, "reference for %s: %.3fs, %s; for information only, not a target.\n", c.Name, c.Reference.Seconds, c.Reference.Source)
		}
	}
	r.printPhases(w)
	if len(r.Comparisons) > 0 {
		fmt.Fprintf(w, "\nMasking %d units (racker's --fast-boot; no limit, for information):\n", len(r.MaskedUnits))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, c := range r.Comparisons {
			fmt.Fprintf(tw, "  %s\t%.2fs / %.2fs\t= %.2f\t\n", c.Name, c.Seconds, c.OverSeconds, c.Value)
		}
		tw.Flush()
	}
	if len(r.Targets) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tvalue\tlimit\t\tpaired\t")
	for _, t := range r.Targets {
		verdict := "MISS"
		if t.Pass {
			verdict = "PASS"
		}
		switch t.Unit {
		case "bytes":
			fmt.Fprintf(tw, "%s\t%s\t< %s\t%s\t\t\n", t.Name, humanize.Bytes(int64(t.Value)), humanize.Bytes(int64(t.Limit)), verdict)
		case "seconds":
			fmt.Fprintf(tw, "%s\t%.3fs\t≤ %.2fs\t%s\t\t\n", t.Name, t.Value, t.Limit, verdict)
		default:
			fmt.Fprintf(tw, "%s\t%.2f\t≤ %.2f\t%s\t%.2f\t\n", t.Name, t.Value, t.Limit, verdict, t.Paired)
		}
	}
	tw.Flush()
	var miss []string
	for _, t := range r.Targets {
		if !t.Pass {
			miss = append(miss, t.Name)
		}
	}
	fmt.Fprintln(w, "value: ratio of the medians (or a median), which decides; paired: median of the ratios of runs made side by side.")
	if p, f := r.find("postroj-pkgprobe"), r.find("probe-floor"); p != nil && f != nil && f.MedianSeconds > 0 {
		fmt.Fprintf(w, "probe group: postroj pkgprobe %.3fs median, floor %.3fs median, ratio %.2f (paired %.2f)\n",
			p.MedianSeconds, f.MedianSeconds, p.MedianSeconds/f.MedianSeconds, pairedRatio(p.WallSeconds, f.WallSeconds))
	}
	if len(miss) > 0 {
		fmt.Fprintf(w, "\n%d of %d targets missed: %s\n", len(miss), len(r.Targets), strings.Join(miss, "; "))
	}
}

// printPhases prints the phase medians of the cases that have them.
func (r *report) printPhases(w io.Writer) {
	var cs []*caseRes
	for i := range r.Cases {
		if len(r.Cases[i].sum.Phases) > 0 {
			cs = append(cs, &r.Cases[i])
		}
	}
	if len(cs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nWhere the time goes (medians of each phase; they need not add up to the wall median):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "case\t")
	for _, p := range phaseNames {
		fmt.Fprintf(tw, "%s\t", p)
	}
	fmt.Fprintln(tw, "wall\t")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t", c.Name)
		for _, p := range phaseNames {
			if d, ok := c.sum.Phases[p]; ok {
				fmt.Fprintf(tw, "%.3fs\t", d.Seconds())
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintf(tw, "%.3fs\t\n", c.sum.Median.Seconds())
	}
	tw.Flush()
	fmt.Fprintln(w, "boot: until READY=1 (racker: and its D-Bus connection); exec: nsenter true; stop: poweroff until nspawn exited;\n"+
		"other: racker's process start, store lookup, true run over D-Bus, exit (wall - boot - stop).\n"+
		"postroj pkgprobe, from its report's steps: image: finding the prepared image; boot; exec: enabling, starting and\n"+
		"watching the unit; stop: teardown; other: the rest of the wall time (process start, reports, exit).\n"+
		"The cold probe, from its --verbose log, instead of image: pull; copy: the image copied for preparing; prepare:\n"+
		"the rest of the preparation (apt-get from Debian's mirror).")
}

func (r *report) write(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
