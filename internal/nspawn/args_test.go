package nspawn

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestRegisters(t *testing.T) {
	for _, tc := range []struct {
		reg        Registration
		hostSystem bool
		want       bool
	}{
		{RegisterAuto, true, true},
		{RegisterAuto, false, false},
		{RegisterYes, false, true},
		{RegisterYes, true, true},
		{RegisterNo, true, false},
		{RegisterNo, false, false},
	} {
		o := Options{Register: tc.reg, hostHasSystemd: func() bool { return tc.hostSystem }}
		if got := o.registers(); got != tc.want {
			t.Errorf("Register %d with systemd host %v: registers = %v, want %v", tc.reg, tc.hostSystem, got, tc.want)
		}
	}
}

func TestBootArgs(t *testing.T) {
	base := Options{Name: "web-1", RootFS: "/var/lib/postroj/images/x/rootfs"}
	for _, tc := range []struct {
		name       string
		opts       func(*Options)
		hostSystem bool
		want       []string
	}{
		{
			name: "no systemd on the host",
			want: []string{"systemd-nspawn", "--directory=/var/lib/postroj/images/x/rootfs", "--machine=web-1",
				"--volatile=overlay", "--settings=no", "--link-journal=no", "--register=no", "--keep-unit",
				"--boot", "--notify-ready=yes", "--console=read-only", "--kill-signal=SIGKILL"},
		},
		{
			name:       "systemd host registers with machined",
			hostSystem: true,
			want: []string{"systemd-nspawn", "--directory=/var/lib/postroj/images/x/rootfs", "--machine=web-1",
				"--volatile=overlay", "--settings=no", "--link-journal=no", "--register=yes",
				"--boot", "--notify-ready=yes", "--console=read-only", "--kill-signal=SIGKILL"},
		},
		{
			name:       "everything",
			hostSystem: true,
			opts: func(o *Options) {
				o.Register = RegisterNo
				o.Hostname = "box"
				o.PrivateNetwork = true
				o.InitEnv = []string{"http_proxy=http://127.0.0.1:3129/"}
				o.Nspawn = "/opt/nspawn"
				o.Binds = []Bind{{Host: "/srv", Container: "/data", ReadOnly: true}, {Host: "/tmp/x"}, {Host: "/a", Container: "/a"}}
			},
			want: []string{"/opt/nspawn", "--directory=/var/lib/postroj/images/x/rootfs", "--machine=web-1",
				"--volatile=overlay", "--settings=no", "--link-journal=no", "--register=no", "--keep-unit",
				"--hostname=box", "--private-network", "--bind-ro=/srv:/data", "--bind=/tmp/x", "--bind=/a",
				"--boot", "--notify-ready=yes", "--console=read-only", "--kill-signal=SIGKILL", "systemd.hostname=box",
				"systemd.setenv=http_proxy=http://127.0.0.1:3129/"},
		},
	} {
		o := base
		o.hostHasSystemd = func() bool { return tc.hostSystem }
		if tc.opts != nil {
			tc.opts(&o)
		}
		if err := o.validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := o.bootArgs(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestRunArgs(t *testing.T) {
	o := Options{Name: "job", RootFS: "/r", hostHasSystemd: func() bool { return false }}
	p := Process{Args: []string{"ls", "-l", "--", "/"}, Env: []string{"A=1"}, Dir: "/tmp", User: "nobody"}
	want := []string{"systemd-nspawn", "--directory=/r", "--machine=job", "--volatile=overlay", "--settings=no",
		"--link-journal=no", "--register=no", "--keep-unit", "--quiet", "--kill-signal=SIGKILL", "--console=pipe",
		"--setenv=PATH=" + DefaultPath, "--setenv=A=1", "--chdir=/tmp", "--user=nobody", "--", "/usr/bin/ls", "-l", "--", "/"}
	if got := o.runArgs(&p, "/usr/bin/ls"); !reflect.DeepEqual(got, want) {
		t.Errorf("\n got %q\nwant %q", got, want)
	}
	p = Process{Args: []string{"sh"}, Env: []string{"PATH=/bin", "TERM=vt100"}, Terminal: true}
	got := strings.Join(o.runArgs(&p, "/bin/sh"), " ")
	// No terminal on stdin (-t without -i): output through a terminal only.
	if !strings.Contains(got, "--console=read-only --setenv=PATH=/bin --setenv=TERM=vt100 -- /bin/sh") {
		t.Errorf("terminal run: %s", got)
	}
	o.Hostname = "web"
	if err := o.writeHostname(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	got = strings.Join(o.runArgs(&p, "/bin/sh"), " ")
	if !strings.Contains(got, "--hostname=web --bind-ro="+o.hostnameFile+":/etc/hostname") {
		t.Errorf("host name: %s", got)
	}
	if b, _ := os.ReadFile(o.hostnameFile); string(b) != "web\n" {
		t.Errorf("host name file holds %q", b)
	}
}

func TestProcessEnv(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		tty  bool
		want []string
	}{
		{nil, false, []string{"PATH=" + DefaultPath}},
		{nil, true, []string{"PATH=" + DefaultPath, "TERM=xterm"}},
		{[]string{"PATH=/x", "TERM=dumb", "A=b=c"}, true, []string{"PATH=/x", "TERM=dumb", "A=b=c"}},
		{[]string{"PATH=/image", "A=1", "B=2", "A=3", "PATH="}, false, []string{"B=2", "A=3", "PATH="}},
	} {
		if got := processEnv(tc.env, tc.tty); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("processEnv(%q, %v) = %q, want %q", tc.env, tc.tty, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Options{Name: "a", RootFS: "/r"}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no name", func(o *Options) { o.Name = "" }, "invalid container name"},
		{"relative rootfs", func(o *Options) { o.RootFS = "r" }, "not an absolute path"},
		{"no rootfs", func(o *Options) { o.RootFS = "" }, "no root filesystem"},
		{"relative bind", func(o *Options) { o.Binds = []Bind{{Host: "x"}} }, "bind source"},
		{"colon in bind", func(o *Options) { o.Binds = []Bind{{Host: "/a:b"}} }, "must not contain ':'"},
		{"bad registration", func(o *Options) { o.Register = 7 }, "valid: RegisterAuto"},
		{"bad executor", func(o *Options) { o.Executor = 7 }, "valid: ExecAuto"},
		{"init env without =", func(o *Options) { o.InitEnv = []string{"X"} }, "want KEY=VALUE"},
		{"init env with a space", func(o *Options) { o.InitEnv = []string{"X=a b"} }, "want KEY=VALUE"},
	} {
		o := ok
		tc.mod(&o)
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, p := range []Process{
		{},
		{Args: []string{"x"}, Dir: "rel"},
		{Args: []string{"x"}, Env: []string{"NOEQUALS"}},
		{Args: []string{"x"}, Env: []string{"=v"}},
		{Args: []string{"x"}, TTY: &PTY{}, Terminal: true},
	} {
		if err := p.validate(); err == nil {
			t.Errorf("Process %+v accepted", p)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"a", "web-1", "A.b-C", "x1", strings.Repeat("a", 64)} {
		if err := ValidName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", "-a", "a-", ".a", "a.", "a..b", "a_b", "a/b", "a b", "..", strings.Repeat("a", 65), "ä"} {
		if err := ValidName(n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestCgroupEnv(t *testing.T) {
	tests := []struct {
		version     int
		known, host bool
		want        int
	}{
		{262, true, false, 1}, {256, true, false, 1}, {255, true, false, 0}, {219, true, false, 0},
		{262, false, false, 0}, {262, true, true, 0},
	}
	for _, tt := range tests {
		if got := cgroupEnv(tt.version, tt.known, tt.host); len(got) != tt.want {
			t.Errorf("cgroupEnv(%d, %v, %v) = %v", tt.version, tt.known, tt.host, got)
		}
	}
}
