// Package egress is the way out of a container with a private network: a
// forward HTTP proxy (plain HTTP forwarded, HTTPS tunnelled with CONNECT)
// that enforces a host allowlist, records what it refused, and keeps
// package files and repository indexes in a cache shared on the host.
package egress
