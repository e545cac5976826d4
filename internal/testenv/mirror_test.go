package testenv

import "testing"

func TestParseSources(t *testing.T) {
	deb822 := `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
`
	got := parseSources("debian.sources", deb822)
	if len(got) != 2 || got[0].uri != "http://deb.debian.org/debian" || got[0].suites[0] != "bookworm" {
		t.Errorf("deb822: %+v", got)
	}
	oneLine := "# comment\ndeb [signed-by=/k.gpg arch=amd64] http://m.example/debian trixie main\ndeb-src http://x/debian trixie main\n"
	got = parseSources("x.list", oneLine)
	if len(got) != 1 || got[0].uri != "http://m.example/debian" || got[0].suites[0] != "trixie" {
		t.Errorf("one-line: %+v", got)
	}
}
