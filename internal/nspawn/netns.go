package nspawn

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// NetNS is the network namespace of a running process (a container's
// leader), held open so that it stays the same namespace however long it
// is used. Sockets made through it live in that namespace: a listener
// there serves the container's 127.0.0.1, a dial reaches the container's
// own ports. Nothing changes in the host's network setup.
type NetNS struct {
	f *os.File
}

// OpenNetNS opens the network namespace of pid.
func OpenNetNS(pid int) (*NetNS, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil {
		return nil, fmt.Errorf("opening the network namespace of pid %d: %w", pid, err)
	}
	return &NetNS{f: f}, nil
}

// Close releases the namespace; sockets made in it stay usable.
func (n *NetNS) Close() error { return n.f.Close() }

// do runs fn on an OS thread that has joined the namespace. Go schedules
// goroutines on any thread, so the thread is locked for fn's duration; if
// it cannot return to the process's own namespace it is not unlocked, so
// the runtime ends it instead of reusing it.
func (n *NetNS) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening own network namespace: %w", err)
			return
		}
		defer self.Close()
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering the container's network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("leaving the container's network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen listens on addr (such as "127.0.0.1:3142") inside the namespace.
// The listener accepts connections from the container; what serves them
// runs in the host's namespace.
func (n *NetNS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening on %s in the container: %w", addr, err)
	}
	return l, nil
}

// DialContext connects to addr inside the namespace (the container's
// localhost is its own: "localhost" means 127.0.0.1, then ::1). Other names
// are resolved by the host first; each address is dialled in turn, on the
// namespace's thread (a parallel dial would make its sockets elsewhere).
func (n *NetNS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []string
	switch {
	case host == "localhost":
		ips = []string{"127.0.0.1", "::1"}
	case net.ParseIP(host) != nil:
		ips = []string{host}
	default:
		if ips, err = net.DefaultResolver.LookupHost(ctx, host); err != nil {
			return nil, err
		}
	}
	var c net.Conn
	for _, ip := range ips {
		err = n.do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(ip, port))
			return err
		})
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	return c, err
}
