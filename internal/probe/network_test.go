package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseAddress(t *testing.T) {
	for _, tt := range []struct {
		in, scheme, hostport string
		loopback             bool
		err                  string
	}{
		{"http://localhost:8000", "http", "localhost:8000", true, ""},
		{"http://localhost", "http", "localhost:80", true, ""},
		{"https://127.0.0.1/health", "https", "127.0.0.1:443", true, ""},
		{"http://[::1]:3000/", "http", "[::1]:3000", true, ""},
		{"tcp://127.0.0.1:5432", "tcp", "127.0.0.1:5432", true, ""},
		{"tcp://db.example:5432", "tcp", "db.example:5432", false, ""},
		{"tcp://localhost", "", "", false, "want tcp://HOST:PORT"},
		{"udp://localhost:53", "", "", false, "valid: http://..., https://..., tcp://HOST:PORT"},
		{"localhost:8000", "", "", false, "valid:"},
		{"http://localhost:99999", "", "", false, "bad port"},
		{"http:///x", "", "", false, "no host"},
	} {
		a, err := ParseAddress(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %v, want error saying %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || a.Scheme != tt.scheme || a.HostPort() != tt.hostport || a.Loopback() != tt.loopback {
			t.Errorf("%s: %+v %v, want %s %s loopback=%v", tt.in, a, err, tt.scheme, tt.hostport, tt.loopback)
		}
	}
}

func TestStatusMatcher(t *testing.T) {
	for _, tt := range []struct {
		expect string
		pass   []int
		fail   []int
	}{
		{"", []int{200, 301, 404, 500}, nil},
		{"200", []int{200}, []int{204, 404}},
		{"2xx", []int{200, 204, 299}, []int{301, 404}},
		{"2xx,301", []int{200, 301}, []int{302, 500}},
		{"2XX, 404", []int{201, 404}, []int{403}},
	} {
		m, err := ParseStatusMatcher(tt.expect)
		if err != nil {
			t.Fatalf("%q: %v", tt.expect, err)
		}
		for _, s := range tt.pass {
			if !m.Match(s) {
				t.Errorf("%q rejects %d", tt.expect, s)
			}
		}
		for _, s := range tt.fail {
			if m.Match(s) {
				t.Errorf("%q accepts %d", tt.expect, s)
			}
		}
	}
	for _, bad := range []string{"ok", "2x", "6xx", "99", "200,"} {
		if _, err := ParseStatusMatcher(bad); err == nil || !strings.Contains(err.Error(), "valid:") {
			t.Errorf("%q: %v, want an error naming the valid forms", bad, err)
		}
	}
}

func mustAddress(t *testing.T, s string) Address {
	a, err := ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestCheckNetworkHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("Server", "test")
			w.Write([]byte("ok"))
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
		default:
			w.Header().Set("Server", "webfs/1.21")
			http.NotFound(w, r) // as webfs answers /
		}
	}))
	defer srv.Close()
	any, _ := ParseStatusMatcher("")
	s200, _ := ParseStatusMatcher("200")
	s2xx, _ := ParseStatusMatcher("2xx")
	ctx := context.Background()

	r := CheckNetwork(ctx, mustAddress(t, srv.URL+"/"), any, time.Second, 0)
	if !r.Passed || r.Status != 404 || r.Response != "HTTP/1.1 404 Not Found" || r.Attempts != 1 || !containsLine(r.Headers, "Server: webfs/1.21") {
		t.Errorf("404 with any status: %+v, want a pass showing status and headers", r)
	}
	r = CheckNetwork(ctx, mustAddress(t, srv.URL+"/"), s200, 600*time.Millisecond, 100*time.Millisecond)
	if r.Passed || r.Status != 404 || !strings.Contains(r.Reason, "answered 404 Not Found, want 200") || r.Attempts < 3 {
		t.Errorf("404 with --expect-status=200: %+v, want a failure after retries", r)
	}
	r = CheckNetwork(ctx, mustAddress(t, srv.URL+"/ok"), s2xx, time.Second, 0)
	if !r.Passed || r.Status != 200 {
		t.Errorf("200 with 2xx: %+v", r)
	}
	r = CheckNetwork(ctx, mustAddress(t, srv.URL+"/moved"), any, time.Second, 0)
	if !r.Passed || r.Status != 301 || !containsLine(r.Headers, "Location: /elsewhere") {
		t.Errorf("redirect: %+v, want the 301 itself", r)
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func TestCheckNetworkWaitsForLateService(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })}
	go func() {
		time.Sleep(400 * time.Millisecond)
		l, err := net.Listen("tcp", addr)
		if err == nil {
			srv.Serve(l)
		}
	}()
	defer srv.Close()
	r := CheckNetwork(context.Background(), mustAddress(t, "http://"+addr+"/"), StatusMatcher{}, 5*time.Second, 50*time.Millisecond)
	if !r.Passed || r.Status != 204 || r.Attempts < 2 {
		t.Errorf("late service: %+v, want a pass after several attempts", r)
	}
}

func TestCheckNetworkTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	open := mustAddress(t, "tcp://"+l.Addr().String())
	if r := CheckNetwork(context.Background(), open, StatusMatcher{}, time.Second, 0); !r.Passed || r.Attempts != 1 {
		t.Errorf("open port: %+v", r)
	}
	if !PortInUse(context.Background(), open) {
		t.Error("PortInUse = false for a listening port")
	}
	l.Close()
	r := CheckNetwork(context.Background(), open, StatusMatcher{}, 300*time.Millisecond, 50*time.Millisecond)
	if r.Passed || !strings.Contains(r.Reason, "no answer: connection refused") {
		t.Errorf("closed port: %+v, want a failure saying connection refused", r)
	}
	if PortInUse(context.Background(), open) {
		t.Error("PortInUse = true for a closed port")
	}
}
