package transfer

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Attempts count towards ProgressReset: a download that keeps getting a
// megabyte further between drops is retried for as long as it does, one
// that creeps is given up after Attempts.
func TestRetrierCountsAttemptsSinceProgress(t *testing.T) {
	ctx := context.Background()
	policy := Policy{Attempts: 3, Base: time.Microsecond, Max: time.Microsecond}
	run := func(step int64, faults int) (attempts []int, err error) {
		r := &Retrier{Policy: policy, Notify: func(rt Retry) { attempts = append(attempts, rt.Attempt) }}
		for i := 1; i <= faults; i++ {
			r.Begin()
			if err := r.Retry(ctx, &Fault{Kind: Dropped, At: int64(i) * step}, true, nil); err != nil {
				return attempts, err
			}
		}
		return attempts, nil
	}
	// 1.5 MB further each time: every drop is a first retry again.
	attempts, err := run(3*ProgressReset/2, 20)
	if err != nil {
		t.Fatalf("a download making progress failed: %v (retries %v)", err, attempts)
	}
	for _, a := range attempts {
		if a != 2 {
			t.Fatalf("retries of a download making progress: %v, want each to be attempt 2", attempts)
		}
	}
	// 100 kB further each time: the third attempt is the last.
	attempts, err = run(100<<10, 20)
	var te *Error
	if !errors.As(err, &te) || te.Attempts != 3 || len(attempts) != 2 {
		t.Fatalf("a creeping download: %v after retries %v, want an *Error after 3 attempts", err, attempts)
	}
	// 600 kB further each time: every second drop is past a megabyte
	// more, and the count begins again from that attempt: never given up.
	if attempts, err = run(600<<10, 30); err != nil {
		t.Fatalf("a download getting 1.2 MB per 2 attempts failed: %v (retries %v)", err, attempts)
	}
}
