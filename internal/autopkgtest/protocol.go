package autopkgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/racker-postroj/racker/internal/humanize"
)

// Testbed is what the server drives: a booted container that can be
// opened, reverted to pristine and closed. Server calls its methods from
// one goroutine.
type Testbed interface {
	// Capabilities are the words of the capabilities reply; they may
	// change with the state (downtmp-host= only while open).
	Capabilities() []string
	// Open boots a fresh testbed and returns its scratch directory (the
	// "downtmp", a path on the testbed).
	Open(ctx context.Context) (downtmp string, err error)
	// Revert throws every change away and returns a testbed as Open left
	// it, with the same scratch directory path.
	Revert(ctx context.Context) (downtmp string, err error)
	// Close stops the testbed; nothing of it is left running.
	Close(ctx context.Context) error
	// ExecuteCommand is the argv prefix the caller appends a command to
	// and executes to run that command on the testbed.
	ExecuteCommand() []string
	// CopyDown copies host (a file, or a directory when dir) to tb on the
	// testbed; CopyUp the other way. A *CopyError answers "copy-failed"
	// and keeps the testbed open; any other error is fatal.
	CopyDown(ctx context.Context, host, tb string, dir bool) error
	CopyUp(ctx context.Context, tb, host string, dir bool) error
	// Shell runs an interactive root shell on the testbed in dir with env
	// (KEY=VALUE) on the caller's terminal.
	Shell(ctx context.Context, dir string, env []string) error
}

// CopyError is a copy that failed without breaking the testbed: the
// protocol answers "copy-failed" and goes on.
type CopyError struct{ Err error }

func (e *CopyError) Error() string { return e.Err.Error() }
func (e *CopyError) Unwrap() error { return e.Err }

// ExitFailure is the server's exit status after a protocol or testbed
// failure, as autopkgtest's own servers exit (VirtSubproc's bomb).
const ExitFailure = 12

// Server speaks autopkgtest's virtualisation-server protocol
// (autopkgtest's doc/README.virtualisation-server.rst) on In and Out: one
// command a line, arguments URL-encoded, every reply one line starting
// with "ok" unless it reports a failure. Messages for people go to Err.
type Server struct {
	Testbed Testbed
	In      io.Reader
	Out     io.Writer
	Err     io.Writer
	// Name prefixes messages on Err (default "autopkgtest-virt-racker").
	Name string
}

// fatal is a failure that ends the session: the testbed is closed and the
// server exits with ExitFailure.
type fatal struct{ msg string }

func (f fatal) Error() string { return f.msg }

func fatalf(format string, args ...any) error { return fatal{fmt.Sprintf(format, args...)} }

// Serve answers commands until quit (exit status 0), end of input, a
// fatal error or the end of ctx; on every way out an open testbed is
// closed first. It returns the exit status for the process.
func (s *Server) Serve(ctx context.Context) int {
	name := s.Name
	if name == "" {
		name = "autopkgtest-virt-racker"
	}
	state := &session{s: s}
	defer state.cleanup()
	if _, err := fmt.Fprintln(s.Out, "ok"); err != nil {
		return ExitFailure
	}
	lines := make(chan lineOrErr)
	done := make(chan struct{})
	defer close(done)
	go readLines(s.In, lines, done)
	for {
		var l lineOrErr
		select {
		case <-ctx.Done():
			state.cleanup()
			fmt.Fprintf(s.Err, "%s: interrupted\n", name)
			return 130
		case l = <-lines:
		}
		if l.err != nil {
			state.cleanup()
			msg := "end of file - caller quit?"
			if !errors.Is(l.err, io.EOF) {
				msg = "reading commands: " + l.err.Error()
			}
			fmt.Fprintf(s.Err, "%s: failure: %s\n", name, msg)
			return ExitFailure
		}
		if strings.TrimSpace(l.line) == "" {
			continue // VirtSubproc waits for a command, too
		}
		reply, quit, err := state.command(ctx, l.line)
		if err != nil {
			var f fatal
			if !errors.As(err, &f) && ctx.Err() != nil {
				state.cleanup()
				fmt.Fprintf(s.Err, "%s: interrupted\n", name)
				return 130
			}
			state.cleanup()
			fmt.Fprintf(s.Err, "%s: failure: %s\n", name, humanize.OneLine(err.Error()))
			return ExitFailure
		}
		_, werr := fmt.Fprintln(s.Out, reply)
		if quit {
			// autopkgtest closes its end before it sends quit: the reply
			// may find nobody to read it, which is fine.
			return 0
		}
		if werr != nil {
			state.cleanup()
			return ExitFailure
		}
	}
}

type lineOrErr struct {
	line string
	err  error
}

// readLines sends each line of r, then the error that ended it (io.EOF at
// the end), until done is closed. A read that blocks after Serve returned
// ends with the process.
func readLines(r io.Reader, out chan<- lineOrErr, done <-chan struct{}) {
	send := func(l lineOrErr) bool {
		select {
		case out <- l:
			return true
		case <-done:
			return false
		}
	}
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err == nil {
			if !send(lineOrErr{line: strings.TrimRight(line, "\r\n")}) {
				return
			}
			continue
		}
		if line != "" && err == io.EOF && !send(lineOrErr{line: line}) {
			return // a last command without a newline still counts
		}
		send(lineOrErr{err: err})
		return
	}
}

// session is the server's state: closed, or open with a scratch directory.
type session struct {
	s       *Server
	downtmp string // "" while closed
	cleaned bool
}

// cleanup closes an open testbed; it runs on every way out of Serve.
func (st *session) cleanup() {
	if st.downtmp == "" || st.cleaned {
		return
	}
	st.cleaned = true
	if err := st.s.Testbed.Close(context.Background()); err != nil {
		fmt.Fprintf(st.s.Err, "closing the testbed: %s\n", humanize.OneLine(err.Error()))
	}
	st.downtmp = ""
}

// Decode splits a command line into its words and URL-decodes each, as
// autopkgtest encodes them (%XX escapes; '+' stands for itself).
func Decode(line string) ([]string, error) {
	words := strings.Fields(line)
	out := make([]string, len(words))
	for i, w := range words {
		d, err := url.PathUnescape(w)
		if err != nil {
			return nil, fmt.Errorf("malformed argument %q: %v", w, err)
		}
		out[i] = d
	}
	return out, nil
}

// Encode URL-encodes one word of a reply as Python's urllib.parse.quote
// does (letters, digits, "_.-~/" stay as they are).
func Encode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.-~/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// command runs one command line and returns the reply line. quit is set
// after "quit". A fatal error ends the session.
func (st *session) command(ctx context.Context, line string) (reply string, quit bool, err error) {
	c, err := Decode(line)
	if err != nil {
		return "", false, fatal{err.Error()}
	}
	tb := st.s.Testbed
	name, args := c[0], c[1:]
	nargs := func(min, max int) error {
		if len(args) < min {
			return fatalf("too few arguments to command `%s'", name)
		}
		if max >= 0 && len(args) > max {
			return fatalf("too many arguments to command `%s'", name)
		}
		return nil
	}
	needOpen := func() error {
		if st.downtmp == "" {
			return fatalf("`%s' when not open", name)
		}
		return nil
	}
	switch name {
	case "capabilities":
		if err := nargs(0, 0); err != nil {
			return "", false, err
		}
		return strings.Join(append([]string{"ok"}, tb.Capabilities()...), " "), false, nil
	case "open":
		if err := nargs(0, 0); err != nil {
			return "", false, err
		}
		if st.downtmp != "" {
			return "", false, fatalf("`open' when already open")
		}
		d, err := tb.Open(ctx)
		if err != nil {
			return "", false, err
		}
		st.downtmp, st.cleaned = d, false
		return "ok " + Encode(d), false, nil
	case "revert":
		if err := nargs(0, 0); err != nil {
			return "", false, err
		}
		if err := needOpen(); err != nil {
			return "", false, err
		}
		if !hasCapability(tb, "revert") {
			return "", false, fatalf("`revert' when `revert' not advertised")
		}
		d, err := tb.Revert(ctx)
		if err != nil {
			return "", false, err
		}
		if d != st.downtmp {
			return "", false, fatalf("testbed failed to restore scratch directory %s, gave %s instead", st.downtmp, d)
		}
		return "ok " + Encode(d), false, nil
	case "reboot":
		if err := nargs(0, 1); err != nil {
			return "", false, err
		}
		if err := needOpen(); err != nil {
			return "", false, err
		}
		return "", false, fatalf("`reboot' when `reboot' not advertised")
	case "close":
		if err := nargs(0, 0); err != nil {
			return "", false, err
		}
		if err := needOpen(); err != nil {
			return "", false, err
		}
		st.cleaned = true
		err := tb.Close(ctx)
		st.downtmp = ""
		if err != nil {
			return "", false, err
		}
		return "ok", false, nil
	case "print-execute-command":
		if err := nargs(0, 0); err != nil {
			return "", false, err
		}
		if err := needOpen(); err != nil {
			return "", false, err
		}
		argv := tb.ExecuteCommand()
		enc := make([]string, len(argv))
		for i, a := range argv {
			enc[i] = Encode(a)
		}
		return "ok " + strings.Join(enc, ","), false, nil
	case "copydown", "copyup":
		if err := nargs(2, 2); err != nil {
			return "", false, err
		}
		if err := needOpen(); err != nil {
			return "", false, err
		}
		src, dst := args[0], args[1]
		if src == "" || dst == "" {
			return "", false, fatalf("%s paths must be nonempty", name)
		}
		dir := strings.HasSuffix(src, "/")
		if dir != strings.HasSuffix(dst, "/") {
			return "", false, fatalf("%s paths must agree about directoryness (presence or absence of trailing /)", name)
		}
		if name == "copydown" {
			err = tb.CopyDown(ctx, src, dst, dir)
		} else {
			err = tb.CopyUp(ctx, src, dst, dir)
		}
		var ce *CopyError
		if errors.As(err, &ce) {
			fmt.Fprintf(st.s.Err, "%s %s %s failed: %s\n", name, src, dst, humanize.OneLine(ce.Error()))
			return "copy-failed", false, nil
		}
		if err != nil {
			return "", false, err
		}
		return "ok", false, nil
	case "shell":
		if err := nargs(1, -1); err != nil {
			return "", false, err
		}
		if err := needOpen(); err != nil {
			return "", false, err
		}
		if err := tb.Shell(ctx, args[0], args[1:]); err != nil {
			// As autopkgtest's servers do: a shell that cannot run is
			// reported, not fatal.
			fmt.Fprintf(st.s.Err, "cannot run shell: %s\n", humanize.OneLine(err.Error()))
		}
		return "ok", false, nil
	case "auxverb_debug_fail", "auxverb-debug-fail":
		return "ok", false, nil
	case "quit":
		if err := nargs(0, 0); err != nil {
			return "", false, err
		}
		st.cleanup()
		return "ok", true, nil
	}
	return "", false, fatalf("unknown command `%s'", name)
}

func hasCapability(tb Testbed, want string) bool {
	for _, c := range tb.Capabilities() {
		if c == want {
			return true
		}
	}
	return false
}
