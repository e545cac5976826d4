package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/testregistry"
)

// report is what a benchmark run found; its JSON form is what -json writes.
type report struct {
	Date   time.Time `json:"date"`
	Host   host      `json:"host"`
	Rounds int       `json:"rounds"`
	// KeepOutputs is -keep-outputs: trees were removed at the end, not
	// after each run.
	KeepOutputs bool      `json:"keepOutputs"`
	Warmup      int       `json:"warmup"`
	Method      string    `json:"method"`
	Image       imageInfo `json:"image"`
	Cases       []caseRes `json:"cases"`
	Targets     []tgtRes  `json:"targets"`
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

	sum summary
}

type tgtRes struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit"` // "ratio" (value ≤ limit) or "bytes" (value < limit)
	Pass  bool    `json:"pass"`
}

const method = "cases run interleaved, once per round, after unmeasured warm-up rounds; " +
	"output directories are new and empty for every run and removed (then sync) untimed, after each run or, with keepOutputs, at the end; " +
	"caches are not dropped, so the page cache is warm for every case alike; " +
	"CPU is user+system of the case's processes and their children; peak RSS is the largest single process"

func newReport(o options, work string, img *testregistry.DebianImage) *report {
	r := &report{
		Date:        time.Now().UTC().Truncate(time.Second),
		Rounds:      o.rounds,
		Warmup:      o.warmup,
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
		ID: c.id, Name: c.name, Command: c.cmd,
		MedianSeconds: s.Median.Seconds(), MinSeconds: s.Min.Seconds(), MaxSeconds: s.Max.Seconds(),
		CPUMedianSeconds: s.CPUMedian.Seconds(), PeakRSSBytes: s.PeakRSS,
		sum: s,
	}
	for _, x := range samples {
		res.WallSeconds = append(res.WallSeconds, x.Wall.Seconds())
		res.CPUSeconds = append(res.CPUSeconds, x.CPU.Seconds())
		res.MaxRSSBytes = append(res.MaxRSSBytes, x.MaxRSS)
	}
	r.Cases = append(r.Cases, res)
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
		over := r.find(t.over)
		if over == nil || over.MedianSeconds == 0 {
			continue
		}
		v := c.MedianSeconds / over.MedianSeconds
		r.Targets = append(r.Targets, tgtRes{Name: t.name, Value: v, Limit: t.maxRatio, Unit: "ratio", Pass: v <= t.maxRatio})
	}
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "case\twall median\tmin\tmax\tCPU median\tpeak RSS\t")
	for _, c := range r.Cases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", c.Name, seconds(c.sum.Median), seconds(c.sum.Min), seconds(c.sum.Max),
			seconds(c.sum.CPUMedian), mib(c.PeakRSSBytes))
	}
	tw.Flush()
	if len(r.Targets) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tvalue\tlimit\t")
	for _, t := range r.Targets {
		verdict := "MISS"
		if t.Pass {
			verdict = "PASS"
		}
		if t.Unit == "bytes" {
			fmt.Fprintf(tw, "%s\t%s\t< %s\t%s\n", t.Name, mib(int64(t.Value)), mib(int64(t.Limit)), verdict)
		} else {
			fmt.Fprintf(tw, "%s\t%.2f\t≤ %.2f\t%s\n", t.Name, t.Value, t.Limit, verdict)
		}
	}
	tw.Flush()
	var miss []string
	for _, t := range r.Targets {
		if !t.Pass {
			miss = append(miss, t.Name)
		}
	}
	if len(miss) > 0 {
		fmt.Fprintf(w, "\n%d of %d targets missed: %s\n", len(miss), len(r.Targets), strings.Join(miss, "; "))
	}
}

func (r *report) write(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
