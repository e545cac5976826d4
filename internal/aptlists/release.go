package aptlists

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Index is what a Release file says of one index file.
type Index struct {
	SHA256 string // lower-case hex
	Size   int64
}

// ParseRelease returns the SHA256 section of a Release or InRelease file
// (clear-signed or not): each listed path, relative to the release's
// directory (main/binary-amd64/Packages), with its digest and size. A
// malformed line in that section is an error: nothing of such a release
// can be checked.
func ParseRelease(data []byte) (map[string]Index, error) {
	text, err := signedText(data)
	if err != nil {
		return nil, err
	}
	out := map[string]Index{}
	in := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			field, _, _ := strings.Cut(line, ":")
			in = field == "SHA256"
			continue
		}
		if !in {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("release: malformed SHA256 line %q", line)
		}
		size, err := strconv.ParseInt(f[1], 10, 64)
		if b, herr := hex.DecodeString(f[0]); herr != nil || len(b) != 32 || err != nil || size < 0 || f[0] != strings.ToLower(f[0]) {
			return nil, fmt.Errorf("release: malformed SHA256 line %q", line)
		}
		out[f[2]] = Index{SHA256: f[0], Size: size}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("release: no SHA256 section")
	}
	return out, nil
}

const (
	signedBegin = "-----BEGIN PGP SIGNED MESSAGE-----"
	sigBegin    = "-----BEGIN PGP SIGNATURE-----"
)

// signedText returns the text of a clear-signed message (RFC 4880 7.1:
// armor headers, a blank line, dash-escaped text, the signature), or data
// itself when it is not one. The signature is apt's to check, inside the
// container.
func signedText(data []byte) (string, error) {
	if !bytes.HasPrefix(data, []byte(signedBegin)) {
		return string(data), nil
	}
	s := string(data)
	_, body, ok := strings.Cut(s, "\n\n")
	if !ok {
		_, body, ok = strings.Cut(s, "\r\n\r\n")
	}
	if !ok {
		return "", fmt.Errorf("release: clear-signed message without text")
	}
	text, _, ok := strings.Cut(body, "\n"+sigBegin)
	if !ok {
		return "", fmt.Errorf("release: clear-signed message without signature")
	}
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "- ")
	}
	return strings.Join(lines, "\n"), nil
}

// listName is the name apt gives, in its lists directory, to the file at
// path below a release whose own list file is prefix+"InRelease" (or
// "Release"): apt's URItoFileName, which quotes unsafe characters as %xx
// and turns '/' into '_'.
func listName(prefix, path string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c <= 0x20 || c >= 0x7f || strings.IndexByte(`\|{}[]<>"^~_=!@#$%&*`, c) >= 0:
			fmt.Fprintf(&b, "%%%02x", c)
		case c == '/':
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// releaseNames are the list files that are releases, by suffix; a
// detached signature (Release.gpg) goes with its Release.
var releaseNames = []string{"InRelease", "Release"}

// releasePrefix returns the prefix of name when it is a release's list
// file (deb.debian.org_debian_dists_bookworm_InRelease).
func releasePrefix(name string) (string, bool) {
	for _, r := range releaseNames {
		if p, ok := strings.CutSuffix(name, "_"+r); ok && p != "" {
			return p + "_", true
		}
	}
	return "", false
}
