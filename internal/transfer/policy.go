package transfer

import (
	"context"
	"math/rand/v2"
	"net/http"
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
	// included.
	Attempts int
	// Stall is how long a connection may go without delivering a byte
	// (response headers included) before it counts as dropped.
	Stall time.Duration
	// Total bounds a download's retries: none starts later than Total
	// after the download's first request. A transfer that keeps making
	// progress is never cut short by it.
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

// backoff is the wait before retry number n (1 for the first retry):
// Base*2^(n-1) capped at Max, less a random part of up to a half, so
// that clients failing together do not retry together.
func (p Policy) backoff(n int) time.Duration {
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

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
