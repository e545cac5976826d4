package probe

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/aptlists"
	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/nspawn"
	"github.com/racker-postroj/racker/internal/rootfs"
)

// rootedMachine is a fake container whose root filesystem is a host
// directory, as Root gives a real one's.
type rootedMachine struct {
	*fakeUnits
	dir string
}

func (m rootedMachine) Root() (*rootfs.Root, error) { return rootfs.Open(m.dir) }

// aptContainer is a fake container whose apt-get update writes an
// InRelease and the Packages it lists (as apt would), and whose
// revalidating refresh exits with revalidated.
type aptContainer struct {
	rootedMachine
	revalidated int
	// silent makes the revalidating refresh get nothing through the proxy
	// and still exit 0, as an apt-get without APT::Update::Error-Mode does
	// when a fetch fails.
	silent  bool
	scripts []string // which scripts ran: refresh, revalidate, install
	listsAt []int    // how many files the lists directory held when each ran
	rec     egress.Record
}

func (c *aptContainer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return nil, errors.New("no network here")
}

func (c *aptContainer) Egress() ([]egress.Rule, egress.Record, bool) { return nil, c.rec, true }

// fetched records the InRelease as the proxy would have answered it.
func (c *aptContainer) fetched(status int) {
	c.rec.Requests = append(c.rec.Requests, egress.Request{Method: "GET", URL: "http://deb.debian.org/debian/dists/bookworm/InRelease", Status: status})
}

const lists = "var/lib/apt/lists"

func newAptContainer(t *testing.T, revalidated int) *aptContainer {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, lists, "partial"), 0o755)
	os.MkdirAll(filepath.Join(dir, "var/cache/apt"), 0o755)
	c := &aptContainer{rootedMachine: rootedMachine{fakeUnits: newFakeUnits(nil), dir: dir}, revalidated: revalidated}
	c.exec = func(p nspawn.Process) int {
		if p.Args[0] != "/bin/sh" {
			return 0
		}
		ents, _ := os.ReadDir(filepath.Join(dir, lists))
		c.listsAt = append(c.listsAt, len(ents))
		script := p.Args[2]
		switch {
		case strings.Contains(script, "Error-Mode=any"):
			c.scripts = append(c.scripts, "revalidate")
			switch {
			case c.silent:
			case c.revalidated == 0:
				c.fetched(200)
			default:
				c.fetched(502)
			}
			return c.revalidated
		case strings.Contains(script, "apt-get update"):
			c.scripts = append(c.scripts, "refresh")
			c.fetched(200)
			packages := "Package: webfs\n\n"
			h := sha256.Sum256([]byte(packages))
			release := fmt.Sprintf("Origin: Debian\nSHA256:\n %x %d main/binary-amd64/Packages\n", h, len(packages))
			os.WriteFile(filepath.Join(dir, lists, "deb.debian.org_debian_dists_bookworm_InRelease"), []byte(release), 0o644)
			os.WriteFile(filepath.Join(dir, lists, "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"), []byte(packages), 0o644)
			os.WriteFile(filepath.Join(dir, "var/cache/apt/pkgcache.bin"), []byte("cache"), 0o644)
		default:
			c.scripts = append(c.scripts, "install")
		}
		return 0
	}
	return c
}

// indexProbe probes webfs in c with the index cache in dir and returns the
// install step.
func indexProbe(t *testing.T, dir string, c *aptContainer) *Step {
	t.Helper()
	root := fakeRoot(t, "usr/bin/apt-get")
	p := &Prober{
		Indexes: &aptlists.Cache{Dir: dir},
		Containers: fakeStarter(func(ctx context.Context, opts container.StartOptions) (Machine, error) {
			return c, nil
		}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := p.Run(ctx, Spec{Target: Target{Name: "debian-bookworm", Acquire: func(ctx context.Context) (Image, error) {
		return Image{Reference: "mirror.local/debian:bookworm", Digest: "sha256:" + strings.Repeat("1", 64), RootFS: root}, nil
	}}, Install: []string{"webfs"}})
	if err != nil || r.Result != Passed {
		t.Fatalf("probe %s, %v:\n%s", r.Result, err, steps(r))
	}
	return r.Steps[2]
}

// The first probe keeps the lists its refresh made, the second gets them
// back before its refresh, which revalidates them.
func TestIndexCacheKeepsAndPutsBack(t *testing.T) {
	dir := t.TempDir()
	first := newAptContainer(t, 0)
	s := indexProbe(t, dir, first)
	if got := strings.Join(first.scripts, " "); got != "refresh install" || s.IndexCache != "3 files kept" {
		t.Errorf("first probe ran %s, index cache %q", got, s.IndexCache)
	}
	second := newAptContainer(t, 0)
	s = indexProbe(t, dir, second)
	if got := strings.Join(second.scripts, " "); got != "revalidate install" || second.listsAt[0] != 3 {
		t.Errorf("second probe ran %s with %v files in the lists", got, second.listsAt)
	}
	if !strings.HasPrefix(s.IndexCache, "3 files put back (") || !strings.HasSuffix(s.IndexCache, "); unchanged") {
		t.Errorf("second probe: index cache %q", s.IndexCache)
	}
}

// Lists that cannot be revalidated are taken out again, and the refresh
// runs as without them.
func TestIndexCacheNotRevalidated(t *testing.T) {
	dir := t.TempDir()
	indexProbe(t, dir, newAptContainer(t, 0))
	c := newAptContainer(t, 100)
	s := indexProbe(t, dir, c)
	if got := strings.Join(c.scripts, " "); got != "revalidate refresh install" || c.listsAt[0] != 3 || c.listsAt[1] != 1 {
		t.Errorf("ran %s with %v files in the lists", got, c.listsAt)
	}
	if !strings.HasSuffix(s.IndexCache, "; not revalidated (status 100); refreshed without them; 3 files kept") {
		t.Errorf("index cache %q", s.IndexCache)
	}
}

// An apt-get that exits 0 without the proxy having answered it for a
// put-back release (too old to fail on a failed fetch) has not
// revalidated it: the lists are taken out again.
func TestIndexCacheNotAnswered(t *testing.T) {
	dir := t.TempDir()
	indexProbe(t, dir, newAptContainer(t, 0))
	c := newAptContainer(t, 0)
	c.silent = true
	s := indexProbe(t, dir, c)
	if got := strings.Join(c.scripts, " "); got != "revalidate refresh install" || c.listsAt[1] != 1 {
		t.Errorf("ran %s with %v files in the lists", got, c.listsAt)
	}
	if !strings.Contains(s.IndexCache, "; not revalidated (no answer through the proxy for deb.debian.org_debian_dists_bookworm_InRelease); refreshed without them; 3 files kept") {
		t.Errorf("index cache %q", s.IndexCache)
	}
}

// Without a private network (the package cache's proxy), a digest or apt,
// the index cache is not used.
func TestIndexCacheOnlyPrivate(t *testing.T) {
	c := newAptContainer(t, 0)
	p := &Prober{Indexes: &aptlists.Cache{Dir: t.TempDir()}, Network: container.NetworkHost}
	if ic := p.indexes(c, mustManager(t, "apt-get"), Image{Digest: "sha256:1", RootFS: t.TempDir()}, p.logger()); ic != nil {
		t.Errorf("index cache used under --network=host")
	}
	p.Network = ""
	if ic := p.indexes(c, mustManager(t, "apt-get"), Image{RootFS: t.TempDir()}, p.logger()); ic != nil {
		t.Errorf("index cache used without a digest")
	}
	if ic := p.indexes(c, mustManager(t, "dnf"), Image{Digest: "sha256:1", RootFS: t.TempDir()}, p.logger()); ic != nil {
		t.Errorf("index cache used for dnf")
	}
	ic := p.indexes(c, mustManager(t, "apt-get"), Image{Digest: "sha256:1", RootFS: t.TempDir()}, p.logger())
	if ic == nil {
		t.Fatalf("index cache not used with apt, a digest and a private network")
	}
	ic.close()
}

func mustManager(t *testing.T, name string) distro.Manager {
	m, ok := distro.LookupManager(name)
	if !ok {
		t.Fatalf("no manager %s", name)
	}
	return m
}
