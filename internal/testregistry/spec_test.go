package testregistry

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	env := map[string]string{"WORK": "/tmp/w", "$": "$"}
	expand := func(k string) string { return env[k] }
	tests := []struct {
		line    string
		want    tar.Header
		content string
	}{
		{`dir etc 0755`, tar.Header{Typeflag: tar.TypeDir, Name: "etc", Mode: 0o755}, ""},
		{`dir ./tmp/ 1777 0:0`, tar.Header{Typeflag: tar.TypeDir, Name: "./tmp/", Mode: 0o1777}, ""},
		{`file etc/hostname 0644 box`, tar.Header{Typeflag: tar.TypeReg, Name: "etc/hostname", Mode: 0o644, Size: 3}, "box"},
		{`file a 0644 two  words `, tar.Header{Typeflag: tar.TypeReg, Name: "a", Mode: 0o644, Size: 10}, "two  words"},
		{`file a 0644 "line\n"`, tar.Header{Typeflag: tar.TypeReg, Name: "a", Mode: 0o644, Size: 5}, "line\n"},
		{`file usr/bin/su 4755 0:42 x`, tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/su", Mode: 0o4755, Gid: 42, Size: 1}, "x"},
		{`file empty 0600 1000:1000 mtime=@86400`, tar.Header{Typeflag: tar.TypeReg, Name: "empty", Mode: 0o600, Uid: 1000, Gid: 1000, ModTime: time.Unix(86400, 0).UTC()}, ""},
		{`file ../../victim 0644 pwned`, tar.Header{Typeflag: tar.TypeReg, Name: "../../victim", Mode: 0o644, Size: 5}, "pwned"},
		{`file $WORK/victim 0644 $WORK`, tar.Header{Typeflag: tar.TypeReg, Name: "/tmp/w/victim", Mode: 0o644, Size: 5}, "$WORK"},
		{`file ${WORK}x 0644`, tar.Header{Typeflag: tar.TypeReg, Name: "/tmp/wx", Mode: 0o644}, ""},
		{`file "$WORK y" 0644`, tar.Header{Typeflag: tar.TypeReg, Name: "$WORK y", Mode: 0o644}, ""},
		{`file "a\xffb" 0644`, tar.Header{Typeflag: tar.TypeReg, Name: "a\xffb", Mode: 0o644}, ""},
		{`symlink bin usr/bin`, tar.Header{Typeflag: tar.TypeSymlink, Name: "bin", Linkname: "usr/bin", Mode: 0o777}, ""},
		{`symlink escape $WORK 5:6`, tar.Header{Typeflag: tar.TypeSymlink, Name: "escape", Linkname: "/tmp/w", Mode: 0o777, Uid: 5, Gid: 6}, ""},
		{`hardlink b a`, tar.Header{Typeflag: tar.TypeLink, Name: "b", Linkname: "a", Mode: 0o644}, ""},
		{`chardev dev/mem dev=1:1`, tar.Header{Typeflag: tar.TypeChar, Name: "dev/mem", Mode: 0o666, Devmajor: 1, Devminor: 1}, ""},
		{`chardev dev/null`, tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}, ""},
		{`blockdev sda mode=0600`, tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Mode: 0o600, Devmajor: 8}, ""},
		{`fifo run/p`, tar.Header{Typeflag: tar.TypeFifo, Name: "run/p", Mode: 0o644}, ""},
		{`whiteout a/gone`, tar.Header{Typeflag: tar.TypeReg, Name: "a/.wh.gone"}, ""},
		{`whiteout gone`, tar.Header{Typeflag: tar.TypeReg, Name: ".wh.gone"}, ""},
		{`opaque a/b/`, tar.Header{Typeflag: tar.TypeReg, Name: "a/b/.wh..wh..opq"}, ""},
		{`file a/.wh.x 0000`, tar.Header{Typeflag: tar.TypeReg, Name: "a/.wh.x"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			entries, err := ParseSpec("# comment\n\n"+tt.line+"\n", expand)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 {
				t.Fatalf("got %d entries, want 1", len(entries))
			}
			e := entries[0]
			want := tt.want
			if want.ModTime.IsZero() {
				want.ModTime = defaultMtime
			}
			if e.Line != 3 {
				t.Errorf("line %d, want 3", e.Line)
			}
			if e.Header.Typeflag != want.Typeflag || e.Header.Name != want.Name || e.Header.Linkname != want.Linkname ||
				e.Header.Mode != want.Mode || e.Header.Uid != want.Uid || e.Header.Gid != want.Gid ||
				e.Header.Size != want.Size || !e.Header.ModTime.Equal(want.ModTime) ||
				e.Header.Devmajor != want.Devmajor || e.Header.Devminor != want.Devminor {
				t.Errorf("header\n got %+v\nwant %+v", e.Header, want)
			}
			if string(e.Content) != tt.content {
				t.Errorf("content %q, want %q", e.Content, tt.content)
			}
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, tt := range []struct{ line, want string }{
		{`socket a`, `unknown entry type "socket"`},
		{`dir`, `missing NAME`},
		{`dir a`, `missing MODE`},
		{`dir a 0855`, `bad mode "0855"`},
		{`dir a 17777`, `bad mode`},
		{`file a 0644 size=-1`, `negative size`},
		{`file a 0644 size=3 abc`, `both size= and content`},
		{`file a 0644 "unterminated`, `not one Go string literal`},
		{`symlink a`, `missing TARGET`},
		{`symlink a b extra`, `unexpected "extra"`},
		{`dir a 0755 size=1`, `option size does not apply to dir`},
		{`chardev a dev=1`, `bad dev=1`},
		{`file a 0644 mtime=yesterday`, `bad mtime`},
		{`opaque a b`, `opaque takes only a name`},
	} {
		_, err := ParseSpec("dir ok 0755\n"+tt.line, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "line 2: ") {
			t.Errorf("%s: error %v, want line 2 and %q", tt.line, err, tt.want)
		}
	}
}

func TestSizedFile(t *testing.T) {
	entries, err := ParseSpec("file big 0644 size=100000\nfile big2 0644 size=100000", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := entries[0].Content, entries[1].Content
	if len(a) != 100000 || entries[0].Header.Size != 100000 {
		t.Fatalf("size %d/%d", len(a), entries[0].Header.Size)
	}
	if bytes.Equal(a, b) {
		t.Error("two files of the same size have the same content; want it to depend on the name")
	}
	again, _ := ParseSpec("file big 0644 size=100000", nil)
	if !bytes.Equal(a, again[0].Content) {
		t.Error("content is not deterministic")
	}
}

func TestWriteTarKeepsNamesVerbatim(t *testing.T) {
	spec := "file ../../x 0644 a\nfile /abs 0644 b\nfile ./a//b 0644 c\nhardlink h ../../x\n"
	entries, err := ParseSpec(spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := WriteTar(entries)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name+">"+h.Linkname)
	}
	if got, want := strings.Join(names, " "), "../../x> /abs> ./a//b> h>../../x"; got != want {
		t.Errorf("names %q, want %q", got, want)
	}
}

func TestCorruptKeepsLength(t *testing.T) {
	entries, err := ParseSpec("dir d 0755\nfile d/f 0644 size=70000\nfile g 0644 tail", nil)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := Corrupt(entries)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(bad[1].Content, entries[1].Content) || bad[1].Content[0] == entries[1].Content[0] {
		t.Error("content not changed")
	}
	if !bytes.Equal(bad[2].Content, entries[2].Content) {
		t.Error("changed more than the first file")
	}
	goodTar, _ := WriteTar(entries)
	badTar, _ := WriteTar(bad)
	good, _ := NewMemLayer(goodTar, 0, "")
	worse, _ := NewMemLayer(badTar, 0, "")
	if len(good.Gzip) != len(worse.Gzip) || bytes.Equal(good.Gzip, worse.Gzip) {
		t.Errorf("stored gzip: %d and %d bytes; want equal lengths, different bytes", len(good.Gzip), len(worse.Gzip))
	}
	if _, err := Corrupt(entries[:1]); err == nil {
		t.Error("corrupting a layer without file content: no error")
	}
}
