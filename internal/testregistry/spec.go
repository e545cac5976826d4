package testregistry

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// SpecDoc documents the layer spec language that ParseSpec reads.
const SpecDoc = `A layer spec has one tar entry per line, written in order. Blank lines and
lines starting with # are ignored. Fields are separated by blanks; a field
may be a Go string literal ("a b\n") to hold blanks or odd bytes. Names and
link targets are written verbatim (never cleaned: "../x", "/abs", "./a//b"
stay as they are); unquoted ones have $VAR and ${VAR} expanded.

  dir      NAME MODE [OPTION...]
  file     NAME MODE [OPTION...] [CONTENT]
  symlink  NAME TARGET [OPTION...]
  hardlink NAME TARGET [OPTION...]
  chardev  NAME [OPTION...]          default mode=0666 dev=1:3
  blockdev NAME [OPTION...]          default mode=0660 dev=8:0
  fifo     NAME [OPTION...]          default mode=0644
  whiteout NAME                      writes DIR/.wh.BASE
  opaque   DIR                       writes DIR/.wh..wh..opq

MODE is octal and may carry setuid, setgid and sticky bits (4755, 1777).
OPTIONs: UID:GID (default 0:0), mode=OCTAL, mtime=RFC3339 or mtime=@UNIX
(default 2024-01-02T03:04:05Z), size=N (file: N deterministic bytes instead
of CONTENT), dev=MAJOR:MINOR. CONTENT is the rest of the line, verbatim, or a
single Go string literal; without it the file is empty. A whiteout can also
be written as a plain file entry named .wh.NAME.`

// SpecEntry is one parsed line of a layer spec.
type SpecEntry struct {
	Header  tar.Header
	Content []byte
	Line    int
}

var (
	ownerRE  = regexp.MustCompile(`^[0-9]+:[0-9]+$`)
	optionRE = regexp.MustCompile(`^(mode|mtime|size|dev)=`)
)

// ParseSpec parses a layer spec (see SpecDoc). expand, if not nil, maps
// variable names for $VAR expansion in unquoted names and targets.
func ParseSpec(text string, expand func(string) string) ([]SpecEntry, error) {
	var entries []SpecEntry
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		e, err := parseLine(trimmed, expand)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		e.Line = i + 1
		entries = append(entries, e)
	}
	return entries, nil
}

// lineScanner splits a spec line into fields, one at a time.
type lineScanner struct {
	rest   string
	expand func(string) string
}

// field returns the next field: a Go string literal, unquoted, or a run of
// non-blank bytes with variables expanded.
func (s *lineScanner) field(what string) (string, error) {
	s.rest = strings.TrimLeft(s.rest, " \t")
	if s.rest == "" {
		return "", fmt.Errorf("missing %s", what)
	}
	if s.rest[0] == '"' {
		q, err := strconv.QuotedPrefix(s.rest)
		if err != nil {
			return "", fmt.Errorf("%s: bad string literal: %w", what, err)
		}
		s.rest = s.rest[len(q):]
		v, _ := strconv.Unquote(q)
		return v, nil
	}
	end := strings.IndexAny(s.rest, " \t")
	if end < 0 {
		end = len(s.rest)
	}
	v := s.rest[:end]
	s.rest = s.rest[end:]
	if s.expand != nil {
		v = expandVars(v, s.expand)
	}
	return v, nil
}

// peek returns the next unquoted field without consuming it.
func (s *lineScanner) peek() string {
	r := strings.TrimLeft(s.rest, " \t")
	if end := strings.IndexAny(r, " \t"); end >= 0 {
		return r[:end]
	}
	return r
}

// expandVars expands $NAME and ${NAME}; "$$" stays "$$" unless the mapping
// says otherwise, as in testscript.
func expandVars(s string, mapping func(string) string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		j := i + 1
		var key string
		if s[j] == '{' {
			end := strings.IndexByte(s[j:], '}')
			if end < 0 {
				b.WriteByte(s[i])
				continue
			}
			key = s[j+1 : j+end]
			i = j + end
		} else {
			for j < len(s) && (s[j] == '_' || 'a' <= s[j] && s[j] <= 'z' || 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9') {
				j++
			}
			if j == i+1 {
				b.WriteByte(s[i])
				continue
			}
			key = s[i+1 : j]
			i = j - 1
		}
		b.WriteString(mapping(key))
	}
	return b.String()
}

func parseMode(s string) (int64, error) {
	m, err := strconv.ParseInt(s, 8, 32)
	if err != nil || m < 0 || m > 0o7777 {
		return 0, fmt.Errorf("bad mode %q (want octal up to 7777)", s)
	}
	return m, nil
}

var defaultMtime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func parseLine(line string, expand func(string) string) (SpecEntry, error) {
	s := &lineScanner{rest: line, expand: expand}
	kind, _ := s.field("type")
	e := SpecEntry{Header: tar.Header{ModTime: defaultMtime}}
	h := &e.Header
	var err error
	name := func() {
		if err == nil {
			h.Name, err = s.field("NAME")
		}
	}
	mode := func() {
		if err != nil {
			return
		}
		var m string
		if m, err = s.field("MODE"); err == nil {
			h.Mode, err = parseMode(m)
		}
	}
	target := func() {
		if err == nil {
			h.Linkname, err = s.field("TARGET")
		}
	}
	switch kind {
	case "dir":
		h.Typeflag = tar.TypeDir
		name()
		mode()
	case "file":
		h.Typeflag = tar.TypeReg
		name()
		mode()
	case "symlink":
		h.Typeflag, h.Mode = tar.TypeSymlink, 0o777
		name()
		target()
	case "hardlink":
		h.Typeflag, h.Mode = tar.TypeLink, 0o644
		name()
		target()
	case "chardev":
		h.Typeflag, h.Mode, h.Devmajor, h.Devminor = tar.TypeChar, 0o666, 1, 3
		name()
	case "blockdev":
		h.Typeflag, h.Mode, h.Devmajor, h.Devminor = tar.TypeBlock, 0o660, 8, 0
		name()
	case "fifo":
		h.Typeflag, h.Mode = tar.TypeFifo, 0o644
		name()
	case "whiteout", "opaque":
		h.Typeflag = tar.TypeReg
		var n string
		if n, err = s.field("NAME"); err != nil {
			break
		}
		if kind == "opaque" {
			h.Name = strings.TrimSuffix(n, "/") + "/.wh..wh..opq"
		} else if i := strings.LastIndexByte(n, '/'); i >= 0 {
			h.Name = n[:i+1] + ".wh." + n[i+1:]
		} else {
			h.Name = ".wh." + n
		}
		if strings.TrimSpace(s.rest) != "" {
			return e, fmt.Errorf("%s takes only a name, got %q after it", kind, strings.TrimSpace(s.rest))
		}
		return e, nil
	default:
		return e, fmt.Errorf("unknown entry type %q (valid: dir, file, symlink, hardlink, chardev, blockdev, fifo, whiteout, opaque)", kind)
	}
	if err != nil {
		return e, fmt.Errorf("%s: %w", kind, err)
	}
	sized := false
	for {
		opt := s.peek()
		if !ownerRE.MatchString(opt) && !optionRE.MatchString(opt) {
			break
		}
		s.field("option")
		key, val, _ := strings.Cut(opt, "=")
		switch {
		case ownerRE.MatchString(opt):
			u, g, _ := strings.Cut(opt, ":")
			h.Uid, _ = strconv.Atoi(u)
			h.Gid, _ = strconv.Atoi(g)
		case key == "mode":
			h.Mode, err = parseMode(val)
		case key == "mtime":
			h.ModTime, err = parseMtime(val)
		case key == "size" && kind == "file":
			var n int
			if n, err = strconv.Atoi(val); err == nil && n >= 0 {
				e.Content = pseudoRandom(h.Name, n)
				sized = true
			} else if err == nil {
				err = errors.New("negative size")
			}
		case key == "dev" && (kind == "chardev" || kind == "blockdev"):
			maj, min, ok := strings.Cut(val, ":")
			var a, b int
			a, err = strconv.Atoi(maj)
			if err == nil {
				b, err = strconv.Atoi(min)
			}
			if !ok || err != nil {
				err = fmt.Errorf("bad dev=%s (want MAJOR:MINOR)", val)
			}
			h.Devmajor, h.Devminor = int64(a), int64(b)
		default:
			err = fmt.Errorf("option %s does not apply to %s", key, kind)
		}
		if err != nil {
			return e, fmt.Errorf("%s %s: %w", kind, h.Name, err)
		}
	}
	rest := strings.TrimLeft(s.rest, " \t")
	switch {
	case rest == "":
	case kind != "file":
		return e, fmt.Errorf("%s %s: unexpected %q", kind, h.Name, rest)
	case sized:
		return e, fmt.Errorf("file %s: both size= and content", h.Name)
	case rest[0] == '"':
		c, err := strconv.Unquote(rest)
		if err != nil {
			return e, fmt.Errorf("file %s: content %s is not one Go string literal: %w", h.Name, rest, err)
		}
		e.Content = []byte(c)
	default:
		e.Content = []byte(rest)
	}
	h.Size = int64(len(e.Content))
	return e, nil
}

func parseMtime(s string) (time.Time, error) {
	if unix, ok := strings.CutPrefix(s, "@"); ok {
		n, err := strconv.ParseInt(unix, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("bad mtime %q", s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad mtime %q (want RFC 3339 or @UNIX)", s)
	}
	return t, nil
}

// pseudoRandom returns n bytes that depend only on seed and n, and do not
// compress, so size= files weigh what they say.
func pseudoRandom(seed string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	block := sha256.Sum256([]byte(seed))
	for len(out) < n {
		block = sha256.Sum256(block[:])
		out = append(out, block[:]...)
	}
	return out[:n]
}

// WriteTar writes entries as a tar archive, in order.
func WriteTar(entries []SpecEntry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", e.Line, h.Name, err)
		}
		if _, err := tw.Write(e.Content); err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", e.Line, h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Corrupt returns a copy of entries in which the first byte of the first
// non-empty file is flipped: a tar of the same length and different content.
func Corrupt(entries []SpecEntry) ([]SpecEntry, error) {
	out := make([]SpecEntry, len(entries))
	copy(out, entries)
	for i, e := range out {
		if e.Header.Typeflag == tar.TypeReg && len(e.Content) > 0 {
			c := bytes.Clone(e.Content)
			c[0] ^= 0xff
			out[i].Content = c
			return out, nil
		}
	}
	return nil, errors.New("no file with content to corrupt")
}
