package testregistry

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FaultProxy is an HTTP proxy on 127.0.0.1 in front of one upstream server
// (a registry, a package server) that breaks its answers as a script says.
// Every answer is written by hand on the raw connection, with
// "Connection: close", so that a fault can cut the body at an exact byte.
//
// A script is a list of rules (see ParseFaultRule); each request takes the
// first rule that matches it and has uses left, and uses it up. Requests no
// rule takes are passed through unchanged.
type FaultProxy struct {
	upstream *url.URL
	ln       net.Listener
	client   *http.Client

	mu    sync.Mutex
	rules []*FaultRule
	log   []string
	conns map[net.Conn]struct{}
	done  chan struct{}
	wg    sync.WaitGroup
}

// FaultKind is what a rule does to an answer.
type FaultKind string

const (
	// FaultDrop closes the connection after Bytes bytes of the body.
	FaultDrop FaultKind = "drop"
	// FaultStall sends Bytes bytes of the body, then nothing, keeping the
	// connection open until the client gives up.
	FaultStall FaultKind = "stall"
	// FaultStatus answers Status (with Retry-After, if set) instead.
	FaultStatus FaultKind = "status"
	// FaultNoRange takes only requests with a Range header and ignores it:
	// 200 and the whole body.
	FaultNoRange FaultKind = "norange"
	// FaultLength announces a Content-Length Bytes more (or, negative,
	// less) than the body has, sends what it announced or the whole body,
	// whichever is shorter, and closes the connection.
	FaultLength FaultKind = "length"
	// FaultCorrupt takes only requests with a Range header (resumes) and
	// inverts every byte of the answer's body from Bytes on.
	FaultCorrupt FaultKind = "corrupt"
)

// FaultRule is one line of a FaultProxy's script.
type FaultRule struct {
	Kind       FaultKind
	Bytes      int64
	Status     int
	RetryAfter string
	// Path, if set, must be a substring of the request's path.
	Path string
	// Uses is how many requests the rule takes; 0 means every one.
	Uses int

	used int
}

// FaultSyntax documents ParseFaultRule for usage messages.
const FaultSyntax = `[COUNT*|**]KIND[=ARG][,retry-after=SECONDS][@PATH]: KIND is drop=BYTES, stall=BYTES,
status=CODE, norange, length=DELTA or corrupt=BYTES; BYTES may end in k or M (x1000);
COUNT is how many matching requests the rule takes (default 1, ** every one);
@PATH only takes requests whose path contains PATH (such as /blobs/)`

// ParseFaultRule parses one rule, such as "drop=20M@/blobs/",
// "3*status=503", "status=429,retry-after=2" or "**stall=0@/manifests/".
func ParseFaultRule(s string) (*FaultRule, error) {
	r := &FaultRule{Uses: 1}
	spec := s
	if strings.HasPrefix(spec, "**") {
		r.Uses, spec = 0, spec[2:]
	} else if n, rest, ok := strings.Cut(spec, "*"); ok {
		u, err := strconv.Atoi(n)
		if err != nil || u < 1 {
			return nil, fmt.Errorf("fault rule %q: bad count %q", s, n)
		}
		r.Uses, spec = u, rest
	}
	spec, r.Path, _ = strings.Cut(spec, "@")
	parts := strings.Split(spec, ",")
	kind, arg, hasArg := strings.Cut(parts[0], "=")
	r.Kind = FaultKind(kind)
	for _, opt := range parts[1:] {
		v, ok := strings.CutPrefix(opt, "retry-after=")
		if !ok || r.Kind != FaultStatus {
			return nil, fmt.Errorf("fault rule %q: unexpected option %q", s, opt)
		}
		r.RetryAfter = v
	}
	var err error
	switch r.Kind {
	case FaultDrop, FaultStall, FaultCorrupt, FaultLength:
		if !hasArg {
			return nil, fmt.Errorf("fault rule %q: %s needs =BYTES", s, kind)
		}
		r.Bytes, err = parseBytes(arg)
	case FaultStatus:
		r.Status, err = strconv.Atoi(arg)
		if err == nil && (r.Status < 100 || r.Status > 599) {
			err = errors.New("not an HTTP status")
		}
	case FaultNoRange:
		if hasArg {
			err = errors.New("takes no argument")
		}
	default:
		return nil, fmt.Errorf("fault rule %q: unknown kind %q (valid: drop, stall, status, norange, length, corrupt)", s, kind)
	}
	if err != nil {
		return nil, fmt.Errorf("fault rule %q: %v", s, err)
	}
	return r, nil
}

// ParseFaultRules parses a script: ParseFaultRule of each spec, in order.
func ParseFaultRules(specs ...string) ([]*FaultRule, error) {
	var rs []*FaultRule
	for _, s := range specs {
		r, err := ParseFaultRule(s)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1000, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "M"):
		mult, s = 1000*1000, strings.TrimSuffix(s, "M")
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("bad byte count %q", s)
	}
	return int64(f * float64(mult)), nil
}

func (r *FaultRule) String() string {
	s := string(r.Kind)
	switch r.Kind {
	case FaultStatus:
		s += "=" + strconv.Itoa(r.Status)
		if r.RetryAfter != "" {
			s += ",retry-after=" + r.RetryAfter
		}
	case FaultNoRange:
	default:
		s += "=" + strconv.FormatInt(r.Bytes, 10)
	}
	if r.Path != "" {
		s += "@" + r.Path
	}
	return s
}

// StartFaultProxy listens on a free port of 127.0.0.1 and forwards to
// upstream ("http://127.0.0.1:5000"). Close stops it.
func StartFaultProxy(upstream string, rules ...*FaultRule) (*FaultProxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("fault proxy upstream %q: not a URL", upstream)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &FaultProxy{upstream: u, ln: ln, rules: rules, conns: map[net.Conn]struct{}{}, done: make(chan struct{}),
		client: &http.Client{
			Transport:     &http.Transport{DisableCompression: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// SetRules replaces the script.
func (p *FaultProxy) SetRules(rules ...*FaultRule) {
	p.mu.Lock()
	p.rules = rules
	p.mu.Unlock()
}

// Log returns one line per request so far: method, path, Range header and
// the rule applied ("GET /v2/x/blobs/sha256:... range=bytes=100- drop=20000000").
func (p *FaultProxy) Log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// Close stops the proxy and cuts every open connection.
func (p *FaultProxy) Close() error {
	close(p.done)
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *FaultProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c)
			c.Close()
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
		}()
	}
}

// take returns the rule for req, whose answer has length body bytes, using
// it up, and logs the request. Rules that cut a body at a byte only take
// answers longer than that.
func (p *FaultProxy) take(req *http.Request, length int64) *FaultRule {
	p.mu.Lock()
	defer p.mu.Unlock()
	var rule *FaultRule
	for _, r := range p.rules {
		if r.Uses != 0 && r.used >= r.Uses {
			continue
		}
		if r.Path != "" && !strings.Contains(req.URL.Path, r.Path) {
			continue
		}
		if (r.Kind == FaultCorrupt || r.Kind == FaultNoRange) && req.Header.Get("Range") == "" {
			continue
		}
		if (r.Kind == FaultDrop || r.Kind == FaultStall || r.Kind == FaultCorrupt) && (length <= r.Bytes || req.Method == http.MethodHead) {
			continue
		}
		r.used++
		rule = r
		break
	}
	line := req.Method + " " + req.URL.Path
	if rg := req.Header.Get("Range"); rg != "" {
		line += " range=" + rg
	}
	if rule != nil {
		line += " " + rule.String()
	}
	p.log = append(p.log, line)
	return rule
}

// noRange reports whether the next rule req would take is norange: the
// upstream request is made before the rule is taken.
func (p *FaultProxy) noRange(req *http.Request) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rules {
		if r.Uses != 0 && r.used >= r.Uses {
			continue
		}
		if r.Path != "" && !strings.Contains(req.URL.Path, r.Path) {
			continue
		}
		if r.Kind == FaultNoRange && req.Header.Get("Range") != "" {
			return true
		}
		if r.Kind != FaultNoRange && r.Kind != FaultCorrupt {
			return false
		}
	}
	return false
}

// handle serves one request on c (every answer closes the connection).
func (p *FaultProxy) handle(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	out, err := http.NewRequestWithContext(req.Context(), req.Method, p.upstream.ResolveReference(&url.URL{Path: req.URL.Path, RawQuery: req.URL.RawQuery}).String(), req.Body)
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	for k, vs := range req.Header {
		if k == "Connection" || k == "Proxy-Connection" {
			continue
		}
		out.Header[k] = vs
	}
	out.Host = req.Host
	if p.noRange(req) {
		out.Header.Del("Range")
		out.Header.Del("If-Range")
	}
	resp, err := p.client.Do(out)
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	defer resp.Body.Close()
	length := resp.ContentLength
	var body io.Reader = resp.Body
	if length < 0 {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return
		}
		length, body = int64(len(b)), strings.NewReader(string(b))
	}
	rule := p.take(req, length)
	if rule != nil && rule.Kind == FaultStatus {
		h := "Content-Length: 0\r\nConnection: close\r\n"
		if rule.RetryAfter != "" {
			h += "Retry-After: " + rule.RetryAfter + "\r\n"
		}
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n%s\r\n", rule.Status, http.StatusText(rule.Status), h)
		return
	}
	announced, send := length, length
	if req.Method == http.MethodHead {
		send = 0
	}
	if rule != nil {
		switch rule.Kind {
		case FaultDrop, FaultStall:
			send = min(send, rule.Bytes)
		case FaultLength:
			announced = max(length+rule.Bytes, 0)
			send = min(send, announced)
		case FaultCorrupt:
			body = &inverter{r: body, from: rule.Bytes}
		}
	}
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "HTTP/1.1 %s\r\n", resp.Status)
	resp.Header.Del("Content-Length")
	resp.Header.Del("Connection")
	resp.Header.Del("Transfer-Encoding")
	resp.Header.Write(w)
	fmt.Fprintf(w, "Content-Length: %d\r\nConnection: close\r\n\r\n", announced)
	if _, err := io.CopyN(w, body, send); err != nil && !errors.Is(err, io.EOF) {
		return
	}
	if err := w.Flush(); err != nil {
		return
	}
	if rule != nil && rule.Kind == FaultStall {
		// Hold the connection without sending until the client gives up
		// (its reads end) or the proxy closes.
		c.SetReadDeadline(time.Now().Add(10 * time.Minute))
		io.Copy(io.Discard, br)
	}
}

// inverter flips every byte from offset from on.
type inverter struct {
	r    io.Reader
	off  int64
	from int64
}

func (v *inverter) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	for i := 0; i < n; i++ {
		if v.off+int64(i) >= v.from {
			p[i] ^= 0xff
		}
	}
	v.off += int64(n)
	return n, err
}
