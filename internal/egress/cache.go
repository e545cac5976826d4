package egress

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/flock"
)

// DefaultCacheDir is the shared package cache unless Cache.Dir says
// otherwise: next to postroj's downloads cache.
const DefaultCacheDir = "/var/cache/postroj/packages"

// Cache states a Request records.
const (
	CacheHit         = "hit"         // served from disk, not asked upstream
	CacheRevalidated = "revalidated" // upstream said 304 Not Modified: served from disk
	CacheMiss        = "miss"        // fetched upstream and stored
	CacheNone        = ""            // not cacheable: passed through
)

// Class says how the cache treats a URL.
type Class int

const (
	// Uncached URLs pass through.
	Uncached Class = iota
	// Immutable URLs (package files, Debian's by-hash indexes) never change
	// once published: a stored copy is served without asking upstream.
	Immutable
	// Index URLs (InRelease, Packages, repomd.xml, pacman databases, ...)
	// change in place: a stored copy is served only after upstream confirms
	// it with a conditional request.
	Index
)

// packageSuffixes name package files, whose pool paths never change.
var packageSuffixes = []string{".deb", ".udeb", ".ddeb", ".rpm", ".drpm"}

// indexNames are repository metadata files, matched on the last path
// element (after removing a compression suffix).
var indexNames = []string{"InRelease", "Release", "Release.gpg", "Packages", "Sources", "Contents", "repomd.xml", "repomd.xml.asc", "repomd.xml.key"}

var compressionSuffixes = []string{".gz", ".xz", ".bz2", ".zst", ".lz4", ".lzma"}

// Classify says how u is cached. Only plain HTTP is ever cached: HTTPS
// goes through CONNECT tunnels, which are not intercepted.
func Classify(u *url.URL) Class {
	if u.Scheme != "http" || u.RawQuery != "" {
		return Uncached
	}
	p := u.Path
	base := path.Base(p)
	for _, s := range packageSuffixes {
		if strings.HasSuffix(base, s) {
			return Immutable
		}
	}
	if strings.Contains(base, ".pkg.tar") {
		if strings.HasSuffix(base, ".sig") {
			return Index // signatures of packages are small; still confirm them
		}
		return Immutable
	}
	if strings.Contains(p, "/by-hash/") {
		return Immutable
	}
	name := base
	for _, s := range compressionSuffixes {
		name = strings.TrimSuffix(name, s)
	}
	for _, n := range indexNames {
		if name == n {
			return Index
		}
	}
	if strings.HasPrefix(name, "Translation-") || strings.HasPrefix(name, "Components-") || strings.HasPrefix(name, "icons-") {
		return Index
	}
	if strings.Contains(p, "/repodata/") {
		return Index // primary.xml.gz, filelists, comps, ...
	}
	if strings.HasSuffix(name, ".db") || strings.HasSuffix(name, ".files") || strings.HasSuffix(name, ".db.sig") {
		return Index // pacman's core.db, extra.files
	}
	return Uncached
}

// Cache keeps package files and repository indexes fetched over plain
// HTTP, keyed by URL, shared by every proxy and process on the host. An
// entry becomes visible only once complete (its metadata file is renamed
// into place last), so an interrupted download is never served; one lock
// file per URL makes concurrent fetches of one file download it once.
type Cache struct {
	// Dir holds the entries (DefaultCacheDir if empty).
	Dir    string
	Logger *slog.Logger

	sweep sync.Once
}

// Sweep removes what interrupted downloads left (a killed process's
// unfinished files; they are never served either way). Entries being
// fetched right now, by this or another process, are left alone.
func (c *Cache) Sweep() {
	parts, _ := filepath.Glob(filepath.Join(c.dir(), "??", "*.part"))
	for _, p := range parts {
		key, _, _ := strings.Cut(filepath.Base(p), ".")
		e := entry{dir: filepath.Dir(p), key: key}
		if unlock, ok := flock.TryLock(e.lockPath()); ok {
			os.Remove(p)
			unlock()
		}
	}
}

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

// meta is an entry's metadata file; Body names the body file next to it.
type meta struct {
	URL          string    `json:"url"`
	Body         string    `json:"body"`
	Size         int64     `json:"size"`
	ContentType  string    `json:"contentType,omitempty"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"lastModified,omitempty"`
	Stored       time.Time `json:"stored"`
}

type entry struct {
	dir, key string
}

func (c *Cache) entry(u string) entry {
	h := sha256.Sum256([]byte(u))
	k := hex.EncodeToString(h[:])
	return entry{dir: filepath.Join(c.dir(), k[:2]), key: k}
}

func (e entry) metaPath() string { return filepath.Join(e.dir, e.key+".json") }
func (e entry) lockPath() string { return filepath.Join(e.dir, e.key+".lock") }

// load returns the entry's metadata and open body if it is complete.
func (e entry) load(u string) (*meta, *os.File, bool) {
	b, err := os.ReadFile(e.metaPath())
	if err != nil {
		return nil, nil, false
	}
	var m meta
	if json.Unmarshal(b, &m) != nil || m.URL != u || strings.ContainsAny(m.Body, "/\x00") || m.Body == "" {
		return nil, nil, false
	}
	f, err := os.Open(filepath.Join(e.dir, m.Body))
	if err != nil {
		return nil, nil, false
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != m.Size {
		f.Close()
		return nil, nil, false
	}
	return &m, f, true
}

// cleanStale removes the entry's unfinished bodies and bodies no metadata
// names; the caller holds the entry's lock.
func (e entry) cleanStale(keep string) {
	names, _ := filepath.Glob(filepath.Join(e.dir, e.key+".*"))
	for _, n := range names {
		b := filepath.Base(n)
		if b == keep || strings.HasSuffix(b, ".json") || strings.HasSuffix(b, ".lock") {
			continue
		}
		os.Remove(n)
	}
}

// fetchFunc asks upstream; cond, when set, makes it a conditional request.
type fetchFunc func(ctx context.Context, cond *meta) (*http.Response, error)

// serve answers r for URL u of class cls from the cache, asking upstream
// through fetch when needed. It returns the cache state and the status
// sent. A non-nil error is an upstream failure before anything was sent.
func (c *Cache) serve(w http.ResponseWriter, r *http.Request, u string, cls Class, fetch fetchFunc) (string, int, error) {
	ctx := r.Context()
	c.sweep.Do(c.Sweep)
	e := c.entry(u)
	if cls == Immutable {
		if m, f, ok := e.load(u); ok {
			defer f.Close()
			return CacheHit, serveStored(w, r, m, f), nil
		}
	}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return CacheNone, 0, fmt.Errorf("package cache: %w", err)
	}
	// One fetch per URL at a time, across processes: a second client waits
	// and then finds the entry (or revalidates it cheaply).
	unlock, err := flock.Lock(ctx, e.lockPath(), nil)
	if err != nil {
		return CacheNone, 0, fmt.Errorf("package cache: %w", err)
	}
	defer unlock()
	m, f, ok := e.load(u)
	if ok {
		e.cleanStale(m.Body)
	} else {
		e.cleanStale("")
	}
	if ok {
		defer f.Close()
		if cls == Immutable {
			return CacheHit, serveStored(w, r, m, f), nil
		}
	}
	var cond *meta
	if ok && (m.ETag != "" || m.LastModified != "") {
		cond = m
	}
	resp, err := fetch(ctx, cond)
	if err != nil {
		return CacheNone, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && cond != nil {
		return CacheRevalidated, serveStored(w, r, m, f), nil
	}
	if resp.StatusCode != http.StatusOK {
		copyHeader(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return CacheNone, resp.StatusCode, nil
	}
	return CacheMiss, http.StatusOK, c.store(w, e, u, resp)
}

// store streams resp to the client while writing it to a new body file,
// and commits the entry only when the whole body arrived. The client's
// failure does not stop the download: the next client gets the file.
func (c *Cache) store(w http.ResponseWriter, e entry, u string, resp *http.Response) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	body := e.key + "." + hex.EncodeToString(rnd[:])
	tmp := filepath.Join(e.dir, body+".part")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		// Serve without caching rather than fail the client.
		c.logger().Warn("package cache: cannot store", "url", u, "err", err)
		copyHeader(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return nil
	}
	defer os.Remove(tmp) // a no-op once renamed
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(http.StatusOK)
	cw := &clientWriter{w: w}
	n, err := io.Copy(io.MultiWriter(f, cw), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
	}
	if err != nil {
		c.logger().Info("package cache: incomplete download not stored", "url", u, "err", err)
		return &incompleteError{err}
	}
	if err := os.Rename(tmp, filepath.Join(e.dir, body)); err != nil {
		return nil
	}
	m := meta{URL: u, Body: body, Size: n, ContentType: resp.Header.Get("Content-Type"), ETag: resp.Header.Get("ETag"),
		LastModified: resp.Header.Get("Last-Modified"), Stored: time.Now().UTC()}
	if err := fileio.WriteJSON(e.metaPath(), m, 0o644); err != nil {
		return nil
	}
	e.cleanStale(body)
	c.logger().Debug("package cache: stored", "url", u, "bytes", n)
	return nil
}

// clientWriter writes to the client until the first error, then discards:
// the download into the cache goes on.
type clientWriter struct {
	w      io.Writer
	failed bool
}

func (c *clientWriter) Write(p []byte) (int, error) {
	if !c.failed {
		if _, err := c.w.Write(p); err != nil {
			c.failed = true
		}
	}
	return len(p), nil
}

// incompleteError is an upstream body that broke off after the response
// had begun: the client must see a broken response, not a short one.
type incompleteError struct{ err error }

func (e *incompleteError) Error() string { return "incomplete download: " + e.err.Error() }
func (e *incompleteError) Unwrap() error { return e.err }

// serveStored answers r from a stored entry; http.ServeContent handles the
// client's own conditional and range headers.
func serveStored(w http.ResponseWriter, r *http.Request, m *meta, f *os.File) int {
	h := w.Header()
	if m.ContentType != "" {
		h.Set("Content-Type", m.ContentType)
	}
	if m.ETag != "" {
		h.Set("ETag", m.ETag)
	}
	var mod time.Time
	if m.LastModified != "" {
		mod, _ = http.ParseTime(m.LastModified)
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	http.ServeContent(sw, r, "", mod, f)
	return sw.status
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Entries counts the complete entries in the cache (for tests and
// diagnostics).
func (c *Cache) Entries() (int, error) {
	names, err := filepath.Glob(filepath.Join(c.dir(), "??", "*.json"))
	if err != nil {
		return 0, err
	}
	return len(names), nil
}
