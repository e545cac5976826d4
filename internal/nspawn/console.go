package nspawn

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"sync/atomic"

	"github.com/racker-postroj/racker/internal/humanize"
)

// propagateNoise starts the line nspawn prints on exit when /run is not a
// tmpfs: `Attempted to remove disk file system under
// "/run/systemd/nspawn/propagate/NAME", and we can't allow that.` It is
// harmless (racker removes the directory) and kept from users.
const propagateNoise = `Attempted to remove disk file system under "/run/systemd/nspawn/propagate/`

// ansiEscape matches the terminal control sequences systemd colours its
// status lines with.
var ansiEscape = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]`)

// consoleLines returns the last n lines of console output b as a terminal
// showed them (see humanize.Lines), nspawn's propagate noise left out.
func consoleLines(b []byte, n int) []string { return lastConsoleLines(humanize.Lines(b), n) }

// tailFile returns the last n console lines (see consoleLines) of the file
// name, reading at most its last 64 KiB.
func tailFile(name string, n int) []string { return lastConsoleLines(humanize.ReadTail(name, 0), n) }

func lastConsoleLines(all []string, n int) []string {
	var lines []string
	for _, l := range all {
		if !strings.HasPrefix(l, propagateNoise) {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// noiseFilter passes bytes through to w except whole lines equal to drop.
// Bytes are held back only while the current line could still be drop, so
// prompts without a newline are not delayed.
type noiseFilter struct {
	w       io.Writer
	drop    []byte // the full line, newline included
	pending []byte // start of the current line, a proper prefix of drop
	midLine bool   // the current line is known not to be drop
	muted   atomic.Bool
}

// mute makes the filter drop everything from now on.
func (f *noiseFilter) mute() { f.muted.Store(true) }

func newNoiseFilter(w io.Writer, name string) *noiseFilter {
	line := propagateNoise + name + `", and we can't allow that.` + "\n"
	return &noiseFilter{w: w, drop: []byte(line)}
}

func (f *noiseFilter) Write(p []byte) (int, error) {
	n := len(p)
	if f.muted.Load() {
		return n, nil
	}
	for len(p) > 0 {
		if f.midLine {
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				_, err := f.w.Write(p)
				return n, err
			}
			if _, err := f.w.Write(p[:i+1]); err != nil {
				return n, err
			}
			p = p[i+1:]
			f.midLine = false
			continue
		}
		// At a line start (possibly with a matched prefix pending).
		rest := f.drop[len(f.pending):]
		k := 0
		for k < len(p) && k < len(rest) && p[k] == rest[k] {
			k++
		}
		switch {
		case k == len(rest): // the whole line matched: drop it
			f.pending = f.pending[:0]
			p = p[k:]
		case k == len(p): // still a prefix: wait for more
			f.pending = append(f.pending, p...)
			return n, nil
		default: // not the line: release what was held
			if err := f.flush(); err != nil {
				return n, err
			}
			f.midLine = true
		}
	}
	return n, nil
}

// flush writes out held-back bytes; call it when the stream ends.
func (f *noiseFilter) flush() error {
	if len(f.pending) == 0 || f.muted.Load() {
		return nil
	}
	_, err := f.w.Write(f.pending)
	f.pending = f.pending[:0]
	return err
}
