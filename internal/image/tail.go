package image

import (
	"bytes"
	"strings"
)

// OutputTail keeps the last 64 KiB written to it: a command's output kept
// for the error message when the command fails.
type OutputTail struct{ b []byte }

func (t *OutputTail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 64<<10 {
		t.b = t.b[len(t.b)-64<<10:]
	}
	return len(p), nil
}

// Last returns the last n non-empty lines, joined into one line.
func (t *OutputTail) Last(n int) string {
	var lines []string
	for _, l := range bytes.Split(t.b, []byte("\n")) {
		if s := strings.TrimSpace(string(l)); s != "" {
			lines = append(lines, s)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Contains reports whether what is kept contains s.
func (t *OutputTail) Contains(s string) bool { return bytes.Contains(t.b, []byte(s)) }
