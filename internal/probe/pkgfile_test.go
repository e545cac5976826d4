package probe

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDetect(t *testing.T) {
	for _, tt := range []struct {
		name    string
		file    string
		data    []byte
		want    Type
		wantErr error
	}{
		{"deb", "x.deb", fakeDeb("payload"), Deb, nil},
		{"deb GNU member name", "x.deb", append([]byte("!<arch>\n"), arMember("debian-binary/", []byte("2.0\n"))...), Deb, nil},
		{"deb without extension", "download", fakeDeb("p"), Deb, nil},
		{"ar but not deb", "x.deb", append([]byte("!<arch>\n"), arMember("libfoo.o", []byte("x"))...), "", ErrNotPackage},
		{"ar cut short", "x.deb", []byte("!<arch>\ndebian"), "", ErrNotPackage},
		{"rpm", "x.rpm", fakeRPM("lead"), RPM, nil},
		{"pacman zst", "x-1-1-x86_64.pkg.tar.zst", fakePacman(t, ".BUILDINFO", ".MTREE", ".PKGINFO", "usr/bin/x"), Pacman, nil},
		{"zst without PKGINFO", "x.pkg.tar.zst", fakePacman(t, "usr/bin/x"), "", ErrNotPackage},
		{"zst not named pkg.tar", "x.tar.zst", fakePacman(t, ".PKGINFO"), "", ErrNotPackage},
		{"pacman xz", "x-1-1-any.pkg.tar.xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2}, Pacman, nil},
		{"html page", "x.deb", []byte("\n  <!DOCTYPE html>\n<html><body>Not Found</body></html>"), "", ErrHTMLPage},
		{"html uppercase", "x.rpm", []byte("<HTML><HEAD><TITLE>503</TITLE>"), "", ErrHTMLPage},
		{"empty", "x.deb", nil, "", ErrNotPackage},
		{"text", "x.deb", []byte("just some text\n"), "", ErrNotPackage},
		{"gzip tarball", "x.tar.gz", []byte{0x1f, 0x8b, 8, 0, 0, 0}, "", ErrNotPackage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Detect(tt.file, tt.data)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Detect: error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Detect = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDetectFileReadsOnlyTheHead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.deb")
	data := fakeDeb(string(make([]byte, 1<<20)))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := DetectFile(p); err != nil || got != Deb {
		t.Fatalf("DetectFile = %q, %v; want deb", got, err)
	}
}

func TestFileName(t *testing.T) {
	for _, tt := range []struct {
		in   string
		t    Type
		want string
	}{
		{"webfs_1.21+ds1-12+b1_amd64.deb", Deb, "webfs_1.21+ds1-12+b1_amd64.deb"},
		{"grafana-8.5.1-1.x86_64.rpm", RPM, "grafana-8.5.1-1.x86_64.rpm"},
		{"pkg_1:2.0_amd64.deb", Deb, "pkg_1_2.0_amd64.deb"}, // nspawn's --bind splits at ':'
		{"download", Deb, "download.deb"},                   // apt-get installs files named *.deb only
		{"x-1-1-any.pkg.tar.xz", Pacman, "x-1-1-any.pkg.tar.xz"},
		{"..", RPM, "package.rpm"},
		{"a b", "", "a_b"},
	} {
		if got := fileName(tt.in, tt.t); got != tt.want {
			t.Errorf("fileName(%q, %q) = %q, want %q", tt.in, tt.t, got, tt.want)
		}
	}
}
