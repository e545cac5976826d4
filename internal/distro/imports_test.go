package distro

import (
	"os/exec"
	"strings"
	"testing"
)

// distro is knowledge that the image store, nspawn and the probe engine
// use: it must not depend on them.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"image", "nspawn", "probe", "container", "curated", "cli"} {
			if dep == "github.com/racker-postroj/racker/internal/"+banned {
				t.Errorf("internal/distro depends on %s", dep)
			}
		}
	}
}
