package nspawn

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestConsoleLines(t *testing.T) {
	in := "Spawning container x on /r.\r\n" +
		"\x1b[0;1;39mWelcome\x1b[0m\r\n\r\n" +
		"[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mjournal\x1b[0m.\r\n" +
		"[  *** ] A start job is running\r[  OK  ] Reached target\r\n" +
		`Attempted to remove disk file system under "/run/systemd/nspawn/propagate/x", and we can't allow that.` + "\n" +
		"last"
	want := []string{"Spawning container x on /r.", "Welcome", "[  OK  ] Started journal.", "[  OK  ] Reached target", "last"}
	if got := consoleLines([]byte(in), 20); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := consoleLines([]byte(in), 2); !reflect.DeepEqual(got, want[3:]) {
		t.Errorf("last 2: %q", got)
	}
}

func TestNoiseFilter(t *testing.T) {
	noise := `Attempted to remove disk file system under "/run/systemd/nspawn/propagate/box", and we can't allow that.` + "\n"
	other := `Attempted to remove disk file system under "/run/systemd/nspawn/propagate/other", and we can't allow that.` + "\n"
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"hello\n", "hello\n"},
		{noise, ""},
		{"a\n" + noise + "b\n", "a\nb\n"},
		{"x" + noise, "x" + noise},                 // not at a line start
		{other, other},                             // another container's line
		{noise[:20], noise[:20]},                   // a prefix at the end is kept
		{"Attempted\n", "Attempted\n"},             // diverges
		{noise + noise + "\x00bin\n", "\x00bin\n"}, // binary survives
		{"\n" + noise + "\n", "\n\n"},              // empty lines pass
		{"prompt> ", "prompt> "},                   // no newline, not delayed
		{noise[:len(noise)-1] + "!\n", noise[:len(noise)-1] + "!\n"},
	} {
		// Every way of splitting the input into writes gives the same output.
		for _, chunk := range []int{1, 3, 7, 1 << 20} {
			var out bytes.Buffer
			f := newNoiseFilter(&out, "box")
			for s := tc.in; len(s) > 0; {
				n := min(chunk, len(s))
				f.Write([]byte(s[:n]))
				s = s[n:]
			}
			f.flush()
			if out.String() != tc.want {
				t.Errorf("in %q (writes of %d): out %q, want %q", tc.in, chunk, out.String(), tc.want)
			}
		}
	}
	// Output that is not noise is passed on at once.
	var out bytes.Buffer
	f := newNoiseFilter(&out, "box")
	f.Write([]byte("Password: "))
	if out.String() != "Password: " {
		t.Errorf("prompt held back: %q", out.String())
	}
	if strings.Contains(noise, "\r") {
		t.Fatal("bad test")
	}
}
