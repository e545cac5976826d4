package layer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
)

// FuzzApply applies one or two fuzzed layers and checks that nothing panics
// and nothing outside the rootfs changes. The seeds are the hostile and
// functional test cases; their absolute "host" paths point at a victim
// directory that does not exist and at a canary name, so that an escape is
// detected and cannot do damage. Each input costs a fresh fixture, so run it
// with a short minimisation budget:
//
//	go test -run XXX -fuzz FuzzApply -fuzztime 60s -fuzzminimizetime 1s ./internal/layer/
func FuzzApply(f *testing.F) {
	const canary = "racker-layer-fuzz-canary"
	const fakeVictim = "/racker-layer-fuzz-victim"
	seedFx := &fixture{victim: fakeVictim}
	for _, tc := range hostileCases(canary) {
		layers := tc.layers(seedFx)
		l1, l2 := buildTar(f, layers[0]...), []byte{}
		if len(layers) > 1 {
			l2 = buildTar(f, layers[1]...)
		}
		f.Add(l1, l2)
	}
	f.Add(buildTar(f, dirEntry("d/"), reg("d/a", "a"), dirEntry("d/s/"), reg("d/s/b", "b"), hardlink("h", "d/a")),
		buildTar(f, reg("d/.wh..wh..opq", ""), reg("d/s/c", "c"), reg("d/.wh.a", ""), symlink("d/s", "../..")))
	f.Add([]byte("not a tar"), []byte{})
	f.Fuzz(func(t *testing.T, l1, l2 []byte) {
		fx := newFixture(t)
		t.Cleanup(func() {
			checkHostCanary(t, canary)
			if _, err := os.Lstat(fakeVictim); err == nil {
				t.Errorf("escaped to the host: %s exists", fakeVictim)
				os.RemoveAll(fakeVictim)
			}
		})
		a, err := NewApplier(fx.rootfs, Limits{MaxEntries: 2000, MaxBytes: 16 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		for _, l := range [][]byte{l1, l2} {
			if len(l) == 0 {
				continue
			}
			l = bytes.Clone(l) // the fuzzer owns its input
			fixChecksums(l)
			if _, err := a.Apply(context.Background(), bytes.NewReader(l), 8<<20); err != nil {
				break
			}
		}
		a.Finish()
		fx.checkContained(t)
	})
}

// fixChecksums recomputes the checksum of every block that looks like a tar
// header, so that mutations reach past archive/tar's checksum test.
func fixChecksums(b []byte) {
	for off := 0; off+512 <= len(b); off += 512 {
		blk := b[off : off+512]
		if !bytes.Equal(blk[257:262], []byte("ustar")) {
			continue
		}
		copy(blk[148:156], "        ")
		var sum int64
		for _, c := range blk {
			sum += int64(c)
		}
		copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
	}
}
