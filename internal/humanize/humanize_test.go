package humanize

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 999: "999 B", 1000: "1.0 kB", 69468: "69.5 kB", 170_200_000: "170.2 MB",
		1_300_000_000: "1.3 GB", -2500: "-2.5 kB",
	} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                      "plain",
		"  two\nlines \n":            "two; lines ;",
		"crlf\r\nend":                "crlf ; end",
		"tabs\tand   blanks":         "tabs and blanks",
		"E: Unable to locate\n\n  x": "E: Unable to locate; ; x",
	} {
		if got := OneLine(in); got != want {
			t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTail(t *testing.T) {
	var tb Tail
	tb.Write([]byte("one\n\ntwo\n(Reading database ... \r(Reading database ... 50%\r(Reading database ... 9744 files.)\r\n\x1b[0;32mfour\x1b[0m  \nfi"))
	tb.Write([]byte("ve"))
	if got, want := tb.Lines(3), []string{"(Reading database ... 9744 files.)", "four", "five"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Lines(3) = %q, want %q", got, want)
	}
	if got, want := tb.Last(2), "four | five"; got != want {
		t.Errorf("Last(2) = %q, want %q", got, want)
	}
	if got := tb.Lines(0); len(got) != 5 {
		t.Errorf("Lines(0) = %q, want all 5", got)
	}
	if !tb.Contains("9744 files") || tb.Contains("six") {
		t.Error("Contains is wrong")
	}
	big := strings.Repeat("x", 100) + "\n"
	for range 1000 {
		tb.Write([]byte(big))
	}
	tb.Write([]byte("end\n"))
	if len(tb.b) > tailSize || tb.Lines(1)[0] != "end" {
		t.Errorf("kept %d bytes, last line %q", len(tb.b), tb.Lines(1))
	}
}

func TestReadTail(t *testing.T) {
	name := filepath.Join(t.TempDir(), "log")
	os.WriteFile(name, []byte(strings.Repeat("filler line\n", 10000)+"a\nb\nc\n"), 0o644)
	if got, want := ReadTail(name, 2), []string{"b", "c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ReadTail = %q, want %q", got, want)
	}
	if got := ReadTail(filepath.Join(t.TempDir(), "missing"), 2); got != nil {
		t.Errorf("ReadTail of a missing file = %q", got)
	}
}
