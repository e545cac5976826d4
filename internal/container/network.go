package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/egress"
	"github.com/racker-postroj/racker/internal/nspawn"
	"github.com/racker-postroj/racker/internal/rootfs"
)

// NetworkMode says what network a container has.
type NetworkMode string

const (
	// NetworkHost shares the host's network (racker run's default, as
	// machinectl-style OS containers do).
	NetworkHost NetworkMode = "host"
	// NetworkPrivate gives the container only its own loopback, and a way
	// out through an HTTP proxy that racker serves on that loopback
	// (pkgprobe's and selftest's default).
	NetworkPrivate NetworkMode = "private"
	// NetworkNone gives the container only its own loopback, no way out.
	NetworkNone NetworkMode = "none"
)

// ParseNetworkMode parses --network.
func ParseNetworkMode(s string) (NetworkMode, error) {
	switch m := NetworkMode(s); m {
	case NetworkHost, NetworkPrivate, NetworkNone:
		return m, nil
	}
	return "", fmt.Errorf("unexpected --network %q (valid: private, host, none)", s)
}

// Network is a container's network (part of its isolation). The zero value
// is the host's network.
type Network struct {
	Mode NetworkMode // "" means NetworkHost
	// Allow adds rules to the proxy's allowlist under NetworkPrivate; the
	// hosts of the image's own package repositories are always allowed.
	Allow []egress.Rule
	// Cache, when set, keeps what the proxy fetches over plain HTTP.
	Cache *egress.Cache
}

// Private reports whether the container gets a network namespace of its
// own (private or none).
func (n Network) Private() bool { return n.Mode == NetworkPrivate || n.Mode == NetworkNone }

// ProxyAddr is where the proxy listens inside a private container.
var ProxyAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(egress.DefaultPort))

// ErrPrivateDetached and ErrPrivateUnbooted refuse private networks where
// racker cannot serve the container's proxy for as long as it runs.
var (
	ErrPrivateDetached = errors.New("--network=private needs racker to stay attached: the proxy runs in racker (use --network=none or host with --detach)")
	ErrPrivateUnbooted = errors.New("--network=private needs a booted container (use --network=none or host with --boot=never)")
)

// ErrProxy is wrapped by errors about a proxy that could not start inside
// the container's network namespace.
var ErrProxy = errors.New("cannot serve the egress proxy in the container")

// netState is the network side of one container with a namespace of its
// own: the namespace, held open for dialling into it, and for
// NetworkPrivate the proxy served inside it.
type netState struct {
	mode   NetworkMode
	ns     *nspawn.NetNS
	proxy  *egress.Proxy // nil for NetworkNone
	client egress.Client
	served chan struct{}
}

// newNet prepares the network of a container of rootfsDir; nil for the
// host's network. Under NetworkPrivate the allowlist is the image's
// repository hosts plus n.Allow.
func newNet(n Network, rootfsDir string, log *slog.Logger) (*netState, error) {
	if !n.Private() {
		return nil, nil
	}
	st := &netState{mode: n.Mode}
	if n.Mode != NetworkPrivate {
		return st, nil
	}
	repos, err := distro.RepositoryURLs(rootfsDir)
	if err != nil {
		return nil, fmt.Errorf("reading the image's repositories: %w", err)
	}
	st.proxy = &egress.Proxy{Cache: n.Cache, Logger: log}
	st.proxy.Allow.Add(egress.HostRules(repos)...)
	st.proxy.Allow.Add(n.Allow...)
	st.client = egress.ClientConfig(ProxyAddr)
	log.Debug("egress allowlist", "rules", fmt.Sprint(st.proxy.Allow.Rules()))
	return st, nil
}

// initEnv is the environment the container's service manager gets (and so
// every service and transient unit in it): the proxy settings.
func (st *netState) initEnv() []string {
	if st == nil {
		return nil
	}
	return st.client.Env
}

// start opens the network namespace of leader and, under NetworkPrivate,
// serves the proxy on 127.0.0.1 there and writes the package managers'
// proxy settings into the container's overlay (/proc/LEADER/root).
// Nothing changes on the host's network: the listener lives in the
// container's namespace, upstream connections are made from this
// process's.
func (st *netState) start(leader int) error {
	if st == nil {
		return nil
	}
	ns, err := nspawn.OpenNetNS(leader)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProxy, err)
	}
	st.ns = ns
	if st.proxy == nil {
		return nil
	}
	l, err := ns.Listen("tcp", ProxyAddr)
	if err != nil {
		st.close()
		return fmt.Errorf("%w: %w", ErrProxy, err)
	}
	st.served = make(chan struct{})
	go func() {
		defer close(st.served)
		st.proxy.Serve(l)
	}()
	if err := writeFiles("/proc/"+strconv.Itoa(leader)+"/root", st.client.Files); err != nil {
		st.close()
		return fmt.Errorf("%w: %w", ErrProxy, err)
	}
	return nil
}

// close stops the proxy, waits for it, and releases the namespace.
func (st *netState) close() {
	if st == nil || st.ns == nil {
		return
	}
	if st.served != nil {
		st.proxy.Close()
		<-st.served
		st.served = nil
	}
	st.ns.Close()
	st.ns = nil
}

// dial reaches addr as the container does: inside its namespace when it
// has one (its localhost is its own), on the host's network otherwise.
func (st *netState) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if st == nil || st.ns == nil {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	return st.ns.DialContext(ctx, network, addr)
}

// record returns what the proxy saw; ok is false without a proxy.
func (st *netState) record() (egress.Record, bool) {
	if st == nil || st.proxy == nil {
		return egress.Record{}, false
	}
	return st.proxy.Record(), true
}

// writeFiles writes files into the root at dir, each only where its
// package manager's directory exists.
func writeFiles(dir string, files []egress.File) error {
	root, err := rootfs.Open(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, f := range files {
		if st, err := root.Stat(f.If); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		if err := root.MkdirAll(path.Dir(f.Path), 0o755); err != nil {
			return err
		}
		out, err := root.Open(f.Path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW)
		if err != nil {
			return err
		}
		_, werr := out.WriteString(f.Content)
		if err := out.Chmod(0o644); werr == nil {
			werr = err
		}
		if err := out.Close(); werr == nil {
			werr = err
		}
		if werr != nil {
			return fmt.Errorf("writing %s: %w", f.Path, werr)
		}
	}
	return nil
}

// withProxyEnv returns env with the proxy settings first (env wins).
func (st *netState) withProxyEnv(env []string) []string {
	if st == nil || st.proxy == nil {
		return env
	}
	var out []string
	for _, kv := range st.client.Env {
		k, _, _ := strings.Cut(kv, "=")
		if !hasKey(env, k) {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

func hasKey(env []string, k string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			return true
		}
	}
	return false
}

// DialContext connects to addr as the container does: inside its network
// namespace when it has one (so localhost is the container's own), on the
// host's network otherwise.
func (c *Container) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.net.dial(ctx, network, addr)
}

// Egress returns the allowlist and the record of the container's proxy; ok
// is false when it has none (host and none networks).
func (c *Container) Egress() (allowed []egress.Rule, rec egress.Record, ok bool) {
	if c.net == nil || c.net.proxy == nil {
		return nil, egress.Record{}, false
	}
	rec, _ = c.net.record()
	return c.net.proxy.AllowRules(), rec, true
}

// prepareProxy serves, for preparing the tree at rootfsDir, a proxy with the
// package cache on this host's loopback, which the preparation container
// shares: it lets through to the image's repository hosts only, as a
// private container's does. It returns the environment that points the
// package manager at it (nothing without a package cache) and the function
// that stops it. The tree is being written, so no configuration file is
// placed in it: the package managers read http_proxy.
func (r *Runtime) prepareProxy(rootfsDir string) (env []string, stop func(), err error) {
	if r.PackageCache == nil {
		return nil, func() {}, nil
	}
	repos, err := distro.RepositoryURLs(rootfsDir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the image's repositories: %w", err)
	}
	p := &egress.Proxy{Cache: r.PackageCache, Logger: r.logger()}
	p.Allow.Add(egress.HostRules(repos)...)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("serving the package cache: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Serve(l)
	}()
	stop = func() {
		p.Close()
		<-done
		rec := p.Record()
		r.logger().Info("preparation egress", "requests", len(rec.Requests), "cached", rec.Hits(egress.CacheHit),
			"refused", strings.Join(rec.RefusedHosts(), " "))
	}
	return egress.ClientConfig(l.Addr().String()).Env, stop, nil
}
