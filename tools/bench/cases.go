package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// benchCase is one measured command line. Cases run interleaved, one after
// the other in every round, so drift on a shared machine hits all alike.
// Only run is timed; everything else prepares or checks.
type benchCase struct {
	id    string   // for -cases, targets and the JSON report
	group string   // "pull", "run" or "probe", also for -cases
	name  string   // for people
	cmd   string   // what run does, in shell terms, for the report
	needs []string // programs that must be on PATH
	// short cases take well under a second: they run -short-reps times per
	// round (interleaved with the other short ones), so that their medians
	// rest on more samples.
	short bool

	// setup runs once before the first round and teardown once after the
	// last; both may be nil. Setups that cases share must be idempotent.
	setup    func(ctx context.Context, e *env) error
	teardown func(ctx context.Context, e *env) error
	// run does the measured work in dir, a new empty directory each round
	// that is removed, untimed, afterwards. Commands it starts through r are
	// what the CPU time and peak RSS figures cover.
	run func(ctx context.Context, e *env, r *runner, dir string) error
	// check, if set, runs untimed after run and fails the benchmark if run
	// did not do the whole job.
	check func(ctx context.Context, e *env, dir string) error
}

// env is what cases share: the registry, the image and the tools.
type env struct {
	racker   string // absolute path of the racker binary
	postroj  string // absolute path of the postroj binary ("" unless the probe group runs)
	registry string // the loopback registry's HOST:PORT
	// registryLog is the registry's log, with a line per request.
	registryLog string
	ref         string      // ADDR/library/debian:bookworm-slim, a manifest list
	digest      string      // the digest of the image REF resolves to on this machine
	layer       string      // the image's one gzip layer blob, as the registry serves it
	work        string      // scratch space; cases may keep state in work/<id>
	rackerUp    string      // the store the up-to-date case pulls into
	run         *runStore   // the run group's store, once setupRunStore made it
	probe       *probeStore // the probe group's store, once setupProbeStore made it
	selftest    string      // the selftest cases' store, once setupSelftestStore made it
	stdout      io.Writer   // for setups to say what takes long
}

// groups are the values of benchCase.group, in the order of the table.
var groups = []string{"pull", "run", "probe", "net"}

// cases is the table of everything the benchmark measures. Targets refer to
// cases by id. Adding a comparison is adding an entry.
func cases() []benchCase {
	return append([]benchCase{
		{
			id:    "racker-pull",
			group: "pull",
			name:  "racker pull (cold)",
			cmd:   "racker --root DIR pull REF",
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				out, err := r.exec(ctx, e.racker, "--root", filepath.Join(dir, "store"), "pull", e.ref)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(out, "Pulled ") {
					return fmt.Errorf("racker pull into an empty store printed %q, want \"Pulled ...\"", out)
				}
				return nil
			},
			check: func(ctx context.Context, e *env, dir string) error {
				return checkRackerStore(ctx, e, filepath.Join(dir, "store"))
			},
		},
		{
			id:    "racker-pull-uptodate",
			group: "pull",
			name:  "racker pull (up to date)",
			cmd:   "racker --root STORE pull REF, STORE already has REF",
			setup: func(ctx context.Context, e *env) error {
				e.rackerUp = filepath.Join(e.work, "racker-pull-uptodate")
				var r runner
				if _, err := r.exec(ctx, e.racker, "--root", e.rackerUp, "pull", e.ref); err != nil {
					return err
				}
				return checkRackerStore(ctx, e, e.rackerUp)
			},
			run: func(ctx context.Context, e *env, r *runner, _ string) error {
				out, err := r.exec(ctx, e.racker, "--root", e.rackerUp, "pull", e.ref)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(out, "Up to date: ") {
					return fmt.Errorf("second racker pull printed %q, want \"Up to date: ...\"", out)
				}
				return nil
			},
			teardown: func(ctx context.Context, e *env) error {
				return os.RemoveAll(e.rackerUp)
			},
		},
		{
			id:    "skopeo-umoci",
			group: "pull",
			name:  "skopeo copy + umoci unpack",
			cmd:   "skopeo copy --src-tls-verify=false docker://REF oci:DIR/oci:bench && umoci unpack --image DIR/oci:bench DIR/bundle",
			needs: []string{"skopeo", "umoci"},
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				layout := filepath.Join(dir, "oci") + ":bench"
				if _, err := r.exec(ctx, "skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://"+e.ref, "oci:"+layout); err != nil {
					return err
				}
				_, err := r.exec(ctx, "umoci", "unpack", "--image", layout, filepath.Join(dir, "bundle"))
				return err
			},
			check: func(_ context.Context, _ *env, dir string) error {
				return checkRootfs(filepath.Join(dir, "bundle", "rootfs"))
			},
		},
		{
			id:    "gzip-tar",
			group: "pull",
			name:  "gzip -dc | tar -x (floor)",
			cmd:   "gzip -dc LAYER | tar -x -C DIR",
			needs: []string{"sh", "gzip", "tar"},
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				_, err := r.exec(ctx, "sh", "-c", `gzip -dc "$1" | tar -x -C "$2"`, "sh", e.layer, dir)
				return err
			},
			check: func(_ context.Context, _ *env, dir string) error {
				return checkRootfs(dir)
			},
		},

		// The run group, in pairs: racker, then the floor for the same work.
		{
			id:    "racker-run",
			group: "run",
			name:  "racker run (boot, masked)",
			cmd:   "racker --verbose run --rm REF true (prepared image; --fast-boot masks nspawn.DefaultMaskedUnits)",
			short: true,
			setup: setupRunStore,
			run: func(ctx context.Context, e *env, r *runner, _ string) error {
				return rackerRun(ctx, e, r, true)
			},
			check: checkRunContainers,
		},
		{
			id:    "racker-run-hostusers",
			group: "run",
			name:  "racker run --userns=host (boot, masked)",
			cmd:   "as racker-run, with the host's user IDs instead of a private user namespace",
			short: true,
			setup: setupRunStore,
			run: func(ctx context.Context, e *env, r *runner, _ string) error {
				return rackerRun(ctx, e, r, true, "--userns=host")
			},
			check: checkRunContainers,
		},
		{
			id:    "nspawn-boot",
			group: "run",
			name:  "nspawn boot+true (floor, masked)",
			cmd:   "systemd-nspawn --register=no --keep-unit --boot --volatile=overlay --notify-ready=yes --console=read-only --kill-signal=SIGKILL -D PREPARED --machine=NAME systemd.mask=UNIT...; READY=1, nsenter -t LEADER -a true, SIGRTMIN+4 to LEADER, wait",
			needs: []string{"systemd-nspawn", "nsenter"},
			short: true,
			setup: setupRunStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return bootFloor(ctx, r, dir, e.run.prepared, maskedUnits())
			},
		},
		{
			id:    "racker-run-nomask",
			group: "run",
			name:  "racker run (boot, unmasked)",
			cmd:   "racker --verbose run --rm --fast-boot=false REF true (prepared image)",
			short: true,
			setup: setupRunStore,
			run: func(ctx context.Context, e *env, r *runner, _ string) error {
				return rackerRun(ctx, e, r, true, "--fast-boot=false")
			},
			check: checkRunContainers,
		},
		{
			id:    "nspawn-boot-nomask",
			group: "run",
			name:  "nspawn boot+true (floor, unmasked)",
			cmd:   "as nspawn-boot, without systemd.mask=",
			needs: []string{"systemd-nspawn", "nsenter"},
			short: true,
			setup: setupRunStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return bootFloor(ctx, r, dir, e.run.prepared, nil)
			},
		},
		{
			id:    "racker-run-noboot",
			group: "run",
			name:  "racker run --boot=never",
			cmd:   "racker run --rm --boot=never REF true (the image's own root filesystem, as racker uses it)",
			short: true,
			setup: setupRunStore,
			run: func(ctx context.Context, e *env, r *runner, _ string) error {
				return rackerRun(ctx, e, r, false, "--boot=never")
			},
			check: checkRunContainers,
		},
		{
			id:    "nspawn-noboot",
			group: "run",
			name:  "nspawn true (floor, no boot)",
			cmd:   "systemd-nspawn --register=no --keep-unit --volatile=overlay -D ROOTFS --machine=NAME true (the image's own root filesystem)",
			needs: []string{"systemd-nspawn"},
			short: true,
			setup: setupRunStore,
			run: func(ctx context.Context, e *env, r *runner, _ string) error {
				name := machineName()
				defer os.Remove(filepath.Join("/run/systemd/nspawn/propagate", name))
				_, err := r.exec(ctx, "systemd-nspawn", "--register=no", "--keep-unit", "--volatile=overlay",
					"-D", e.run.base, "--machine="+name, "true")
				return err
			},
		},

		// The probe group: postroj, then the floor, on the tree postroj boots.
		{
			id:    "postroj-pkgprobe",
			group: "probe",
			name:  "postroj pkgprobe (warm)",
			cmd: "RACKER_REGISTRY_MIRRORS=docker.io=REGISTRY postroj --root STORE pkgprobe --image=debian-bookworm --check-unit=systemd-journald " +
				"--report=DIR/probe.json (image pulled and prepared by postroj pull; the report gives the phases)",
			short: true,
			setup: setupProbeStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return postrojProbe(ctx, e, r, dir)
			},
			check: func(_ context.Context, e *env, _ string) error {
				return checkNoContainers(e.probe.root)
			},
		},
		{
			id:    "postroj-pkgprobe-hostusers",
			group: "probe",
			name:  "postroj pkgprobe --userns=host (warm)",
			cmd:   "as postroj-pkgprobe, with the host's user IDs instead of a private user namespace",
			short: true,
			setup: setupProbeStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return postrojProbe(ctx, e, r, dir, "--userns=host")
			},
			check: func(_ context.Context, e *env, _ string) error {
				return checkNoContainers(e.probe.root)
			},
		},
		{
			id:    "probe-floor",
			group: "probe",
			name:  "nspawn boot+true (floor, masked, postroj's tree)",
			cmd:   "as nspawn-boot, on the prepared root filesystem postroj pkgprobe boots",
			needs: []string{"systemd-nspawn", "nsenter"},
			short: true,
			setup: setupProbeStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return bootFloor(ctx, r, dir, e.probe.prepared, maskedUnits())
			},
		},
		{
			id:    "probe-cold",
			group: "probe",
			name:  "postroj pkgprobe (cold)",
			cmd: "RACKER_REGISTRY_MIRRORS=docker.io=REGISTRY POSTROJ_CACHE=DIR/cache postroj --verbose --root DIR/store pkgprobe --source=registry " +
				"--image=debian-bookworm --check-unit=systemd-journald --report=DIR/probe.json (an empty store and cache each time: " +
				"pulls from the registry, apt-get installs systemd from Debian's mirror, boots, probes; the log and report give the phases)",
			run: coldProbe,
			check: func(_ context.Context, _ *env, dir string) error {
				return checkNoContainers(filepath.Join(dir, "store"))
			},
		},
	}, netCases()...)
}

// checkRackerStore checks that the store at root lists exactly one image,
// REF, with a root filesystem of Debian's size.
func checkRackerStore(ctx context.Context, e *env, root string) error {
	var r runner
	out, err := r.exec(ctx, e.racker, "--root", root, "images", "--format", "json")
	if err != nil {
		return err
	}
	var imgs []struct {
		Reference string `json:"reference"`
		Size      int64  `json:"size"`
		RootFS    string `json:"rootfs"`
	}
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		return fmt.Errorf("racker images --format json: %w", err)
	}
	if len(imgs) != 1 || imgs[0].Reference != e.ref {
		return fmt.Errorf("store %s holds %+v, want only %s", root, imgs, e.ref)
	}
	if imgs[0].Size < 100<<20 {
		return fmt.Errorf("store %s: %s has only %d bytes of files", root, e.ref, imgs[0].Size)
	}
	return checkRootfs(imgs[0].RootFS)
}

// checkRootfs checks that dir holds a Debian root filesystem.
func checkRootfs(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "etc", "os-release"))
	if err != nil {
		return fmt.Errorf("no Debian root filesystem: %w", err)
	}
	if !strings.Contains(string(data), "ID=debian") {
		return errors.New(filepath.Join(dir, "etc", "os-release") + " does not say ID=debian")
	}
	if _, err := os.Stat(filepath.Join(dir, "usr", "bin", "bash")); err != nil {
		return fmt.Errorf("no Debian root filesystem: %w", err)
	}
	return nil
}

// target is a figure a case must reach: its median wall time over that of
// another case (over set) at most maxRatio, its median wall time at most
// maxSeconds, or its peak RSS below maxRSS bytes.
type target struct {
	name       string
	caseID     string
	over       string
	phase      string // compare this phase of both cases, not the wall time
	maxRatio   float64
	maxSeconds float64
	maxRSS     int64
}

var targets = []target{
	{name: "racker / skopeo+umoci (wall, median)", caseID: "racker-pull", over: "skopeo-umoci", maxRatio: 0.5},
	{name: "racker / floor (wall, median)", caseID: "racker-pull", over: "gzip-tar", maxRatio: 1.3},
	{name: "racker peak RSS", caseID: "racker-pull", maxRSS: 100 << 20},
	{name: "racker run / nspawn boot floor, masked (wall, median)", caseID: "racker-run", over: "nspawn-boot", maxRatio: 1.15},
	{name: "racker run / nspawn boot floor, unmasked (wall, median)", caseID: "racker-run-nomask", over: "nspawn-boot-nomask", maxRatio: 1.15},
	{name: "racker run --boot=never / nspawn true (wall, median)", caseID: "racker-run-noboot", over: "nspawn-noboot", maxRatio: 1.15},
	{name: "postroj pkgprobe / nspawn boot floor, masked (wall, median)", caseID: "postroj-pkgprobe", over: "probe-floor", maxRatio: 1.2},
	{name: "postroj pkgprobe, warm (wall, median)", caseID: "postroj-pkgprobe", maxSeconds: 0.45},
	{name: "cold probe (wall, median)", caseID: "probe-cold", maxSeconds: 12},
	{name: "pkgprobe --network=private / host, warm journald (wall, median)", caseID: "postroj-pkgprobe", over: "probe-host", maxRatio: 1.10},
	{name: "webfs install step, warm / cold package cache (median)", caseID: "webfs-warm", over: "webfs-cold", phase: "install", maxRatio: 0.5},
	{name: "selftest pkgprobe, --jobs 2 / --jobs 1 (wall, median)", caseID: "selftest-jobs2", over: "selftest-jobs1", maxRatio: 0.7},
	// A private user namespace (the default) against the host's IDs.
	{name: "racker run / racker run --userns=host (wall, median)", caseID: "racker-run", over: "racker-run-hostusers", maxRatio: 1.1},
	{name: "postroj pkgprobe / pkgprobe --userns=host (wall, median)", caseID: "postroj-pkgprobe", over: "postroj-pkgprobe-hostusers", maxRatio: 1.1},
}

// comparison is a figure reported without a limit: a phase (or, with
// phase "", the wall time) of one case over the same of another.
type comparison struct {
	name, caseID, over, phase string
}

// comparisons show what masking units (racker's --fast-boot) saves.
var comparisons = []comparison{
	{name: "floor READY, masked / unmasked", caseID: "nspawn-boot", over: "nspawn-boot-nomask", phase: "boot"},
	{name: "floor cycle, masked / unmasked", caseID: "nspawn-boot", over: "nspawn-boot-nomask"},
	{name: "racker boot (READY + D-Bus), masked / unmasked", caseID: "racker-run", over: "racker-run-nomask", phase: "boot"},
	{name: "racker cycle, masked / unmasked", caseID: "racker-run", over: "racker-run-nomask"},
}
