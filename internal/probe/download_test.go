package probe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/transfer"
)

// pkgServer serves package files with ETag and Last-Modified, Range and
// conditional requests (http.ServeContent), and can misbehave on request.
type pkgServer struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	etags    map[string]string
	requests []*http.Request
	// dropAfter, when > 0, makes the next full or partial answer stop
	// after that many body bytes and close the connection (once).
	dropAfter int
	// ignoreRange answers every request with the whole file (200).
	ignoreRange bool
	// badRange answers Range requests with a 206 for the wrong bytes.
	badRange bool
	// status, when set, is the answer to every request.
	status int
	body   string
	ctype  string
}

func newPkgServer(t *testing.T) *pkgServer {
	s := &pkgServer{files: map[string][]byte{}, etags: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *pkgServer) put(name string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[name] = data
	sum := sha256.Sum256(data)
	s.etags[name] = `"` + hex.EncodeToString(sum[:6]) + `"`
}

func (s *pkgServer) seen() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.requests...)
}

func (s *pkgServer) last() *http.Request {
	r := s.seen()
	return r[len(r)-1]
}

var modTime = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func (s *pkgServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Clone(context.Background()))
	data, ok := s.files[r.URL.Path]
	etag := s.etags[r.URL.Path]
	drop := s.dropAfter
	s.dropAfter = 0
	ignoreRange, badRange, status, body, ctype := s.ignoreRange, s.badRange, s.status, s.body, s.ctype
	s.mu.Unlock()

	if status != 0 {
		if ctype != "" {
			w.Header().Set("Content-Type", ctype)
		}
		w.WriteHeader(status)
		fmt.Fprint(w, body)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	if badRange && r.Header.Get("Range") != "" {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data)
		return
	}
	w.Header().Set("ETag", etag)
	if ignoreRange {
		r.Header.Del("Range")
	}
	if drop > 0 {
		w = &dropWriter{ResponseWriter: w, left: drop}
	}
	http.ServeContent(w, r, "", modTime, bytes.NewReader(data))
	if dw, ok := w.(*dropWriter); ok && dw.dropped {
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
}

// dropWriter passes on left body bytes, then swallows the rest.
type dropWriter struct {
	http.ResponseWriter
	left    int
	dropped bool
}

func (d *dropWriter) Write(p []byte) (int, error) {
	if len(p) > d.left {
		d.ResponseWriter.Write(p[:d.left])
		d.left = 0
		d.dropped = true
		if f, ok := d.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		return 0, errors.New("dropped")
	}
	d.left -= len(p)
	return d.ResponseWriter.Write(p)
}

func testCache(t *testing.T) *Cache {
	return &Cache{Dir: filepath.Join(t.TempDir(), "downloads"), Retry: transfer.Policy{Attempts: 1, Base: time.Millisecond}}
}

func tryFetch(t *testing.T, c *Cache, src string) (Package, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Fetch(ctx, src)
}

func mustFetch(t *testing.T, c *Cache, src string) Package {
	t.Helper()
	pkg, err := tryFetch(t, c, src)
	if err != nil {
		t.Fatalf("Fetch(%s): %v", src, err)
	}
	return pkg
}

func checkContent(t *testing.T, pkg Package, want []byte) {
	t.Helper()
	got, err := os.ReadFile(pkg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s holds %d bytes, want the %d served", pkg.Path, len(got), len(want))
	}
	sum := sha256.Sum256(want)
	if pkg.SHA256 != hex.EncodeToString(sum[:]) || pkg.Size != int64(len(want)) {
		t.Errorf("package says sha256 %s size %d, want %x %d", pkg.SHA256, pkg.Size, sum, len(want))
	}
}

func TestFetchRevalidatesWithETag(t *testing.T) {
	srv := newPkgServer(t)
	deb := fakeDeb(strings.Repeat("a", 5000))
	srv.put("/pool/webfs_1.21_amd64.deb", deb)
	c := testCache(t)
	url := srv.URL + "/pool/webfs_1.21_amd64.deb"

	pkg := mustFetch(t, c, url)
	if pkg.How != "downloaded" || pkg.Type != Deb || pkg.Name != "webfs_1.21_amd64.deb" || pkg.Transferred != int64(len(deb)) {
		t.Fatalf("first fetch: %+v", pkg)
	}
	checkContent(t, pkg, deb)

	pkg2 := mustFetch(t, c, url)
	if pkg2.How != "cached: not modified" || pkg2.Transferred != 0 || pkg2.Path != pkg.Path {
		t.Fatalf("second fetch: %+v", pkg2)
	}
	if got := srv.last().Header.Get("If-None-Match"); got != srv.etags["/pool/webfs_1.21_amd64.deb"] {
		t.Errorf("second request had If-None-Match %q, want the ETag", got)
	}
	if srv.last().Header.Get("If-Modified-Since") == "" {
		t.Errorf("second request had no If-Modified-Since")
	}

	// A new version behind the same URL replaces the cached one.
	deb2 := fakeDeb(strings.Repeat("b", 7000))
	srv.put("/pool/webfs_1.21_amd64.deb", deb2)
	pkg3 := mustFetch(t, c, url)
	if pkg3.How != "downloaded" {
		t.Fatalf("after a change: %+v", pkg3)
	}
	checkContent(t, pkg3, deb2)
}

func TestFetchResumesWithRange(t *testing.T) {
	srv := newPkgServer(t)
	deb := fakeDeb(strings.Repeat("r", 100000))
	srv.put("/x.deb", deb)
	c := testCache(t)

	srv.dropAfter = 30000
	_, err := tryFetch(t, c, srv.URL+"/x.deb")
	var de *DownloadError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "dropped after 30.0 kB of x.deb (1 attempt)") {
		t.Fatalf("interrupted fetch: %v, want a DownloadError saying it broke off", err)
	}

	pkg := mustFetch(t, c, srv.URL+"/x.deb")
	if pkg.How != "resumed" || pkg.Transferred != int64(len(deb)-30000) {
		t.Fatalf("resumed fetch: how %q, transferred %d; want resumed, %d", pkg.How, pkg.Transferred, len(deb)-30000)
	}
	req := srv.last()
	if got := req.Header.Get("Range"); got != "bytes=30000-" {
		t.Errorf("Range %q, want bytes=30000-", got)
	}
	if got := req.Header.Get("If-Range"); got != srv.etags["/x.deb"] {
		t.Errorf("If-Range %q, want the ETag", got)
	}
	checkContent(t, pkg, deb)
}

func TestFetchResumesWithinOneCall(t *testing.T) {
	srv := newPkgServer(t)
	deb := fakeDeb(strings.Repeat("w", 80000))
	srv.put("/x.deb", deb)
	c := testCache(t)
	c.Retry.Attempts = 3
	srv.dropAfter = 10000
	pkg := mustFetch(t, c, srv.URL+"/x.deb")
	if pkg.How != "resumed" || len(srv.seen()) != 2 {
		t.Fatalf("how %q after %d requests, want resumed after 2", pkg.How, len(srv.seen()))
	}
	checkContent(t, pkg, deb)
}

func TestFetchRestartsOn200ToRange(t *testing.T) {
	srv := newPkgServer(t)
	deb := fakeDeb(strings.Repeat("z", 60000))
	srv.put("/x.deb", deb)
	c := testCache(t)
	srv.dropAfter = 20000
	if _, err := tryFetch(t, c, srv.URL+"/x.deb"); err == nil {
		t.Fatal("interrupted fetch succeeded")
	}
	srv.ignoreRange = true
	pkg := mustFetch(t, c, srv.URL+"/x.deb")
	if srv.last().Header.Get("Range") == "" {
		t.Fatal("second request did not ask for a range")
	}
	if pkg.How != "downloaded" || pkg.Transferred != int64(len(deb)) {
		t.Fatalf("how %q transferred %d, want a whole new download", pkg.How, pkg.Transferred)
	}
	checkContent(t, pkg, deb) // not the first 20000 bytes twice
}

func TestFetchRestartsWhenFileChangedMeanwhile(t *testing.T) {
	srv := newPkgServer(t)
	srv.put("/x.deb", fakeDeb(strings.Repeat("1", 60000)))
	c := testCache(t)
	srv.dropAfter = 20000
	if _, err := tryFetch(t, c, srv.URL+"/x.deb"); err == nil {
		t.Fatal("interrupted fetch succeeded")
	}
	deb2 := fakeDeb(strings.Repeat("2", 50000))
	srv.put("/x.deb", deb2) // new ETag: If-Range fails, the server sends 200
	pkg := mustFetch(t, c, srv.URL+"/x.deb")
	if pkg.How != "downloaded" {
		t.Fatalf("how %q, want downloaded", pkg.How)
	}
	checkContent(t, pkg, deb2)
}

func TestFetchRestartsOnWrongContentRange(t *testing.T) {
	srv := newPkgServer(t)
	deb := fakeDeb(strings.Repeat("q", 60000))
	srv.put("/x.deb", deb)
	c := testCache(t)
	srv.dropAfter = 20000
	if _, err := tryFetch(t, c, srv.URL+"/x.deb"); err == nil {
		t.Fatal("interrupted fetch succeeded")
	}
	srv.badRange = true
	c.Retry.Attempts = 2
	pkg := mustFetch(t, c, srv.URL+"/x.deb")
	checkContent(t, pkg, deb)
}

func TestFetchPinnedSHA256(t *testing.T) {
	srv := newPkgServer(t)
	rpm := fakeRPM(strings.Repeat("p", 3000))
	srv.put("/grafana-8.5.1-1.x86_64.rpm", rpm)
	sum := sha256.Sum256(rpm)
	c := testCache(t)
	url := srv.URL + "/grafana-8.5.1-1.x86_64.rpm#sha256=" + strings.ToUpper(hex.EncodeToString(sum[:]))

	pkg := mustFetch(t, c, url)
	if pkg.Type != RPM || pkg.How != "downloaded" {
		t.Fatalf("first fetch: %+v", pkg)
	}
	n := len(srv.seen())
	pkg = mustFetch(t, c, url)
	if pkg.How != "cached: sha256 pinned" || len(srv.seen()) != n {
		t.Fatalf("second fetch: how %q after %d more requests, want no request", pkg.How, len(srv.seen())-n)
	}
	checkContent(t, pkg, rpm)

	bad := srv.URL + "/grafana-8.5.1-1.x86_64.rpm#sha256=" + strings.Repeat("0", 64)
	c2 := testCache(t)
	_, err := tryFetch(t, c2, bad)
	var de *DownloadError
	if !errors.As(err, &de) || !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), hex.EncodeToString(sum[:])) {
		t.Fatalf("mismatch: %v, want a DownloadError wrapping ErrChecksum naming the actual sum", err)
	}
	if entries := cacheFiles(t, c2); len(entries) != 0 {
		t.Errorf("a mismatching download stayed in the cache: %v", entries)
	}
}

// cacheFiles lists the files of the cache other than its lock and metadata.
func cacheFiles(t *testing.T, c *Cache) []string {
	var out []string
	filepath.WalkDir(c.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && d.Name() != ".lock" {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestFetchErrors(t *testing.T) {
	srv := newPkgServer(t)
	srv.put("/notes.txt", []byte("release notes\n"))
	srv.put("/page.deb", []byte("<!DOCTYPE html><html><body>Mirror maintenance</body></html>"))
	for _, tt := range []struct {
		name        string
		path        string
		status      int
		body, ctype string
		download    bool // *DownloadError, else *InputError
		wrapped     error
		status404   int
		msg         string
	}{
		{name: "404", path: "/missing.deb", download: true, status404: 404, msg: "server answered 404 Not Found"},
		{name: "500", path: "/x.deb", status: 500, body: "oops", download: true, status404: 500, msg: "500 Internal Server Error"},
		{name: "HTML page with 200", path: "/page.deb", download: true, wrapped: ErrHTMLPage, msg: "an HTML page"},
		{name: "HTML page as text/html", path: "/p.deb", status: 200, ctype: "text/html; charset=utf-8",
			body: "<html><head><title>Login</title></head></html>", download: true, wrapped: ErrHTMLPage, msg: "Content-Type text/html"},
		{name: "not a package", path: "/notes.txt", wrapped: ErrNotPackage, msg: `unknown content starting with "release notes\n"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv.status, srv.body, srv.ctype = tt.status, tt.body, tt.ctype
			defer func() { srv.status = 0 }()
			c := testCache(t)
			_, err := tryFetch(t, c, srv.URL+tt.path)
			var de *DownloadError
			var ie *InputError
			switch {
			case err == nil:
				t.Fatal("Fetch succeeded")
			case tt.download && !errors.As(err, &de):
				t.Fatalf("error %v (%T), want a DownloadError", err, err)
			case !tt.download && !errors.As(err, &ie):
				t.Fatalf("error %v (%T), want an InputError", err, err)
			case tt.wrapped != nil && !errors.Is(err, tt.wrapped):
				t.Fatalf("error %v does not wrap %v", err, tt.wrapped)
			case !strings.Contains(err.Error(), tt.msg):
				t.Fatalf("error %q does not say %q", err, tt.msg)
			}
			if de != nil && de.Status != tt.status404 && tt.status404 != 0 {
				t.Errorf("Status = %d, want %d", de.Status, tt.status404)
			}
			if files := cacheFiles(t, c); len(files) != 0 {
				t.Errorf("cache keeps %v after a failed download", files)
			}
		})
	}
}

func TestFetchOffline(t *testing.T) {
	srv := newPkgServer(t)
	deb := fakeDeb("offline")
	srv.put("/x.deb", deb)
	c := testCache(t)
	url := srv.URL + "/x.deb"
	mustFetch(t, c, url)
	srv.Close()

	pkg := mustFetch(t, c, url)
	if pkg.How != "cached: server unreachable" {
		t.Fatalf("how %q, want the cached copy", pkg.How)
	}
	checkContent(t, pkg, deb)

	_, err := tryFetch(t, testCache(t), url)
	var de *DownloadError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("uncached and unreachable: %v, want a DownloadError saying connection refused", err)
	}
}

func TestFetchLocal(t *testing.T) {
	dir := t.TempDir()
	deb := filepath.Join(dir, "hello_1.0_all.deb")
	os.WriteFile(deb, fakeDeb("local"), 0o644)
	notes := filepath.Join(dir, "notes.deb")
	os.WriteFile(notes, []byte("not a deb"), 0o644)
	c := testCache(t)

	for _, src := range []string{deb, "file://" + deb} {
		pkg := mustFetch(t, c, src)
		if pkg.How != "local" || pkg.Path != deb || pkg.Type != Deb || pkg.Name != "hello_1.0_all.deb" {
			t.Errorf("%s: %+v", src, pkg)
		}
	}
	if files := cacheFiles(t, c); len(files) != 0 {
		t.Errorf("local files were copied into the cache: %v", files)
	}
	for _, tt := range []struct{ src, msg string }{
		{filepath.Join(dir, "missing.deb"), "no such file"},
		{notes, "not a package"},
		{dir, "not a regular file"},
		{"ftp://example.org/x.deb", "unsupported URL scheme"},
		{"http://example.org/x.deb#md5=abc", "unexpected fragment #md5=abc"},
		{"http://example.org/x.deb#sha256=abc", "64 hex digits"},
	} {
		_, err := tryFetch(t, c, tt.src)
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: %v, want an InputError saying %q", tt.src, err, tt.msg)
		}
	}
}

func TestFetchConcurrentSameURL(t *testing.T) {
	srv := newPkgServer(t)
	deb := fakeDeb(strings.Repeat("c", 200000))
	srv.put("/x.deb", deb)
	c := testCache(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	pkgs := make([]Package, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pkgs[i], errs[i] = tryFetch(t, c, srv.URL+"/x.deb")
		}()
	}
	wg.Wait()
	downloads := 0
	for i := range 4 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		checkContent(t, pkgs[i], deb)
		if pkgs[i].How == "downloaded" {
			downloads++
		}
	}
	if downloads != 1 {
		t.Errorf("%d of 4 concurrent fetches downloaded, want 1 (the others revalidate)", downloads)
	}
}
