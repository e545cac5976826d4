package layer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// syntheticLayer returns a tar of 5000 small files in 50 directories and four
// 8 MiB files, with its content size.
func syntheticLayer(tb testing.TB) ([]byte, int64) {
	var entries []tarEntry
	var size int64
	chunk := strings.Repeat("0123456789abcdef", 512) // 8 KiB
	for d := range 50 {
		dir := fmt.Sprintf("usr/share/doc/pkg%02d/", d)
		entries = append(entries, dirEntry(dir))
		for f := range 100 {
			body := chunk[:512+(d*100+f)*37%7000]
			entries = append(entries, reg(fmt.Sprintf("%sfile%03d", dir, f), body))
			size += int64(len(body))
		}
	}
	big := strings.Repeat(chunk, 1024) // 8 MiB
	for i := range 4 {
		entries = append(entries, reg(fmt.Sprintf("usr/lib/big%d.so", i), big))
		size += int64(len(big))
	}
	return buildTar(tb, entries...), size
}

// BenchmarkApply compares Apply with GNU tar extracting the same stream
// (as root, tar restores owners and modes too).
func BenchmarkApply(b *testing.B) {
	layer, size := syntheticLayer(b)
	benchExtract(b, layer, size)
}

// BenchmarkApplyFile does the same with the uncompressed tar named by
// $LAYER_BENCH_TAR, e.g. made with `mmdebstrap --variant=minbase bookworm
// out.tar`; it is skipped without it.
func BenchmarkApplyFile(b *testing.B) {
	name := os.Getenv("LAYER_BENCH_TAR")
	if name == "" {
		b.Skip("LAYER_BENCH_TAR is not set")
	}
	layer, err := os.ReadFile(name)
	if err != nil {
		b.Fatal(err)
	}
	benchExtract(b, layer, int64(len(layer)))
}

// benchExtract extracts layer into fresh directories under b.TempDir(), or
// under $LAYER_BENCH_DIR (e.g. a tmpfs, to leave the disk out).
func benchExtract(b *testing.B, layer []byte, size int64) {
	requireRoot(b)
	base := b.TempDir()
	if dir := os.Getenv("LAYER_BENCH_DIR"); dir != "" {
		var err error
		if base, err = os.MkdirTemp(dir, "layer-bench-"); err != nil { // 0700
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(base) })
	}
	// GNU tar reads a file rather than a pipe, which would slow it down.
	tarFile := filepath.Join(b.TempDir(), "layer.tar")
	if err := os.WriteFile(tarFile, layer, 0o600); err != nil {
		b.Fatal(err)
	}
	extractors := []struct {
		name string
		run  func(b *testing.B, root string)
	}{
		{"applier", func(b *testing.B, root string) {
			a, err := NewApplier(root, Limits{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := a.Apply(context.Background(), bytes.NewReader(layer), 0); err != nil {
				b.Fatal(err)
			}
			if err := a.Finish(); err != nil {
				b.Fatal(err)
			}
			if err := a.Close(); err != nil {
				b.Fatal(err)
			}
		}},
		{"gnutar", func(b *testing.B, root string) {
			cmd := exec.Command("tar", "-x", "-C", root, "-f", tarFile)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("tar -x: %v\n%s", err, out)
			}
		}},
	}
	for _, ex := range extractors {
		b.Run(ex.name, func(b *testing.B) {
			if ex.name == "gnutar" {
				if _, err := exec.LookPath("tar"); err != nil {
					b.Skip(err)
				}
			}
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				root := filepath.Join(base, fmt.Sprintf("%s-%d", ex.name, i))
				if err := os.Mkdir(root, 0o755); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				ex.run(b, root)
				b.StopTimer()
				if err := os.RemoveAll(root); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
