package nspawn

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"

	"golang.org/x/sys/unix"
)

// PTY is a pseudo-terminal in a container's devpts instance: the command
// gets its other end, /dev/pts/N inside the container, as controlling
// terminal.
type PTY struct {
	// Master carries the terminal's data: read the command's output from
	// it, write its input to it. After the command exits, reads return the
	// remaining output and then an error (EIO) once no process in the
	// container has the terminal open.
	Master *os.File
	// Name is the terminal's path in the container: /dev/pts/N.
	Name string
}

// OpenPTY allocates a pseudo-terminal inside the container (by opening its
// /dev/pts/ptmx from the host), for Process.TTY. The caller closes it.
func (m *Machine) OpenPTY() (*PTY, error) {
	root, err := m.Root()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	// Non-blocking, so that the runtime poller serves the master: Close
	// then interrupts a blocked Read.
	// Opened as the container's root, which then owns the terminal.
	var master *os.File
	err = asContainerRoot(m.rec.UIDBase, func() error {
		var err error
		master, err = root.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening the container's ptmx: %w", err)
	}
	rc, err := master.SyscallConn()
	if err != nil {
		master.Close()
		return nil, err
	}
	var n uint32
	cerr := rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if serr := unix.Fstat(int(fd), &st); serr != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR ||
			unix.Major(st.Rdev) != 5 || unix.Minor(st.Rdev) != 2 {
			err = fmt.Errorf("the container's /dev/pts/ptmx is not a ptmx device")
			return
		}
		if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err != nil {
			err = fmt.Errorf("unlocking pty: %w", err)
			return
		}
		if n, err = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN); err != nil {
			err = fmt.Errorf("getting pty number: %w", err)
		}
	})
	if cerr != nil {
		err = cerr
	}
	if err != nil {
		master.Close()
		return nil, err
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	return &PTY{Master: master, Name: name}, nil
}

// Close closes the master side.
func (t *PTY) Close() error { return t.Master.Close() }

// Resize sets the terminal's window size.
func (t *PTY) Resize(rows, cols uint16) error {
	rc, err := t.Master.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	return ierr
}

// ForwardResize copies the window size of the terminal host to t now and
// whenever the process receives SIGWINCH, until ctx ends or the returned
// stop is called. Putting host into raw mode is the caller's business.
func ForwardResize(ctx context.Context, host *os.File, t *PTY) (stop func()) {
	copySize := func() {
		rc, err := host.SyscallConn()
		if err != nil {
			return
		}
		var ws *unix.Winsize
		rc.Control(func(fd uintptr) { ws, err = unix.IoctlGetWinsize(int(fd), unix.TIOCGWINSZ) })
		if err == nil && ws != nil {
			t.Resize(ws.Row, ws.Col)
		}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGWINCH)
	copySize()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ch:
				copySize()
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		cancel()
		<-done
	}
}
