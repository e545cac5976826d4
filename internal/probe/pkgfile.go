package probe

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/racker-postroj/racker/internal/distro"
)

// Type is a kind of package file; distro keeps the list.
type Type = distro.PackageType

const (
	Deb    = distro.Deb
	RPM    = distro.RPM
	Pacman = distro.Pacman
)

// ErrNotPackage is wrapped by errors about files that are no package of a
// known type (deb, rpm, pacman).
var ErrNotPackage = errors.New("not a package")

// ErrHTMLPage is wrapped by errors about files that are an HTML page,
// typically a server's error page served with status 200.
var ErrHTMLPage = errors.New("an HTML page, not a package")

var (
	arMagic     = []byte("!<arch>\n")
	rpmMagic    = []byte{0xed, 0xab, 0xee, 0xdb}
	zstdMagic   = []byte{0x28, 0xb5, 0x2f, 0xfd}
	xzMagic     = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	htmlMarkers = []string{"<!doctype html", "<html", "<head", "<body", "<?xml", "<title"}
)

// DetectFile reads the start of the file at path and returns its package
// type; see Detect.
func DetectFile(path string) (Type, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", err
	}
	return Detect(path, head[:n])
}

// Detect tells the package type from the first bytes of a file (64 KiB are
// plenty) and, for pacman packages, which are compressed tar archives, its
// name. It does not trust the name alone: a .deb must be an ar archive whose
// first member is debian-binary, an .rpm must start with the RPM lead, and a
// pacman package must be zstd (with .PKGINFO among its first entries) or
// xz-compressed and named .pkg.tar.*. Errors wrap ErrNotPackage or, for
// HTML, ErrHTMLPage.
func Detect(name string, head []byte) (Type, error) {
	switch {
	case bytes.HasPrefix(head, arMagic):
		if len(head) < 8+16 {
			return "", fmt.Errorf("%w: an ar archive cut short", ErrNotPackage)
		}
		member := strings.TrimRight(string(head[8:8+16]), " ")
		if strings.TrimSuffix(member, "/") != "debian-binary" {
			return "", fmt.Errorf("%w: an ar archive whose first member is %q, not debian-binary", ErrNotPackage, member)
		}
		return Deb, nil
	case bytes.HasPrefix(head, rpmMagic):
		return RPM, nil
	case bytes.HasPrefix(head, zstdMagic):
		if !strings.Contains(name, ".pkg.tar") {
			return "", fmt.Errorf("%w: zstd-compressed data not named *.pkg.tar.zst", ErrNotPackage)
		}
		if !hasPKGINFO(head) {
			return "", fmt.Errorf("%w: a zstd-compressed file without .PKGINFO", ErrNotPackage)
		}
		return Pacman, nil
	case bytes.HasPrefix(head, xzMagic):
		if !strings.Contains(name, ".pkg.tar") {
			return "", fmt.Errorf("%w: xz-compressed data not named *.pkg.tar.xz", ErrNotPackage)
		}
		return Pacman, nil
	case looksLikeHTML(head):
		return "", ErrHTMLPage
	case len(head) == 0:
		return "", fmt.Errorf("%w: the file is empty", ErrNotPackage)
	}
	return "", fmt.Errorf("%w: unknown content starting with %s (want a .deb, .rpm or pacman package)", ErrNotPackage, describeHead(head))
}

// hasPKGINFO reports whether the tar inside the zstd stream head names
// .PKGINFO among its first entries (pacman puts it at or near the start).
func hasPKGINFO(head []byte) bool {
	zr, err := zstd.NewReader(bytes.NewReader(head))
	if err != nil {
		return false
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for range 8 {
		h, err := tr.Next()
		if err != nil {
			return false
		}
		if strings.TrimPrefix(h.Name, "./") == ".PKGINFO" {
			return true
		}
	}
	return false
}

func looksLikeHTML(head []byte) bool {
	s := strings.ToLower(strings.TrimLeft(string(head[:min(len(head), 512)]), " \t\r\n\ufeff"))
	for _, m := range htmlMarkers {
		if strings.HasPrefix(s, m) {
			return true
		}
	}
	return false
}

// describeHead shows the first bytes of a file for an error message: as
// text when printable, else in hex.
func describeHead(head []byte) string {
	b := head[:min(len(head), 16)]
	printable := true
	for _, c := range b {
		if c < 0x20 && c != '\n' && c != '\t' && c != '\r' || c >= 0x7f {
			printable = false
			break
		}
	}
	if printable {
		return fmt.Sprintf("%q", string(b))
	}
	return fmt.Sprintf("% x", b)
}
