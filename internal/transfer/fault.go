package transfer

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/racker-postroj/racker/internal/humanize"
)

// Kind is what went wrong in one attempt of a download.
type Kind int

const (
	// Dropped: the connection broke before the response was complete.
	Dropped Kind = iota + 1
	// Stalled: no byte arrived for Policy.Stall.
	Stalled
	// Status: the server answered with a retryable status (Fault.Status).
	Status
	// Unreachable: a retry could not connect at all.
	Unreachable
)

// Fault is one failed attempt of a download.
type Fault struct {
	Kind   Kind
	Status int           // the HTTP status, for Kind Status
	At     int64         // bytes of the response body received before it
	Stall  time.Duration // the stall timeout, for Kind Stalled
	Err    error         // the underlying error, if any

	retryAfter    time.Duration // the server's Retry-After, if hasRetryAfter
	hasRetryAfter bool
}

// String says what happened, for progress lines: "connection dropped at
// 20.1 MB", "stalled for 30s at 1.2 MB", "HTTP 503 Service Unavailable".
func (f *Fault) String() string {
	switch f.Kind {
	case Dropped:
		return "connection dropped at " + humanize.Bytes(f.At)
	case Stalled:
		return fmt.Sprintf("no bytes for %s at %s", f.Stall, humanize.Bytes(f.At))
	case Status:
		return fmt.Sprintf("HTTP %d %s", f.Status, http.StatusText(f.Status))
	case Unreachable:
		return fmt.Sprintf("cannot connect: %v", f.Err)
	}
	return fmt.Sprintf("%v", f.Err)
}

// Retry is reported (Transport.Notify) before a download tries again.
type Retry struct {
	// URL is the download's URL as first requested (before redirects).
	URL   *url.URL
	Fault *Fault
	// Attempt is the attempt about to start, of Attempts.
	Attempt, Attempts int
	// Wait is how long it waits first.
	Wait time.Duration
	// Resume reports a Range request from Fault.At; otherwise the
	// download starts over (and what was already received is skipped).
	Resume bool
	// Restarted reports that the server answered a Range request with the
	// whole content: the download goes on from the start, the bytes
	// already received are skipped (and must match: digests decide).
	Restarted bool
}

// String renders r as a progress line tail: "connection dropped at 20.1
// MB, resuming (attempt 2/5)".
func (r Retry) String() string {
	if r.Restarted {
		return fmt.Sprintf("server ignored the Range request, restarting from the start (attempt %d/%d)", r.Attempt, r.Attempts)
	}
	action := "retrying"
	if r.Resume {
		action = "resuming"
	}
	if r.Wait >= time.Second {
		action += " in " + r.Wait.Round(100*time.Millisecond).String()
	}
	return fmt.Sprintf("%s, %s (attempt %d/%d)", r.Fault, action, r.Attempt, r.Attempts)
}

// Error is a download whose retries ran out (or whose bound on total time
// was reached); Fault is the last one.
type Error struct {
	URL      *url.URL
	Fault    *Fault
	Attempts int
	// Reason, if set, says why no further attempt was made before
	// Attempts ran out ("Retry-After 1h0m0s is past the retry bound").
	Reason string
}

func (e *Error) Error() string { return e.Describe("") }

func (e *Error) Unwrap() error { return e.Fault.Err }

// Describe renders e as one line naming the host and the fault, with what
// (such as "layer 8fe13ad9715c") naming what was downloaded:
// "connection to 127.0.0.1:5000 dropped after 20.1 MB of layer
// 8fe13ad9715c (5 attempts)".
func (e *Error) Describe(what string) string {
	host := "?"
	if e.URL != nil {
		host = e.URL.Host
	}
	of := ""
	if what != "" {
		of = " of " + what
	}
	var s string
	f := e.Fault
	switch f.Kind {
	case Dropped:
		s = fmt.Sprintf("connection to %s dropped after %s%s", host, humanize.Bytes(f.At), of)
	case Stalled:
		s = fmt.Sprintf("connection to %s stalled (no bytes for %s) after %s%s", host, f.Stall, humanize.Bytes(f.At), of)
	case Status:
		if what != "" {
			of = " for " + what
		}
		s = fmt.Sprintf("%s answered HTTP %d %s%s", host, f.Status, http.StatusText(f.Status), of)
	case Unreachable:
		s = fmt.Sprintf("cannot connect to %s%s: %v", host, of, f.Err)
	default:
		s = fmt.Sprintf("%s: %v", host, f.Err)
	}
	s += fmt.Sprintf(" (%d %s", e.Attempts, pluralAttempts(e.Attempts))
	if e.Reason != "" {
		s += "; " + e.Reason
	}
	return s + ")"
}

func pluralAttempts(n int) string {
	if n == 1 {
		return "attempt"
	}
	return "attempts"
}

// errStalled is the cause of an attempt's context when it stalled.
var errStalled = errors.New("stalled")
