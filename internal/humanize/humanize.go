package humanize

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
)

// Bytes renders n in SI (decimal) units, as docker does, with one decimal
// above 1000: "0 B", "999 B", "1.0 kB", "67.8 kB", "170.2 MB", "1.3 GB".
// Every size racker and postroj print goes through it.
func Bytes(n int64) string {
	const unit = 1000
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit || m <= -unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// OneLine folds s onto one line: line breaks become "; ", runs of blanks
// one blank, and the ends are trimmed. Errors are printed with it, so a
// message from a tool that spans lines still reads as one.
func OneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// ansiEscape matches the terminal control sequences that colour output
// (systemd's status lines, apt's progress).
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]`)

// Lines returns the non-blank lines of terminal output b as a terminal
// shows them: control sequences removed, a line redrawn with carriage
// returns reduced to what was drawn last, trailing blanks trimmed.
func Lines(b []byte) []string {
	text := ansiEscape.ReplaceAllString(string(bytes.ToValidUTF8(b, []byte("?"))), "")
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimRight(l, "\r")
		if i := strings.LastIndexByte(l, '\r'); i >= 0 {
			l = l[i+1:]
		}
		if l = strings.TrimRight(l, " \t"); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// last returns the last n of lines (all for n <= 0).
func last(lines []string, n int) []string {
	if n > 0 && len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

// tailSize is how much of a command's output a Tail keeps, and ReadTail
// reads of a file.
const tailSize = 64 << 10

// Tail is an io.Writer that keeps the end of what is written to it, the
// last 64 KiB, for a message about the command that wrote it. It is safe
// for concurrent use, so a command's stdout and stderr may share one. The
// zero value is ready to use.
type Tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > tailSize {
		t.b = append(t.b[:0:0], t.b[len(t.b)-tailSize:]...)
	}
	return len(p), nil
}

// Lines returns the last n lines kept (see Lines; all for n <= 0).
func (t *Tail) Lines(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return last(Lines(t.b), n)
}

// Last returns the last n lines kept on one line (see Last).
func (t *Tail) Last(n int) string { return strings.Join(t.Lines(n), " | ") }

// Last returns the last n lines of output b (see Lines) on one line, " | "
// between them, for an error message.
func Last(b []byte, n int) string { return strings.Join(last(Lines(b), n), " | ") }

// Contains reports whether what is kept contains s.
func (t *Tail) Contains(s string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Contains(t.b, []byte(s))
}

// ReadTail returns the last n lines (see Lines) of the last 64 KiB of the
// file name, or nil if it cannot be read.
func ReadTail(name string, n int) []string {
	f, err := os.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > tailSize {
		f.Seek(fi.Size()-tailSize, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, tailSize))
	return last(Lines(b), n)
}
