package transfer_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/testregistry"
	"github.com/racker-postroj/racker/internal/transfer"
)

var blob = func() []byte {
	b := make([]byte, 1<<20)
	rand.Read(b)
	return b
}()

// origin serves blob at /blob with ETag and Range support (http.ServeContent).
func origin(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"blob-v1"`)
		http.ServeContent(w, r, "blob", time.Unix(1700000000, 0), bytes.NewReader(blob))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// proxied returns a client whose requests to /blob go through a fault proxy
// with rules, and the log of retries it reported.
func proxied(t *testing.T, policy transfer.Policy, rules ...string) (*http.Client, string, *testregistry.FaultProxy, func() []transfer.Retry) {
	t.Helper()
	rs, err := testregistry.ParseFaultRules(rules...)
	if err != nil {
		t.Fatal(err)
	}
	p, err := testregistry.StartFaultProxy(origin(t).URL, rs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if policy.Base == 0 {
		policy.Base, policy.Max = time.Millisecond, 5*time.Millisecond
	}
	var mu sync.Mutex
	var retries []transfer.Retry
	tr := &transfer.Transport{Policy: policy, Notify: func(r transfer.Retry) {
		mu.Lock()
		retries = append(retries, r)
		mu.Unlock()
	}}
	return &http.Client{Transport: tr}, "http://" + p.Addr() + "/blob", p, func() []transfer.Retry {
		mu.Lock()
		defer mu.Unlock()
		return append([]transfer.Retry(nil), retries...)
	}
}

func get(t *testing.T, c *http.Client, url string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func TestTransientFaultsEndInTheSameBytes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rules  []string
		policy transfer.Policy
		// what the proxy saw and the first retry said
		log, retry string
		attempts   int
	}{
		{name: "drop", rules: []string{"drop=300k"}, log: "range=bytes=300000-1048575",
			retry: "connection dropped at 300.0 kB, resuming (attempt 2/5)", attempts: 2},
		{name: "drops", rules: []string{"3*drop=100k"}, log: "range=bytes=300000-1048575", attempts: 4},
		{name: "stall", rules: []string{"stall=200k"}, policy: transfer.Policy{Stall: 200 * time.Millisecond},
			log: "range=bytes=200000-1048575", retry: "no bytes for 200ms at 200.0 kB, resuming (attempt 2/5)", attempts: 2},
		{name: "stall before headers", rules: []string{"stall=0"}, policy: transfer.Policy{Stall: 200 * time.Millisecond},
			retry: "no bytes for 200ms at 0 B, retrying (attempt 2/5)", attempts: 2},
		{name: "500", rules: []string{"2*status=500"}, retry: "HTTP 500 Internal Server Error, retrying (attempt 2/5)", attempts: 3},
		{name: "200 to a Range", rules: []string{"drop=300k", "norange"}, log: "range=bytes=300000-1048575 norange", attempts: 2},
		{name: "long Content-Length", rules: []string{"length=1000"}, log: "range=bytes=1048576-", attempts: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, url, p, retries := proxied(t, tc.policy, tc.rules...)
			got, err := get(t, c, url)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, blob) {
				t.Fatalf("got %d bytes that differ from the %d served", len(got), len(blob))
			}
			log := strings.Join(p.Log(), "\n")
			if !strings.Contains(log, tc.log) {
				t.Errorf("proxy log lacks %q:\n%s", tc.log, log)
			}
			rs := retries()
			if n := len(p.Log()); n != tc.attempts {
				t.Errorf("%d requests, want %d:\n%s", n, tc.attempts, log)
			}
			if tc.retry != "" && (len(rs) == 0 || rs[0].String() != tc.retry) {
				t.Errorf("retries %v, want first %q", rs, tc.retry)
			}
		})
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	c, url, _, retries := proxied(t, transfer.Policy{}, "status=429,retry-after=1")
	t0 := time.Now()
	got, err := get(t, c, url)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if d := time.Since(t0); d < time.Second {
		t.Errorf("retried after %s, before the server's Retry-After of 1s", d)
	}
	if rs := retries(); len(rs) != 1 || rs[0].String() != "HTTP 429 Too Many Requests, retrying in 1s (attempt 2/5)" {
		t.Errorf("retries %v", rs)
	}
}

func TestPersistentFaultsEndInOneError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rules  []string
		policy transfer.Policy
		want   string
	}{
		{name: "drop", rules: []string{"**drop=100k"}, want: "connection to HOST dropped after 500.0 kB of the blob (5 attempts)"},
		{name: "stall", rules: []string{"**stall=100k"}, policy: transfer.Policy{Stall: 100 * time.Millisecond, Attempts: 2},
			want: "connection to HOST stalled (no bytes for 100ms) after 200.0 kB of the blob (2 attempts)"},
		{name: "503", rules: []string{"**status=503"}, want: "HOST answered HTTP 503 Service Unavailable for the blob (5 attempts)"},
		{name: "Retry-After past the bound", rules: []string{"**status=429,retry-after=3600"},
			want: "HOST answered HTTP 429 Too Many Requests for the blob (1 attempt; waiting 1h0m0s more would pass the 5m0s bound)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, url, p, _ := proxied(t, tc.policy, tc.rules...)
			_, err := get(t, c, url)
			var te *transfer.Error
			if !errors.As(err, &te) {
				t.Fatalf("err = %v, want a *transfer.Error", err)
			}
			want := strings.ReplaceAll(tc.want, "HOST", p.Addr())
			if got := te.Describe("the blob"); got != want {
				t.Errorf("error\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// A resume that brings different bytes is not the transport's to notice,
// but its caller sees them: digests decide.
func TestDifferentBytesAfterResumeReachTheCaller(t *testing.T) {
	c, url, _, _ := proxied(t, transfer.Policy{}, "drop=300k", "corrupt=0")
	got, err := get(t, c, url)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(blob) || !bytes.Equal(got[:300000], blob[:300000]) || bytes.Equal(got, blob) {
		t.Fatalf("want the first 300000 bytes intact and the rest different")
	}
}

// A server that is not there at all is not retried: that is no transient fault.
func TestUnreachableIsNotRetried(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	n := 0
	c := &http.Client{Transport: &transfer.Transport{Notify: func(transfer.Retry) { n++ }}}
	t0 := time.Now()
	if _, err := get(t, c, "http://"+addr+"/blob"); err == nil {
		t.Fatal("no error")
	}
	if n != 0 || time.Since(t0) > 2*time.Second {
		t.Errorf("%d retries in %s", n, time.Since(t0))
	}
}

// The first answer's validators decide whether a 200 to a Range request
// may be taken as the same content again.
func TestChangedContentAfterResumeFails(t *testing.T) {
	var mu sync.Mutex
	version := "v1"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		v := version
		version = "v2"
		mu.Unlock()
		w.Header().Set("ETag", `"`+v+`"`)
		w.Header().Set("Content-Length", "1048576")
		if v == "v1" {
			w.Write(blob[:1000])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Write(blob)
	}))
	defer srv.Close()
	c := &http.Client{Transport: &transfer.Transport{Policy: transfer.Policy{Base: time.Millisecond}}}
	_, err := get(t, c, srv.URL)
	if err == nil || !strings.Contains(err.Error(), "content changed") {
		t.Fatalf("err = %v, want the content changed", err)
	}
}

func TestHeadIsRetried(t *testing.T) {
	c, url, p, _ := proxied(t, transfer.Policy{}, "status=502")
	resp, err := c.Head(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(blob)) || len(p.Log()) != 2 {
		t.Errorf("HEAD: %s, length %d, log %q", resp.Status, resp.ContentLength, p.Log())
	}
}

func TestRetryAfterParses(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false}, {"7", 7 * time.Second, true}, {"-1", 0, false}, {"soon", 0, false},
		{"Tue, 01 Dec 2026 08:00:30 GMT", 30 * time.Second, true},
		{"Tue, 01 Dec 2026 07:00:00 GMT", 0, true},
	} {
		h := http.Header{}
		if tc.v != "" {
			h.Set("Retry-After", tc.v)
		}
		d, ok := transfer.RetryAfter(h, now)
		if d != tc.want || ok != tc.ok {
			t.Errorf("RetryAfter(%q) = %s, %v; want %s, %v", tc.v, d, ok, tc.want, tc.ok)
		}
	}
}

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	p := transfer.Policy{Base: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	for n, full := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 9: 400 * time.Millisecond} {
		for range 20 {
			if d := p.Backoff(n); d < full/2 || d > full {
				t.Fatalf("Backoff(%d) = %s, want within [%s, %s]", n, d, full/2, full)
			}
		}
	}
}
