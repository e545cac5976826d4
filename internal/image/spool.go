package image

import (
	"io"
	"os"
	"sync"
)

// spool is a file that one goroutine appends to while another reads it from
// the start, blocking at the end of what has been written so far. It lets a
// layer download run ahead of its extraction without holding the layer in
// memory, and lets extraction start before the download ends.
type spool struct {
	f    *os.File
	mu   sync.Mutex
	cond *sync.Cond
	n    int64 // bytes written so far
	done bool
	err  error // why writing ended; nil at a verified end
}

func newSpool(path string) (*spool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	s := &spool{f: f}
	s.cond = sync.NewCond(&s.mu)
	return s, nil
}

func (s *spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	off := s.n
	s.mu.Unlock()
	n, err := s.f.WriteAt(p, off)
	s.mu.Lock()
	s.n += int64(n)
	s.cond.Broadcast()
	s.mu.Unlock()
	return n, err
}

// finish marks the end of writing. A nil err means the content is complete
// and verified; readers then see io.EOF, otherwise they see err.
func (s *spool) finish(err error) {
	s.mu.Lock()
	if !s.done {
		s.done, s.err = true, err
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// wait blocks until writing has ended and returns why (nil: complete and
// verified).
func (s *spool) wait() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.done {
		s.cond.Wait()
	}
	return s.err
}

// reader returns a reader from the start of the spool.
func (s *spool) reader() io.Reader { return &spoolReader{s: s} }

// close releases the file and deletes it.
func (s *spool) close() {
	s.finish(io.ErrClosedPipe)
	s.f.Close()
	os.Remove(s.f.Name())
}

type spoolReader struct {
	s   *spool
	off int64
}

func (r *spoolReader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for r.off == s.n && !s.done {
		s.cond.Wait()
	}
	avail, done, err := s.n-r.off, s.done, s.err
	s.mu.Unlock()
	if avail == 0 {
		if done && err == nil {
			return 0, io.EOF
		}
		return 0, err
	}
	if int64(len(p)) > avail {
		p = p[:avail]
	}
	n, rerr := s.f.ReadAt(p, r.off)
	r.off += int64(n)
	if rerr == io.EOF && n > 0 {
		rerr = nil
	}
	return n, rerr
}
