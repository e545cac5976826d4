// Command testregistry runs the end-to-end tests' registry on its own: a
// docker-registry on 127.0.0.1 seeded with Debian images built by mmdebstrap
// (cached in /var/cache/racker-test, as for the tests), until SIGINT or
// SIGTERM. For demos and manual checks:
//
//	go build -o bin/testregistry ./tools/testregistry
//	bin/testregistry -addr-file /tmp/addr &
//	RACKER_REGISTRY_MIRRORS=docker.io=$(cat /tmp/addr) racker pull debian:bookworm-slim
//
// Run the built binary rather than `go run` when another process will stop
// it: `go run` does not pass SIGTERM on to the program.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/testenv"
	"github.com/racker-postroj/racker/internal/testregistry"
)

func main() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) }

// seedList is a repeatable -seed flag.
type seedList []string

func (s *seedList) String() string { return strings.Join(*s, ",") }

func (s *seedList) Set(v string) error {
	for _, ref := range strings.Split(v, ",") {
		if ref = strings.TrimSpace(ref); ref != "" {
			*s = append(*s, ref)
		}
	}
	return nil
}

// Main runs the command with args and returns its exit code: 0 after a
// signal stopped a registry that was serving, 1 on errors, 2 on bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("testregistry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var seeds seedList
	fs.Var(&seeds, "seed", "push `IMAGE` (repeatable or comma-separated; default debian:bookworm-slim); valid: debian:SUITE-slim")
	index := fs.Bool("index", true, "push each image as a manifest list with a second, tiny platform, as Docker Hub does (false: a single-platform manifest)")
	addrFile := fs.String("addr-file", "", "once the images are pushed, write 127.0.0.1:PORT to `FILE` (atomically); removed on exit")
	dir := fs.String("dir", "", "keep the registry's storage, config and log in `DIR` and leave them there (default: a temporary directory, removed on exit)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: testregistry [-seed IMAGE]... [-index=false] [-addr-file FILE] [-dir DIR]\n\n"+
			"Runs docker-registry on 127.0.0.1 with Debian images built by mmdebstrap (cache: %s;\n"+
			"the first build takes about 30-40 s), prints its address and serves until SIGINT or SIGTERM.\n\n",
			testenv.CacheDir())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "testregistry: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	if len(seeds) == 0 {
		seeds = seedList{"debian:bookworm-slim"}
	}
	var plan []seed
	for _, ref := range seeds {
		s, err := parseSeed(ref)
		if err != nil {
			fmt.Fprintf(stderr, "testregistry: %v\n", err)
			return 2
		}
		plan = append(plan, s)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
	if err := serve(ctx, options{seeds: plan, index: *index, addrFile: *addrFile, dir: *dir, stdout: stdout, log: log}); err != nil {
		fmt.Fprintf(stderr, "testregistry: %v\n", err)
		return 1
	}
	return 0
}

// seed is an image to push: a Debian recipe under a Docker Hub name.
type seed struct {
	ref    string // repository:tag, e.g. "library/debian:bookworm-slim"
	recipe testregistry.Recipe
}

// parseSeed maps a Docker Hub reference to the recipe that builds its
// stand-in. Only the slim Debian images have one: mmdebstrap's minbase
// variant is what Docker Hub's debian:SUITE-slim is.
func parseSeed(ref string) (seed, error) {
	r, err := name.NewTag(ref)
	if err != nil {
		return seed{}, fmt.Errorf("-seed %q: %w", ref, err)
	}
	suite, slim := strings.CutSuffix(r.TagStr(), "-slim")
	if r.RegistryStr() != name.DefaultRegistry || r.RepositoryStr() != "library/debian" || !slim || suite == "" {
		return seed{}, fmt.Errorf("-seed %q: no recipe for it (valid: debian:SUITE-slim, e.g. debian:bookworm-slim)", ref)
	}
	return seed{
		ref:    r.RepositoryStr() + ":" + r.TagStr(),
		recipe: testregistry.Recipe{Suite: suite, Variant: "minbase"},
	}, nil
}

type options struct {
	seeds    []seed
	index    bool
	addrFile string
	dir      string
	stdout   io.Writer
	log      *slog.Logger
}

// serve starts the registry, pushes the seeds, announces the address and
// waits for ctx to end or the registry to die.
func serve(ctx context.Context, o options) error {
	dir := o.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "racker-testregistry-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	srv, err := testregistry.Start(ctx, dir)
	if err != nil {
		return err
	}
	defer srv.Close()
	o.log.Info("registry started", "addr", srv.Addr(), "log", srv.LogPath())

	cache := &testregistry.Cache{Dir: testenv.CacheDir(), Logger: o.log}
	for _, s := range o.seeds {
		t0 := time.Now()
		img, err := srv.PushDebian(ctx, cache, s.recipe, s.ref, o.index)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted while seeding %s", s.ref)
			}
			return fmt.Errorf("seeding %s: %w", s.ref, err)
		}
		attrs := []any{"ref", img.Ref, "digest", img.Digest, "layer", img.Layer.Path, "took", time.Since(t0).Round(time.Millisecond)}
		if o.index {
			attrs = append(attrs, "index", img.Index)
		}
		o.log.Info("pushed", attrs...)
	}

	if o.addrFile != "" {
		if err := fileio.WriteFile(o.addrFile, []byte(srv.Addr()+"\n"), 0o644); err != nil {
			return err
		}
		defer os.Remove(o.addrFile)
	}
	fmt.Fprintln(o.stdout, srv.Addr())

	select {
	case <-ctx.Done():
		o.log.Info("stopping")
		return nil
	case <-srv.Done():
		return fmt.Errorf("docker-registry exited on its own; see %s", srv.LogPath())
	}
}
