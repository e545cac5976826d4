package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/racker-postroj/racker/internal/transfer"
)

// Defaults for Proxy fields left zero.
const (
	DefaultDialTimeout   = 15 * time.Second
	DefaultHeaderTimeout = 60 * time.Second
	// maxRequests bounds how many requests a Record lists one by one.
	maxRequests = 5000
)

// Proxy is a forward HTTP proxy: absolute-URL requests are forwarded (and
// cached, see Cache), CONNECT opens a TCP tunnel (HTTPS, not intercepted).
// Requests to hosts the allowlist does not name are refused with 403, and a
// host that cannot be reached gets 502 with the cause; both are recorded.
// Upstream connections are made from the process's own network namespace
// (or through Dial), so a listener the proxy serves on may live in another.
//
// The host's loopback addresses are never reached through the proxy unless
// a rule names that address or host literally: to a container, 127.0.0.1
// means itself.
type Proxy struct {
	Allow Allowlist
	// Cache, when set, stores package files and indexes fetched over HTTP.
	Cache *Cache
	// Dial makes upstream connections (a net.Dialer if nil).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HeaderTimeout bounds the wait for upstream's response headers
	// (DefaultHeaderTimeout if zero).
	HeaderTimeout time.Duration
	// Retry bounds how plain-HTTP fetches upstream survive transient
	// faults (dropped or stalled connections resumed, 5xx and 429 retried;
	// see transfer.Transport); the zero value means its defaults.
	Retry  transfer.Policy
	Logger *slog.Logger

	once      sync.Once
	transport *http.Transport
	upstream  http.RoundTripper // transport, through transfer.Transport
	server    *http.Server

	mu       sync.Mutex
	rec      Record
	tunnels  map[net.Conn]struct{}
	closed   bool
	handlers sync.WaitGroup // requests being answered
}

// closeWait bounds how long Close waits for requests being answered: their
// connections are closed by then, so they end as soon as they notice.
const closeWait = 5 * time.Second

// Record is what a proxy saw: every request (up to a limit), and per host
// what it refused and what failed upstream.
type Record struct {
	Requests []Request `json:"requests,omitempty"`
	// Dropped counts requests beyond the limit, not listed.
	Dropped  int       `json:"dropped,omitempty"`
	Refused  []Refusal `json:"refused,omitempty"`
	Failures []Failure `json:"failures,omitempty"`
}

// Request is one request through the proxy.
type Request struct {
	Method string `json:"method"`
	URL    string `json:"url"` // for CONNECT, HOST:PORT
	Status int    `json:"status"`
	// Cache is hit, revalidated, miss, or empty (not cacheable).
	Cache string `json:"cache,omitempty"`
}

// Refusal is a host the allowlist refused.
type Refusal struct {
	Host     string `json:"host"` // HOST:PORT
	Requests int    `json:"requests"`
	Example  string `json:"example"` // the first URL asked for
}

// Failure is a host that could not be reached.
type Failure struct {
	Host     string `json:"host"` // HOST:PORT
	Requests int    `json:"requests"`
	Error    string `json:"error"` // the last cause
}

// Hits counts requests with the given cache state.
func (r Record) Hits(state string) int {
	n := 0
	for _, q := range r.Requests {
		if q.Cache == state {
			n++
		}
	}
	return n
}

// RefusedHosts lists the refused hosts, sorted.
func (r Record) RefusedHosts() []string {
	var out []string
	for _, f := range r.Refused {
		out = append(out, f.Host)
	}
	sort.Strings(out)
	return out
}

func (p *Proxy) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

func (p *Proxy) init() {
	p.once.Do(func() {
		p.tunnels = map[net.Conn]struct{}{}
		timeout := p.HeaderTimeout
		if timeout <= 0 {
			timeout = DefaultHeaderTimeout
		}
		p.transport = &http.Transport{
			Proxy:                 nil,
			DialContext:           p.dial,
			ResponseHeaderTimeout: timeout,
			TLSHandshakeTimeout:   timeout,
			// Bodies pass through as they are, compressed or not.
			DisableCompression:  true,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		}
		p.upstream = &transfer.Transport{Next: p.transport, Policy: p.Retry, Notify: func(r transfer.Retry) {
			p.logger().Info("upstream fault", "url", r.URL.Redacted(), "retry", r.String())
		}}
		p.server = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(p.logger().Handler(), slog.LevelDebug)}
	})
}

// Serve answers connections on l until Close; it returns nil after Close.
func (p *Proxy) Serve(l net.Listener) error {
	p.init()
	err := p.server.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close closes the listeners, open connections and tunnels, and waits for
// the requests being answered to end, so that no download into the cache is
// still going on (and no unfinished file left) when it returns.
func (p *Proxy) Close() error {
	p.init()
	p.mu.Lock()
	p.closed = true
	for c := range p.tunnels {
		c.Close()
	}
	p.mu.Unlock()
	err := p.server.Close()
	done := make(chan struct{})
	go func() {
		p.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeWait):
		p.logger().Warn("egress proxy: requests still running after close")
	}
	p.transport.CloseIdleConnections()
	return err
}

// Record returns a copy of what the proxy has seen so far.
func (p *Proxy) Record() Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rec
	r.Requests = append([]Request(nil), p.rec.Requests...)
	r.Refused = append([]Refusal(nil), p.rec.Refused...)
	r.Failures = append([]Failure(nil), p.rec.Failures...)
	return r
}

func (p *Proxy) note(q Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.rec.Requests) >= maxRequests {
		p.rec.Dropped++
		return
	}
	p.rec.Requests = append(p.rec.Requests, q)
}

func (p *Proxy) noteRefused(hostport, example string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.rec.Refused {
		if p.rec.Refused[i].Host == hostport {
			p.rec.Refused[i].Requests++
			return
		}
	}
	p.rec.Refused = append(p.rec.Refused, Refusal{Host: hostport, Requests: 1, Example: example})
}

func (p *Proxy) noteFailure(hostport string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.rec.Failures {
		if p.rec.Failures[i].Host == hostport {
			p.rec.Failures[i].Requests++
			p.rec.Failures[i].Error = describe(err)
			return
		}
	}
	p.rec.Failures = append(p.rec.Failures, Failure{Host: hostport, Requests: 1, Error: describe(err)})
}

// ErrLoopback is the cause of a refused dial to the host's own loopback.
var ErrLoopback = errors.New("the host's loopback is not reachable from a container")

type loopbackError struct{ host, ip string }

func (e *loopbackError) Error() string {
	what := e.host
	if e.host != e.ip {
		what += " resolves to " + e.ip + ", which"
	}
	return fmt.Sprintf("%s is the host's loopback, not reachable from a container (allow it by name with --allow-host=%s)", what, e.host)
}

func (e *loopbackError) Unwrap() error { return ErrLoopback }

// dial connects upstream, refusing loopback and unspecified addresses
// (also when a name resolves to one) unless a rule names the host.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, _ := net.SplitHostPort(addr)
	if p.Dial != nil {
		return p.Dial(ctx, network, addr)
	}
	d := &net.Dialer{Timeout: DefaultDialTimeout}
	p.mu.Lock()
	named := p.Allow.names(host, port)
	p.mu.Unlock()
	if !named {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			h, _, _ := net.SplitHostPort(address)
			if ip := net.ParseIP(h); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
				return &loopbackError{host: host, ip: h}
			}
			return nil
		}
	}
	return d.DialContext(ctx, network, addr)
}

// ServeHTTP implements the proxy.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.init()
	p.handlers.Add(1)
	defer p.handlers.Done()
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Host == "" {
		http.Error(w, "postroj egress proxy: only proxy requests (absolute URLs) and CONNECT are served", http.StatusBadRequest)
		return
	}
	u := *r.URL
	u.Fragment = ""
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	hostport := net.JoinHostPort(canonicalHost(host), port)
	q := Request{Method: r.Method, URL: u.String()}
	if u.Scheme != "http" {
		http.Error(w, fmt.Sprintf("postroj egress proxy: %s URLs are not forwarded (https goes through CONNECT)", u.Scheme), http.StatusBadRequest)
		q.Status = http.StatusBadRequest
		p.note(q)
		return
	}
	if !p.allows(host, port) {
		q.Status = p.refuse(w, hostport, u.String())
		p.note(q)
		return
	}
	fetch := func(ctx context.Context, cond *meta) (*http.Response, error) {
		out := upstreamRequest(ctx, r, &u, cond != nil)
		if cond != nil {
			if cond.ETag != "" {
				out.Header.Set("If-None-Match", cond.ETag)
			}
			if cond.LastModified != "" {
				out.Header.Set("If-Modified-Since", cond.LastModified)
			}
		}
		return p.roundTrip(out)
	}
	cls := Classify(&u)
	if p.Cache == nil || r.Method != http.MethodGet || r.Header.Get("Range") != "" {
		cls = Uncached
	}
	var err error
	if cls == Uncached {
		q.Status, err = p.pass(w, r, &u)
	} else {
		q.Cache, q.Status, err = p.Cache.serve(w, r, u.String(), cls, func(ctx context.Context, cond *meta) (*http.Response, error) {
			return fetch(ctx, cond)
		})
	}
	var inc *incompleteError
	switch {
	case errors.As(err, &inc):
		p.noteFailure(hostport, inc.err)
		q.Status = http.StatusBadGateway
		p.note(q)
		panic(http.ErrAbortHandler) // a short body must not look complete
	case err != nil:
		p.noteFailure(hostport, err)
		q.Status = http.StatusBadGateway
		http.Error(w, fmt.Sprintf("postroj egress proxy: fetching %s from %s: %s", u.String(), hostport, describe(err)), http.StatusBadGateway)
	}
	p.note(q)
}

// roundTrip asks upstream. A redirect from an allowed host to another
// host allows that one too: repositories send clients to their mirrors
// (download.opensuse.org, CDNs), and the allowed host vouches for them.
func (p *Proxy) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.upstream.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if loc, err := req.URL.Parse(resp.Header.Get("Location")); err == nil && loc.Hostname() != "" &&
			canonicalHost(loc.Hostname()) != canonicalHost(req.URL.Hostname()) && !isLocal(loc.Hostname()) {
			p.mu.Lock()
			p.Allow.Add(Rule{Host: canonicalHost(loc.Hostname())})
			p.mu.Unlock()
			p.logger().Info("egress allowed by redirect", "from", req.URL.Host, "to", loc.Host)
		}
	}
	return resp, nil
}

// isLocal reports whether host names the local machine, which a redirect
// must never open.
func isLocal(host string) bool {
	host = canonicalHost(host)
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// allows checks the allowlist, which redirects may extend.
func (p *Proxy) allows(host, port string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Allow.Allows(host, port)
}

// refuse answers 403 naming the host and the flag that allows it.
func (p *Proxy) refuse(w http.ResponseWriter, hostport, example string) int {
	p.noteRefused(hostport, example)
	host, _, _ := net.SplitHostPort(hostport)
	p.logger().Info("egress refused", "host", hostport, "url", example)
	w.Header().Set("X-Postroj-Refused", hostport)
	http.Error(w, fmt.Sprintf("postroj egress proxy: %s is not in the allowlist (allow it with --allow-host=%s, or every host with --allow-host='*')", hostport, host), http.StatusForbidden)
	return http.StatusForbidden
}

// hopHeaders are connection-level headers a proxy does not forward.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// upstreamRequest is r as a request to upstream; own drops the client's
// conditional and range headers (the cache asks its own).
func upstreamRequest(ctx context.Context, r *http.Request, u *url.URL, own bool) *http.Request {
	out := r.Clone(ctx)
	out.URL = u
	out.RequestURI = ""
	out.Host = u.Host
	for _, f := range strings.Split(r.Header.Get("Connection"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			out.Header.Del(f)
		}
	}
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if own {
		for _, h := range []string{"If-None-Match", "If-Modified-Since", "If-Range", "Range", "Cache-Control", "Pragma"} {
			out.Header.Del(h)
		}
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		out.Body = nil
		out.ContentLength = 0
	}
	return out
}

// pass forwards r without caching.
func (p *Proxy) pass(w http.ResponseWriter, r *http.Request, u *url.URL) (int, error) {
	resp, err := p.roundTrip(upstreamRequest(r.Context(), r, u, false))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil && r.Context().Err() == nil {
		return resp.StatusCode, &incompleteError{err}
	}
	return resp.StatusCode, nil
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
	for _, f := range strings.Split(src.Get("Connection"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			dst.Del(f)
		}
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}

// connect opens a tunnel to r.Host (HOST:PORT).
func (p *Proxy) connect(w http.ResponseWriter, r *http.Request) {
	q := Request{Method: r.Method, URL: r.Host}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		http.Error(w, "postroj egress proxy: CONNECT needs HOST:PORT", http.StatusBadRequest)
		q.Status = http.StatusBadRequest
		p.note(q)
		return
	}
	hostport := net.JoinHostPort(canonicalHost(host), port)
	if !p.allows(host, port) {
		q.Status = p.refuse(w, hostport, "https://"+r.Host)
		p.note(q)
		return
	}
	up, err := p.dial(r.Context(), "tcp", r.Host)
	if err != nil {
		p.noteFailure(hostport, err)
		q.Status = http.StatusBadGateway
		p.note(q)
		http.Error(w, fmt.Sprintf("postroj egress proxy: connecting to %s: %s", hostport, describe(err)), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "postroj egress proxy: cannot tunnel", http.StatusInternalServerError)
		return
	}
	client, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	q.Status = http.StatusOK
	p.note(q)
	if !p.track(client, up) {
		client.Close()
		up.Close()
		return
	}
	defer p.untrack(client, up)
	client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	done := make(chan struct{}, 2)
	go func() {
		// Bytes the client sent after its request are in buf.
		io.Copy(up, buf)
		closeWrite(up)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(client, up)
		closeWrite(client)
		done <- struct{}{}
	}()
	<-done
	<-done
	client.Close()
	up.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.tunnels[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.tunnels, c)
	}
}

// describe turns an upstream error into a short cause.
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var dnsErr *net.DNSError
	var lbErr *loopbackError
	switch {
	case errors.As(err, &lbErr):
		return lbErr.Error()
	case errors.As(err, &dnsErr):
		return "cannot resolve " + dnsErr.Name + ": " + dnsErr.Err
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timed out: " + err.Error()
	case errors.Is(err, context.Canceled):
		return "no answer before the client gave up"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by peer"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed before the response was complete"
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// AllowRules returns the allowlist's rules, with those redirects added.
func (p *Proxy) AllowRules() []Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Allow.Rules()
}
