package cli

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/image"
	"github.com/racker-postroj/racker/internal/transfer"
)

// progress shows a pull's layers. On a terminal (live) it redraws one line
// per layer a few times a second; elsewhere it prints one line per layer
// when that layer is unpacked, so logs stay short but long pulls never look
// hung.
type progress struct {
	w    io.Writer
	live bool

	mu      sync.Mutex
	ref     string
	layers  []image.LayerInfo
	fetched []int64
	done    []bool
	retry   []string // the last retry of each layer, shown until bytes arrive again
	retryAt []int64
	started time.Time
	drawn   int // lines drawn by the last redraw
	stop    chan struct{}
	stopped bool
	wg      sync.WaitGroup
}

func newProgress(w io.Writer, live bool) *progress {
	return &progress{w: w, live: live, stop: make(chan struct{})}
}

func (p *progress) Start(ref string, layers []image.LayerInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ref, p.layers, p.started = ref, layers, time.Now()
	p.fetched = make([]int64, len(layers))
	p.done = make([]bool, len(layers))
	p.retry = make([]string, len(layers))
	p.retryAt = make([]int64, len(layers))
	var total int64
	for _, l := range layers {
		total += l.Size
	}
	if !p.live {
		fmt.Fprintf(p.w, "Pulling %s: %s in %s\n", ref, humanize.Bytes(total), plural(len(layers), "layer"))
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(150 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				p.redraw()
				p.mu.Unlock()
			}
		}
	}()
}

func (p *progress) Fetched(i int, n int64) {
	p.mu.Lock()
	p.fetched[i] = n
	if p.retry[i] != "" && n > p.retryAt[i] {
		p.retry[i] = ""
	}
	p.mu.Unlock()
}

// Retrying prints a line per retry ("layer 2/3 8fe13ad9715c: connection
// dropped at 20.1 MB, resuming (attempt 2/5)"); the live display shows it
// as the layer's state until bytes arrive again.
func (p *progress) Retrying(i int, what string, r transfer.Retry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i >= 0 && i < len(p.layers) {
		what = fmt.Sprintf("layer %d/%d %s", i+1, len(p.layers), shortDigest(p.layers[i].Digest))
		if p.live {
			p.retry[i], p.retryAt[i] = r.String(), p.fetched[i]
			return
		}
	}
	if p.live && p.drawn > 0 {
		// Above the layer lines, which are drawn again below it.
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[2K%s: %s\n", p.drawn, what, r)
		p.drawn = 0
		p.redraw()
		return
	}
	fmt.Fprintf(p.w, "  %s: %s\n", what, r)
}

func (p *progress) Unpacked(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done[i] = true
	if !p.live {
		l := p.layers[i]
		fmt.Fprintf(p.w, "  layer %d/%d %s %s unpacked (%.1fs)\n", i+1, len(p.layers), shortDigest(l.Digest),
			humanize.Bytes(l.Size), time.Since(p.started).Seconds())
	}
}

// Stop ends the live display, leaving its final state on screen. It is
// safe to call more than once.
func (p *progress) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	close(p.stop)
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	if p.live && p.layers != nil {
		p.redraw()
	}
	p.mu.Unlock()
}

// redraw rewrites the layer lines in place. Callers hold p.mu.
func (p *progress) redraw() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA", p.drawn)
	}
	secs := time.Since(p.started).Seconds()
	for i, l := range p.layers {
		state := "waiting"
		switch {
		case p.done[i]:
			state = "unpacked"
		case p.retry[i] != "":
			state = p.retry[i]
		case p.fetched[i] >= l.Size && l.Size > 0:
			state = "unpacking"
		case p.fetched[i] > 0:
			rate := float64(p.fetched[i]) / secs
			state = fmt.Sprintf("fetching %s/s", humanize.Bytes(int64(rate)))
		}
		fmt.Fprintf(p.w, "\x1b[2K%s  %9s / %-9s  %s\n", shortDigest(l.Digest), humanize.Bytes(p.fetched[i]), humanize.Bytes(l.Size), state)
	}
	p.drawn = len(p.layers)
}

// plural returns "1 layer", "2 layers".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
