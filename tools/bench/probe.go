package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/humanize"
)

// The probe group: a warm `postroj pkgprobe --check-unit=systemd-journald`
// against the bare boot-and-poweroff floor (nspawn-boot, masked) on the
// very tree postroj boots, which `postroj pull` prepared once in a setup
// step.

// probeImage is the catalogue entry the probe group boots; its source,
// docker.io/library/debian:bookworm-slim, is what the loopback registry
// serves (RACKER_REGISTRY_MIRRORS points docker.io at it).
const probeImage = "debian-bookworm"

// probeUnit is the unit the probe checks: one every Debian image has.
const probeUnit = "systemd-journald"

// probeArgs is the measured command line, after postroj.
func probeArgs(root, report string) []string {
	return []string{"--root", root, "pkgprobe", "--image=" + probeImage, "--check-unit=" + probeUnit, "--report=" + report}
}

// probeStore is the store the probe group's cases share.
type probeStore struct {
	root     string   // --root of postroj
	env      []string // the environment postroj runs with
	prepared string   // the prepared root filesystem postroj boots
}

// postrojEnv is the environment postroj runs with: docker.io mirrored by
// the loopback registry, and a download cache in the scratch directory
// (pkgprobe downloads nothing here, but must not touch the host's cache).
func (e *env) postrojEnv() []string {
	return e.postrojEnvCache(filepath.Join(e.work, "postroj-cache"))
}

// postrojEnvCache is postrojEnv with the cache directory cache
// (POSTROJ_CACHE: downloads, packages, apt's lists).
func (e *env) postrojEnvCache(cache string) []string {
	return append(environWithout("RACKER_REGISTRY_MIRRORS", "POSTROJ_CACHE", "RACKER_ROOT"),
		"RACKER_REGISTRY_MIRRORS=docker.io="+e.registry,
		"POSTROJ_CACHE="+cache)
}

// setupProbeStore pulls and prepares debian-bookworm with `postroj pull`
// into e.work/probe-store, once for the probe group; checks that the image
// is the registry's (so the same as the run group's); and runs the probe
// once with --verbose, checking from the registry's access log that a
// probe of a stored image sends it no request.
func setupProbeStore(ctx context.Context, e *env) error {
	if e.probe != nil {
		return nil
	}
	s := &probeStore{root: filepath.Join(e.work, "probe-store"), env: e.postrojEnv()}
	fmt.Fprintf(e.stdout, "Pulling and preparing %s with postroj into %s for the probe cases (about 10-20 s).\n", probeImage, s.root)
	t0 := time.Now()
	r := runner{env: s.env}
	if _, err := r.exec(ctx, e.postroj, "--root", s.root, "pull", probeImage); err != nil {
		return err
	}
	out, err := r.exec(ctx, e.racker, "--root", s.root, "images", "--format", "json")
	if err != nil {
		return err
	}
	var imgs []struct {
		Reference string `json:"reference"`
		Digest    string `json:"digest"`
		RootFS    string `json:"rootfs"`
	}
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		return fmt.Errorf("racker images --format json: %w", err)
	}
	if len(imgs) != 1 {
		return fmt.Errorf("store %s holds %+v, want one image", s.root, imgs)
	}
	if imgs[0].Digest != e.digest {
		return fmt.Errorf("postroj pull %s stored %s %s, want the registry's %s", probeImage, imgs[0].Reference, imgs[0].Digest, e.digest)
	}
	hex, _ := strings.CutPrefix(imgs[0].Digest, "sha256:")
	s.prepared = filepath.Join(s.root, "images", "sha256", hex, "prepared", "rootfs")
	if _, err := os.Stat(filepath.Join(s.prepared, "..", "prepared.json")); err != nil {
		return fmt.Errorf("postroj pull did not prepare the image for booting: %w", err)
	}
	for _, p := range []string{"usr/lib/systemd/systemd", "usr/bin/dbus-daemon"} {
		if _, err := os.Stat(filepath.Join(s.prepared, p)); err != nil {
			return fmt.Errorf("prepared root filesystem: %w", err)
		}
	}
	fmt.Fprintf(e.stdout, "Prepared in %s: %s (image %s)\n", seconds(time.Since(t0)), s.prepared, imgs[0].Digest)

	// Once with --verbose: the log says where the time goes, and the
	// registry must not have been asked anything.
	before, err := registryRequests(e.registryLog)
	if err != nil {
		return err
	}
	report := filepath.Join(e.work, "probe-check.json")
	t0 = time.Now()
	stdout, stderr, err := r.exec2(ctx, e.postroj, append([]string{"--verbose"}, probeArgs(s.root, report)...)...)
	wall := time.Since(t0)
	if err != nil {
		return err
	}
	after, err := registryRequests(e.registryLog)
	if err != nil {
		return err
	}
	if after != before {
		return fmt.Errorf("postroj pkgprobe of a stored image sent %d requests to the registry; its log: %s", after-before, humanize.Last([]byte(stderr), 10))
	}
	rep, err := readProbeReport(report)
	if err != nil {
		return fmt.Errorf("%w; stdout: %s", err, humanize.Last([]byte(stdout), 10))
	}
	os.Remove(report)
	fmt.Fprintf(e.stdout, "postroj --verbose pkgprobe, once (%s; no request to the registry):\n", seconds(wall))
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		fmt.Fprintf(e.stdout, "  %s\n", line)
	}
	for _, st := range rep.Steps {
		fmt.Fprintf(e.stdout, "  step %-8s %.3fs  %s\n", st.Kind, st.Seconds, st.Summary)
	}
	fmt.Fprintln(e.stdout)
	e.probe = s
	return nil
}

// registryRequests counts the requests in the registry's access log.
func registryRequests(log string) (int, error) {
	data, err := os.ReadFile(log)
	if err != nil {
		return 0, fmt.Errorf("the registry's log: %w", err)
	}
	return strings.Count(string(data), " /v2/"), nil
}

// probeReport is what the bench reads of pkgprobe's --report.
type probeReport struct {
	Result  string  `json:"result"`
	Error   string  `json:"error"`
	Seconds float64 `json:"seconds"`
	Steps   []struct {
		Kind    string  `json:"kind"`
		Name    string  `json:"name"`
		Result  string  `json:"result"`
		Seconds float64 `json:"seconds"`
		Summary string  `json:"summary"`
	} `json:"steps"`
}

// readProbeReport reads a pkgprobe report and checks that the probe passed
// with the steps it should have: image, boot, the unit, teardown.
func readProbeReport(path string) (*probeReport, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pkgprobe report: %w", err)
	}
	var rep probeReport
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("pkgprobe report %s: %w", path, err)
	}
	if rep.Result != "passed" {
		return nil, fmt.Errorf("pkgprobe result %q (%s)", rep.Result, rep.Error)
	}
	var kinds []string
	for _, s := range rep.Steps {
		if s.Result != "passed" {
			return nil, fmt.Errorf("pkgprobe step %s %s: %s", s.Kind, s.Name, s.Result)
		}
		kinds = append(kinds, s.Kind)
		if s.Kind == "unit" && s.Name != probeUnit {
			return nil, fmt.Errorf("pkgprobe checked unit %q, want %s", s.Name, probeUnit)
		}
	}
	if got, want := strings.Join(kinds, ","), "image,boot,unit,teardown"; got != want {
		return nil, fmt.Errorf("pkgprobe steps %s, want %s", got, want)
	}
	return &rep, nil
}

// probePhases maps a pkgprobe report's steps to the report's phases:
// image (finding the stored, prepared image), boot, exec (checking the
// unit), stop (teardown).
func probePhases(rep *probeReport) map[string]time.Duration {
	kind := map[string]string{"image": "image", "boot": "boot", "unit": "exec", "teardown": "stop"}
	phases := map[string]time.Duration{}
	for _, s := range rep.Steps {
		if p, ok := kind[s.Kind]; ok {
			phases[p] += time.Duration(s.Seconds * float64(time.Second))
		}
	}
	return phases
}

// postrojProbe runs the measured pkgprobe, with its JSON report in dir,
// and takes the phases from the report.
func postrojProbe(ctx context.Context, e *env, r *runner, dir string, extra ...string) error {
	report := filepath.Join(dir, "probe.json")
	r.env = e.probe.env
	rep, _, wall, err := runProbe(ctx, e, r, append(probeArgs(e.probe.root, report), extra...), report)
	if err != nil {
		return err
	}
	r.phasesOf(wall, probePhases(rep))
	return nil
}

// runProbe runs postroj with args, whose --report is report, and returns
// the report (checked: see readProbeReport), postroj's standard error and
// how long it ran.
func runProbe(ctx context.Context, e *env, r *runner, args []string, report string) (*probeReport, string, time.Duration, error) {
	t0 := time.Now()
	stdout, stderr, err := r.exec2(ctx, e.postroj, args...)
	wall := time.Since(t0)
	if err != nil {
		return nil, stderr, wall, err
	}
	rep, err := readProbeReport(report)
	if err != nil {
		return nil, stderr, wall, fmt.Errorf("%w; stdout: %s", err, humanize.Last([]byte(stdout), 10))
	}
	return rep, stderr, wall, nil
}

// coldProbe runs pkgprobe from nothing in dir: an empty store and an empty
// cache directory (the package cache and apt's lists included), so that it
// pulls debian-bookworm from the loopback registry (--source=registry),
// prepares it (apt-get installs systemd and the rest from Debian's mirror
// through the package cache), boots and probes. It checks that it did all
// of that, and takes the phases from its --verbose log (pull; copy, the
// image copied for preparing; prepare, the rest of the preparation) and
// its report (boot, exec, stop).
func coldProbe(ctx context.Context, e *env, r *runner, dir string) error {
	root, report := filepath.Join(dir, "store"), filepath.Join(dir, "probe.json")
	r.env = e.postrojEnvCache(filepath.Join(dir, "cache"))
	before, err := registryRequests(e.registryLog)
	if err != nil {
		return err
	}
	rep, stderr, wall, err := runProbe(ctx, e, r, append([]string{"--verbose"}, coldProbeArgs(root, report)...), report)
	if err != nil {
		return err
	}
	after, err := registryRequests(e.registryLog)
	if err != nil {
		return err
	}
	if after == before {
		return errors.New("a cold pkgprobe sent the registry no request")
	}
	phases, err := coldPhases(stderr)
	if err != nil {
		return fmt.Errorf("%w; its log: %s", err, humanize.Last([]byte(stderr), 10))
	}
	for name, d := range probePhases(rep) {
		if name != "image" { // pull, copy and prepare instead
			phases[name] = d
		}
	}
	r.phasesOf(wall, phases)
	return nil
}

// coldProbeArgs is the cold probe's command line, after postroj --verbose.
func coldProbeArgs(root, report string) []string {
	return []string{"--root", root, "pkgprobe", "--source=registry", "--image=" + probeImage, "--check-unit=" + probeUnit, "--report=" + report}
}

// coldPhases reads the pull, copy and prepare phases of a cold pkgprobe
// from its --verbose log, and fails unless the log shows a pull into an
// empty store, a preparation that installed systemd, and a package cache
// that served none of the preparation's requests.
func coldPhases(log string) (map[string]time.Duration, error) {
	phases := map[string]time.Duration{}
	var prepare time.Duration
	var installed, egress bool
	for _, rec := range logRecords(log) {
		took, _ := time.ParseDuration(rec["took"])
		switch rec["msg"] {
		case "pull":
			if rec["up_to_date"] != "false" {
				return nil, fmt.Errorf("pull up_to_date=%s in an empty store", rec["up_to_date"])
			}
			phases["pull"] += took
		case "copied image":
			phases["copy"] += took
		case "prepare":
			prepare += took
			installed = installed || slices.Contains(strings.Fields(rec["installed"]), "systemd")
		case "preparation egress":
			if rec["cached"] != "0" || rec["requests"] == "0" || rec["requests"] == "" {
				return nil, fmt.Errorf("preparation egress: %s requests, %s from an empty package cache", rec["requests"], rec["cached"])
			}
			egress = true
		}
	}
	switch {
	case phases["pull"] == 0:
		return nil, errors.New("no pull in the log")
	case !installed:
		return nil, errors.New("no preparation that installed systemd in the log")
	case !egress:
		return nil, errors.New("no preparation egress in the log")
	}
	phases["prepare"] = prepare - phases["copy"]
	return phases, nil
}

// references are figures other tools reported for a case, shown next to
// its median for information: they were measured on other machines.
var references = map[string]reference{
	"postroj-pkgprobe": {Seconds: 0.589, Source: "the original tool, on its machine (the issue)"},
}

type reference struct {
	Seconds float64 `json:"seconds"`
	Source  string  `json:"source"`
}
