package nspawn

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestNetNS listens and dials inside a network namespace of its own
// (unshare -n) and checks that neither reaches the host's.
func TestNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// unshare (util-linux) and ip (iproute2) are in DEPS and .ci/run.
	cmd := exec.Command("unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal("unshare:", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var ns *NetNS
	var err error
	for i := 0; i < 100; i++ {
		// wait until sh has set lo up and exec'd sleep
		time.Sleep(20 * time.Millisecond)
		if b, _ := os.ReadFile("/proc/" + itoa(cmd.Process.Pid) + "/comm"); string(b) == "sleep\n" {
			break
		}
	}
	if ns, err = OpenNetNS(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

	l, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("inside"))
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	// Not on the host's loopback ...
	if c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatalf("the namespace's listener answers on the host's %s", l.Addr())
	}
	// ... but inside, also as "localhost".
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", net.JoinHostPort("localhost", itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "inside" {
		t.Fatalf("read %q", b)
	}
	// A host listener is not reachable from inside.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	if c, err := ns.DialContext(ctx, "tcp", hl.Addr().String()); err == nil {
		c.Close()
		t.Fatal("dialled the host's loopback from inside the namespace")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
