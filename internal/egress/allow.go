package egress

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Rule is one allowlist entry: a host name or IP address, "*.DOMAIN" for
// every name below DOMAIN, or "*" for every host; Port, when not empty,
// limits it to that port.
type Rule struct {
	Host string // lower case, without brackets
	Port string
}

// RuleForms lists the valid forms of a rule, for error messages.
const RuleForms = "HOST, HOST:PORT, *.DOMAIN, or '*' for every host"

// ParseRule parses an --allow-host value.
func ParseRule(s string) (Rule, error) {
	bad := func(why string) (Rule, error) {
		return Rule{}, fmt.Errorf("unexpected --allow-host %q: %s (valid: %s)", s, why, RuleForms)
	}
	if s == "" {
		return bad("empty")
	}
	if s == "*" {
		return Rule{Host: "*"}, nil
	}
	if strings.ContainsAny(s, "/@?# \t\n") {
		return bad("not a host name")
	}
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad("bad port")
		}
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	host = strings.ToLower(host)
	if ip := net.ParseIP(host); ip != nil {
		return Rule{Host: ip.String(), Port: port}, nil
	}
	name := strings.TrimPrefix(host, "*.")
	if !validHostName(name) {
		return bad("not a host name")
	}
	return Rule{Host: host, Port: port}, nil
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func (r Rule) String() string {
	if r.Port == "" {
		return r.Host
	}
	return net.JoinHostPort(r.Host, r.Port)
}

// matches reports whether the rule allows host (lower case) on port.
func (r Rule) matches(host, port string) bool {
	if r.Port != "" && r.Port != port {
		return false
	}
	switch {
	case r.Host == "*":
		return true
	case strings.HasPrefix(r.Host, "*."):
		return strings.HasSuffix(host, r.Host[1:])
	}
	return r.Host == host
}

// Allowlist is the set of hosts a proxy lets requests through to. The zero
// value allows nothing.
type Allowlist struct {
	rules []Rule
}

// Add adds rules, each once.
func (a *Allowlist) Add(rules ...Rule) {
	for _, r := range rules {
		if !slices.Contains(a.rules, r) {
			a.rules = append(a.rules, r)
		}
	}
}

// AddURL allows the host of an http(s) or ftp URL on every port; other
// strings (paths, file:// URLs) are ignored.
func (a *Allowlist) AddURL(s string) {
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" {
		return
	}
	switch u.Scheme {
	case "http", "https", "ftp":
		a.Add(Rule{Host: canonicalHost(u.Hostname())})
	}
}

// Rules returns the rules in the order they were added.
func (a *Allowlist) Rules() []Rule { return slices.Clone(a.rules) }

// Allows reports whether a request to host on port may pass.
func (a *Allowlist) Allows(host, port string) bool {
	host = canonicalHost(host)
	for _, r := range a.rules {
		if r.matches(host, port) {
			return true
		}
	}
	return false
}

// names reports whether a rule names host literally (not through "*" or a
// domain): only such rules open the way to the host's own loopback.
func (a *Allowlist) names(host, port string) bool {
	host = canonicalHost(host)
	for _, r := range a.rules {
		if r.Host == host && (r.Port == "" || r.Port == port) {
			return true
		}
	}
	return false
}

func canonicalHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return h
}

// HostRules turns repository URLs into allowlist rules, one per host (any
// port). Hosts containing variables ($releasever, $mirror) are left out:
// they are not known before the package manager expands them.
func HostRules(urls []string) []Rule {
	var a Allowlist
	for _, s := range urls {
		if u, err := url.Parse(s); err == nil && !strings.Contains(u.Host, "$") {
			a.AddURL(s)
		}
	}
	return a.Rules()
}
