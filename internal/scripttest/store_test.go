package scripttest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/rogpeppe/go-internal/testscript"
)

// rootfs VAR DIGEST
//
// Sets VAR to where racker keeps the unpacked tree of the manifest DIGEST:
// $RACKER_ROOT/images/sha256/HEX/rootfs. It does not check that it exists.
func cmdRootfs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: rootfs VAR DIGEST")
	}
	h, err := v1.NewHash(args[1])
	if err != nil {
		ts.Fatalf("rootfs: %v\nusage: rootfs VAR DIGEST", err)
	}
	root := ts.Getenv("RACKER_ROOT")
	if root == "" {
		ts.Fatalf("rootfs: RACKER_ROOT is not set")
	}
	ts.Setenv(args[0], filepath.Join(root, "images", h.Algorithm, h.Hex, "rootfs"))
}

var nameUnsafe = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// warm holds the template stores of warmstore, built once per test process
// in a temporary directory that is removed when the tests end.
var warm = &warmStores{stores: map[string]*warmStore{}}

type warmStores struct {
	mu     sync.Mutex
	dir    string
	stores map[string]*warmStore
}

type warmStore struct {
	once sync.Once
	root string
	err  error
}

func (w *warmStores) get(image string) (*warmStore, string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dir == "" {
		dir, err := os.MkdirTemp("", "racker-test-warm-")
		if err != nil {
			return nil, "", err
		}
		w.dir = dir
	}
	s, ok := w.stores[image]
	if !ok {
		s = &warmStore{}
		w.stores[image] = s
	}
	return s, w.dir, nil
}

func (w *warmStores) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dir != "" {
		os.RemoveAll(w.dir)
	}
}

// warmstore IMAGE
//
// Puts IMAGE (written as for docker), pulled from the script's registry and
// prepared for booting, into $RACKER_ROOT, which must not hold it yet. The
// first script to ask for IMAGE makes a template store with the real
// racker (`racker --root TEMPLATE run --rm IMAGE true`: pull, real apt-get,
// boot); every script then gets a copy made of hard links (cp -al), which
// takes a fraction of a second. Containers never write to a stored tree
// (they boot on a volatile overlay), so the copies cannot affect each
// other. Templates live in a temporary directory of this test process and
// are made anew by every `go test` run: preparation is exercised each time.
func cmdWarmstore(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: warmstore IMAGE")
	}
	image := args[0]
	shared.server(ts)
	s, dir, err := warm.get(image)
	ts.Check(err)
	s.once.Do(func() {
		start := time.Now()
		s.root = filepath.Join(dir, "store-"+nameUnsafe.ReplaceAllString(image, "-"))
		s.err = buildWarmStore(s.root, filepath.Join(dir, "home"), image, ts.Getenv("RACKER_REGISTRY_MIRRORS"))
		ts.Logf("warmstore: made the template store of %s in %.1fs", image, time.Since(start).Seconds())
	})
	if s.err != nil {
		ts.Fatalf("warmstore %s: %v", image, s.err)
	}
	dest := ts.Getenv("RACKER_ROOT")
	ts.Check(os.MkdirAll(dest, 0o700))
	ctx, cancel := commandContext()
	defer cancel()
	for _, d := range []string{"images", "refs"} {
		out, err := exec.CommandContext(ctx, "cp", "-al", filepath.Join(s.root, d), dest+"/").CombinedOutput()
		if err != nil {
			ts.Fatalf("warmstore %s: copying %s: %v: %s", image, d, err, out)
		}
	}
}

// buildWarmStore pulls and prepares image into the store root.
func buildWarmStore(root, home, image, mirrors string) error {
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "racker", "--root", root, "run", "--rm", "--quiet", image, "true")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RACKER_") && !strings.HasPrefix(kv, "HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+home, "RACKER_REGISTRY_MIRRORS="+mirrors)
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("racker --root %s run --rm %s true: %v\n%s", root, image, err, out)
	}
	prepared, _ := filepath.Glob(filepath.Join(root, "images", "sha256", "*", "prepared", "prepared.json"))
	if len(prepared) == 0 {
		return fmt.Errorf("racker run %s left no prepared tree in %s", image, root)
	}
	return nil
}
