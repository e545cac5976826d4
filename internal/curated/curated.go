package curated

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/reference"
)

// ErrUnknown is wrapped by Lookup's error for a name that is neither an
// entry's name nor one of its aliases.
var ErrUnknown = errors.New("unknown image")

// Sources are where an image can come from: SourceRegistry pulls
// Entry.Source, SourceMirror builds the tree from Entry.Mirror with
// mmdebstrap.
const (
	SourceRegistry = "registry"
	SourceMirror   = "mirror"
)

// Entry is one distribution release of the catalogue.
type Entry struct {
	// Name is "<os>-<release>" (debian-bookworm, fedora-37); Aliases are
	// other names for it, typically "<os>-<version>" (debian-12).
	Name    string   `yaml:"name" json:"name"`
	Aliases []string `yaml:"aliases" json:"aliases"`
	// Family is one of distro.Families().
	Family string `yaml:"family" json:"family"`
	// Release and Version are what Name and the aliases are made of, such
	// as "bookworm" and "12".
	Release string `yaml:"release" json:"release"`
	Version string `yaml:"version" json:"version"`
	// PackageManager is one of distro.ManagerNames(); PackageType is what
	// it installs (distro.Manager.Type).
	PackageManager string             `yaml:"package-manager" json:"packageManager"`
	PackageType    distro.PackageType `yaml:"package-type" json:"packageType"`
	// Source is the registry image reference, normalized
	// (docker.io/library/debian:bookworm-slim). Every entry has one.
	Source string `yaml:"image" json:"source"`
	// DefaultSource is where the image comes from unless the caller says
	// otherwise: SourceRegistry (the default) or SourceMirror (needs
	// Mirror). In curated.yaml this is the "source" key.
	DefaultSource string `yaml:"source" json:"defaultSource"`
	// Mirror, for the Debian family, says how to build the image from the
	// distribution's package mirror; nil when the entry has none.
	Mirror *Mirror `yaml:"mirror" json:"mirror,omitempty"`
	// EOL is set for releases their distribution no longer supports.
	EOL   bool   `yaml:"eol" json:"eol"`
	Notes string `yaml:"notes" json:"notes,omitempty"`
	// Setup is shell run in the tree being prepared, before the package
	// manager installs what booting needs (e.g. pointing CentOS 8 at
	// vault.centos.org). It runs only when something must be installed.
	Setup string `yaml:"setup" json:"setup,omitempty"`
	// NoPrepare, when set, says why the package manager cannot install what
	// booting needs (UBI 9 without a subscription): such an image is used
	// only if it boots as it is, and is never handed to its package manager.
	NoPrepare string `yaml:"no-prepare" json:"noPrepare,omitempty"`
	// Exec is how commands reach the booted container: "" lets racker tell
	// from the image's systemd (distro.NeedsNsenter), ExecNsenter says so
	// for a systemd too old to pass file descriptors over D-Bus whose
	// version cannot be told from its files (CentOS 7's 219).
	Exec string `yaml:"exec" json:"exec,omitempty"`
}

// ExecNsenter is the Entry.Exec value for images whose commands must enter
// the container's namespaces.
const ExecNsenter = "nsenter"

// Mirror says where mmdebstrap finds a Debian-family release.
type Mirror struct {
	Suite string `yaml:"suite" json:"suite"`
	// URL of the archive; default DefaultMirrorURL. EOL suites live on
	// archive.debian.org.
	URL string `yaml:"url" json:"url"`
	// Keyring, when set, is the host's keyring to check the suite's
	// signatures with (suites older than the host's keyring need
	// /usr/share/keyrings/debian-archive-removed-keys.gpg).
	Keyring string `yaml:"keyring" json:"keyring,omitempty"`
}

// DefaultMirrorURL is where Debian suites are fetched from when an entry's
// mirror names no URL.
const DefaultMirrorURL = "http://deb.debian.org/debian"

// MirrorRegistry is the registry part of the references under which images
// built from a package mirror are stored: mirror.local/<family>:<suite>,
// e.g. mirror.local/debian:bookworm. It is never contacted.
const MirrorRegistry = "mirror.local"

// MirrorReference is the reference under which the image built from e's
// mirror is stored, or "" when e has no mirror.
func (e Entry) MirrorReference() string {
	if e.Mirror == nil {
		return ""
	}
	return MirrorRegistry + "/" + e.Family + ":" + e.Mirror.Suite
}

// Names returns the entry's name followed by its aliases.
func (e Entry) Names() []string { return append([]string{e.Name}, e.Aliases...) }

// Catalogue is a parsed, validated curated.yaml.
type Catalogue struct {
	entries []Entry
	byName  map[string]int // name or alias -> index
}

type file struct {
	Images []Entry `yaml:"images"`
	// Extensions are top-level keys starting with "x-": a place for YAML
	// anchors that entries share (setup scripts).
	Extensions map[string]yaml.Node `yaml:",inline"`
}

// catalogue is curated.yaml, the catalogue postroj works from; the
// repository root's curated.yaml is a link to it.
//
//go:embed curated.yaml
var catalogue []byte

// Load parses the catalogue embedded in the binaries.
func Load() (*Catalogue, error) {
	c, err := Parse(catalogue)
	if err != nil {
		return nil, fmt.Errorf("curated.yaml: %w", err)
	}
	return c, nil
}

// Parse parses and validates a catalogue: unknown keys, duplicate names or
// aliases, unknown families or package managers, missing sources are
// errors. Defaults are filled in (Mirror.URL, DefaultSource, normalized
// Source).
func Parse(data []byte) (*Catalogue, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	c := &Catalogue{byName: map[string]int{}}
	var errs []error
	for k := range f.Extensions {
		if !strings.HasPrefix(k, "x-") {
			errs = append(errs, fmt.Errorf("unknown top-level key %q (valid: images, and x-* for shared anchors)", k))
		}
	}
	for i, e := range f.Images {
		e, err := normalize(e)
		if err != nil {
			who := e.Name
			if who == "" {
				who = fmt.Sprintf("entry %d", i+1)
			}
			errs = append(errs, fmt.Errorf("%s: %w", who, err))
			continue
		}
		for _, n := range e.Names() {
			if j, dup := c.byName[n]; dup {
				errs = append(errs, fmt.Errorf("%s: name %q is already used by %s", e.Name, n, c.entries[j].Name))
				continue
			}
			c.byName[n] = len(c.entries)
		}
		c.entries = append(c.entries, e)
	}
	if len(c.entries) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no images"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// normalize checks one entry and fills in its defaults.
func normalize(e Entry) (Entry, error) {
	switch {
	case e.Name == "":
		return e, errors.New("no name")
	case !validName(e.Name):
		return e, fmt.Errorf("invalid name %q (want lowercase letters, digits, '.', '-')", e.Name)
	}
	family, ok := distro.LookupFamily(e.Family)
	if !ok {
		return e, fmt.Errorf("unknown family %q (valid: %s)", e.Family, strings.Join(distro.Families(), ", "))
	}
	pm, ok := distro.LookupManager(e.PackageManager)
	switch {
	case !ok:
		return e, fmt.Errorf("unknown package manager %q (valid: %s)", e.PackageManager, strings.Join(distro.ManagerNames(), ", "))
	case e.PackageType != pm.Type:
		return e, fmt.Errorf("package type %q does not go with %s (want %s)", e.PackageType, e.PackageManager, pm.Type)
	case family.Type != pm.Type:
		return e, fmt.Errorf("package manager %s installs %s packages, but the %s family uses %s", e.PackageManager, pm.Type, e.Family, family.Type)
	case e.Source == "":
		return e, errors.New("no image: every entry needs a registry source")
	}
	for _, a := range e.Aliases {
		if !validName(a) {
			return e, fmt.Errorf("invalid alias %q (want lowercase letters, digits, '.', '-')", a)
		}
	}
	ref, err := reference.Parse(e.Source)
	if err != nil {
		return e, err
	}
	e.Source = ref.String()
	if e.Mirror != nil {
		if e.Family != "debian" {
			return e, fmt.Errorf("a mirror source is supported for the debian family only, not %s", e.Family)
		}
		if e.Mirror.Suite == "" {
			return e, errors.New("mirror: no suite")
		}
		if e.Mirror.URL == "" {
			e.Mirror.URL = DefaultMirrorURL
		}
		if !strings.HasPrefix(e.Mirror.URL, "http://") && !strings.HasPrefix(e.Mirror.URL, "https://") {
			return e, fmt.Errorf("mirror: url %q is not http(s)", e.Mirror.URL)
		}
		if _, err := reference.Parse(e.MirrorReference()); err != nil {
			return e, fmt.Errorf("mirror: %w", err)
		}
	}
	switch e.DefaultSource {
	case "":
		e.DefaultSource = SourceRegistry
	case SourceRegistry:
	case SourceMirror:
		if e.Mirror == nil {
			return e, errors.New("source: mirror needs a mirror")
		}
	default:
		return e, fmt.Errorf("unknown source %q (valid: registry, mirror)", e.DefaultSource)
	}
	switch e.Exec {
	case "", ExecNsenter:
	default:
		return e, fmt.Errorf("unknown exec %q (valid: nsenter, or nothing to tell from the image)", e.Exec)
	}
	if e.Aliases == nil {
		e.Aliases = []string{}
	}
	return e, nil
}

func validName(s string) bool {
	if s == "" || s[0] == '-' || s[0] == '.' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// Entries returns the entries in catalogue order. The slice is a copy.
func (c *Catalogue) Entries() []Entry {
	out := make([]Entry, len(c.entries))
	for i, e := range c.entries {
		out[i] = e.clone()
	}
	return out
}

func (e Entry) clone() Entry {
	e.Aliases = slices.Clone(e.Aliases)
	if e.Mirror != nil {
		m := *e.Mirror
		e.Mirror = &m
	}
	return e
}

// Lookup finds the entry named name, by name or alias. For an unknown
// name the error wraps ErrUnknown and suggests close names.
func (c *Catalogue) Lookup(name string) (Entry, error) {
	if i, ok := c.byName[name]; ok {
		return c.entries[i].clone(), nil
	}
	if i, ok := c.byName[strings.ToLower(strings.TrimSpace(name))]; ok {
		return c.entries[i].clone(), nil
	}
	if s := c.suggest(name); len(s) > 0 {
		return Entry{}, fmt.Errorf("%w %q (did you mean %s?)", ErrUnknown, name, strings.Join(s, ", "))
	}
	return Entry{}, fmt.Errorf("%w %q (postroj list-images shows the catalogue)", ErrUnknown, name)
}

// suggest returns up to three entry names close to name: by edit distance
// to any name or alias, or because one of them is a prefix of the other.
func (c *Catalogue) suggest(name string) []string {
	name = strings.ToLower(strings.TrimSpace(name))
	type cand struct {
		entry string
		dist  int
	}
	best := map[string]int{}
	limit := max(2, len(name)/4)
	for n, i := range c.byName {
		d := levenshtein(name, n)
		if len(name) >= 3 && strings.HasPrefix(n, name) || strings.HasPrefix(name, n+"-") {
			d = min(d, 1) // "fedora" or "debian-12-slim"
		}
		if d > limit {
			continue
		}
		e := c.entries[i].Name
		if old, ok := best[e]; !ok || d < old {
			best[e] = d
		}
	}
	var cs []cand
	for e, d := range best {
		cs = append(cs, cand{e, d})
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].dist != cs[j].dist {
			return cs[i].dist < cs[j].dist
		}
		return c.byName[cs[i].entry] < c.byName[cs[j].entry]
	})
	var out []string
	for i := 0; i < len(cs) && i < 3; i++ {
		out = append(out, cs[i].entry)
	}
	return out
}

// levenshtein is the edit distance between a and b (bytes: names are ASCII).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
