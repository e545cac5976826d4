package fileio

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteJSON(p, map[string]int{"a": 1}, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(p, map[string]int{"b": 2}, 0o640); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil || string(data) != "{\n  \"b\": 2\n}\n" {
		t.Errorf("content %q, %v", data, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	if err := WriteJSON(p, func() {}, 0o640); err == nil {
		t.Error("unencodable value accepted")
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), []byte("x"), 0o644); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left in the directory: %v", entries)
	}
}

func TestSHA256(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("abc"), 0o644)
	h, n, err := SHA256(p)
	if err != nil || n != 3 || h.String() != "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("SHA256 = %v, %d, %v", h, n, err)
	}
	if _, _, err := SHA256(p + ".missing"); err == nil {
		t.Error("missing file hashed")
	}
}
