package autopkgtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// fakeTestbed records what the server asks of it.
type fakeTestbed struct {
	calls   []string
	open    bool
	failOn  string // method name that fails
	copyErr error
}

func (f *fakeTestbed) fail(name string) error {
	if f.failOn == name {
		return errors.New(name + " broke")
	}
	return nil
}

func (f *fakeTestbed) Capabilities() []string {
	return []string{"revert", "revert-full-system", "root-on-testbed", "isolation-container"}
}

func (f *fakeTestbed) Open(ctx context.Context) (string, error) {
	f.calls = append(f.calls, "open")
	if err := f.fail("open"); err != nil {
		return "", err
	}
	f.open = true
	return "/tmp/autopkgtest.racker", nil
}

func (f *fakeTestbed) Revert(ctx context.Context) (string, error) {
	f.calls = append(f.calls, "revert")
	return "/tmp/autopkgtest.racker", f.fail("revert")
}

func (f *fakeTestbed) Close(ctx context.Context) error {
	f.calls = append(f.calls, "close")
	f.open = false
	return f.fail("close")
}

func (f *fakeTestbed) ExecuteCommand() []string {
	return []string{"/usr/bin/autopkgtest-virt-racker", "--exec", "bed 1", "--"}
}

func (f *fakeTestbed) CopyDown(ctx context.Context, host, tb string, dir bool) error {
	f.calls = append(f.calls, "copydown "+host+" "+tb+" "+map[bool]string{true: "dir", false: "file"}[dir])
	return f.copyErr
}

func (f *fakeTestbed) CopyUp(ctx context.Context, tb, host string, dir bool) error {
	f.calls = append(f.calls, "copyup "+tb+" "+host+" "+map[bool]string{true: "dir", false: "file"}[dir])
	return f.copyErr
}

func (f *fakeTestbed) Shell(ctx context.Context, dir string, env []string) error {
	f.calls = append(f.calls, "shell "+dir+" "+strings.Join(env, " "))
	return nil
}

func serve(t *testing.T, tb *fakeTestbed, input string) (code int, out, errOut string) {
	t.Helper()
	var o, e bytes.Buffer
	s := &Server{Testbed: tb, In: strings.NewReader(input), Out: &o, Err: &e}
	code = s.Serve(context.Background())
	return code, o.String(), e.String()
}

func TestExchanges(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		code      int
		out       string
		calls     []string
		errSubstr string
	}{{
		name: "a whole autopkgtest session",
		in: "capabilities\nopen\nprint-execute-command\n" +
			"copydown /home/me/src/hello-2.10/ /tmp/autopkgtest.racker/tree/\n" +
			"copyup /tmp/autopkgtest.racker/out/ /home/me/out/\n" +
			"revert\nclose\nquit\n",
		out: "ok\nok revert revert-full-system root-on-testbed isolation-container\n" +
			"ok /tmp/autopkgtest.racker\n" +
			"ok /usr/bin/autopkgtest-virt-racker,--exec,bed%201,--\n" +
			"ok\nok\nok /tmp/autopkgtest.racker\nok\nok\n",
		calls: []string{"open", "copydown /home/me/src/hello-2.10/ /tmp/autopkgtest.racker/tree/ dir",
			"copyup /tmp/autopkgtest.racker/out/ /home/me/out/ dir", "revert", "close"},
	}, {
		name:  "URL-encoded paths with spaces and non-ASCII names",
		in:    "open\ncopydown /home/me/my%20file%C3%A9.txt /tmp/x/caf%C3%A9%2Bplus\nquit\n",
		out:   "ok\nok /tmp/autopkgtest.racker\nok\nok\n",
		calls: []string{"open", "copydown /home/me/my fileé.txt /tmp/x/café+plus file", "close"},
	}, {
		name:  "blank lines are ignored; a last line without newline counts",
		in:    "\n  \ncapabilities\nquit",
		out:   "ok\nok revert revert-full-system root-on-testbed isolation-container\nok\n",
		calls: nil,
	}, {
		name:      "end of input closes the open testbed",
		in:        "open\n",
		code:      ExitFailure,
		out:       "ok\nok /tmp/autopkgtest.racker\n",
		calls:     []string{"open", "close"},
		errSubstr: "end of file - caller quit?",
	}, {
		name:      "unknown command closes and fails",
		in:        "open\nfrobnicate\n",
		code:      ExitFailure,
		out:       "ok\nok /tmp/autopkgtest.racker\n",
		calls:     []string{"open", "close"},
		errSubstr: "unknown command `frobnicate'",
	}, {
		name:      "malformed escape",
		in:        "open\ncopydown /a%zz /b\n",
		code:      ExitFailure,
		out:       "ok\nok /tmp/autopkgtest.racker\n",
		calls:     []string{"open", "close"},
		errSubstr: `malformed argument "/a%zz"`,
	}, {
		name:      "directoryness must agree",
		in:        "open\ncopyup /tmp/x/ /home/me/x\n",
		code:      ExitFailure,
		out:       "ok\nok /tmp/autopkgtest.racker\n",
		calls:     []string{"open", "close"},
		errSubstr: "must agree about directoryness",
	}, {
		name:      "commands that need an open testbed",
		in:        "print-execute-command\n",
		code:      ExitFailure,
		out:       "ok\n",
		errSubstr: "`print-execute-command' when not open",
	}, {
		name:      "open twice",
		in:        "open\nopen\n",
		code:      ExitFailure,
		out:       "ok\nok /tmp/autopkgtest.racker\n",
		calls:     []string{"open", "close"},
		errSubstr: "`open' when already open",
	}, {
		name:      "too many arguments",
		in:        "open extra\n",
		code:      ExitFailure,
		out:       "ok\n",
		errSubstr: "too many arguments to command `open'",
	}, {
		name:      "too few arguments",
		in:        "open\ncopydown /a\n",
		code:      ExitFailure,
		out:       "ok\nok /tmp/autopkgtest.racker\n",
		calls:     []string{"open", "close"},
		errSubstr: "too few arguments to command `copydown'",
	}, {
		name:      "reboot is not advertised",
		in:        "open\nreboot\n",
		code:      ExitFailure,
		out:       "ok\nok /tmp/autopkgtest.racker\n",
		calls:     []string{"open", "close"},
		errSubstr: "`reboot' when `reboot' not advertised",
	}, {
		name:  "shell",
		in:    "open\nshell /tmp/autopkgtest.racker A=1 B=2\nquit\n",
		out:   "ok\nok /tmp/autopkgtest.racker\nok\nok\n",
		calls: []string{"open", "shell /tmp/autopkgtest.racker A=1 B=2", "close"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tb := &fakeTestbed{}
			code, out, errOut := serve(t, tb, tc.in)
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, errOut)
			}
			if out != tc.out {
				t.Errorf("replies:\n%s\nwant:\n%s", out, tc.out)
			}
			if strings.Join(tb.calls, "|") != strings.Join(tc.calls, "|") {
				t.Errorf("calls %q, want %q", tb.calls, tc.calls)
			}
			if !strings.Contains(errOut, tc.errSubstr) {
				t.Errorf("stderr %q lacks %q", errOut, tc.errSubstr)
			}
			if tb.open {
				t.Error("the testbed was left open")
			}
		})
	}
}

func TestCopyFailureKeepsTestbedOpen(t *testing.T) {
	tb := &fakeTestbed{copyErr: &CopyError{errors.New("tar exited with status 2")}}
	code, out, errOut := serve(t, tb, "open\ncopyup /tmp/missing /home/me/x\ncapabilities\nquit\n")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := "ok\nok /tmp/autopkgtest.racker\ncopy-failed\nok revert revert-full-system root-on-testbed isolation-container\nok\n"
	if out != want {
		t.Errorf("replies:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(errOut, "tar exited with status 2") {
		t.Errorf("stderr %q does not say why", errOut)
	}
}

func TestTestbedFailureIsFatal(t *testing.T) {
	tb := &fakeTestbed{failOn: "revert"}
	code, out, errOut := serve(t, tb, "open\nrevert\n")
	if code != ExitFailure || !strings.Contains(errOut, "revert broke") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if out != "ok\nok /tmp/autopkgtest.racker\n" {
		t.Errorf("replies %q", out)
	}
	if got := strings.Join(tb.calls, " "); got != "open revert close" {
		t.Errorf("calls %q: a failed revert must close the testbed", got)
	}
}

func TestInterruptCloses(t *testing.T) {
	tb := &fakeTestbed{}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	outR, outW := io.Pipe()
	var errOut bytes.Buffer
	done := make(chan int)
	go func() { done <- (&Server{Testbed: tb, In: pr, Out: outW, Err: &errOut}).Serve(ctx) }()
	replies := bufio.NewReader(outR)
	for i, want := range []string{"ok\n", "ok /tmp/autopkgtest.racker\n"} {
		if i == 1 {
			go io.WriteString(pw, "open\n")
		}
		if got, err := replies.ReadString('\n'); got != want || err != nil {
			t.Fatalf("reply %q, %v; want %q", got, err, want)
		}
	}
	cancel()
	if code := <-done; code != 130 {
		t.Errorf("exit %d, want 130", code)
	}
	if tb.open {
		t.Error("an interrupted server left the testbed open")
	}
	pw.Close()
}

func TestEncodeDecode(t *testing.T) {
	for _, s := range []string{"/plain/path", "with space", "café", "a,b", "100%", "tab\there", "plus+sign"} {
		enc := Encode(s)
		if strings.ContainsAny(enc, " \t,") {
			t.Errorf("Encode(%q) = %q keeps a separator", s, enc)
		}
		dec, err := Decode(enc)
		if err != nil || len(dec) != 1 || dec[0] != s {
			t.Errorf("Decode(Encode(%q)) = %q, %v", s, dec, err)
		}
	}
}
