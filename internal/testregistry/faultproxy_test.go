package testregistry

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseFaultRule(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "drop=20M@/blobs/", want: "drop=20000000@/blobs/ x1"},
		{in: "3*status=503", want: "status=503 x3"},
		{in: "status=429,retry-after=2", want: "status=429,retry-after=2 x1"},
		{in: "**stall=0@/manifests/", want: "stall=0@/manifests/ x0"},
		{in: "norange", want: "norange x1"},
		{in: "length=-1.5k", want: "length=-1500 x1"},
		{in: "corrupt=0", want: "corrupt=0 x1"},
		{in: "drop", err: "needs =BYTES"},
		{in: "explode=1", err: "unknown kind"},
		{in: "status=5000", err: "not an HTTP status"},
		{in: "0*drop=1", err: "bad count"},
		{in: "drop=1,retry-after=1", err: "unexpected option"},
		{in: "norange=1", err: "takes no argument"},
	} {
		r, err := ParseFaultRule(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := fmt.Sprintf("%s x%d", r, r.Uses); got != tc.want {
			t.Errorf("%q: %s, want %s", tc.in, got, tc.want)
		}
	}
}

// rawGet sends one request to addr and returns the status line, the
// announced Content-Length and the body bytes that arrived before the
// connection ended (or before timeout of silence).
func rawGet(t *testing.T, addr, path, rangeHdr string, timeout time.Duration) (status string, length string, body []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n", path)
	if rangeHdr != "" {
		fmt.Fprintf(c, "Range: %s\r\n", rangeHdr)
	}
	fmt.Fprintf(c, "\r\n")
	c.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	for {
		h, err := br.ReadString('\n')
		if err != nil || h == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(h, "Content-Length: "); ok {
			length = strings.TrimSpace(v)
		}
	}
	body, _ = io.ReadAll(br)
	return strings.TrimSpace(line), length, body
}

func TestFaultProxyRules(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "x", time.Time{}, bytes.NewReader(data))
	}))
	defer up.Close()
	mk := func(rules ...string) *FaultProxy {
		var rs []*FaultRule
		for _, s := range rules {
			r, err := ParseFaultRule(s)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		p, err := StartFaultProxy(up.URL, rs...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}

	p := mk("drop=100@/a", "2*status=503,retry-after=7", "norange", "corrupt=5", "length=-10", "length=50")
	// drop: 100 bytes of the announced 10000, then the connection ends.
	if st, n, b := rawGet(t, p.Addr(), "/a", "", time.Second); st != "HTTP/1.1 200 OK" || n != "10000" || !bytes.Equal(b, data[:100]) {
		t.Errorf("drop: %s, length %s, %d bytes", st, n, len(b))
	}
	// The path rule is used up; status takes two requests.
	for range 2 {
		if st, _, _ := rawGet(t, p.Addr(), "/a", "", time.Second); st != "HTTP/1.1 503 Service Unavailable" {
			t.Errorf("status: %s", st)
		}
	}
	// norange: the whole body although a range was asked for.
	if st, _, b := rawGet(t, p.Addr(), "/b", "bytes=100-", time.Second); st != "HTTP/1.1 200 OK" || !bytes.Equal(b, data) {
		t.Errorf("norange: %s, %d bytes", st, len(b))
	}
	// A request without Range passes corrupt by (length=-10 takes it).
	if _, n, b := rawGet(t, p.Addr(), "/b", "", time.Second); n != "9990" || !bytes.Equal(b, data[:9990]) {
		t.Errorf("length=-10: length %s, %d bytes", n, len(b))
	}
	// corrupt: a range answer whose bytes from offset 5 are inverted.
	st, _, b := rawGet(t, p.Addr(), "/b", "bytes=100-", time.Second)
	if st != "HTTP/1.1 206 Partial Content" || len(b) != 9900 || !bytes.Equal(b[:5], data[100:105]) || b[5] != data[105]^0xff {
		t.Errorf("corrupt: %s, %d bytes", st, len(b))
	}
	// length=+50: announces 10050, sends 10000 and closes.
	if _, n, b := rawGet(t, p.Addr(), "/b", "", time.Second); n != "10050" || !bytes.Equal(b, data) {
		t.Errorf("length=50: length %s, %d bytes", n, len(b))
	}
	// No rules left: passed through.
	if st, n, b := rawGet(t, p.Addr(), "/b", "", time.Second); st != "HTTP/1.1 200 OK" || n != "10000" || !bytes.Equal(b, data) {
		t.Errorf("pass: %s, %s, %d", st, n, len(b))
	}
	log := strings.Join(p.Log(), "\n")
	for _, want := range []string{"GET /a drop=100@/a", "GET /b range=bytes=100- norange", "GET /b range=bytes=100- corrupt=5"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}

	// stall: the bytes, then silence with the connection open.
	s := mk("**stall=10")
	t0 := time.Now()
	if _, _, b := rawGet(t, s.Addr(), "/a", "", 300*time.Millisecond); !bytes.Equal(b, data[:10]) || time.Since(t0) < 300*time.Millisecond {
		t.Errorf("stall: %d bytes after %s", len(b), time.Since(t0))
	}
}
