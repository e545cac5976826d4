package testregistry

import (
	"compress/gzip"
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/racker-postroj/racker/internal/image"
)

// DebianImage is a Debian image pushed by Server.PushDebian.
type DebianImage struct {
	// Ref is the reference it was pushed as, in this registry.
	Ref string
	// Layer is the cached layer: Layer.Path is the gzip blob the registry
	// serves, byte for byte.
	Layer *FileLayer
	// Digest is the manifest of the image for HostPlatform.
	Digest v1.Hash
	// Index is the manifest list Ref names; zero for a single image.
	Index v1.Hash
	// Other is the manifest of the small OtherPlatform image in the index;
	// zero for a single image.
	Other v1.Hash
}

// PushDebian pushes the root filesystem r, built by c or taken from its
// cache, as ref (see Server.Ref). Without index, ref names a Docker manifest
// for HostPlatform. With index, ref names what Docker Hub's debian images
// are: a manifest list of that image plus a small image for OtherPlatform
// whose only file, etc/platform, names its platform. The same r and index
// give the same digests on every run and every machine of one architecture
// and mmdebstrap output. It returns ErrNoMmdebstrap (wrapped) when r is
// neither cached nor buildable.
func (s *Server) PushDebian(ctx context.Context, c *Cache, r Recipe, ref string, index bool) (*DebianImage, error) {
	layer, err := c.Layer(ctx, r)
	if err != nil {
		return nil, err
	}
	host, err := NewImage(image.HostPlatform(), types.DockerManifestSchema2, layer)
	if err != nil {
		return nil, err
	}
	out := &DebianImage{Layer: layer}
	if out.Digest, err = host.Digest(); err != nil {
		return nil, err
	}
	local, err := s.Ref(ref)
	if err != nil {
		return nil, err
	}
	out.Ref = local.String()
	if !index {
		if _, err := s.Write(ctx, ref, host); err != nil {
			return nil, err
		}
		return out, nil
	}
	other, err := platformImage(OtherPlatform())
	if err != nil {
		return nil, err
	}
	if out.Other, err = other.Digest(); err != nil {
		return nil, err
	}
	idx, err := NewIndex(host, other)
	if err != nil {
		return nil, err
	}
	if out.Index, err = s.WriteIndex(ctx, ref, idx); err != nil {
		return nil, err
	}
	return out, nil
}

// platformImage returns a one-layer Docker image for p whose only file,
// etc/platform, holds p as "os/arch[/variant]".
func platformImage(p v1.Platform) (v1.Image, error) {
	entries, err := ParseSpec(fmt.Sprintf("dir etc 0755\nfile etc/platform 0644 %s\n", p.String()), nil)
	if err != nil {
		return nil, err
	}
	data, err := WriteTar(entries)
	if err != nil {
		return nil, err
	}
	l, err := NewMemLayer(data, gzip.DefaultCompression, types.DockerLayer)
	if err != nil {
		return nil, err
	}
	return NewImage(p, types.DockerManifestSchema2, l)
}
