package acquire

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/racker-postroj/racker/internal/curated"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/nspawn"
)

func catalogue(t *testing.T) *curated.Catalogue {
	t.Helper()
	c, err := curated.Load()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func entryNames(es []curated.Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Name)
	}
	return strings.Join(s, " ")
}

func TestSelect(t *testing.T) {
	cat := catalogue(t)
	for _, tt := range []struct {
		name string
		sel  Selection
		want string // entry names, or with all: a prefix
	}{
		{"names once, in order", Selection{Names: []string{"centos-9", "debian-12", "debian-bookworm"}}, "centos-9 debian-bookworm"},
		{"all but eol, one family", Selection{All: true, Families: []string{"debian"}}, "debian-bookworm debian-trixie debian-sid"},
		{"eol too", Selection{All: true, IncludeEOL: true, Families: []string{"debian"}},
			"debian-stretch debian-buster debian-bullseye debian-bookworm debian-trixie debian-sid"},
		{"mirror only", Selection{All: true, MirrorOnly: true}, "debian-bookworm debian-trixie debian-sid"},
		{"mirror only, named", Selection{Names: []string{"debian-sid"}, MirrorOnly: true}, "debian-sid"},
	} {
		got, err := Select(cat, tt.sel)
		if err != nil || entryNames(got) != tt.want {
			t.Errorf("%s: Select = %q, %v; want %q", tt.name, entryNames(got), err, tt.want)
		}
	}
	all, err := Select(cat, Selection{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		if e.EOL {
			t.Errorf("--all selected end-of-life %s", e.Name)
		}
	}
	if len(all) != 24 || all[0].Name != "debian-bookworm" {
		t.Errorf("--all: %d entries from %s", len(all), all[0].Name)
	}

	for _, tt := range []struct {
		name string
		sel  Selection
		want string
	}{
		{"unknown", Selection{Names: []string{"debian-bookworm", "nosuch"}}, `unknown image "nosuch"`},
		{"names and all", Selection{Names: []string{"debian-12"}, All: true}, "give NAME arguments or --all, not both"},
		{"eol without all", Selection{Names: []string{"debian-12"}, IncludeEOL: true}, "--include-eol and --family go with --all"},
		{"family without all", Selection{Names: []string{"debian-12"}, Families: []string{"debian"}}, "--include-eol and --family go with --all"},
		{"bad family", Selection{All: true, Families: []string{"gentoo"}}, `unexpected --family "gentoo" (valid: debian, ubuntu, fedora,`},
		{"no mirror", Selection{Names: []string{"centos-9"}, MirrorOnly: true}, "centos-9 has no mirror source"},
		{"nothing left", Selection{All: true, MirrorOnly: true, Families: []string{"fedora"}}, "--all selects no image with these options"},
	} {
		_, err := Select(cat, tt.sel)
		if !errors.As(err, new(*UsageError)) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Select error = %v, want a UsageError saying %q", tt.name, err, tt.want)
		}
	}
}

func TestResolve(t *testing.T) {
	cat := catalogue(t)
	tg, err := Resolve(cat, "debian-12")
	if err != nil || tg.Name != "debian-bookworm" || tg.Entry == nil || tg.PackageType() != distro.Deb {
		t.Errorf("Resolve(debian-12) = %+v, %v", tg, err)
	}
	tg, err = Resolve(cat, "quay.io/x/y:1")
	if err != nil || tg.Name != "quay.io/x/y:1" || tg.Entry != nil || tg.PackageType() != "" || tg.ref.String() != "quay.io/x/y:1" {
		t.Errorf("Resolve(reference) = %+v, %v", tg, err)
	}
	for name, want := range map[string]string{
		"debian-bookwurm": `unknown image "debian-bookwurm" (did you mean debian-bookworm?)`,
		"Debian:12":       `--image "Debian:12" is neither a catalogue name nor an image reference: invalid reference "Debian:12"`,
	} {
		if _, err := Resolve(cat, name); !errors.As(err, new(*UsageError)) || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Resolve(%q) error = %v, want a UsageError saying %q", name, err, want)
		}
	}
}

// Pull works through the selection --jobs at a time and sums up; one
// failure does not stop the others. The registries here refuse connections,
// so every pull fails at once.
func TestPull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the image store needs root")
	}
	addr := closedRegistry(t)
	cat, err := curated.Parse([]byte(`images:
  - {name: fedora-41, family: fedora, package-manager: dnf, package-type: rpm, image: ` + addr + `/fedora:41}
  - {name: fedora-42, family: fedora, package-manager: dnf, package-type: rpm, image: ` + addr + `/fedora:42}
  - {name: fedora-43, family: fedora, package-manager: dnf, package-type: rpm, image: ` + addr + `/fedora:43, eol: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	rt := testRuntime(t)
	var stdout bytes.Buffer
	stderr := tempFile(t) // safe for concurrent writes, as Stderr must be
	opts := PullOptions{Selection: Selection{All: true}, Jobs: 2, Stdout: &stdout, Stderr: stderr}
	err = Pull(context.Background(), rt, cat, opts)
	if err == nil || err.Error() != "2 of 2 images failed" {
		t.Errorf("Pull = %v", err)
	}
	if !regexp.MustCompile(`\ANAME +RESULT +TIME +IMAGE OR ERROR\nfedora-41 +failed +[0-9.]+s +pulling ` + addr + `/fedora:41: .*connection refused.*\nfedora-42 +failed .*\n\z`).MatchString(stdout.String()) {
		t.Errorf("summary:\n%s", stdout.String())
	}
	if progress := readAll(t, stderr); strings.Count(progress, ": pulling "+addr) != 2 || !strings.Contains(progress, "fedora-41: pulling "+addr+"/fedora:41\n") {
		t.Errorf("progress:\n%s", progress)
	}

	// One named image: its own error, no summary.
	stdout.Reset()
	opts.Selection = Selection{Names: []string{"fedora-43"}}
	if err := Pull(context.Background(), rt, cat, opts); err == nil || !strings.Contains(err.Error(), "pulling "+addr+"/fedora:43") || stdout.Len() != 0 {
		t.Errorf("Pull(fedora-43) = %v, stdout %q", err, stdout.String())
	}

	// Interrupted before anything started.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	opts.Stderr = tempFile(t)
	opts.Selection = Selection{All: true}
	if err := Pull(ctx, rt, cat, opts); !errors.Is(err, context.Canceled) || readAll(t, opts.Stderr.(*os.File)) != "" {
		t.Errorf("cancelled Pull = %v, progress %q", err, readAll(t, opts.Stderr.(*os.File)))
	}

	opts.Source = "ftp"
	if err := Pull(context.Background(), rt, cat, opts); !errors.As(err, new(*UsageError)) {
		t.Errorf("bad source: %v", err)
	}
}

func tempFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readAll(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestList(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the image store needs root")
	}
	rt := testRuntime(t)
	cat := catalogue(t)
	var out bytes.Buffer
	if err := List(rt.Store, cat, ListOptions{Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(cat.Entries())+1 || !regexp.MustCompile(`^NAME +ALIASES +FAMILY +SOURCE +EOL +PULLED$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^debian-sid +debian-unstable +debian +docker.io/library/debian:sid-slim +no +no$`).MatchString(lines[6]) {
		t.Errorf("table:\n%s", out.String())
	}
	if err := List(rt.Store, cat, ListOptions{Format: "yaml", Stdout: &out}); !errors.As(err, new(*UsageError)) ||
		err.Error() != `unexpected --format "yaml" (valid: table, json)` {
		t.Errorf("yaml: %v", err)
	}
}

func TestExecutor(t *testing.T) {
	cat := catalogue(t)
	for name, want := range map[string]nspawn.Executor{"centos-7": nspawn.ExecNsenter, "centos-8": nspawn.ExecAuto, "debian-12": nspawn.ExecAuto} {
		e, err := cat.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := executor(e); got != want {
			t.Errorf("executor(%s) = %v, want %v", name, got, want)
		}
	}
}
