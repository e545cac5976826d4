package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// benchCase is one measured command line. Cases run interleaved, one after
// the other in every round, so drift on a shared machine hits all alike.
// Only run is timed; everything else prepares or checks.
type benchCase struct {
	id    string   // for -cases, targets and the JSON report
	name  string   // for people
	cmd   string   // what run does, in shell terms, for the report
	needs []string // programs that must be on PATH

	// setup runs once before the first round and teardown once after the
	// last; both may be nil.
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
	ref      string // ADDR/library/debian:bookworm-slim, a manifest list
	layer    string // the image's one gzip layer blob, as the registry serves it
	work     string // scratch space; cases may keep state in work/<id>
	rackerUp string // the store the up-to-date case pulls into
}

// cases is the table of everything the benchmark measures. Targets refer to
// cases by id. Adding a comparison is adding an entry.
func cases() []benchCase {
	return []benchCase{
		{
			id:   "racker-pull",
			name: "racker pull (cold)",
			cmd:  "racker --root DIR pull REF",
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
			id:   "racker-pull-uptodate",
			name: "racker pull (up to date)",
			cmd:  "racker --root STORE pull REF, STORE already has REF",
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
	}
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

// target is a figure a case must reach: either its median wall time over
// that of another case (over set) at most maxRatio, or its peak RSS below
// maxRSS bytes.
type target struct {
	name     string
	caseID   string
	over     string
	maxRatio float64
	maxRSS   int64
}

var targets = []target{
	{name: "racker / skopeo+umoci (wall, median)", caseID: "racker-pull", over: "skopeo-umoci", maxRatio: 0.5},
	{name: "racker / floor (wall, median)", caseID: "racker-pull", over: "gzip-tar", maxRatio: 1.3},
	{name: "racker peak RSS", caseID: "racker-pull", maxRSS: 100 << 20},
}
