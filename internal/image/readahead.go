package image

import "io"

// readAhead reads src on its own goroutine, a few chunks ahead of its
// reader. Decompressing a layer (and hashing it) then runs on one core
// while the applier writes files on the other, as gzip and tar do in a
// shell pipeline.
type readAhead struct {
	full   chan []byte // chunks read, in order; closed after the last
	free   chan []byte // empty chunks for the filler
	stop   chan struct{}
	exited chan struct{}
	err    error  // why filling ended (io.EOF at the end); set before full is closed
	held   []byte // chunk being read, to return to free
	cur    []byte // its unread part
}

func newReadAhead(src io.Reader, chunks, size int) *readAhead {
	ra := &readAhead{
		full:   make(chan []byte, chunks),
		free:   make(chan []byte, chunks+1),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	for range chunks + 1 {
		ra.free <- make([]byte, size)
	}
	go ra.fill(src)
	return ra
}

func (ra *readAhead) fill(src io.Reader) {
	defer close(ra.exited)
	defer close(ra.full)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.stop:
				return
			}
		}
		if err != nil {
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			ra.err = err
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.held != nil {
			ra.free <- ra.held[:cap(ra.held)]
			ra.held = nil
		}
		buf, ok := <-ra.full
		if !ok {
			return 0, ra.err
		}
		ra.held, ra.cur = buf, buf
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the filler and waits for it, so that src is no longer read.
// It must be called exactly once.
func (ra *readAhead) Close() {
	close(ra.stop)
	<-ra.exited
}
