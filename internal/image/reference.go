package image

import (
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/racker-postroj/racker/internal/reference"
)

// Reference is an image reference, normalized the way docker does
// (internal/reference).
type Reference = reference.Reference

// ParseReference parses s as an image reference; see reference.Parse.
func ParseReference(s string) (Reference, error) { return reference.Parse(s) }

// MustParseReference is ParseReference for literals in tests and tables.
func MustParseReference(s string) Reference { return reference.MustParse(s) }

// at returns the reference with its registry replaced by host, for pulling
// from a mirror. Loopback hosts are reached over plain HTTP.
func at(r Reference, host string) (name.Reference, error) {
	var opts []name.Option
	if isLoopbackHost(host) {
		opts = append(opts, name.Insecure)
	}
	s := host + "/" + r.Repository()
	if d := r.Digest(); d != "" {
		return name.NewDigest(s+"@"+d, opts...)
	}
	return name.NewTag(s+":"+r.Identifier(), opts...)
}
