// Package reference parses and normalizes image references the way docker
// does ("debian:bookworm-slim" is docker.io/library/debian:bookworm-slim):
// knowledge the image store and the catalogue share.
package reference

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Reference is a parsed image reference, normalized the way docker does:
// "debian:bookworm-slim" is docker.io/library/debian:bookworm-slim.
type Reference struct {
	ref name.Reference
}

// Parse parses s as an image reference. The "docker://" prefix of
// skopeo-style transports is accepted; a missing tag means "latest".
func Parse(s string) (Reference, error) {
	in := strings.TrimPrefix(s, "docker://")
	if in == "" {
		return Reference{}, fmt.Errorf("invalid reference %q: empty", s)
	}
	if in != strings.TrimSpace(in) {
		return Reference{}, fmt.Errorf("invalid reference %q: contains white space", s)
	}
	r, err := name.ParseReference(in)
	if err != nil {
		return Reference{}, fmt.Errorf("invalid reference %q: %s", s, whyInvalid(in, err))
	}
	return Reference{ref: r}, nil
}

// MustParse is Parse for literals in tests and tables.
func MustParse(s string) Reference {
	r, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return r
}

// Registry returns the registry host as users write it ("docker.io", not
// "index.docker.io").
func (r Reference) Registry() string {
	reg := r.ref.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		return "docker.io"
	}
	return reg
}

// Repository returns the repository path within the registry, such as
// "library/debian".
func (r Reference) Repository() string { return r.ref.Context().RepositoryStr() }

// Digest returns the digest of a digest reference ("sha256:..."), or "".
func (r Reference) Digest() string {
	if d, ok := r.ref.(name.Digest); ok {
		return d.DigestStr()
	}
	return ""
}

// Remote returns the reference as go-containerregistry's remote package
// takes it.
func (r Reference) Remote() name.Reference { return r.ref }

// Identifier returns the tag of a tag reference ("bookworm-slim") or the
// digest of a digest reference.
func (r Reference) Identifier() string { return r.ref.Identifier() }

// String returns the normalized full reference, such as
// "docker.io/library/debian:bookworm-slim" or "quay.io/x/y@sha256:...".
func (r Reference) String() string {
	s := r.Registry() + "/" + r.Repository()
	if d := r.Digest(); d != "" {
		return s + "@" + d
	}
	return s + ":" + r.ref.Identifier()
}

// IsZero reports whether r is the zero Reference.
func (r Reference) IsZero() bool { return r.ref == nil }

// whyInvalid explains a reference go-containerregistry refused; its own
// messages mostly repeat the input.
func whyInvalid(in string, err error) string {
	repo := in
	if i := strings.IndexAny(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	if i := strings.Index(repo, "/"); i >= 0 && strings.ContainsAny(repo[:i], ".:") {
		repo = repo[i+1:] // the registry host may have capitals
	}
	switch {
	case strings.ToLower(repo) != repo:
		return "repository names must be lowercase"
	case strings.Contains(in, "@"):
		return "digests must be sha256:<64 hex digits>"
	}
	msg := err.Error()
	if strings.Contains(msg, "tag") {
		return "tags may contain only letters, digits, '_', '.' and '-' (at most 128)"
	}
	return "want [REGISTRY/]REPOSITORY[:TAG][@DIGEST] with a lowercase repository"
}
