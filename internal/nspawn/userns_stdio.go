package nspawn

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
)

// containerStdio gives the command of a container with a private user
// namespace standard streams it can reopen (/dev/stdin, /dev/stdout, as
// shell scripts do): pipes that belong to the container's root, copied to
// and from the caller's streams, as runc hands such containers their stdio.
// The caller's own descriptors (a pipe or file of host root's) would be
// usable as they are, but not reopenable: their owner is unmapped there.
type containerStdio struct {
	ends   []*os.File // the command's ends: ours to close once it exited
	copies sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// ownedPipe returns a pipe whose inode belongs to host ID owner.
func ownedPipe(owner uint32) (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	if err := r.Chown(int(owner), int(owner)); err != nil {
		r.Close()
		w.Close()
		return nil, nil, fmt.Errorf("giving a pipe to the container's root: %w", err)
	}
	return r, w, nil
}

// wrapStdio replaces p's streams that are set by pipes of owner (the
// container root's host ID), unless owner is 0 or p uses a terminal.
// finish must be called once the command has exited, also on error.
func wrapStdio(p *Process, owner uint32) (*containerStdio, error) {
	s := &containerStdio{}
	if owner == 0 || p.TTY != nil || p.Terminal {
		return s, nil
	}
	if p.Stdin != nil {
		r, w, err := ownedPipe(owner)
		if err != nil {
			return s, err
		}
		src := p.Stdin
		s.ends = append(s.ends, r)
		p.Stdin = r
		// Not waited for: the reader may block long after the command
		// exited, as with exec.Cmd.
		go func() {
			io.Copy(w, src)
			w.Close()
		}()
	}
	for _, out := range []*io.Writer{&p.Stdout, &p.Stderr} {
		if *out == nil {
			continue
		}
		r, w, err := ownedPipe(owner)
		if err != nil {
			return s, err
		}
		dst := *out
		s.ends = append(s.ends, w)
		*out = w
		s.copies.Add(1)
		go func() {
			defer s.copies.Done()
			_, err := io.Copy(dst, r)
			r.Close()
			if err != nil {
				s.mu.Lock()
				s.err = fmt.Errorf("copying the command's output: %w", err)
				s.mu.Unlock()
			}
		}()
	}
	return s, nil
}

// finish closes the command's ends and waits until its output is copied,
// or ctx ends.
func (s *containerStdio) finish(ctx context.Context) error {
	for _, f := range s.ends {
		f.Close()
	}
	s.ends = nil
	done := make(chan struct{})
	go func() {
		s.copies.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
