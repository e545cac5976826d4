package probe

import (
	"context"
	"net"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/egress"
)

// networkMode is the mode probe containers get.
func (p *Prober) networkMode() container.NetworkMode {
	if p.Network == "" {
		return container.NetworkPrivate
	}
	return p.Network
}

// sharesHostNetwork reports whether probe containers use the host's
// network, where two services on one port clash and a service already
// answering there would pass a check without the container.
func (p *Prober) sharesHostNetwork() bool { return p.networkMode() == container.NetworkHost }

// network is the network of spec's container: the proxy of a private one
// also lets through to the hosts the package files come from.
func (p *Prober) network(spec Spec) container.Network {
	n := container.Network{Mode: p.networkMode(), Cache: p.PackageCache}
	if n.Mode != container.NetworkPrivate {
		return n
	}
	var a egress.Allowlist
	for _, src := range spec.Packages {
		a.AddURL(src)
	}
	a.Add(p.Allow...)
	n.Allow = a.Rules()
	return n
}

// networked is what a container with a network of its own offers a probe
// (*container.Container does).
type networked interface {
	// DialContext reaches addr as the container does.
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	// Egress returns the proxy's allowlist and record; ok is false when
	// the container has no proxy.
	Egress() (allowed []egress.Rule, rec egress.Record, ok bool)
}

// dialer returns how network checks reach m's addresses.
func dialer(m any) DialFunc {
	if n, ok := m.(networked); ok {
		return n.DialContext
	}
	return nil
}

// egressReport returns the report of m's proxy, or nil.
func egressReport(m any) *Egress {
	n, ok := m.(networked)
	if !ok {
		return nil
	}
	allowed, rec, ok := n.Egress()
	if !ok {
		return nil
	}
	return newEgress(allowed, rec)
}
