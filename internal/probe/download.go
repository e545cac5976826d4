package probe

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/transfer"
)

// DefaultCacheDir is where downloaded packages are kept unless Cache.Dir
// says otherwise.
const DefaultCacheDir = "/var/cache/postroj/downloads"

// ErrChecksum is wrapped by errors about downloads whose SHA-256 differs
// from the one the URL pins with #sha256=HEX.
var ErrChecksum = errors.New("sha256 mismatch")

// DownloadError is a package that could not be fetched: the server could
// not be reached, answered with an error status or an HTML page, the
// transfer broke off, or the bytes do not match the pinned checksum. It is
// a problem of the infrastructure, not of the probe's input.
type DownloadError struct {
	URL    string
	Status int // the HTTP status when the server answered with an error, else 0
	Err    error
}

func (e *DownloadError) Error() string { return fmt.Sprintf("downloading %s: %v", e.URL, e.Err) }
func (e *DownloadError) Unwrap() error { return e.Err }

// InputError is a package argument that cannot be used as given: a local
// file that does not exist or is not a package, a URL that serves
// something that is not a package, a malformed #sha256= fragment, or a
// package the image's package manager cannot install.
type InputError struct {
	Source string
	Err    error
}

func (e *InputError) Error() string { return fmt.Sprintf("package %s: %v", e.Source, e.Err) }
func (e *InputError) Unwrap() error { return e.Err }

// Package is a package file on the host, ready to be installed.
type Package struct {
	Source string `json:"source"` // the URL or path as given
	Path   string `json:"path"`   // the file on the host
	Name   string `json:"name"`   // its file name, as the container sees it
	Type   Type   `json:"type"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// How says how the file was obtained: "local", "downloaded",
	// "resumed", "cached: not modified", "cached: sha256 pinned" or
	// "cached: server unreachable".
	How string `json:"how"`
	// Transferred counts the bytes received from the server.
	Transferred int64 `json:"transferred"`
}

// Cache fetches package files and keeps them, one directory per URL, so
// that unchanged packages are not downloaded again and interrupted
// downloads resume. It is safe for concurrent use, also by several
// processes sharing Dir.
//
// A cached file is reused without a request when its URL pins a SHA-256
// the file has; otherwise it is revalidated with a conditional GET
// (If-None-Match / If-Modified-Since). When the server cannot be reached
// at all, a complete cached copy is used and Package.How says so; an HTTP
// error (such as 404) is never papered over.
type Cache struct {
	// Dir holds the downloads (DefaultCacheDir if empty).
	Dir string
	// Client makes the requests (a client with connect and header timeouts
	// if nil).
	Client *http.Client
	// Logger receives what happens; nil discards it.
	Logger *slog.Logger
	// Retry bounds how one Fetch survives transient faults: a transfer
	// that breaks off or stalls is resumed from the part file, 5xx and 429
	// answers are retried after a backoff (see transfer.Policy).
	Retry transfer.Policy
	// Progress, if set, receives a line for each retry.
	Progress io.Writer
}

// entryMeta is what meta.json (a complete download) and part.json (a
// partial one) hold.
type entryMeta struct {
	URL          string    `json:"url"`
	Name         string    `json:"name"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"lastModified,omitempty"`
	Size         int64     `json:"size,omitempty"`
	SHA256       string    `json:"sha256,omitempty"`
	Fetched      time.Time `json:"fetched"`
}

var sha256Hex = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func (c *Cache) dir() string {
	if c.Dir == "" {
		return DefaultCacheDir
	}
	return c.Dir
}

func (c *Cache) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Cache) client() *http.Client {
	if c.Client != nil {
		return c.Client
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}}
}

// IsURL reports whether source is fetched over the network rather than read
// from the host's file system.
func IsURL(source string) bool {
	return strings.HasPrefix(source, "http://") || strings.HasPrefix(source, "https://")
}

// Fetch returns the package that source names: an http(s) URL, optionally
// pinned with #sha256=HEX, a file:// URL or a path on the host. Errors are
// *InputError (unusable argument, not a package) or *DownloadError.
func (c *Cache) Fetch(ctx context.Context, source string) (Package, error) {
	switch {
	case IsURL(source):
		u, pin, err := parseSource(source)
		if err != nil {
			return Package{}, &InputError{Source: source, Err: err}
		}
		return c.fetchURL(ctx, source, u, pin)
	case strings.HasPrefix(source, "file://"):
		u, err := url.Parse(source)
		if err != nil || u.Path == "" {
			return Package{}, &InputError{Source: source, Err: errors.New("malformed file:// URL")}
		}
		return localPackage(source, u.Path)
	case strings.Contains(source, "://"):
		return Package{}, &InputError{Source: source, Err: errors.New("unsupported URL scheme (valid: http://, https://, file://, or a path)")}
	}
	return localPackage(source, source)
}

// parseSource splits a URL from its #sha256=HEX fragment.
func parseSource(source string) (*url.URL, string, error) {
	u, err := url.Parse(source)
	if err != nil {
		return nil, "", fmt.Errorf("malformed URL: %w", err)
	}
	if u.Host == "" {
		return nil, "", errors.New("malformed URL: no host")
	}
	pin := ""
	if u.Fragment != "" {
		v, ok := strings.CutPrefix(u.Fragment, "sha256=")
		if !ok || !sha256Hex.MatchString(v) {
			return nil, "", fmt.Errorf("unexpected fragment #%s (valid: #sha256= and 64 hex digits)", u.Fragment)
		}
		pin = strings.ToLower(v)
	}
	u.Fragment, u.RawFragment = "", ""
	return u, pin, nil
}

func localPackage(source, p string) (Package, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return Package{}, &InputError{Source: source, Err: err}
	}
	st, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = errors.New("no such file")
		}
		return Package{}, &InputError{Source: source, Err: err}
	}
	if !st.Mode().IsRegular() {
		return Package{}, &InputError{Source: source, Err: errors.New("not a regular file")}
	}
	t, err := DetectFile(abs)
	if err != nil {
		if errors.Is(err, ErrHTMLPage) {
			err = fmt.Errorf("%w: %w", ErrNotPackage, err)
		}
		return Package{}, &InputError{Source: source, Err: err}
	}
	sum, _, err := fileio.SHA256(abs)
	if err != nil {
		return Package{}, &InputError{Source: source, Err: err}
	}
	return Package{Source: source, Path: abs, Name: fileName(filepath.Base(abs), t), Type: t,
		Size: st.Size(), SHA256: sum.Hex, How: "local"}, nil
}

// fileName makes name safe as a file name in the container (and in
// systemd-nspawn's --bind, which splits at ':') and gives it the suffix
// its package manager expects.
func fileName(name string, t Type) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._+~-", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), ".")
	if s == "" {
		s = "package"
	}
	if t != "" && !strings.HasSuffix(s, string(t.Extension())) && !(t == Pacman && strings.Contains(s, ".pkg.tar.")) {
		s += t.Extension()
	}
	return s
}

func (c *Cache) fetchURL(ctx context.Context, source string, u *url.URL, pin string) (Package, error) {
	key := sha256.Sum256([]byte(u.String()))
	entry := filepath.Join(c.dir(), hex.EncodeToString(key[:8]))
	if err := os.MkdirAll(entry, 0o755); err != nil {
		return Package{}, &DownloadError{URL: u.String(), Err: fmt.Errorf("download cache: %w", err)}
	}
	unlock, err := flock.Lock(ctx, filepath.Join(entry, ".lock"), nil)
	if err != nil {
		return Package{}, &DownloadError{URL: u.String(), Err: err}
	}
	defer unlock()
	f := fetch{c: c, log: c.logger().With("url", u.String()), source: source, url: u, pin: pin, entry: entry,
		name: fileName(path.Base(u.Path), "")}
	return f.run(ctx)
}

// fetch is one Fetch of a URL, holding the lock of its cache entry.
type fetch struct {
	c      *Cache
	log    *slog.Logger
	source string
	url    *url.URL
	pin    string
	entry  string
	name   string // the name of the complete file in entry

	transferred int64
	resumed     bool
}

func (f *fetch) partFile() string { return filepath.Join(f.entry, "download.part") }
func (f *fetch) metaFile() string { return filepath.Join(f.entry, "meta.json") }
func (f *fetch) partMeta() string { return filepath.Join(f.entry, "part.json") }

func (f *fetch) fail(status int, err error) error {
	return &DownloadError{URL: f.url.String(), Status: status, Err: err}
}

func (f *fetch) run(ctx context.Context) (Package, error) {
	cached, haveCached := f.complete()
	if haveCached && f.pin != "" && cached.SHA256 == f.pin {
		if sum, _, err := fileio.SHA256(cached.path); err == nil && sum.Hex == f.pin {
			f.log.Info("cached file has the pinned sha256: no request")
			return f.result(cached, "cached: sha256 pinned")
		}
		haveCached = false
	}
	r := &transfer.Retrier{Policy: f.c.Retry, URL: f.url, Notify: func(rt transfer.Retry) {
		f.log.Info("download fault", "retry", rt.String())
		if f.c.Progress != nil {
			fmt.Fprintf(f.c.Progress, "  package %s: %s\n", f.name, rt)
		}
	}}
	for {
		pkg, fault, err := f.attempt(ctx, cached, haveCached, r.Begin())
		if fault == nil {
			return pkg, err
		}
		if err := r.Retry(ctx, fault, fault.At > 0, nil); err != nil {
			var te *transfer.Error
			if errors.As(err, &te) {
				return Package{}, f.fail(te.Fault.Status, describedError{te, f.name})
			}
			return Package{}, f.fail(0, err)
		}
	}
}

// describedError renders an exhausted transfer naming the file:
// "connection to HOST dropped after 20.1 MB of webfs.deb (5 attempts)".
type describedError struct {
	err  *transfer.Error
	what string
}

func (e describedError) Error() string { return e.err.Describe(e.what) }
func (e describedError) Unwrap() error { return e.err }

// cachedFile is a complete download in the cache.
type cachedFile struct {
	entryMeta
	path string
}

// complete returns the complete download of the entry, if there is one
// that its metadata describes.
func (f *fetch) complete() (cachedFile, bool) {
	var m entryMeta
	if err := readJSON(f.metaFile(), &m); err != nil || m.URL != f.url.String() || m.Name == "" {
		return cachedFile{}, false
	}
	p := filepath.Join(f.entry, m.Name)
	st, err := os.Stat(p)
	if err != nil || st.Size() != m.Size {
		return cachedFile{}, false
	}
	return cachedFile{entryMeta: m, path: p}, true
}

// attempt makes request number n. A fault is a transfer that broke off,
// stalled or met a retryable status, and can be tried again (resumed from
// the part file when it has a validator); err is then nil.
func (f *fetch) attempt(ctx context.Context, cached cachedFile, haveCached bool, n int) (pkg Package, fault *transfer.Fault, err error) {
	wd := f.c.Retry.NewWatchdog(ctx)
	defer wd.Stop()
	var connected atomic.Bool
	tctx := httptrace.WithClientTrace(wd.Context(), &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected.Store(true) }})
	req, err := http.NewRequestWithContext(tctx, http.MethodGet, f.url.String(), nil)
	if err != nil {
		return Package{}, nil, f.fail(0, err)
	}
	req.Header.Set("User-Agent", "postroj")
	var part entryMeta
	offset := int64(0)
	switch {
	case haveCached:
		if cached.ETag != "" {
			req.Header.Set("If-None-Match", cached.ETag)
		}
		if cached.LastModified != "" {
			req.Header.Set("If-Modified-Since", cached.LastModified)
		}
	default:
		if st, err := os.Stat(f.partFile()); err == nil && st.Size() > 0 && readJSON(f.partMeta(), &part) == nil && part.URL == f.url.String() {
			validator := part.LastModified
			if part.ETag != "" && !strings.HasPrefix(part.ETag, "W/") {
				validator = part.ETag // If-Range takes strong validators only
			}
			if validator != "" {
				offset = st.Size()
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
				req.Header.Set("If-Range", validator)
			}
		}
	}
	f.log.Info("request", "range_from", offset, "conditional", haveCached)
	resp, err := f.c.client().Do(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return Package{}, nil, f.fail(0, ctx.Err())
		case haveCached && !connected.Load():
			f.log.Warn("server unreachable: using the cached copy", "err", err)
			pkg, err := f.result(cached, "cached: server unreachable")
			return pkg, nil, err
		case !connected.Load() && n == 1:
			return Package{}, nil, f.fail(0, unwrapURLError(err)) // unreachable, not a transient fault
		}
		return Package{}, wd.Fault(unwrapURLError(err), offset), nil
	}
	defer resp.Body.Close()
	if sf := transfer.StatusFault(resp, offset); sf != nil {
		return Package{}, sf, nil
	}

	switch {
	case resp.StatusCode == http.StatusNotModified && haveCached:
		f.log.Info("not modified: using the cached copy")
		pkg, err := f.result(cached, "cached: not modified")
		return pkg, nil, err
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		start, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			// Not the range asked for: start over.
			f.log.Info("unexpected Content-Range, restarting", "content_range", resp.Header.Get("Content-Range"))
			os.Remove(f.partFile())
			return Package{}, &transfer.Fault{Err: fmt.Errorf("server sent Content-Range %q for a request from byte %d", resp.Header.Get("Content-Range"), offset)}, nil
		}
		f.resumed = true
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0:
		os.Remove(f.partFile())
		return Package{}, &transfer.Fault{Err: errors.New("server refused to resume (416)")}, nil
	case resp.StatusCode == http.StatusOK:
		// A whole file: also the answer to a Range request whose If-Range
		// no longer matches, or from a server that ignores Range.
		offset = 0
		f.resumed = false
		part = entryMeta{URL: f.url.String(), ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Fetched: time.Now()}
		if err := fileio.WriteJSON(f.partMeta(), part, 0o644); err != nil {
			return Package{}, nil, f.fail(0, fmt.Errorf("download cache: %w", err))
		}
	default:
		return Package{}, nil, f.fail(resp.StatusCode, fmt.Errorf("server answered %s", resp.Status))
	}

	flags := os.O_WRONLY | os.O_CREATE
	if offset == 0 {
		flags |= os.O_TRUNC
	} else {
		flags |= os.O_APPEND
	}
	out, err := os.OpenFile(f.partFile(), flags, 0o644)
	if err != nil {
		return Package{}, nil, f.fail(0, fmt.Errorf("download cache: %w", err))
	}
	got, copyErr := io.Copy(out, wd.Reader(resp.Body))
	f.transferred += got
	if err := out.Close(); err != nil && copyErr == nil {
		return Package{}, nil, f.fail(0, fmt.Errorf("download cache: %w", err))
	}
	if copyErr == nil && resp.ContentLength >= 0 && got != resp.ContentLength {
		copyErr = fmt.Errorf("got %d of %d bytes", got, resp.ContentLength)
	}
	if copyErr != nil {
		if ctx.Err() != nil {
			return Package{}, nil, f.fail(0, ctx.Err())
		}
		// The partial file stays: the next attempt or run resumes it.
		return Package{}, wd.Fault(copyErr, offset+got), nil
	}
	pkg, err = f.finish(resp)
	return pkg, nil, err
}

// finish checks and activates the downloaded part file.
func (f *fetch) finish(resp *http.Response) (Package, error) {
	digest, size, err := fileio.SHA256(f.partFile())
	if err != nil {
		return Package{}, f.fail(0, err)
	}
	sum := digest.Hex
	if f.pin != "" && sum != f.pin {
		f.discardPart()
		return Package{}, f.fail(0, fmt.Errorf("%w: got %s, the URL pins %s", ErrChecksum, sum, f.pin))
	}
	t, err := DetectFile(f.partFile())
	if err != nil {
		f.discardPart()
		if errors.Is(err, ErrHTMLPage) {
			return Package{}, f.fail(resp.StatusCode, fmt.Errorf("the server sent %w (Content-Type %s)", err, contentType(resp)))
		}
		return Package{}, &InputError{Source: f.source, Err: fmt.Errorf("%w (downloaded %d bytes, Content-Type %s)", err, size, contentType(resp))}
	}
	name := fileName(f.name, t)
	var part entryMeta
	readJSON(f.partMeta(), &part)
	meta := entryMeta{URL: f.url.String(), Name: name, ETag: part.ETag, LastModified: part.LastModified,
		Size: size, SHA256: sum, Fetched: time.Now()}
	// The old complete file, if any, goes first: meta.json must never
	// describe a file that is not there.
	os.Remove(f.metaFile())
	if old, ok := f.complete(); ok && old.path != filepath.Join(f.entry, name) {
		os.Remove(old.path)
	}
	if err := os.Rename(f.partFile(), filepath.Join(f.entry, name)); err != nil {
		return Package{}, f.fail(0, fmt.Errorf("download cache: %w", err))
	}
	if err := fileio.WriteJSON(f.metaFile(), meta, 0o644); err != nil {
		return Package{}, f.fail(0, fmt.Errorf("download cache: %w", err))
	}
	os.Remove(f.partMeta())
	how := "downloaded"
	if f.resumed {
		how = "resumed"
	}
	f.log.Info("downloaded", "bytes", f.transferred, "size", size, "how", how)
	pkg, err := f.result(cachedFile{entryMeta: meta, path: filepath.Join(f.entry, name)}, how)
	return pkg, err
}

func (f *fetch) discardPart() {
	os.Remove(f.partFile())
	os.Remove(f.partMeta())
}

func (f *fetch) result(c cachedFile, how string) (Package, error) {
	t, err := DetectFile(c.path)
	if err != nil {
		return Package{}, f.fail(0, fmt.Errorf("cached file %s: %w", c.path, err))
	}
	return Package{Source: f.source, Path: c.path, Name: c.Name, Type: t, Size: c.Size, SHA256: c.SHA256,
		How: how, Transferred: f.transferred}, nil
}

// contentRangeStart parses the first byte of "bytes START-END/TOTAL".
func contentRangeStart(v string) (int64, bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, false
	}
	start, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(start, 10, 64)
	return n, err == nil
}

func contentType(resp *http.Response) string {
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		return "not given"
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	return ct
}

// unwrapURLError drops the "Get URL:" prefix that net/http adds: the
// DownloadError names the URL already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func readJSON(p string, v any) error {
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}
