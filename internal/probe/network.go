package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Address is a network address a probe checks from the host: an http://
// or https:// URL, or tcp://HOST:PORT.
type Address struct {
	Raw    string
	Scheme string // http, https or tcp
	Host   string // host name or IP, without brackets
	Port   string
	URL    *url.URL // for http and https
}

// ParseAddress parses an address given to --check-network.
func ParseAddress(s string) (Address, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Address{}, fmt.Errorf("--check-network %q: %w", s, err)
	}
	a := Address{Raw: s, Scheme: u.Scheme, Host: u.Hostname(), Port: u.Port()}
	switch u.Scheme {
	case "http", "https":
		a.URL = u
		if a.Port == "" {
			a.Port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
	case "tcp":
		if a.Port == "" || (u.Path != "" && u.Path != "/") {
			return Address{}, fmt.Errorf("--check-network %q: want tcp://HOST:PORT", s)
		}
	default:
		return Address{}, fmt.Errorf("unexpected --check-network %q (valid: http://..., https://..., tcp://HOST:PORT)", s)
	}
	if a.Host == "" {
		return Address{}, fmt.Errorf("--check-network %q: no host", s)
	}
	if n, err := strconv.Atoi(a.Port); err != nil || n < 1 || n > 65535 {
		return Address{}, fmt.Errorf("--check-network %q: bad port %q", s, a.Port)
	}
	return a, nil
}

// HostPort is the address to dial.
func (a Address) HostPort() string { return net.JoinHostPort(a.Host, a.Port) }

// Loopback reports whether the address is on the loopback: the host's for
// containers that share its network, the container's own otherwise.
func (a Address) Loopback() bool {
	if a.Host == "localhost" || strings.HasSuffix(a.Host, ".localhost") {
		return true
	}
	ip := net.ParseIP(a.Host)
	return ip != nil && ip.IsLoopback()
}

// StatusMatcher says which HTTP statuses pass a check. The zero value
// accepts any response.
type StatusMatcher struct {
	raw   string
	codes []int // exact statuses
	class []int // 2 for 2xx, ...
}

// ParseStatusMatcher parses --expect-status: "" (any answer), a status
// ("200"), a class ("2xx"), or a comma-separated list of those.
func ParseStatusMatcher(s string) (StatusMatcher, error) {
	m := StatusMatcher{raw: s}
	if s == "" {
		return m, nil
	}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		if len(f) == 3 && f[1:] == "xx" && f[0] >= '1' && f[0] <= '5' {
			m.class = append(m.class, int(f[0]-'0'))
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 100 || n > 599 {
			return StatusMatcher{}, fmt.Errorf("unexpected --expect-status %q (valid: a status such as 200, a class such as 2xx, or a comma-separated list)", s)
		}
		m.codes = append(m.codes, n)
	}
	return m, nil
}

// Any reports whether every response passes.
func (m StatusMatcher) Any() bool { return len(m.codes) == 0 && len(m.class) == 0 }

// Match reports whether status passes.
func (m StatusMatcher) Match(status int) bool {
	if m.Any() {
		return true
	}
	for _, c := range m.codes {
		if c == status {
			return true
		}
	}
	for _, c := range m.class {
		if status/100 == c {
			return true
		}
	}
	return false
}

func (m StatusMatcher) String() string {
	if m.Any() {
		return "any status"
	}
	return m.raw
}

// NetResult is the outcome of a network check.
type NetResult struct {
	Passed   bool     `json:"passed"`
	Status   int      `json:"status,omitempty"`   // HTTP status of the last answer
	Response string   `json:"response,omitempty"` // its status line, e.g. "HTTP/1.1 404 Not Found"
	Headers  []string `json:"headers,omitempty"`  // "Name: value", sorted
	Attempts int      `json:"attempts"`
	Error    string   `json:"error,omitempty"`  // the last error, when nothing answered
	Reason   string   `json:"reason,omitempty"` // why it failed
}

// CheckNetwork tries a until it answers (and, for HTTP, with a status
// expect accepts) or timeout passes. Any HTTP response answers unless
// expect says otherwise; redirects are not followed (a 301 is an answer);
// certificates of https:// addresses are not verified, since services
// under test commonly use self-signed ones. interval is the pause between
// attempts (250ms if zero).
func CheckNetwork(ctx context.Context, a Address, expect StatusMatcher, timeout, interval time.Duration) NetResult {
	return CheckNetworkVia(ctx, nil, a, expect, timeout, interval)
}

// DialFunc makes a connection, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// CheckNetworkVia is CheckNetwork with connections made by dial: a
// container with a network namespace of its own is checked from inside it,
// where localhost is the container's. nil dials from the host.
func CheckNetworkVia(ctx context.Context, dial DialFunc, a Address, expect StatusMatcher, timeout, interval time.Duration) NetResult {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	deadline := time.Now().Add(timeout)
	var r NetResult
	for {
		r.Attempts++
		attemptTimeout := min(time.Until(deadline), 3*time.Second)
		if attemptTimeout < 100*time.Millisecond {
			attemptTimeout = 100 * time.Millisecond
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		var err error
		if a.Scheme == "tcp" {
			err = dialTCP(actx, dial, a)
			if err == nil {
				r.Passed, r.Error, r.Reason = true, "", ""
			}
		} else {
			var resp *http.Response
			resp, err = httpGet(actx, dial, a)
			if err == nil {
				r.Status, r.Response, r.Headers, r.Error = resp.StatusCode, resp.Proto+" "+resp.Status, headerLines(resp.Header), ""
				r.Passed = expect.Match(resp.StatusCode)
				if !r.Passed {
					r.Reason = fmt.Sprintf("answered %s, want %s", resp.Status, expect)
				} else {
					r.Reason = ""
				}
			}
		}
		cancel()
		if err != nil {
			r.Error = describeNetError(err)
			if r.Status == 0 {
				r.Reason = "no answer: " + r.Error
			}
		}
		if r.Passed || ctx.Err() != nil || time.Now().Add(interval).After(deadline) {
			if ctx.Err() != nil && !r.Passed {
				r.Reason = "interrupted: " + ctx.Err().Error()
			}
			if !r.Passed && r.Reason != "" {
				r.Reason += fmt.Sprintf(" (%d attempts in %s)", r.Attempts, timeout)
			}
			return r
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

func dialTCP(ctx context.Context, dial DialFunc, a Address) error {
	c, err := dial(ctx, "tcp", a.HostPort())
	if err != nil {
		return err
	}
	return c.Close()
}

// probeTransport is what HTTP checks use; it never reuses connections, so
// every attempt sees the service as a new client would.
func probeTransport(dial DialFunc) *http.Transport {
	return &http.Transport{
		DialContext:       dial,
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		Proxy:             nil, // a proxy could answer for a service that is down
	}
}

func httpGet(ctx context.Context, dial DialFunc, a Address) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "postroj")
	client := &http.Client{Transport: probeTransport(dial), CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp, nil
}

func headerLines(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	sort.Strings(out)
	return out
}

func describeNetError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	}
	return err.Error()
}

// PortInUse reports whether something on the host already answers at a
// (dialled for at most a second).
func PortInUse(ctx context.Context, a Address) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return dialTCP(ctx, (&net.Dialer{}).DialContext, a) == nil
}
