package image_test

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/testregistry"
	"github.com/racker-postroj/racker/internal/transfer"
)

// retries records what a pull's progress was told about retries.
type retries struct {
	mu    sync.Mutex
	lines []string
}

func (r *retries) Start(string, []image.LayerInfo) {}
func (r *retries) Fetched(int, int64)              {}
func (r *retries) Unpacked(int)                    {}
func (r *retries) Retrying(i int, what string, rt transfer.Retry) {
	r.mu.Lock()
	r.lines = append(r.lines, what+": "+rt.String())
	r.mu.Unlock()
}

// faultyRegistry pushes a two-layer image (about 1 MB each) to an
// in-process registry and returns a reference to it through a fault proxy
// that follows rules.
func faultyRegistry(t *testing.T, rules ...string) (image.Reference, v1.Image, *testregistry.FaultProxy) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	img, err := random.Image(1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	up, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/x/y:1")
	if err := remote.Write(up, img); err != nil {
		t.Fatal(err)
	}
	rs, err := testregistry.ParseFaultRules(rules...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := testregistry.StartFaultProxy(srv.URL, rs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return image.MustParseReference(p.Addr() + "/x/y:1"), img, p
}

var fast = transfer.Policy{Base: time.Millisecond, Max: 5 * time.Millisecond, Stall: 200 * time.Millisecond}

func pull(t *testing.T, ref image.Reference) (*image.Store, image.PullResult, []string, error) {
	t.Helper()
	st, err := image.OpenStore(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &retries{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := st.Pull(ctx, ref, image.PullOptions{Retry: fast, Progress: rec, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
	return st, res, rec.lines, err
}

func TestPullSurvivesTransientFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []string
		retry string // a line the progress must have shown
	}{
		{name: "drop", rules: []string{"drop=300k@/blobs/"}, retry: "connection dropped at 300.0 kB, resuming (attempt 2/5)"},
		{name: "stall", rules: []string{"stall=300k@/blobs/"}, retry: "no bytes for 200ms at 300.0 kB, resuming (attempt 2/5)"},
		{name: "5xx and 429", rules: []string{"status=503@/manifests/", "2*status=500@/blobs/", "status=429,retry-after=0@/blobs/"},
			retry: "the manifest of PROXY/x/y:1: HTTP 503 Service Unavailable, retrying (attempt 2/5)"},
		{name: "200 to a Range", rules: []string{"drop=300k@/blobs/", "norange@/blobs/"}, retry: "restarting from the start"},
		{name: "long Content-Length", rules: []string{"length=1000@/blobs/sha256"}, retry: "does not match expected size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, img, p := faultyRegistry(t, tc.rules...)
			st, res, lines, err := pull(t, ref)
			if err != nil {
				t.Fatalf("pull: %v\nproxy: %q", err, p.Log())
			}
			want, _ := img.Digest()
			if res.Image.Digest != want.String() {
				t.Errorf("digest %s, want %s", res.Image.Digest, want)
			}
			if _, err := st.Lookup(ref); err != nil {
				t.Error(err)
			}
			all := strings.Join(lines, "\n")
			if w := strings.ReplaceAll(tc.retry, "PROXY", p.Addr()); !strings.Contains(all, w) {
				t.Errorf("progress lacks %q:\n%s", w, all)
			}
		})
	}
}

func TestPullFailsOnPersistentFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []string
		want  string
	}{
		{name: "drop", rules: []string{"**drop=100k@/blobs/sha256"},
			want: "pulling PROXY/x/y:1: connection to PROXY dropped after 500.0 kB of layer "},
		{name: "503 manifest", rules: []string{"**status=503@/manifests/"},
			want: "pulling PROXY/x/y:1: PROXY answered HTTP 503 Service Unavailable for the manifest (5 attempts)"},
		{name: "different bytes after a resume", rules: []string{"drop=300k@/blobs/", "**corrupt=0@/blobs/"},
			want: "error verifying sha256 checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, _, p := faultyRegistry(t, tc.rules...)
			st, _, _, err := pull(t, ref)
			want := strings.ReplaceAll(tc.want, "PROXY", p.Addr())
			if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v\nwant %q", err, want)
			}
			if imgs, _ := st.List(); len(imgs) != 0 {
				t.Errorf("images stored: %v", imgs)
			}
			for _, d := range []string{"tmp", "images/sha256"} {
				if es, _ := os.ReadDir(filepath.Join(st.Root, d)); len(es) != 0 {
					t.Errorf("%s not empty: %v", d, es)
				}
			}
		})
	}
}
