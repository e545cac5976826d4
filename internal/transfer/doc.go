// Package transfer makes HTTP downloads survive transient faults: a dropped
// or stalled connection resumes with a Range request from the last byte
// received, 5xx and 429 answers are retried with exponential backoff and
// jitter (honouring Retry-After), all within a bounded number of attempts
// and a bounded total time.
package transfer
