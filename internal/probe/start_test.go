package probe

import (
	"context"
	"testing"

	"github.com/racker-postroj/racker/internal/container"
)

// A failed start gives no Machine at all, not one holding a nil
// *container.Container that the probe's teardown would call.
func TestRuntimeStarterFailure(t *testing.T) {
	rt := &container.Runtime{StateDir: t.TempDir()}
	m, err := RuntimeStarter(rt).Start(context.Background(), container.StartOptions{Name: "x"}) // no root filesystem
	if err == nil || m != nil {
		t.Fatalf("Start without a root filesystem: %v, %#v; want an error and no machine", err, m)
	}
}
