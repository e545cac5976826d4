package image

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/racker-postroj/racker/internal/transfer"
)

// downloads is the network side of one pull: the transport every request
// of it goes through (retries and resumes, see transfer.Transport), and
// which layer each blob is, so that retries are reported per layer.
type downloads struct {
	ref      string
	policy   transfer.Policy
	progress Progress
	tr       *transfer.Transport

	mu     sync.Mutex
	layers map[string]int // blob digest -> layer index
	count  int
}

func newDownloads(ref string, opts PullOptions, logger *slog.Logger) *downloads {
	next := opts.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	d := &downloads{ref: ref, policy: opts.Retry, progress: opts.Progress, layers: map[string]int{}}
	d.tr = &transfer.Transport{Next: loopbackOnlyHTTP{next: next}, Policy: opts.Retry, Notify: func(r transfer.Retry) {
		i, what := d.what(r.URL.Path)
		logger.Info("download fault", "what", what, "host", r.URL.Host, "retry", r.String())
		if d.progress != nil {
			d.progress.Retrying(i, what, r)
		}
	}}
	return d
}

// setLayers records the layers about to be fetched.
func (d *downloads) setLayers(infos []LayerInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, l := range infos {
		d.layers[l.Digest] = i
	}
	d.count = len(infos)
}

// what names the download at a registry path: a layer (with its index), the
// config, a manifest.
func (d *downloads) what(path string) (int, string) {
	if _, dg, ok := strings.Cut(path, "/blobs/"); ok {
		d.mu.Lock()
		i, isLayer := d.layers[dg]
		d.mu.Unlock()
		if isLayer {
			return i, "layer " + short(dg)
		}
		return -1, "blob " + short(dg)
	}
	if strings.Contains(path, "/manifests/") {
		return -1, "the manifest of " + d.ref
	}
	return -1, "a request for " + d.ref
}

// options are the remote options of every request of the pull. Retries are
// d.tr's alone: go-containerregistry's own retry transport is switched off,
// or faults would be retried twice over.
func (d *downloads) options(ctx context.Context, kc remote.Option) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		kc,
		remote.WithTransport(d.tr),
		remote.WithUserAgent("racker"),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
	}
}

// again runs f, a request go-containerregistry makes (opening a layer
// blob, reading the config), again under the same policy when it fails
// before any byte reached us in a way the transport cannot see: the
// registry's Content-Length disagrees with the manifest, or the connection
// broke inside go-containerregistry's own reads. Registry answers (404,
// 401, ...) and exhausted transfers are not retried. i and what name the
// download for progress, as in Progress.Retrying.
func (d *downloads) again(ctx context.Context, i int, what string, f func() error) error {
	attempts := d.policy.Attempts
	if attempts <= 0 {
		attempts = transfer.DefaultAttempts
	}
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil || attempt >= attempts || !reopenable(err) {
			return err
		}
		wait := d.policy.Backoff(attempt)
		if d.progress != nil {
			d.progress.Retrying(i, what, transfer.Retry{Fault: &transfer.Fault{Err: err},
				Attempt: attempt + 1, Attempts: attempts, Wait: wait})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func reopenable(err error) bool {
	var te *transfer.Error
	var re *transport.Error
	return !errors.As(err, &te) && !errors.As(err, &re) && !errors.Is(err, context.Canceled)
}

// downloadError is a download whose retries ran out; its message is the
// one line users see: "connection to 127.0.0.1:5000 dropped after 20.1 MB
// of layer 8fe13ad9715c (5 attempts)".
type downloadError struct {
	what string
	err  *transfer.Error
}

func (e *downloadError) Error() string { return e.err.Describe(e.what) }
func (e *downloadError) Unwrap() error { return e.err }

// asDownloadError names what in err if it is an exhausted transfer.
func asDownloadError(err error, what string) error {
	var te *transfer.Error
	if errors.As(err, &te) {
		return &downloadError{what: what, err: te}
	}
	return err
}
