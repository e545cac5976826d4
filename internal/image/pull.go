package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/layer"
	"github.com/racker-postroj/racker/internal/transfer"
)

// PullOptions configure Store.Pull. The zero value pulls linux/<host arch>
// from the registry named in the reference, with docker's credentials.
type PullOptions struct {
	// Platform selects from multi-platform indexes; nil means linux on the
	// host's architecture. When set explicitly, a single-platform image must
	// match it.
	Platform *v1.Platform
	Mirrors  Mirrors
	// Keychain supplies credentials; nil means ~/.docker/config.json and its
	// credential helpers.
	Keychain authn.Keychain
	// Transport is the HTTP transport; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Progress, when set, is told about layers as they download and unpack.
	Progress Progress
	// MaxEntries caps the number of tar entries in one image (0: layer's default).
	MaxEntries int64
	// Parallel is how many layers download at once (0: 3).
	Parallel int
	// Retry bounds how every download of the pull survives transient
	// faults (see transfer.Transport); its Stall is --stall-timeout.
	Retry transfer.Policy
}

// Progress receives pull progress. Calls may come from several goroutines.
type Progress interface {
	// Start is called once with the layers about to be fetched.
	Start(ref string, layers []LayerInfo)
	// Fetched reports the bytes of layer i received so far.
	Fetched(i int, n int64)
	// Unpacked reports that layer i is applied to the root filesystem.
	Unpacked(i int)
	// Retrying reports that a download failed and is tried again: layer
	// i, or (i < 0) another download, such as a manifest, named by what.
	Retrying(i int, what string, r transfer.Retry)
}

// LayerInfo describes one layer of an image being pulled.
type LayerInfo struct {
	Digest string
	Size   int64
}

// Error is a failed store operation on an image; its message is one line
// that names the reference and the cause.
type Error struct {
	Op  string // "pulling", ...
	Ref string
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("%s %s: %s", e.Op, e.Ref, describe(e.Err)) }
func (e *Error) Unwrap() error { return e.Err }

// ErrPlatform is wrapped by errors about platforms an image does not offer.
var ErrPlatform = errors.New("no matching platform")

// HostPlatform is the platform pulled when none is given: linux and this
// process's architecture, with the variant docker assumes for it (arm64 is
// v8, 32-bit arm v7).
func HostPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm64":
		p.Variant = "v8"
	case "arm":
		p.Variant = "v7"
	}
	return p
}

// PullResult says what Pull did.
type PullResult struct {
	Image    Image
	UpToDate bool // the stored image already matched the registry
}

// Pull fetches ref into the store and activates it, unless the stored image
// is already what the registry serves. It never leaves a partial image
// behind: extraction happens in tmp/ and is activated by a rename only when
// every digest has been verified.
func (s *Store) Pull(ctx context.Context, ref Reference, opts PullOptions) (PullResult, error) {
	res, err := s.pull(ctx, ref, opts)
	if err != nil {
		return res, &Error{Op: "pulling", Ref: ref.String(), Err: err}
	}
	return res, nil
}

func (s *Store) pull(ctx context.Context, ref Reference, opts PullOptions) (PullResult, error) {
	if err := s.CleanTemp(); err != nil {
		s.Logger.Warn("cleaning temporary files", "err", err)
	}
	platform := HostPlatform()
	explicit := opts.Platform != nil
	if explicit {
		platform = *opts.Platform
	}
	// A digest reference that is stored needs no network at all.
	if ref.Digest() != "" {
		if img, err := s.Lookup(ref); err == nil && (!explicit || img.Platform == platform.String()) {
			return PullResult{Image: img, UpToDate: true}, nil
		}
	}

	t0 := time.Now()
	dl := newDownloads(ref.String(), opts, s.Logger)
	src, top, err := s.head(ctx, ref, opts, dl)
	if err != nil {
		return PullResult{}, err
	}
	if rr, err := s.readRef(ref.String()); err == nil && (rr.Index == top.Digest.String() || rr.Digest == top.Digest.String()) &&
		(!explicit || rr.Platform == platform.String()) {
		if img, err := s.image(rr); err == nil {
			s.Logger.Info("image is up to date", "ref", ref.String(), "digest", img.Digest, "took", time.Since(t0))
			return PullResult{Image: img, UpToDate: true}, nil
		}
	}

	desc, err := remote.Get(src, s.remoteOptions(ctx, opts, dl)...)
	if err != nil {
		return PullResult{}, asDownloadError(err, "the manifest")
	}
	img, index, err := pickPlatform(desc, platform, explicit)
	if err != nil {
		return PullResult{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return PullResult{}, err
	}
	var cfg *v1.ConfigFile
	if err := dl.again(ctx, -1, "the config of "+ref.String(), func() (err error) {
		cfg, err = img.ConfigFile()
		return err
	}); err != nil {
		return PullResult{}, fmt.Errorf("reading image config: %w", asDownloadError(err, "the config"))
	}
	pl := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}.String()
	if cfg.OS != "linux" {
		return PullResult{}, fmt.Errorf("%w: image is for %q, only linux images can run", ErrPlatform, pl)
	}
	if explicit && !platformMatches(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}, platform) {
		return PullResult{}, fmt.Errorf("%w: image is %s, not %s", ErrPlatform, pl, platform.String())
	}
	if !explicit && !platformMatches(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}, platform) {
		s.Logger.Warn("image platform does not match the host", "image", pl, "host", platform.String())
	}

	rr := refRecord{Reference: ref.String(), Digest: digest.String(), Index: index, Platform: pl}
	out, err := s.store(ctx, img, cfg, rr, opts, dl)
	return PullResult{Image: out}, err
}

// store unpacks img under the lock of its digest unless its content is
// already stored, then records the reference rr. Pull and Import share it;
// dl is the pull's network side, nil for a local image.
func (s *Store) store(ctx context.Context, img v1.Image, cfg *v1.ConfigFile, rr refRecord, opts PullOptions, dl *downloads) (Image, error) {
	unlock, err := s.lock(ctx, rr.Digest)
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	if _, err := s.readRecord(rr.Digest); err != nil {
		if err := s.unpack(ctx, rr.Reference, img, cfg, rr, opts, dl); err != nil {
			return Image{}, err
		}
	} else {
		s.Logger.Info("image content already stored", "digest", rr.Digest)
	}
	if err := s.writeRef(rr); err != nil {
		return Image{}, fmt.Errorf("recording reference: %w", err)
	}
	return s.image(rr)
}

func (s *Store) remoteOptions(ctx context.Context, opts PullOptions, dl *downloads) []remote.Option {
	kc := opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	return dl.options(ctx, remote.WithAuthFromKeychain(kc))
}

// head finds the first source (mirrors, then the registry itself) that
// serves ref and returns it with the descriptor it resolves to. When every
// source fails, the registry's own answer wins over a connection failure.
func (s *Store) head(ctx context.Context, ref Reference, opts PullOptions, dl *downloads) (name.Reference, *v1.Descriptor, error) {
	var sources []name.Reference
	for _, m := range opts.Mirrors[ref.Registry()] {
		r, err := at(ref, m)
		if err != nil {
			return nil, nil, fmt.Errorf("mirror %s: %w", m, err)
		}
		sources = append(sources, r)
	}
	sources = append(sources, ref.Remote())
	var answer, last error
	for _, src := range sources {
		t0 := time.Now()
		d, err := remote.Head(src, s.remoteOptions(ctx, opts, dl)...)
		if err != nil && ctx.Err() == nil {
			// Some registries refuse HEAD; GET is the reference behaviour.
			if gd, gerr := remote.Get(src, s.remoteOptions(ctx, opts, dl)...); gerr == nil {
				d, err = &gd.Descriptor, nil
			} else {
				err = gerr
			}
		}
		if err == nil {
			s.Logger.Info("resolved", "ref", ref.String(), "source", src.Context().RegistryStr(), "digest", d.Digest.String(), "took", time.Since(t0))
			return src, d, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		s.Logger.Info("source failed", "source", src.Context().RegistryStr(), "err", describe(err))
		if isRegistryAnswer(err) {
			answer = err // the registry's own answer, tried last, wins
		}
		last = err
	}
	if answer != nil {
		return nil, nil, asDownloadError(answer, "the manifest")
	}
	return nil, nil, asDownloadError(last, "the manifest")
}

// MatchesPlatform reports whether the stored image runs as platform p.
func (img Image) MatchesPlatform(p v1.Platform) bool {
	have, err := ParsePlatform(img.Platform)
	return err == nil && platformMatches(*have, p)
}

// ParsePlatform parses "os/arch[/variant]" with go-containerregistry's
// v1.ParsePlatform, which also takes an ":osversion" suffix; os and arch
// must be given.
func ParsePlatform(s string) (*v1.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return nil, fmt.Errorf("invalid platform %q (want os/arch[/variant], e.g. linux/arm64)", s)
	}
	return p, nil
}

// platformMatches reports whether an image built for have runs as want:
// have.Satisfies(want), except that a variant only counts when both name
// one (indexes often leave out arm64's v8).
func platformMatches(have, want v1.Platform) bool {
	if have.Variant == "" {
		want.Variant = ""
	}
	return have.Satisfies(want)
}

// pickPlatform returns the image for platform from desc, and the index
// digest when desc is an index.
func pickPlatform(desc *remote.Descriptor, platform v1.Platform, explicit bool) (v1.Image, string, error) {
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, "", err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, "", err
		}
		var have []string
		for _, m := range im.Manifests {
			if m.Platform == nil || !m.MediaType.IsImage() {
				continue
			}
			if platformMatches(*m.Platform, platform) {
				img, err := idx.Image(m.Digest)
				return img, desc.Digest.String(), err
			}
			if m.Platform.OS != "unknown" {
				have = append(have, m.Platform.String())
			}
		}
		return nil, "", fmt.Errorf("%w: no %s image in the index (it has: %s)", ErrPlatform, platform.String(), strings.Join(have, ", "))
	case desc.MediaType.IsImage():
		img, err := desc.Image()
		return img, "", err
	default:
		return nil, "", fmt.Errorf("unsupported media type %q: not a container image", desc.MediaType)
	}
}

// unpack downloads and applies the layers of img into a temporary
// directory and activates it as images/sha256/<hex>.
func (s *Store) unpack(ctx context.Context, ref string, img v1.Image, cfg *v1.ConfigFile, rr refRecord, opts PullOptions, dl *downloads) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := digestHex(rr.Digest)
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("reading layers: %w", err)
	}
	if len(layers) != len(cfg.RootFS.DiffIDs) {
		return fmt.Errorf("image has %d layers but its config lists %d diff IDs", len(layers), len(cfg.RootFS.DiffIDs))
	}
	infos := make([]LayerInfo, len(layers))
	for i, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return err
		}
		if err := checkLayerType(mt); err != nil {
			return err
		}
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		infos[i] = LayerInfo{Digest: d.String(), Size: size}
	}

	work, err := os.MkdirTemp(filepath.Join(s.Root, "tmp"), h+".")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work) // after activation this is empty
	rootfs := filepath.Join(work, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	var st unix.Statfs_t
	maxBytes := int64(0)
	if unix.Statfs(work, &st) == nil {
		avail := int64(st.Bavail) * int64(st.Bsize)
		const reserve = 256 << 20
		if avail < reserve {
			return fmt.Errorf("not enough free space in %s (%s available)", s.Root, humanize.Bytes(avail))
		}
		maxBytes = avail - reserve
	}
	if dl != nil {
		dl.setLayers(infos)
	}
	if opts.Progress != nil {
		opts.Progress.Start(ref, infos)
	}

	// Downloads run ahead, a few at a time, each into its own spool; the
	// extractor applies layers strictly in order as their bytes arrive.
	spools := make([]*spool, len(layers))
	for i := range layers {
		sp, err := newSpool(filepath.Join(work, fmt.Sprintf("layer-%d", i)))
		if err != nil {
			return err
		}
		spools[i] = sp
		defer sp.close()
	}
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = 3
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// The first download that fails ends the pull, and its error is the
	// pull's: what the extractor makes of the missing bytes is noise.
	var fetchErr error
	var failOnce sync.Once
	for i, l := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				spools[i].finish(ctx.Err())
				return
			}
			defer func() { <-sem }()
			err := s.fetch(ctx, l, infos[i], i, spools[i], opts.Progress, dl)
			if err != nil && ctx.Err() == nil {
				failOnce.Do(func() { fetchErr = err; cancel() })
			}
			spools[i].finish(err)
		}()
	}

	ap, err := layer.NewApplier(rootfs, layer.Limits{MaxEntries: opts.MaxEntries, MaxBytes: maxBytes})
	if err != nil {
		return err
	}
	defer ap.Close()
	var total layer.Stats
	t0 := time.Now()
	for i := range layers {
		st, err := s.applyLayer(ctx, ap, spools[i], infos[i], cfg.RootFS.DiffIDs[i])
		if err != nil {
			// Digests are the final word: bytes that fail verification
			// are reported as such, not as the corrupt tar or gzip stream
			// the extractor saw first.
			if ferr := spools[i].wait(); ferr != nil && !errors.Is(ferr, context.Canceled) {
				return ferr
			}
			failOnce.Do(func() {}) // fetchErr is settled from here on
			if fetchErr != nil {
				return fetchErr
			}
			return fmt.Errorf("layer %s: %w", short(infos[i].Digest), err)
		}
		spools[i].close()
		total.Entries += st.Entries
		total.Bytes += st.Bytes
		total.SkippedDevices += st.SkippedDevices
		if opts.Progress != nil {
			opts.Progress.Unpacked(i)
		}
	}
	if err := ap.Finish(); err != nil {
		return err
	}
	if total.SkippedDevices > 0 {
		s.Logger.Info("skipped device nodes (systemd-nspawn provides /dev)", "count", total.SkippedDevices)
	}
	s.Logger.Info("unpacked", "ref", ref, "layers", len(layers), "entries", total.Entries, "bytes", total.Bytes, "took", time.Since(t0))

	cfgDigest, _ := img.ConfigName()
	rec := record{
		Digest: rr.Digest, Config: cfgDigest.String(), Platform: rr.Platform,
		Size: total.Bytes, Entries: total.Entries, Layers: len(layers),
		Created: cfg.Created.Time, Pulled: time.Now().UTC(),
		Run: Config{Entrypoint: cfg.Config.Entrypoint, Cmd: cfg.Config.Cmd, Env: cfg.Config.Env,
			WorkingDir: cfg.Config.WorkingDir, User: cfg.Config.User},
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "image.json"), b, 0o600); err != nil {
		return err
	}
	// Every spool was closed (and its file removed) once its layer was
	// applied, so only the image moves.
	if err := os.Rename(work, s.imageDir(rr.Digest)); err != nil {
		return fmt.Errorf("activating image: %w", err)
	}
	return nil
}

// checkLayerType accepts the layer media types that carry a root
// filesystem diff we can unpack.
func checkLayerType(mt types.MediaType) error {
	switch mt {
	case types.DockerLayer, types.OCILayer, types.OCIUncompressedLayer, types.DockerUncompressedLayer, types.OCILayerZStd:
		return nil
	case types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return fmt.Errorf("unsupported media type %q: foreign (non-distributable) layers are not fetched", mt)
	}
	return fmt.Errorf("unsupported media type %q: not a filesystem layer", mt)
}

// fetch copies one layer blob into w, verifying its size and digest. A
// pulled layer (dl set) is verified by go-containerregistry's reader,
// which fails at the end of the stream unless every byte, resumed ones
// included, hashes to the manifest's digest; a local image's layers are
// hashed here.
func (s *Store) fetch(ctx context.Context, l v1.Layer, info LayerInfo, i int, w io.Writer, p Progress, dl *downloads) error {
	var rc io.ReadCloser
	var err error
	if dl != nil {
		err = dl.again(ctx, i, "layer "+short(info.Digest), func() (err error) {
			rc, err = l.Compressed()
			return err
		})
	} else {
		rc, err = l.Compressed()
	}
	if err != nil {
		return fmt.Errorf("fetching %s: %w", short(info.Digest), asDownloadError(err, "layer "+short(info.Digest)))
	}
	defer rc.Close()
	dst := w
	var hasher hash.Hash
	if dl == nil {
		hasher = sha256.New()
		dst = io.MultiWriter(w, hasher)
	}
	if p != nil {
		dst = &countingWriter{w: dst, report: func(n int64) { p.Fetched(i, n) }}
	}
	n, err := io.Copy(dst, io.LimitReader(rc, info.Size+1))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if strings.HasPrefix(err.Error(), "error verifying") {
			// go-containerregistry's verification (its error type is internal)
			return fmt.Errorf("digest mismatch: blob %s: %w", info.Digest, err)
		}
		return fmt.Errorf("fetching %s: %w", short(info.Digest), asDownloadError(err, "layer "+short(info.Digest)))
	}
	if hasher == nil {
		return nil
	}
	if n != info.Size {
		return fmt.Errorf("fetching %s: got %d bytes, manifest says %d", short(info.Digest), n, info.Size)
	}
	if got := "sha256:" + hex.EncodeToString(hasher.Sum(nil)); got != info.Digest {
		return fmt.Errorf("digest mismatch: blob %s has content with digest %s", info.Digest, got)
	}
	return nil
}

// applyLayer decompresses a spooled layer into the applier and checks the
// uncompressed content against the config's diff ID.
func (s *Store) applyLayer(ctx context.Context, ap *layer.Applier, sp *spool, info LayerInfo, diffID v1.Hash) (layer.Stats, error) {
	br := bufio.NewReaderSize(sp.reader(), 1<<20)
	tarStream, closeFn, err := decompress(br)
	if err != nil {
		return layer.Stats{}, err
	}
	defer closeFn()
	hasher := sha256.New()
	// Decompression and the diff ID hash run ahead on their own goroutine.
	ra := newReadAhead(io.TeeReader(tarStream, hasher), 4, 1<<20)
	// Per-layer budget: no layer may expand by more than gzip's own limit
	// (about 1:1032) beyond a generous floor. This stops sparse-file and
	// zstd bombs long before they reach the disk.
	budget := info.Size*1032 + 1<<30
	st, err := ap.Apply(ctx, ra, budget)
	ra.Close()
	if err != nil {
		return st, err
	}
	// Apply drained the tar stream; make sure the compressed stream and the
	// download ended cleanly too (this is where a digest mismatch shows).
	if _, err := io.Copy(io.Discard, br); err != nil {
		return st, err
	}
	if got := "sha256:" + hex.EncodeToString(hasher.Sum(nil)); got != diffID.String() {
		return st, fmt.Errorf("diff ID mismatch: uncompressed content has %s, config says %s", got, diffID)
	}
	return st, nil
}

// decompress detects the compression of a layer from its first bytes
// (registries are not always right about media types).
func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	magic, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, nil, err
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<29))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	default:
		return br, func() {}, nil
	}
}

func short(digest string) string {
	if h, ok := strings.CutPrefix(digest, "sha256:"); ok && len(h) >= 12 {
		return h[:12]
	}
	return digest
}

type countingWriter struct {
	w      io.Writer
	n      int64
	report func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.report(c.n)
	return n, err
}
