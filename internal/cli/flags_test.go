package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/racker-postroj/racker/internal/nspawn"
)

func TestEnvEntry(t *testing.T) {
	t.Setenv("RACKER_TEST_FROM_HOST", "here")
	os.Unsetenv("RACKER_TEST_UNSET")
	for in, want := range map[string]string{
		"A=1": "A=1", "A=": "A=", "A=b=c": "A=b=c",
		"RACKER_TEST_FROM_HOST": "RACKER_TEST_FROM_HOST=here", "RACKER_TEST_UNSET": "",
	} {
		if got, err := envEntry(in); err != nil || got != want {
			t.Errorf("envEntry(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "=x", "A B=1"} {
		if _, err := envEntry(bad); err == nil {
			t.Errorf("envEntry(%q) succeeded", bad)
		}
	}
}

func TestReadEnvFile(t *testing.T) {
	t.Setenv("FROM_HOST", "h")
	f := filepath.Join(t.TempDir(), "env")
	os.WriteFile(f, []byte("\ufeff# comment\n\nA=1\n  B=two words \nFROM_HOST\nNOT_SET_ANYWHERE_XYZ\nC=\"quoted\"\n"), 0o644)
	got, err := readEnvFile(f)
	want := []string{"A=1", "B=two words ", "FROM_HOST=h", `C="quoted"`}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("readEnvFile = %q, %v; want %q", got, err, want)
	}
	for _, bad := range []string{"A=1\n=bad\n", "A B=1\n", "A=\xff\n"} {
		os.WriteFile(f, []byte(bad), 0o644)
		if _, err := readEnvFile(f); err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("%q: error %v, want one naming %s", bad, err, f)
		}
	}
	if _, err := readEnvFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestParseVolumes(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.Mkdir("rel", 0o755)
	got, err := parseVolumes([]string{dir + ":/data", dir + ":/ro:ro", "./rel:/r:rw"})
	want := []nspawn.Bind{{Host: dir, Container: "/data"}, {Host: dir, Container: "/ro", ReadOnly: true},
		{Host: filepath.Join(dir, "rel"), Container: "/r"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseVolumes = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{dir, dir + ":", ":/x", dir + ":/x:rx", "named:/x", dir + ":relative", dir + "/missing:/x", "a:b:c:d"} {
		if _, err := parseVolumes([]string{bad}); err == nil {
			t.Errorf("parseVolumes(%q) succeeded", bad)
		}
	}
}
