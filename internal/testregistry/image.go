package testregistry

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/racker-postroj/racker/internal/image"
)

// FileLayer is a gzip-compressed tar layer on disk whose digests are known,
// so pushing it neither recompresses nor rehashes it.
type FileLayer struct {
	Path string
	Info LayerInfo
	Type types.MediaType
}

var _ v1.Layer = (*FileLayer)(nil)

func (l *FileLayer) Digest() (v1.Hash, error)             { return l.Info.Digest, nil }
func (l *FileLayer) DiffID() (v1.Hash, error)             { return l.Info.DiffID, nil }
func (l *FileLayer) Size() (int64, error)                 { return l.Info.Size, nil }
func (l *FileLayer) MediaType() (types.MediaType, error)  { return l.Type, nil }
func (l *FileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.Path) }
func (l *FileLayer) Uncompressed() (io.ReadCloser, error) { return gunzipFile(l.Path) }

func gunzipFile(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return readCloser{zr, func() error { zr.Close(); return f.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// MemLayer is a gzip-compressed tar layer held in memory.
type MemLayer struct {
	Tar, Gzip      []byte
	digest, diffID v1.Hash
	mediaType      types.MediaType
}

var _ v1.Layer = (*MemLayer)(nil)

// NewMemLayer compresses tarData at the given gzip level. Level
// gzip.NoCompression makes the compressed size depend only on the tar size,
// which lets a test swap in different bytes of the same length.
func NewMemLayer(tarData []byte, level int, mediaType types.MediaType) (*MemLayer, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(tarData); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	l := &MemLayer{Tar: tarData, Gzip: buf.Bytes(), mediaType: mediaType}
	if l.digest, _, err = v1.SHA256(bytes.NewReader(l.Gzip)); err != nil {
		return nil, err
	}
	if l.diffID, _, err = v1.SHA256(bytes.NewReader(l.Tar)); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *MemLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *MemLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *MemLayer) Size() (int64, error)                { return int64(len(l.Gzip)), nil }
func (l *MemLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *MemLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.Gzip)), nil
}
func (l *MemLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.Tar)), nil
}

// OtherPlatform is a platform other than the host's, for index tests:
// linux/arm64 on every host but arm64, where it is linux/amd64.
func OtherPlatform() v1.Platform {
	if runtime.GOARCH == "arm64" {
		return v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	return v1.Platform{OS: "linux", Architecture: "arm64"}
}

// created is the fixed creation time of test images, so the same layers
// give the same digests on every run.
var created = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// NewImage returns an image of layers for platform whose config has os,
// architecture and a history entry per layer, like real images (some tools
// reject configs without them). mediaType is types.DockerManifestSchema2 or
// types.OCIManifestSchema1; the layers carry their own media types.
func NewImage(platform v1.Platform, mediaType types.MediaType, layers ...v1.Layer) (v1.Image, error) {
	cfg := &v1.ConfigFile{
		Architecture: platform.Architecture,
		OS:           platform.OS,
		Variant:      platform.Variant,
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"bash"},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	base := empty.Image
	if mediaType == types.OCIManifestSchema1 {
		base = mutate.ConfigMediaType(mutate.MediaType(base, mediaType), types.OCIConfigJSON)
	}
	img, err := mutate.ConfigFile(base, cfg)
	if err != nil {
		return nil, err
	}
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{Layer: l, History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: fmt.Sprintf("racker testregistry layer %d", i+1),
		}}
	}
	return mutate.Append(img, adds...)
}

// NewIndex returns an index of images, each described with the platform of
// its config. It is a Docker manifest list if the first image is a Docker
// manifest, else an OCI index.
func NewIndex(images ...v1.Image) (v1.ImageIndex, error) {
	mt := types.OCIImageIndex
	if len(images) > 0 {
		if m, err := images[0].MediaType(); err == nil && m == types.DockerManifestSchema2 {
			mt = types.DockerManifestList
		}
	}
	idx := mutate.IndexMediaType(empty.Index, mt)
	for _, img := range images {
		cfg, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		p := cfg.Platform()
		if p == nil {
			return nil, fmt.Errorf("image without a platform in its config")
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	return idx, nil
}

// Ref maps ref onto this registry: a reference to Docker Hub, written as
// docker does ("debian:bookworm-slim", "docker.io/library/debian:..."), keeps
// its repository path, so a racker whose mirror for docker.io is Addr finds
// it there. A reference that already names Addr is kept.
func (s *Server) Ref(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", ref, err)
	}
	switch reg := r.Context().RegistryStr(); reg {
	case name.DefaultRegistry, s.addr:
	default:
		return nil, fmt.Errorf("%s: registry %s is neither docker.io nor %s", ref, reg, s.addr)
	}
	local := s.addr + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		local += "@" + d.DigestStr()
	} else {
		local += ":" + r.Identifier()
	}
	return name.ParseReference(local, name.Insecure)
}

// Write pushes img as ref (see Ref) and returns its manifest digest.
func (s *Server) Write(ctx context.Context, ref string, img v1.Image) (v1.Hash, error) {
	r, err := s.Ref(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return img.Digest()
}

// WriteIndex pushes idx and its images as ref and returns the index digest.
func (s *Server) WriteIndex(ctx context.Context, ref string, idx v1.ImageIndex) (v1.Hash, error) {
	r, err := s.Ref(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx)); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return idx.Digest()
}

// Push pushes an OCI image of layers for the host platform as ref and
// returns its manifest digest.
func (s *Server) Push(ctx context.Context, ref string, layers ...v1.Layer) (v1.Hash, error) {
	img, err := NewImage(image.HostPlatform(), types.OCIManifestSchema1, layers...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return s.Write(ctx, ref, img)
}

// Image fetches ref (see Ref) from the registry. An index resolves to its
// image for platform, or for HostPlatform when platform is nil.
func (s *Server) Image(ctx context.Context, ref string, platform *v1.Platform) (v1.Image, error) {
	r, err := s.Ref(ref)
	if err != nil {
		return nil, err
	}
	p := image.HostPlatform()
	if platform != nil {
		p = *platform
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithPlatform(p))
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", ref, err)
	}
	return img, nil
}
