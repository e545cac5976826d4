package image

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestReadAhead(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	ra := newReadAhead(iotest.HalfReader(bytes.NewReader(data)), 3, 1000)
	got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(ra, 5000)))
	if err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(ra)
	ra.Close()
	if err != nil || !bytes.Equal(append(got, rest...), data) {
		t.Fatalf("read %d bytes, err %v", len(got)+len(rest), err)
	}

	boom := errors.New("boom")
	ra = newReadAhead(io.MultiReader(bytes.NewReader(data[:2500]), iotest.ErrReader(boom)), 2, 1000)
	got, err = io.ReadAll(ra)
	ra.Close()
	if !errors.Is(err, boom) || !bytes.Equal(got, data[:2500]) {
		t.Fatalf("got %d bytes, %v; want 2500 and boom", len(got), err)
	}

	// Closing early stops the filler even when nobody reads.
	ra = newReadAhead(bytes.NewReader(data), 1, 10)
	ra.Close()
}
