package egress

import (
	"slices"
	"testing"
)

func TestClientConfig(t *testing.T) {
	c := ClientConfig("127.0.0.1:3129")
	if !slices.Contains(c.Env, "http_proxy=http://127.0.0.1:3129/") || !slices.Contains(c.Env, "no_proxy="+NoProxy) {
		t.Fatalf("env %q", c.Env)
	}
	if len(c.Files) != 2 || c.Files[0].If != "/etc/apt/apt.conf.d" {
		t.Fatalf("files %+v", c.Files)
	}
}
