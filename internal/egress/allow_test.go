package egress

import "testing"

func TestParseRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Rule
		bad  bool
	}{
		{in: "deb.debian.org", want: Rule{Host: "deb.debian.org"}},
		{in: "Deb.Debian.ORG:80", want: Rule{Host: "deb.debian.org", Port: "80"}},
		{in: "*", want: Rule{Host: "*"}},
		{in: "*.example.com", want: Rule{Host: "*.example.com"}},
		{in: "10.0.0.1:8080", want: Rule{Host: "10.0.0.1", Port: "8080"}},
		{in: "[::1]:80", want: Rule{Host: "::1", Port: "80"}},
		{in: "[2001:db8::1]", want: Rule{Host: "2001:db8::1"}},
		{in: "", bad: true},
		{in: "http://example.com", bad: true},
		{in: "example.com/path", bad: true},
		{in: "example.com:0", bad: true},
		{in: "example.com:99999", bad: true},
		{in: "example.com:http", bad: true},
		{in: "exa mple.com", bad: true},
		{in: "-bad.example", bad: true},
		{in: "a..b", bad: true},
		{in: "*foo", bad: true},
		{in: ":80", bad: true},
	} {
		got, err := ParseRule(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseRule(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRule(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestAllowlist(t *testing.T) {
	var a Allowlist
	if a.Allows("example.com", "80") {
		t.Fatal("the zero allowlist allows")
	}
	a.AddURL("http://deb.debian.org/debian/pool/main/w/webfs/webfs.deb")
	a.AddURL("/srv/local.deb")
	a.AddURL("file:///srv/local.deb")
	a.Add(Rule{Host: "mirror.example", Port: "8080"}, Rule{Host: "*.fedoraproject.org"})
	for _, tc := range []struct {
		host, port string
		want       bool
	}{
		{"deb.debian.org", "80", true},
		{"DEB.debian.org.", "443", true},
		{"security.debian.org", "80", false},
		{"mirror.example", "8080", true},
		{"mirror.example", "80", false},
		{"mirrors.fedoraproject.org", "443", true},
		{"fedoraproject.org", "443", false},
		{"evilfedoraproject.org", "443", false},
	} {
		if got := a.Allows(tc.host, tc.port); got != tc.want {
			t.Errorf("Allows(%s, %s) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
	if len(a.Rules()) != 3 {
		t.Errorf("rules %v: want 3 (paths are not hosts)", a.Rules())
	}
	a.Add(Rule{Host: "*"})
	if !a.Allows("anything.example", "1") || a.names("anything.example", "1") {
		t.Error("'*' allows everything but names nothing")
	}
}

func TestHostRules(t *testing.T) {
	got := HostRules([]string{"http://deb.debian.org/debian", "http://deb.debian.org/debian-security",
		"http://$mirror/x/", "https://arch.example:8080/$repo", "/not/a/url", "file:///srv/repo"})
	want := []Rule{{Host: "deb.debian.org"}, {Host: "arch.example"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v, want %v", got, want)
	}
}
