package cli

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/transfer"
)

var testLayers = []image.LayerInfo{
	{Digest: "sha256:aaaaaaaaaaaa" + strings.Repeat("0", 52), Size: 60_000_000},
	{Digest: "sha256:bbbbbbbbbbbb" + strings.Repeat("0", 52), Size: 1_000},
}

func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, false)
	p.Start("docker.io/library/debian:bookworm-slim", testLayers)
	p.Fetched(0, 30_000_000)
	p.Fetched(1, 1_000)
	p.Unpacked(0)
	p.Unpacked(1)
	p.Stop()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and one line per layer, got %q", buf.String())
	}
	if lines[0] != "Pulling docker.io/library/debian:bookworm-slim: 60.0 MB in 2 layers" {
		t.Errorf("header = %q", lines[0])
	}
	if !regexp.MustCompile(`^  layer 1/2 aaaaaaaaaaaa 60.0 MB unpacked \(\d+\.\ds\)$`).MatchString(lines[1]) {
		t.Errorf("layer line = %q", lines[1])
	}
	if strings.Contains(buf.String(), "\x1b") {
		t.Error("escape sequences outside a terminal")
	}
}

func TestProgressLive(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, true)
	p.Start("x", testLayers)
	p.Fetched(0, 30_000_000)
	p.Unpacked(1)
	p.Stop()
	out := buf.String()
	for _, want := range []string{"aaaaaaaaaaaa    30.0 MB / 60.0 MB    fetching ", "bbbbbbbbbbbb        0 B / 1.0 kB     unpacked", "\x1b[2K"} {
		if !strings.Contains(out, want) {
			t.Errorf("live output lacks %q:\n%q", want, out)
		}
	}
	if strings.Contains(out, "Pulling") {
		t.Error("live display printed the line-mode header")
	}
}

func TestProgressRetryLines(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, false)
	p.Retrying(-1, "the manifest of x", transfer.Retry{Fault: &transfer.Fault{Kind: transfer.Status, Status: 503}, Attempt: 2, Attempts: 5})
	p.Start("x", testLayers)
	p.Retrying(0, "layer aaaaaaaaaaaa", transfer.Retry{Fault: &transfer.Fault{Kind: transfer.Dropped, At: 20_100_000}, Attempt: 2, Attempts: 5, Resume: true})
	p.Stop()
	want := "  the manifest of x: HTTP 503 Service Unavailable, retrying (attempt 2/5)\n" +
		"Pulling x: 60.0 MB in 2 layers\n" +
		"  layer 1/2 aaaaaaaaaaaa: connection dropped at 20.1 MB, resuming (attempt 2/5)\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestProgressLiveRetry(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, true)
	p.Start("x", testLayers)
	p.Fetched(0, 20_100_000)
	p.Retrying(0, "layer aaaaaaaaaaaa", transfer.Retry{Fault: &transfer.Fault{Kind: transfer.Dropped, At: 20_100_000}, Attempt: 2, Attempts: 5, Resume: true})
	p.mu.Lock()
	p.redraw()
	p.mu.Unlock()
	if !strings.Contains(buf.String(), "connection dropped at 20.1 MB, resuming (attempt 2/5)") {
		t.Errorf("live display lacks the retry:\n%q", buf.String())
	}
	p.Fetched(0, 20_200_000) // bytes again: the layer's state is its rate
	p.Stop()
	if last := buf.String()[strings.LastIndex(buf.String(), "aaaaaaaaaaaa"):]; strings.Contains(last, "resuming") {
		t.Errorf("retry still shown after bytes arrived: %q", last)
	}
	var lines bytes.Buffer
	retryLines{w: &lines}.Retrying(0, "layer aaaaaaaaaaaa", transfer.Retry{Fault: &transfer.Fault{Kind: transfer.Status, Status: 503}, Attempt: 2, Attempts: 5})
	if lines.String() != "  layer aaaaaaaaaaaa: HTTP 503 Service Unavailable, retrying (attempt 2/5)\n" {
		t.Errorf("postroj retry line %q", lines.String())
	}
}
