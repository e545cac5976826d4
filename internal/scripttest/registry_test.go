package scripttest

import (
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/testenv"
	"github.com/racker-postroj/racker/internal/testregistry"
)

// harness is the registry shared by all scripts of this test process,
// started and seeded by the first script that needs it.
type harness struct {
	once sync.Once
	dir  string
	srv  *testregistry.Server
	env  []string
	err  error

	mu        sync.Mutex
	owners    map[string]string // image reference → script that pushed it
	corrupted map[v1.Hash]bool  // blobs whose stored bytes were replaced
}

var shared = &harness{owners: map[string]string{}, corrupted: map[v1.Hash]bool{}}

func (h *harness) start(t testscript.T) ([]string, error) {
	h.once.Do(func() {
		start := time.Now()
		h.err = h.seed()
		t.Log(fmt.Sprintf("registry %s seeded in %.1fs: %v", h.addr(), time.Since(start).Seconds(), h.env))
	})
	return h.env, h.err
}

func (h *harness) addr() string {
	if h.srv == nil {
		return "(none)"
	}
	return h.srv.Addr()
}

func (h *harness) seed() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var err error
	if h.dir, err = os.MkdirTemp("", "racker-test-registry-"); err != nil {
		return err
	}
	if h.srv, err = testregistry.Start(ctx, h.dir); err != nil {
		return err
	}
	h.env = append(h.env, "REGISTRY="+h.srv.Addr())

	// debian:bookworm-slim is, as on Docker Hub, an index: the real image for
	// this host plus a small one for another platform.
	cache := &testregistry.Cache{Dir: testenv.CacheDir()}
	layer, err := cache.Layer(ctx, testregistry.BookwormSlim)
	if errors.Is(err, testregistry.ErrNoMmdebstrap) {
		return nil // scripts that need it skip at [mmdebstrap]
	}
	if err != nil {
		return err
	}
	host, err := testregistry.NewImage(image.HostPlatform(), types.DockerManifestSchema2, layer)
	if err != nil {
		return err
	}
	otherLayer, err := specLayer("dir etc 0755\nfile etc/platform 0644 "+testregistry.OtherPlatform().String()+"\n", gzip.DefaultCompression, types.DockerLayer)
	if err != nil {
		return err
	}
	other, err := testregistry.NewImage(testregistry.OtherPlatform(), types.DockerManifestSchema2, otherLayer)
	if err != nil {
		return err
	}
	idx, err := testregistry.NewIndex(host, other)
	if err != nil {
		return err
	}
	idxDigest, err := h.srv.WriteIndex(ctx, "library/debian:bookworm-slim", idx)
	if err != nil {
		return err
	}
	hostDigest, _ := host.Digest()
	otherDigest, _ := other.Digest()
	h.env = append(h.env,
		"DEBIAN_DIGEST="+hostDigest.String(),
		"DEBIAN_HEX="+hostDigest.Hex,
		"DEBIAN_INDEX_DIGEST="+idxDigest.String(),
		"DEBIAN_OTHER_DIGEST="+otherDigest.String(),
	)
	return nil
}

func (h *harness) close() {
	if h.srv != nil {
		h.srv.Close()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
}

// server returns the registry, failing the script if it has none.
func (h *harness) server(ts *testscript.TestScript) *testregistry.Server {
	if ts.Getenv("REGISTRY") == "" || h.srv == nil {
		ts.Fatalf("no registry for this script: start it with a [registry] condition, e.g. `[!registry] skip`")
	}
	return h.srv
}

// claim records that script pushes ref, and fails if another script did:
// scripts run in parallel against one registry.
func (h *harness) claim(ref, script string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if other, ok := h.owners[ref]; ok && other != script {
		return fmt.Errorf("%s was already pushed by script %s: use another name", ref, other)
	}
	h.owners[ref] = script
	return nil
}

func specLayer(spec string, level int, mt types.MediaType) (*testregistry.MemLayer, error) {
	entries, err := testregistry.ParseSpec(spec, nil)
	if err != nil {
		return nil, err
	}
	data, err := testregistry.WriteTar(entries)
	if err != nil {
		return nil, err
	}
	return testregistry.NewMemLayer(data, level, mt)
}

// mkimage [--corrupt-layer=N] [--platform=OS/ARCH[/VARIANT]] REF LAYER...
//
// Pushes to the script's registry an OCI image whose layers are built from
// the LAYER files, in order: layer specs (see testregistry.SpecDoc; $VARs in
// names and targets expand from the script's environment) or, for names
// ending in .tar, raw tar archives. REF is written as for docker
// ("name:tag" is docker.io/library/name:tag, which racker finds through
// $RACKER_REGISTRY_MIRRORS). Prints the manifest digest.
//
// --corrupt-layer=N replaces the stored bytes of layer N (from 1) with
// different bytes of the same length, a valid gzip of a valid tar, so only
// checking the digest reveals it. Layers shared with other images are
// corrupted for them too; mkimage refuses to reuse a corrupted blob.
func cmdMkimage(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "mkimage [--corrupt-layer=N] [--platform=OS/ARCH[/VARIANT]] REF LAYER..."
	if neg {
		ts.Fatalf("unsupported: ! mkimage")
	}
	fset := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	corrupt := fset.Int("corrupt-layer", 0, "")
	platformFlag := fset.String("platform", "", "")
	parseFlags(ts, fset, args, 2, -1, usage)
	ref, files := fset.Arg(0), fset.Args()[1:]
	if *corrupt < 0 || *corrupt > len(files) {
		ts.Fatalf("--corrupt-layer=%d: the image has layers 1 to %d\nusage: %s", *corrupt, len(files), usage)
	}
	hp := image.HostPlatform()
	platform := &hp
	var err error
	if *platformFlag != "" {
		platform, err = image.ParsePlatform(*platformFlag)
		ts.Check(err)
	}
	srv := shared.server(ts)
	ts.Check(shared.claim(ref, ts.Name()))

	var layers []v1.Layer
	var corruptTar []byte
	for i, file := range files {
		data := ts.ReadFile(file)
		var entries []testregistry.SpecEntry
		tarData := []byte(data)
		if !strings.HasSuffix(file, ".tar") {
			entries, err = testregistry.ParseSpec(data, ts.Getenv)
			if err != nil {
				ts.Fatalf("%s: %v", file, err)
			}
			tarData, err = testregistry.WriteTar(entries)
			ts.Check(err)
		}
		level := gzip.DefaultCompression
		if i+1 == *corrupt {
			if entries == nil {
				ts.Fatalf("--corrupt-layer=%d: %s is a raw tar; corrupting needs a layer spec", *corrupt, file)
			}
			bad, err := testregistry.Corrupt(entries)
			if err != nil {
				ts.Fatalf("%s: %v", file, err)
			}
			corruptTar, err = testregistry.WriteTar(bad)
			ts.Check(err)
			// Stored deflate blocks: the same tar length gives the same
			// gzip length.
			level = gzip.NoCompression
		}
		l, err := testregistry.NewMemLayer(tarData, level, types.OCILayer)
		ts.Check(err)
		d, _ := l.Digest()
		shared.mu.Lock()
		bad := shared.corrupted[d]
		shared.mu.Unlock()
		if bad {
			ts.Fatalf("%s: the same layer was corrupted by --corrupt-layer in another image; change its content", file)
		}
		layers = append(layers, l)
	}
	img, err := testregistry.NewImage(*platform, types.OCIManifestSchema1, layers...)
	ts.Check(err)
	ctx, cancel := commandContext()
	defer cancel()
	digest, err := srv.Write(ctx, ref, img)
	ts.Check(err)
	if *corrupt > 0 {
		l := layers[*corrupt-1].(*testregistry.MemLayer)
		bad, err := testregistry.NewMemLayer(corruptTar, gzip.NoCompression, types.OCILayer)
		ts.Check(err)
		d, _ := l.Digest()
		shared.mu.Lock()
		shared.corrupted[d] = true
		shared.mu.Unlock()
		ts.Check(srv.ReplaceBlob(d, bad.Gzip))
		ts.Logf("layer %d (%s) now serves different bytes of the same length", *corrupt, d)
	}
	fmt.Fprintln(ts.Stdout(), digest)
}

// cmpimage [--platform=OS/ARCH[/VARIANT]] REF ROOTFS
//
// Fetches REF (written as for docker) from the script's registry with
// go-containerregistry, flattens it, and compares it with the directory
// ROOTFS entry by entry (see testregistry.Compare). Fails listing up to 20
// differences; with !, fails if there are none.
func cmdCmpimage(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "cmpimage [--platform=OS/ARCH[/VARIANT]] REF ROOTFS"
	fset := flag.NewFlagSet("cmpimage", flag.ContinueOnError)
	platformFlag := fset.String("platform", "", "")
	parseFlags(ts, fset, args, 2, 2, usage)
	var platform *v1.Platform // nil: the host's
	if *platformFlag != "" {
		var err error
		platform, err = image.ParsePlatform(*platformFlag)
		ts.Check(err)
	}
	ref, rootfs := fset.Arg(0), ts.MkAbs(fset.Arg(1))
	if st, err := os.Stat(rootfs); err != nil || !st.IsDir() {
		ts.Fatalf("cmpimage: %s is not a directory", rootfs)
	}
	srv := shared.server(ts)
	ctx, cancel := commandContext()
	defer cancel()
	img, err := srv.Image(ctx, ref, platform)
	ts.Check(err)
	diffs, err := testregistry.Compare(ctx, img, rootfs)
	ts.Check(err)
	switch {
	case neg && len(diffs) == 0:
		ts.Fatalf("%s and %s do not differ", ref, rootfs)
	case neg:
		ts.Logf("%d differences, as expected; first: %s", len(diffs), diffs[0])
	case len(diffs) > 0:
		shown := diffs[:min(len(diffs), 20)]
		more := ""
		if len(diffs) > len(shown) {
			more = fmt.Sprintf("\n... and %d more", len(diffs)-len(shown))
		}
		ts.Fatalf("%s and %s differ in %d entries:\n%s%s", ref, rootfs, len(diffs), strings.Join(shown, "\n"), more)
	}
}

// closedport VAR
//
// Sets VAR to 127.0.0.1:PORT for a port that nothing listens on, for
// "registry unreachable" cases.
func cmdClosedport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: closedport VAR")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	addr := l.Addr().String()
	ts.Check(l.Close())
	ts.Setenv(args[0], addr)
}
