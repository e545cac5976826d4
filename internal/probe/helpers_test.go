package probe

import (
	"archive/tar"
	"bytes"
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// arMember is one member of an ar archive in its on-disk form.
func arMember(name string, data []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", name, 0, 0, 0, 0o644, len(data))
	b.Write(data)
	if len(data)%2 == 1 {
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// fakeDeb is a minimal .deb: enough for the type check, not for dpkg.
func fakeDeb(payload string) []byte {
	b := []byte("!<arch>\n")
	b = append(b, arMember("debian-binary", []byte("2.0\n"))...)
	b = append(b, arMember("control.tar.xz", []byte(payload))...)
	return b
}

// fakeRPM starts with the RPM lead's magic.
func fakeRPM(payload string) []byte {
	return append([]byte{0xed, 0xab, 0xee, 0xdb, 3, 0, 0, 1}, payload...)
}

// fakePacman is a zstd-compressed tar with the given entries.
func fakePacman(t *testing.T, names ...string) []byte {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, n := range names {
		data := []byte("pkgname = x\n")
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(tb.Bytes(), nil)
}
