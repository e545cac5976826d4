package scripttest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ptyMain is the program pty, which scripts run with exec:
//
//	pty [-rows R] [-cols C] [-input TEXT] [-timeout DUR] PROG [ARG...]
//
// It runs PROG on a new pseudo-terminal of the host, as an interactive
// shell would: the terminal is PROG's stdin, stdout, stderr and controlling
// terminal, in a session of its own, sized R x C (default 24 x 80). TEXT,
// with Go escapes (\n, \r, \x04, ...) decoded, is typed in as soon as PROG
// starts. Everything PROG writes to the terminal (the terminal's own echo
// and CRLF line ends included) is copied to pty's stdout once PROG has
// exited, and pty exits with PROG's status (128+N after signal N). pty's
// stderr gets one line telling whether PROG left the terminal's settings
// as it found them: "pty: terminal settings restored" or "pty: terminal
// settings changed: ...". After DUR (default 1m) PROG is killed.
func ptyMain(args []string) int {
	fset := flag.NewFlagSet("pty", flag.ContinueOnError)
	rows := fset.Uint("rows", 24, "")
	cols := fset.Uint("cols", 80, "")
	input := fset.String("input", "", "")
	timeout := fset.Duration("timeout", time.Minute, "")
	if err := fset.Parse(args); err != nil || fset.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: pty [-rows R] [-cols C] [-input TEXT] [-timeout DUR] PROG [ARG...]")
		return 2
	}
	text, err := strconv.Unquote(`"` + strings.ReplaceAll(*input, `"`, `\"`) + `"`)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pty: -input %q: %v\n", *input, err)
		return 2
	}
	master, slave, err := openPTY(uint16(*rows), uint16(*cols))
	if err != nil {
		fmt.Fprintf(os.Stderr, "pty: %v\n", err)
		return 2
	}
	defer master.Close()
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pty: %v\n", err)
		return 2
	}
	cmd := exec.Command(fset.Arg(0), fset.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "pty: %v\n", err)
		return 127
	}
	// Only PROG and its children hold the terminal now: reading the master
	// fails (EIO) once they all have closed it.
	slave.Close()
	var out strings.Builder
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 32<<10)
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	if text != "" {
		master.Write([]byte(text))
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(*timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		fmt.Fprintf(os.Stderr, "pty: killed %s after %v\n", fset.Arg(0), *timeout)
	}
	// Output may still be in the terminal; a process PROG left behind may
	// keep it open: then give up after a while.
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-read
	after, err := unix.IoctlGetTermios(int(master.Fd()), unix.TCGETS)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "pty: reading the terminal settings: %v\n", err)
	case after.Iflag != before.Iflag || after.Oflag != before.Oflag || after.Lflag != before.Lflag || after.Cflag != before.Cflag:
		fmt.Fprintf(os.Stderr, "pty: terminal settings changed: iflag %#o -> %#o, oflag %#o -> %#o, lflag %#o -> %#o, cflag %#o -> %#o\n",
			before.Iflag, after.Iflag, before.Oflag, after.Oflag, before.Lflag, after.Lflag, before.Cflag, after.Cflag)
	default:
		fmt.Fprintln(os.Stderr, "pty: terminal settings restored")
	}
	os.Stdout.WriteString(out.String())
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// openPTY allocates a pseudo-terminal pair of the host's devpts, sized
// rows x cols.
func openPTY(rows, cols uint16) (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("ptsname: %w", err)
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("setting the window size: %w", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}
