package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/testenv"
)

// The net group: what private networks cost and what the package cache and
// the parallel matrix save.
//
//   - probe-host: the warm journald probe of the probe group with
//     --network=host; postroj-pkgprobe (private, the default) over it is
//     the price of the private network (netns listener, allowlist,
//     proxy settings);
//   - webfs-cold and webfs-warm: postroj pkgprobe of Debian's webfs on
//     debian-bookworm built from the mirror (postroj pull --source=mirror,
//     what users without a registry get: empty apt lists), with an empty
//     cache directory each time and with one warmed in a setup step: the
//     install step (apt-get update and install through the proxy) with a
//     warm package and index cache over without. (The probe group's image
//     is prepared by postroj, which keeps the lists of its preparation: its
//     apt-get update never fetches a Packages index, cold or warm.)
//   - selftest-jobs1 and selftest-jobs2: postroj selftest pkgprobe over the
//     four Debian releases the mirror serves, --jobs 1 and 2.

// webfsURL is the package the webfs cases install.
const webfsURL = "http://deb.debian.org/debian/pool/main/w/webfs/webfs_1.21+ds1-12+b1_amd64.deb"

// selftestImages are the catalogue images of the selftest cases.
var selftestImages = []string{"debian-bullseye", "debian-bookworm", "debian-trixie", "debian-sid"}

func netCases() []benchCase {
	return []benchCase{
		{
			id:    "probe-host",
			group: "net",
			name:  "postroj pkgprobe --network=host (warm)",
			cmd:   "as postroj-pkgprobe, with --network=host (postroj-pkgprobe is --network=private, the default)",
			short: true,
			setup: setupProbeStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return postrojProbe(ctx, e, r, dir, "--network=host")
			},
			check: func(_ context.Context, e *env, _ string) error {
				return checkNoContainers(e.probe.root)
			},
		},
		{
			id:    "webfs-cold",
			group: "net",
			name:  "pkgprobe webfs, cold package cache",
			cmd:   "POSTROJ_CACHE=DIR/cache postroj pkgprobe --image=debian-bookworm --package=" + webfsURL + " --check-unit=webfs --check-network=http://localhost:8000 (debian-bookworm from the mirror; an empty cache each time)",
			setup: setupWebfsStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return webfsProbe(ctx, e, r, dir, filepath.Join(dir, "cache"), false)
			},
		},
		{
			id:    "webfs-warm",
			group: "net",
			name:  "pkgprobe webfs, warm package cache",
			cmd:   "as webfs-cold, with a cache that one probe filled in a setup step",
			setup: func(ctx context.Context, e *env) error {
				if err := setupWebfsStore(ctx, e); err != nil {
					return err
				}
				dir := filepath.Join(e.work, "webfs-warm")
				fmt.Fprintf(e.stdout, "Warming the package cache in %s with one webfs probe.\n", dir)
				return webfsProbe(ctx, e, &runner{}, dir, filepath.Join(e.work, "webfs-warm-cache"), false)
			},
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return webfsProbe(ctx, e, r, dir, filepath.Join(e.work, "webfs-warm-cache"), true)
			},
		},
		{
			id:    "selftest-jobs1",
			group: "net",
			name:  "selftest pkgprobe, 4 Debian releases, --jobs 1",
			cmd:   "postroj selftest pkgprobe --image=debian-bullseye --image=debian-bookworm --image=debian-trixie --image=debian-sid --jobs 1 (warm package cache)",
			setup: setupSelftestStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return selftestRun(ctx, e, r, dir, 1)
			},
		},
		{
			id:    "selftest-jobs2",
			group: "net",
			name:  "selftest pkgprobe, 4 Debian releases, --jobs 2",
			cmd:   "as selftest-jobs1, --jobs 2",
			setup: setupSelftestStore,
			run: func(ctx context.Context, e *env, r *runner, dir string) error {
				return selftestRun(ctx, e, r, dir, 2)
			},
		},
	}
}

// webfsStore is the store of the webfs cases (setupWebfsStore).
func webfsStore(e *env) string { return filepath.Join(e.work, "webfs-store") }

// setupWebfsStore makes the store of the webfs cases: debian-bookworm
// built from Debian's mirror (see mirrorStore).
func setupWebfsStore(ctx context.Context, e *env) error {
	root := webfsStore(e)
	if _, err := os.Stat(filepath.Join(root, "refs")); err == nil {
		return nil
	}
	return mirrorStore(ctx, e, root, probeImage)
}

// mirrorStore fills the store at root with the catalogue's names built
// from Debian's mirror: each from the tests' template store when it has it
// (built by the scripts' curatedstore), hard-linked, else built here with
// postroj pull --source=mirror (minutes).
func mirrorStore(ctx context.Context, e *env, root string, names ...string) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	r := runner{env: e.postrojEnv()}
	for _, name := range names {
		tmpl, _ := filepath.Glob(filepath.Join(testenv.CacheDir(), "postroj-stores", name+"-*", "built"))
		if len(tmpl) > 0 {
			dir := filepath.Dir(tmpl[0])
			fmt.Fprintf(e.stdout, "Linking %s from the tests' template store %s.\n", name, dir)
			for _, d := range []string{"images", "refs"} {
				if out, err := exec.CommandContext(ctx, "cp", "-al", filepath.Join(dir, d), root+"/").CombinedOutput(); err != nil {
					return fmt.Errorf("copying %s: %v: %s", dir, err, out)
				}
			}
			continue
		}
		fmt.Fprintf(e.stdout, "Building %s from Debian's mirror with postroj pull --source=mirror (a few minutes).\n", name)
		if _, err := r.exec(ctx, e.postroj, "--root", root, "pull", "--source=mirror", name); err != nil {
			return err
		}
	}
	return nil
}

// packagesIndex matches the URLs of Debian's Packages indexes (by name or
// by hash).
var packagesIndex = regexp.MustCompile(`/dists/[^?]*/binary-[^/]+/(Packages|by-hash/)`)

// webfsProbe probes webfs with the cache directory cache (postroj's
// --cache-dir: downloads, packages and apt's lists) and records the
// install step as a phase. warm says the cache must have served package
// files and put apt's lists back, so that no Packages index was fetched;
// cold runs must have fetched one (nothing cached, the lists included).
func webfsProbe(ctx context.Context, e *env, r *runner, dir, cache string, warm bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	report := filepath.Join(dir, "webfs.json")
	r.env = append(environWithout("POSTROJ_CACHE"), append(e.postrojEnv(), "POSTROJ_CACHE="+cache)...)
	stdout, err := r.exec(ctx, e.postroj, "--root", webfsStore(e), "pkgprobe", "--image="+probeImage, "--package="+webfsURL,
		"--check-unit=webfs", "--check-network=http://localhost:8000", "--report="+report)
	if err != nil {
		return fmt.Errorf("%w; stdout: %s", err, humanize.Last([]byte(stdout), 10))
	}
	var rep struct {
		Result string `json:"result"`
		Steps  []struct {
			Kind       string  `json:"kind"`
			Seconds    float64 `json:"seconds"`
			IndexCache string  `json:"indexCache"`
		} `json:"steps"`
		Egress struct {
			Cached   int `json:"cached"`
			Requests []struct {
				URL string `json:"url"`
			} `json:"requests"`
		} `json:"egress"`
	}
	data, err := os.ReadFile(report)
	if err == nil {
		err = json.Unmarshal(data, &rep)
	}
	if err != nil {
		return fmt.Errorf("webfs report: %w", err)
	}
	if rep.Result != "passed" {
		return fmt.Errorf("webfs probe %s; stdout: %s", rep.Result, humanize.Last([]byte(stdout), 10))
	}
	if warm && rep.Egress.Cached == 0 {
		return fmt.Errorf("a warm package cache served nothing; stdout: %s", humanize.Last([]byte(stdout), 10))
	}
	if !warm && rep.Egress.Cached != 0 {
		return fmt.Errorf("an empty package cache served %d requests", rep.Egress.Cached)
	}
	fetched := false
	for _, q := range rep.Egress.Requests {
		fetched = fetched || packagesIndex.MatchString(q.URL)
	}
	for _, s := range rep.Steps {
		if s.Kind != "install" {
			continue
		}
		putBack := strings.Contains(s.IndexCache, "put back")
		switch {
		case warm && (fetched || !putBack):
			return fmt.Errorf("a warm index cache: lists %q, a Packages index fetched: %v", s.IndexCache, fetched)
		case !warm && (!fetched || putBack):
			return fmt.Errorf("an empty index cache: lists %q, a Packages index fetched: %v", s.IndexCache, fetched)
		}
		r.phase("install", time.Duration(s.Seconds*float64(time.Second)))
	}
	return nil
}

// setupSelftestStore makes the store of the selftest cases: the Debian
// releases built from Debian's mirror (see mirrorStore). A first selftest
// run warms the package cache, so that both cases install from it.
func setupSelftestStore(ctx context.Context, e *env) error {
	if e.selftest != "" {
		return nil
	}
	root := filepath.Join(e.work, "selftest-store")
	if err := mirrorStore(ctx, e, root, selftestImages...); err != nil {
		return err
	}
	e.selftest = root
	fmt.Fprintln(e.stdout, "Warming the package cache with one selftest pkgprobe run.")
	return selftestRun(ctx, e, &runner{}, filepath.Join(e.work, "selftest-warm"), 2)
}

// selftestRun runs the selftest with jobs and checks that it passed.
func selftestRun(ctx context.Context, e *env, r *runner, dir string, jobs int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r.env = append(environWithout("POSTROJ_CACHE"), "POSTROJ_CACHE="+filepath.Join(e.work, "selftest-cache"))
	args := []string{"--root", e.selftest, "selftest", "pkgprobe", fmt.Sprintf("--jobs=%d", jobs), "--report=" + filepath.Join(dir, "selftest.json")}
	for _, n := range selftestImages {
		args = append(args, "--image="+n)
	}
	stdout, err := r.exec(ctx, e.postroj, args...)
	if err != nil {
		return fmt.Errorf("%w; stdout: %s", err, humanize.Last([]byte(stdout), 10))
	}
	if !strings.Contains(stdout, "PASSED: 8 passed") {
		return fmt.Errorf("selftest did not pass: %s", humanize.Last([]byte(stdout), 10))
	}
	return nil
}
