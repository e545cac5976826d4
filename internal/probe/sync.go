package probe

import (
	"io"
	"strings"
	"sync"

	"github.com/racker-postroj/racker/internal/humanize"
)

// syncWriter serializes writes from a command's stdout and stderr copiers.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// commandOutput is what a report keeps of a command's output: its last
// outputTail lines, as a terminal showed them, blank ones left out.
func commandOutput(t *humanize.Tail) string {
	lines := t.Lines(outputTail)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
