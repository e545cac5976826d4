package testregistry

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/testenv"
)

// need skips t when tool is missing, or fails it when RACKER_E2E=1, where
// every prerequisite must be installed.
func need(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err == nil {
		return
	}
	testenv.Missing(t, tool, "")
}

// needRoot is need for root, which owning files as other users takes.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	testenv.Missing(t, "root", "run the tests as root")
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
