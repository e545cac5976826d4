package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of Policy's fields.
const (
	DefaultAttempts = 5
	DefaultStall    = 30 * time.Second
	DefaultTotal    = 5 * time.Minute
	DefaultBase     = 500 * time.Millisecond
	DefaultMax      = 10 * time.Second
)

// Policy bounds the retries of one download. The zero value means the
// defaults above.
type Policy struct {
	// Attempts is how many requests one download may make, the first
	// included, to get ProgressReset further: a download that got that
	// much further since its count began starts counting again.
	Attempts int
	// Stall is how long a connection may go without delivering a byte
	// (response headers included) before it counts as dropped.
	Stall time.Duration
	// Total bounds a download's retries: none starts later than Total
	// after the download's first request, or after it last got
	// ProgressReset further. A transfer that keeps making progress is
	// never cut short by it.
	Total time.Duration
	// Base is the backoff before the first retry; it doubles with each
	// further one up to Max. Each wait is jittered down by up to half.
	Base, Max time.Duration
}

func (p Policy) attempts() int {
	if p.Attempts <= 0 {
		return DefaultAttempts
	}
	return p.Attempts
}

func (p Policy) stall() time.Duration {
	if p.Stall <= 0 {
		return DefaultStall
	}
	return p.Stall
}

func (p Policy) total() time.Duration {
	if p.Total <= 0 {
		return DefaultTotal
	}
	return p.Total
}

// Backoff is the wait before retry number n (1 for the first retry):
// Base*2^(n-1) capped at Max, less a random part of up to a half, so
// that clients failing together do not retry together.
func (p Policy) Backoff(n int) time.Duration {
	base, max := p.Base, p.Max
	if base <= 0 {
		base = DefaultBase
	}
	if max <= 0 {
		max = DefaultMax
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}

// Retryable reports whether an HTTP status is worth retrying: the server
// or a proxy is overloaded or broken for now (408, 429, 500, 502, 503,
// 504).
func Retryable(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// RetryAfter parses a Retry-After header (seconds or an HTTP date)
// relative to now; ok is false when there is none or it is malformed.
func RetryAfter(h http.Header, now time.Time) (d time.Duration, ok bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// ProgressReset is how much further a download must get for its attempts
// and its Total bound to count again from there: a link that drops every
// few megabytes still delivers a large file, while one that gives a few
// bytes per connection still fails.
const ProgressReset = 1 << 20

// Retrier counts the attempts of one download under Policy, for callers
// that make the requests themselves because they own what happens to the
// bytes (Transport uses one per request).
type Retrier struct {
	Policy Policy
	URL    *url.URL
	// Notify, if set, is told about each retry before its wait.
	Notify func(Retry)

	attempt int
	started time.Time
	from    int64 // where the current count of attempts began
}

// Begin counts an attempt that starts now and returns its number (from 1).
func (r *Retrier) Begin() int {
	if r.attempt == 0 {
		r.started = time.Now()
	}
	r.attempt++
	return r.attempt
}

// Attempt is the number of the current attempt.
func (r *Retrier) Attempt() int { return r.attempt }

// Retry waits before the attempt that follows fault f (resume: it goes on
// from f.At), or returns the *Error that ends the download when attempts or
// the total bound are used up, or ctx.Err(), or errAbandoned when abandon
// is closed during the wait.
func (r *Retrier) Retry(ctx context.Context, f *Fault, resume bool, abandon <-chan struct{}) error {
	attempts := r.Policy.attempts()
	if f.At-r.from >= ProgressReset {
		r.attempt, r.started, r.from = 1, time.Now(), f.At
	}
	if r.attempt >= attempts {
		return &Error{URL: r.URL, Fault: f, Attempts: r.attempt}
	}
	wait := r.Policy.Backoff(r.attempt)
	if f.hasRetryAfter {
		wait = f.retryAfter
	}
	if total := r.Policy.total(); time.Since(r.started)+wait > total {
		return &Error{URL: r.URL, Fault: f, Attempts: r.attempt,
			Reason: fmt.Sprintf("waiting %s more would pass the %s bound", wait.Round(time.Second), total)}
	}
	if r.Notify != nil {
		r.Notify(Retry{URL: r.URL, Fault: f, Attempt: r.attempt + 1, Attempts: attempts, Wait: wait, Resume: resume})
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-abandon:
		return errAbandoned
	case <-t.C:
		return nil
	}
}

var errAbandoned = errors.New("response body closed")

// StatusFault is the fault of an answer with a retryable status, with its
// Retry-After; nil for other statuses.
func StatusFault(resp *http.Response, at int64) *Fault {
	if !Retryable(resp.StatusCode) {
		return nil
	}
	f := &Fault{Kind: Status, Status: resp.StatusCode, At: at, Err: fmt.Errorf("server answered %s", resp.Status)}
	f.retryAfter, f.hasRetryAfter = RetryAfter(resp.Header, time.Now())
	return f
}

// Watchdog cancels a request when no byte arrives for a while: create it
// before the request, make the request with Context, read the body through
// Reader, and Stop it when done.
type Watchdog struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	d      time.Duration
}

// NewWatchdog starts watching with Policy's stall timeout.
func (p Policy) NewWatchdog(parent context.Context) *Watchdog {
	ctx, cancel := context.WithCancelCause(parent)
	d := p.stall()
	return &Watchdog{ctx: ctx, cancel: cancel, d: d, timer: time.AfterFunc(d, func() { cancel(errStalled) })}
}

// Context is the context to make the request with.
func (w *Watchdog) Context() context.Context { return w.ctx }

// Reader returns r, with each byte read putting the deadline off.
func (w *Watchdog) Reader(r io.Reader) io.Reader { return watched{r: r, w: w} }

// Stalled reports whether the watchdog cancelled the request.
func (w *Watchdog) Stalled() bool { return context.Cause(w.ctx) == errStalled }

// Fault classifies err, from the request or from reading its body after at
// bytes: Stalled if the watchdog fired, else Dropped.
func (w *Watchdog) Fault(err error, at int64) *Fault {
	if w.Stalled() {
		return &Fault{Kind: Stalled, At: at, Stall: w.d, Err: err}
	}
	return &Fault{Kind: Dropped, At: at, Err: err}
}

// Stop ends the watch and releases the context.
func (w *Watchdog) Stop() {
	w.timer.Stop()
	w.cancel(nil)
}

type watched struct {
	r io.Reader
	w *Watchdog
}

func (v watched) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	if n > 0 {
		v.w.timer.Reset(v.w.d)
	}
	return n, err
}
