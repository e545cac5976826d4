package testregistry

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// need skips t when tool is missing, or fails it when RACKER_E2E=1, where
// every prerequisite must be installed.
func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err == nil {
		return
	}
	if os.Getenv("RACKER_E2E") == "1" {
		t.Fatalf("%s is not installed, and RACKER_E2E=1 requires it", tool)
	}
	t.Skipf("%s is not installed", tool)
}

// needRoot is need for root, which owning files as other users takes.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("RACKER_E2E") == "1" {
		t.Fatal("not root, and RACKER_E2E=1 requires it")
	}
	t.Skip("not root")
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func startServer(t *testing.T) *Server {
	t.Helper()
	need(t, "docker-registry")
	s, err := Start(testContext(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
