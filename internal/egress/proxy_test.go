package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/transfer"
)

// upstream is a repository server that counts requests per path.
type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	hits  map[string]int
	conds map[string]int // requests carrying If-None-Match or If-Modified-Since
	etag  atomic.Value   // current ETag of /dists/InRelease
	body  atomic.Value   // current body of /dists/InRelease
	delay time.Duration  // before answering pool files
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{hits: map[string]int{}, conds: map[string]int{}}
	u.etag.Store(`"v1"`)
	u.body.Store("release v1")
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits[r.URL.Path]++
		if r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
			u.conds[r.URL.Path]++
		}
		u.mu.Unlock()
		switch {
		case strings.HasPrefix(r.URL.Path, "/pool/"):
			time.Sleep(u.delay)
			w.Header().Set("Content-Type", "application/vnd.debian.binary-package")
			fmt.Fprintf(w, "package %s", r.URL.Path)
		case r.URL.Path == "/dists/InRelease":
			etag := u.etag.Load().(string)
			w.Header().Set("ETag", etag)
			w.Header().Set("Last-Modified", "Mon, 30 Nov 2026 10:00:00 GMT")
			if r.Header.Get("If-None-Match") == etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			io.WriteString(w, u.body.Load().(string))
		case r.URL.Path == "/pool-broken/x.deb":
			// Promises 1000 bytes, sends 10, hangs up.
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "0123456789")
			w.(http.Flusher).Flush()
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		case r.URL.Path == "/reset":
			c, _, _ := w.(http.Hijacker).Hijack()
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, "http://mirror.invalid/pool/x.deb", http.StatusFound)
		case r.URL.Path == "/redirect-local":
			http.Redirect(w, r, "http://127.0.0.2:1/", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count(path string) (hits, conds int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[path], u.conds[path]
}

// startProxy serves p on the loopback and returns a client using it.
func startProxy(t *testing.T, p *Proxy) *http.Client {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l)
	t.Cleanup(func() { p.Close() })
	pu, _ := url.Parse("http://" + l.Addr().String())
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

func allow(rules ...string) Allowlist {
	var a Allowlist
	for _, r := range rules {
		rule, err := ParseRule(r)
		if err != nil {
			panic(err)
		}
		a.Add(rule)
	}
	return a
}

func get(t *testing.T, c *http.Client, u string) (int, string, http.Header) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading: %v", u, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestProxyRefusesHostsNotAllowed(t *testing.T) {
	up := newUpstream(t)
	p := &Proxy{Allow: allow("deb.debian.org")}
	c := startProxy(t, p)
	code, body, h := get(t, c, up.URL+"/pool/a.deb")
	host := strings.TrimPrefix(up.URL, "http://")
	if code != http.StatusForbidden || !strings.Contains(body, host) || !strings.Contains(body, "--allow-host=127.0.0.1") || h.Get("X-Postroj-Refused") != host {
		t.Fatalf("got %d %q %v, want 403 naming %s and --allow-host", code, body, h, host)
	}
	get(t, c, up.URL+"/pool/b.deb")
	if n, _ := up.count("/pool/a.deb"); n != 0 {
		t.Fatal("a refused request reached upstream")
	}
	rec := p.Record()
	if len(rec.Refused) != 1 || rec.Refused[0].Host != host || rec.Refused[0].Requests != 2 || rec.Refused[0].Example != up.URL+"/pool/a.deb" {
		t.Fatalf("refused = %+v", rec.Refused)
	}
	// CONNECT too.
	resp, err := c.Get("https://example.invalid:8443/")
	if err == nil {
		resp.Body.Close()
		t.Fatal("CONNECT to a host not allowed succeeded")
	}
	if got := p.Record().RefusedHosts(); len(got) != 2 || got[1] != "example.invalid:8443" {
		t.Fatalf("refused hosts %v", got)
	}
}

func TestProxyCachesPackagesAndRevalidatesIndexes(t *testing.T) {
	up := newUpstream(t)
	cache := &Cache{Dir: t.TempDir()}
	p := &Proxy{Allow: allow("127.0.0.1"), Cache: cache}
	c := startProxy(t, p)

	for i := 0; i < 2; i++ {
		code, body, _ := get(t, c, up.URL+"/pool/main/w/webfs.deb")
		if code != 200 || body != "package /pool/main/w/webfs.deb" {
			t.Fatalf("got %d %q", code, body)
		}
	}
	if n, _ := up.count("/pool/main/w/webfs.deb"); n != 1 {
		t.Fatalf("upstream asked %d times for a package file, want 1", n)
	}
	for i := 0; i < 2; i++ {
		if _, body, _ := get(t, c, up.URL+"/dists/InRelease"); body != "release v1" {
			t.Fatalf("InRelease %q", body)
		}
	}
	if n, conds := up.count("/dists/InRelease"); n != 2 || conds != 1 {
		t.Fatalf("InRelease: %d requests, %d conditional; want 2, 1 (an index is revalidated)", n, conds)
	}
	// A changed index is fetched again, never served stale.
	up.etag.Store(`"v2"`)
	up.body.Store("release v2")
	if _, body, _ := get(t, c, up.URL+"/dists/InRelease"); body != "release v2" {
		t.Fatalf("after the change: %q", body)
	}
	// Not cacheable: passed through every time.
	get(t, c, up.URL+"/other")
	get(t, c, up.URL+"/other")
	if n, _ := up.count("/other"); n != 2 {
		t.Fatalf("/other asked %d times", n)
	}
	var states []string
	for _, q := range p.Record().Requests {
		states = append(states, q.Cache)
	}
	want := []string{CacheMiss, CacheHit, CacheMiss, CacheRevalidated, CacheMiss, "", ""}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Fatalf("cache states %q, want %q", states, want)
	}
	// Another proxy (another container) on the same cache hits too.
	p2 := &Proxy{Allow: allow("127.0.0.1"), Cache: cache}
	c2 := startProxy(t, p2)
	get(t, c2, up.URL+"/pool/main/w/webfs.deb")
	if p2.Record().Hits(CacheHit) != 1 {
		t.Fatalf("second proxy: %+v", p2.Record().Requests)
	}
}

func TestProxyFetchesOnceForConcurrentClients(t *testing.T) {
	up := newUpstream(t)
	up.delay = 200 * time.Millisecond
	p := &Proxy{Allow: allow("127.0.0.1"), Cache: &Cache{Dir: t.TempDir()}}
	c := startProxy(t, p)
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, body, _ := get(t, c, up.URL+"/pool/big.deb"); body != "package /pool/big.deb" {
				t.Errorf("got %q", body)
			}
		}()
	}
	wg.Wait()
	if n, _ := up.count("/pool/big.deb"); n != 1 {
		t.Fatalf("upstream asked %d times, want 1", n)
	}
}

func TestProxyNeverStoresTruncatedFiles(t *testing.T) {
	up := newUpstream(t)
	cache := &Cache{Dir: t.TempDir()}
	// Each request is resumed upstream until its attempts run out.
	p := &Proxy{Allow: allow("127.0.0.1"), Cache: cache, Retry: transfer.Policy{Base: time.Millisecond}}
	c := startProxy(t, p)
	for i := 0; i < 2; i++ {
		resp, err := c.Get(up.URL + "/pool-broken/x.deb")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatal("a truncated body looked complete to the client")
		}
	}
	if n, _ := up.count("/pool-broken/x.deb"); n != 2*transfer.DefaultAttempts {
		t.Fatalf("upstream asked %d times, want %d: nothing may be cached", n, 2*transfer.DefaultAttempts)
	}
	if n, _ := cache.Entries(); n != 0 {
		t.Fatalf("%d cache entries after truncated downloads", n)
	}
	if f := p.Record().Failures; len(f) != 1 || f[0].Requests != 2 || !strings.Contains(f[0].Error, "closed") {
		t.Fatalf("failures %+v", f)
	}
}

func TestProxyUpstreamFailures(t *testing.T) {
	up := newUpstream(t)
	p := &Proxy{Allow: allow("*", "127.0.0.1:1", "127.0.0.1")}
	c := startProxy(t, p)
	code, body, _ := get(t, c, up.URL+"/reset")
	if code != http.StatusBadGateway || !strings.Contains(body, "127.0.0.1") {
		t.Fatalf("reset: %d %q, want 502 naming the host", code, body)
	}
	code, body, _ = get(t, c, "http://127.0.0.1:1/x")
	if code != http.StatusBadGateway || !strings.Contains(body, "connection refused") {
		t.Fatalf("refused: %d %q", code, body)
	}
	hosts := map[string]string{}
	for _, f := range p.Record().Failures {
		hosts[f.Host] = f.Error
	}
	if len(hosts) != 2 || hosts["127.0.0.1:1"] != "connection refused" {
		t.Fatalf("failures %v", hosts)
	}
}

func TestProxyKeepsContainersOffTheHostLoopback(t *testing.T) {
	up := newUpstream(t)
	p := &Proxy{Allow: allow("*")}
	c := startProxy(t, p)
	code, body, _ := get(t, c, up.URL+"/pool/a.deb")
	if code != http.StatusBadGateway || !strings.Contains(body, "loopback") {
		t.Fatalf("'*' reached the host's loopback: %d %q", code, body)
	}
	code, body, _ = get(t, c, strings.Replace(up.URL, "127.0.0.1", "localhost", 1)+"/pool/a.deb")
	if code != http.StatusBadGateway || !strings.Contains(body, "loopback") {
		t.Fatalf("localhost: %d %q", code, body)
	}
	if n, _ := up.count("/pool/a.deb"); n != 0 {
		t.Fatal("upstream on the loopback was reached")
	}
}

func TestProxyRedirectsAllowTheirTarget(t *testing.T) {
	up := newUpstream(t)
	p := &Proxy{Allow: allow("127.0.0.1")}
	c := startProxy(t, p)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if code, _, _ := get(t, c, up.URL+"/redirect"); code != http.StatusFound {
		t.Fatalf("redirect: %d", code)
	}
	if !p.allows("mirror.invalid", "80") {
		t.Fatal("a redirect from an allowed host did not allow its target")
	}
	get(t, c, up.URL+"/redirect-local")
	if p.allows("127.0.0.2", "1") {
		t.Fatal("a redirect opened the host's loopback")
	}
}

func TestProxyTunnels(t *testing.T) {
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret")
	}))
	defer tlsSrv.Close()
	p := &Proxy{Allow: allow("127.0.0.1")}
	c := startProxy(t, p)
	code, body, _ := get(t, c, tlsSrv.URL)
	if code != 200 || body != "secret" {
		t.Fatalf("through CONNECT: %d %q", code, body)
	}
	rec := p.Record()
	if len(rec.Requests) != 1 || rec.Requests[0].Method != "CONNECT" || rec.Requests[0].Cache != "" {
		t.Fatalf("requests %+v", rec.Requests)
	}
}

func TestProxyRejectsNonProxyRequests(t *testing.T) {
	p := &Proxy{Allow: allow("*")}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go p.Serve(l)
	defer p.Close()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("%v %v", resp, err)
	}
}

func TestCacheSweepsWhatKilledDownloadsLeft(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	dead, busy := c.entry("http://a/x.deb"), c.entry("http://a/y.deb")
	for _, e := range []entry{dead, busy} {
		os.MkdirAll(e.dir, 0o755)
		os.WriteFile(filepath.Join(e.dir, e.key+".abc.part"), []byte("half"), 0o644)
	}
	unlock, err := flock.Lock(context.Background(), busy.lockPath(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	c.Sweep()
	if _, err := os.Stat(filepath.Join(dead.dir, dead.key+".abc.part")); !os.IsNotExist(err) {
		t.Error("a dead download's file is still there")
	}
	if _, err := os.Stat(filepath.Join(busy.dir, busy.key+".abc.part")); err != nil {
		t.Error("a download in progress lost its file")
	}
}

func TestProxyCloseEndsDownloadsInProgress(t *testing.T) {
	started := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(http.StatusOK)
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	defer slow.Close()
	cache := &Cache{Dir: t.TempDir()}
	p := &Proxy{Allow: allow("127.0.0.1"), Cache: cache}
	c := startProxy(t, p)
	go func() {
		if resp, err := c.Get(slow.URL + "/pool/slow.deb"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-started
	p.Close()
	parts, _ := filepath.Glob(filepath.Join(cache.Dir, "*", "*.part"))
	if n, _ := cache.Entries(); n != 0 || len(parts) != 0 {
		t.Fatalf("after Close: %d entries, unfinished files %v", n, parts)
	}
}

func TestProxyUpstreamTimeout(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer hang.Close()
	p := &Proxy{Allow: allow("127.0.0.1"), HeaderTimeout: 200 * time.Millisecond}
	c := startProxy(t, p)
	code, body, _ := get(t, c, hang.URL+"/dists/InRelease")
	if code != http.StatusBadGateway || !strings.Contains(body, "timed out") {
		t.Fatalf("got %d %q, want 502 saying it timed out", code, body)
	}
	if f := p.Record().Failures; len(f) != 1 || !strings.Contains(f[0].Error, "timed out") {
		t.Fatalf("failures %+v", f)
	}
}
