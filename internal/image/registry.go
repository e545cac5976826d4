package image

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/transfer"
)

// Mirrors maps a registry host ("docker.io") to the hosts that mirror it,
// tried in order before the registry itself.
type Mirrors map[string][]string

// ParseMirrors parses the RACKER_REGISTRY_MIRRORS syntax:
// "docker.io=127.0.0.1:5000,quay.io=mirror.example:5000". A registry may be
// named more than once to give several mirrors.
func ParseMirrors(s string) (Mirrors, error) {
	m := Mirrors{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		reg, mirror, ok := strings.Cut(item, "=")
		reg, mirror = strings.TrimSpace(reg), strings.TrimSpace(mirror)
		if !ok || reg == "" || mirror == "" {
			return nil, fmt.Errorf("invalid registry mirror %q (want REGISTRY=HOST[:PORT])", item)
		}
		mirror = strings.TrimPrefix(strings.TrimPrefix(mirror, "https://"), "http://")
		mirror = strings.TrimSuffix(mirror, "/")
		if strings.Contains(mirror, "/") {
			return nil, fmt.Errorf("invalid registry mirror %q: mirrors are hosts, not paths", item)
		}
		if reg == "index.docker.io" || reg == "registry-1.docker.io" {
			reg = "docker.io"
		}
		m[reg] = append(m[reg], mirror)
	}
	return m, nil
}

// isLoopbackHost reports whether host ("127.0.0.1:5000", "[::1]:80",
// "localhost") names this machine's loopback interface.
func isLoopbackHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// loopbackOnlyHTTP refuses plain-HTTP requests to anything but loopback
// addresses. go-containerregistry falls back to HTTP for private address
// ranges; we do not want credentials or images to travel unencrypted there.
type loopbackOnlyHTTP struct{ next http.RoundTripper }

func (t loopbackOnlyHTTP) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !isLoopbackHost(req.URL.Host) {
		return nil, fmt.Errorf("refusing plain HTTP to %s: only loopback registries may use HTTP", req.URL.Host)
	}
	return t.next.RoundTrip(req)
}

// describe turns an error from a registry conversation into a short cause
// that users can act on.
func describe(err error) string {
	var derr *downloadError
	if errors.As(err, &derr) {
		return derr.Error()
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode:
				return "manifest unknown (no such tag or digest)"
			case transport.NameUnknownErrorCode:
				return "repository not found"
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return "access denied (repository missing, or credentials in ~/.docker/config.json refused)"
			}
		}
		switch terr.StatusCode {
		case http.StatusNotFound:
			return "not found (HTTP 404)"
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Sprintf("access denied (HTTP %d; check credentials in ~/.docker/config.json)", terr.StatusCode)
		case http.StatusTooManyRequests:
			return "rate limited by the registry (HTTP 429)"
		}
		return humanize.OneLine(terr.Error())
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Sprintf("registry unreachable: cannot resolve %s", dnsErr.Name)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		cause := "connection failed"
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			cause = "connection refused"
		case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
			cause = "no route to host"
		case opErr.Timeout():
			cause = "timed out"
		}
		addr := ""
		if opErr.Addr != nil {
			addr = " " + opErr.Addr.String()
		}
		return fmt.Sprintf("registry unreachable:%s: %s", addr, cause)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out talking to the registry"
	}
	return humanize.OneLine(err.Error())
}

// isRegistryAnswer reports whether err is a definite answer from a registry
// (as opposed to not reaching it at all).
func isRegistryAnswer(err error) bool {
	var terr *transport.Error
	var xerr *transfer.Error
	return errors.As(err, &terr) || (errors.As(err, &xerr) && xerr.Fault.Kind == transfer.Status)
}
