package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Transport is an http.RoundTripper whose GET and HEAD requests survive
// transient faults within Policy:
//
//   - a connection that drops or stalls while the body is read is resumed
//     with "Range: bytes=N-" (and If-Range with the first answer's
//     validator); a server that answers 200 instead of 206 is read from
//     the start again and the bytes the caller already has are skipped;
//   - a retryable status (see Retryable) or a connection that breaks
//     before the response is retried after a backoff, or after the
//     server's Retry-After;
//   - no request is retried after Policy.Attempts requests or past
//     Policy.Total; the caller then gets an *Error (from RoundTrip or from
//     reading the body).
//
// The caller sees one response, whose body delivers the bytes exactly once,
// in order. Transport does not know what the bytes should be: callers that
// do (digests, pinned checksums) must still verify them, since a server
// may send different bytes after a resume. A request that cannot connect
// at all on its first attempt is not retried: that is an unreachable host,
// not a transient fault. Other methods, and requests with a body or their
// own Range header, pass through unchanged.
type Transport struct {
	// Next makes the requests (http.DefaultTransport if nil).
	Next   http.RoundTripper
	Policy Policy
	// Notify, if set, is called before each retry. It may be called from
	// several goroutines at once.
	Notify func(Retry)
}

func (t *Transport) next() http.RoundTripper {
	if t.Next == nil {
		return http.DefaultTransport
	}
	return t.Next
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Method != http.MethodGet && req.Method != http.MethodHead) ||
		(req.Body != nil && req.Body != http.NoBody) || req.Header.Get("Range") != "" {
		return t.next().RoundTrip(req)
	}
	d := &download{t: t, req: req, url: originalURL(req), total: -1, closed: make(chan struct{})}
	d.r = Retrier{Policy: t.Policy, URL: d.url, Notify: t.Notify}
	for {
		resp, fault, err := d.do()
		if err != nil {
			return nil, err
		}
		if fault == nil {
			return d.accept(resp), nil
		}
		if err := d.retry(fault); err != nil {
			return nil, err
		}
	}
}

// originalURL follows a redirected request back to the URL first asked for.
func originalURL(req *http.Request) *url.URL {
	for req.Response != nil && req.Response.Request != nil {
		req = req.Response.Request
	}
	return req.URL
}

// download is one request and the retries it takes, through the reading of
// its body.
type download struct {
	t   *Transport
	req *http.Request
	url *url.URL
	r   Retrier

	// Set from the first answer, for resuming.
	total     int64  // the body's length, -1 if unknown
	etag      string // validators of the content, compared on a restart
	modified  string
	resumable bool // the first answer was a 200 whose bytes a Range can address
	off       int64
	skip      int64 // bytes of the current body the caller already has

	mu     sync.Mutex
	ctx    context.Context // the current attempt's
	cur    io.ReadCloser
	cancel context.CancelCauseFunc
	timer  *time.Timer
	closed chan struct{}
	done   bool
	err    error // sticky: the body's final error
}

// do makes one attempt. It returns the response, a fault worth retrying, or
// an error that ends the download.
func (d *download) do() (*http.Response, *Fault, error) {
	attempt := d.r.Begin()
	stall := d.t.Policy.stall()
	ctx, cancel := context.WithCancelCause(d.req.Context())
	r := d.req.Clone(ctx)
	if d.off > 0 && d.resumable {
		// With the end when known: some servers (go-containerregistry's
		// registry) take no open range.
		rng := fmt.Sprintf("bytes=%d-", d.off)
		if d.total > 0 {
			rng += strconv.FormatInt(d.total-1, 10)
		}
		r.Header.Set("Range", rng)
		if v := d.validator(); v != "" {
			r.Header.Set("If-Range", v)
		}
	}
	// A request that never got a connection (no route, refused, a TLS
	// handshake with a plain-HTTP server) is not retried on its first
	// attempt: that is a wrong or unreachable address, not a fault.
	var connected atomic.Bool
	r = r.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
	}))
	timer := time.AfterFunc(stall, func() { cancel(errStalled) })
	resp, err := d.t.next().RoundTrip(r)
	if err != nil {
		timer.Stop()
		stalled := context.Cause(ctx) == errStalled
		cancel(nil)
		switch {
		case d.req.Context().Err() != nil:
			return nil, nil, err
		case stalled:
			return nil, &Fault{Kind: Stalled, At: d.off, Stall: stall, Err: err}, nil
		case !connected.Load() && attempt == 1:
			return nil, nil, err
		case !connected.Load() || isDial(err):
			return nil, &Fault{Kind: Unreachable, At: d.off, Err: err}, nil
		}
		return nil, &Fault{Kind: Dropped, At: d.off, Err: err}, nil
	}
	if f := StatusFault(resp, d.off); f != nil {
		timer.Stop()
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		cancel(nil)
		return nil, f, nil
	}
	if attempt > 1 && d.off > 0 {
		if complete(resp, d.off) {
			// The first answer announced more than there is.
			timer.Stop()
			resp.Body.Close()
			cancel(nil)
			resp.Body, d.skip = http.NoBody, 0
			d.total = d.off
			d.mu.Lock()
			d.ctx, d.cur, d.cancel, d.timer = ctx, resp.Body, cancel, timer
			d.mu.Unlock()
			return resp, nil, nil
		}
		if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && d.resumable {
			// A server that cannot serve the range: from the start, then.
			timer.Stop()
			resp.Body.Close()
			cancel(nil)
			d.resumable = false
			return nil, &Fault{Kind: Dropped, At: d.off, Err: fmt.Errorf("server refused the range: %s", resp.Status)}, nil
		}
		if err := d.continuing(resp); err != nil {
			timer.Stop()
			resp.Body.Close()
			cancel(nil)
			return nil, nil, err
		}
	}
	d.mu.Lock()
	d.ctx, d.cur, d.cancel, d.timer = ctx, resp.Body, cancel, timer
	d.mu.Unlock()
	return resp, nil, nil
}

// continuing checks the answer to a request made after d.off bytes were
// delivered and sets up skipping what the caller already has.
func (d *download) continuing(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != d.off || (d.total >= 0 && total >= 0 && total != d.total) {
			return fmt.Errorf("resuming %s at byte %d: server sent Content-Range %q", d.url.Redacted(), d.off, resp.Header.Get("Content-Range"))
		}
		d.skip = 0
	case http.StatusOK:
		if (d.etag != "" && resp.Header.Get("ETag") != d.etag) || (d.modified != "" && resp.Header.Get("Last-Modified") != d.modified) {
			return fmt.Errorf("resuming %s at byte %d: the content changed on the server (ETag %q, was %q)",
				d.url.Redacted(), d.off, resp.Header.Get("ETag"), d.etag)
		}
		if d.resumable {
			d.notify(Retry{URL: d.url, Attempt: d.r.Attempt(), Attempts: d.t.Policy.attempts(), Restarted: true,
				Fault: &Fault{Kind: Dropped, At: d.off}})
		}
		d.skip = d.off
	default:
		return fmt.Errorf("resuming %s at byte %d: server answered %s", d.url.Redacted(), d.off, resp.Status)
	}
	return nil
}

func (d *download) validator() string {
	if d.etag != "" && !strings.HasPrefix(d.etag, "W/") {
		return d.etag // If-Range takes strong validators only
	}
	return d.modified
}

// accept returns the first usable response, its body wrapped so that
// reading it resumes after faults.
func (d *download) accept(resp *http.Response) *http.Response {
	if d.req.Method != http.MethodGet || resp.StatusCode != http.StatusOK {
		d.stopTimer()
		resp.Body = &plainBody{ReadCloser: resp.Body, d: d}
		return resp
	}
	d.total = resp.ContentLength
	d.etag, d.modified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	// Transparently decompressed bodies have offsets Range cannot address.
	d.resumable = !resp.Uncompressed && resp.Header.Get("Accept-Ranges") != "none"
	resp.Body = &body{d: d}
	return resp
}

// retry waits before the next attempt after fault f, or returns the error
// that ends the download.
func (d *download) retry(f *Fault) error {
	return d.r.Retry(d.req.Context(), f, d.off > 0 && d.resumable, d.closed)
}

func (d *download) notify(r Retry) {
	if d.t.Notify != nil {
		d.t.Notify(r)
	}
}

// stopTimer ends the stall detection of the current attempt.
func (d *download) stopTimer() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
}

// stop ends the current attempt's timer and context.
func (d *download) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
	}
	if d.cancel != nil {
		d.cancel(nil)
	}
}

// read reads from the current attempt's body, skipping what the caller
// already has, and turns a broken read into a fault.
func (d *download) read(p []byte) (int, *Fault, error) {
	d.mu.Lock()
	cur, timer := d.cur, d.timer
	d.mu.Unlock()
	stall := d.t.Policy.stall()
	for d.skip > 0 {
		n, err := io.CopyN(io.Discard, cur, d.skip)
		d.skip -= n
		if n > 0 {
			timer.Reset(stall)
		}
		if err != nil {
			return 0, d.fault(err), nil
		}
	}
	n, err := cur.Read(p)
	if n > 0 {
		d.off += int64(n)
		timer.Reset(stall)
	}
	switch {
	case err == nil:
		return n, nil, nil
	case err == io.EOF && (d.total < 0 || d.off >= d.total):
		d.stop()
		return n, nil, io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF // the server closed early
	}
	if d.req.Context().Err() != nil {
		return n, nil, err
	}
	return n, d.fault(err), nil
}

func (d *download) fault(err error) *Fault {
	d.mu.Lock()
	stalled := context.Cause(d.ctx) == errStalled
	d.mu.Unlock()
	d.stop()
	d.cur.Close()
	if stalled {
		return &Fault{Kind: Stalled, At: d.off, Stall: d.t.Policy.stall(), Err: err}
	}
	return &Fault{Kind: Dropped, At: d.off, Err: err}
}

// body is the caller's view of a resumable response body.
type body struct {
	d       *download
	pending *Fault
}

func (b *body) Read(p []byte) (int, error) {
	d := b.d
	for {
		if d.err != nil {
			return 0, d.err
		}
		if f := b.pending; f != nil {
			b.pending = nil
			if err := b.reconnect(f); err != nil {
				d.err = err
				return 0, err
			}
			continue
		}
		n, f, err := d.read(p)
		if err != nil {
			d.err = err
			return n, err
		}
		if f != nil {
			if n > 0 {
				b.pending = f
				return n, nil
			}
			b.pending = f
			continue
		}
		return n, nil
	}
}

// reconnect retries until a new attempt delivers a body or the download
// ends.
func (b *body) reconnect(f *Fault) error {
	d := b.d
	for {
		if err := d.retry(f); err != nil {
			return err
		}
		select {
		case <-d.closed:
			return errAbandoned
		default:
		}
		_, nf, err := d.do()
		if err != nil {
			return err
		}
		if nf == nil {
			return nil // continuing set up what to skip
		}
		f = nf
	}
}

func (b *body) Close() error {
	d := b.d
	d.mu.Lock()
	if !d.done {
		d.done = true
		close(d.closed)
	}
	cur := d.cur
	d.mu.Unlock()
	d.stop()
	if cur != nil {
		return cur.Close()
	}
	return nil
}

// plainBody is a body that is not resumed (HEAD, non-200 answers); it
// still releases the attempt's context when closed.
type plainBody struct {
	io.ReadCloser
	d *download
}

func (b *plainBody) Close() error {
	err := b.ReadCloser.Close()
	b.d.stop()
	return err
}

// complete reports a 416 answer to a Range request from off whose
// Content-Range says the content has exactly off bytes.
func complete(resp *http.Response, off int64) bool {
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		return false
	}
	v, ok := strings.CutPrefix(resp.Header.Get("Content-Range"), "bytes */")
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && n == off
}

// contentRange parses "bytes START-END/TOTAL"; total is -1 for "*".
func contentRange(v string) (start, total int64, ok bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, false
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, false
	}
	s, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

// isDial reports an error from connecting, before any request was sent.
func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
