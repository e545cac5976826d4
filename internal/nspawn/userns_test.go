package nspawn

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestFreeBase(t *testing.T) {
	for _, tc := range []struct {
		held []uint32
		want uint32
	}{
		{nil, 524288},
		{[]uint32{524288}, 524288 + 65536},
		{[]uint32{524288 + 65536}, 524288},
		{[]uint32{524288, 524288 + 65536, 524288 + 3*65536}, 524288 + 2*65536},
	} {
		held := map[uint32]bool{}
		for _, b := range tc.held {
			held[b] = true
		}
		if got, ok := freeBase(held); !ok || got != tc.want {
			t.Errorf("freeBase(%v) = %d, %v; want %d", tc.held, got, ok, tc.want)
		}
	}
	all := map[uint32]bool{}
	for b := uint32(firstIDBase); b <= lastIDBase; b += IDRangeSize {
		all[b] = true
	}
	if _, ok := freeBase(all); ok {
		t.Error("freeBase found a range with all held")
	}
}

func TestReserveRangePrunesDeadOwners(t *testing.T) {
	state := t.TempDir()
	ctx := context.Background()
	a, err := reserveRange(ctx, state, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := reserveRange(ctx, state, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Base != firstIDBase || b.Base != firstIDBase+IDRangeSize {
		t.Fatalf("bases %d, %d", a.Base, b.Base)
	}
	// a's owner dies (a pid that is not running: a reaped child's).
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	a.OwnerPID = cmd.Process.Pid
	if err := a.update(); err != nil {
		t.Fatal(err)
	}
	c, err := reserveRange(ctx, state, "c", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Base != firstIDBase {
		t.Errorf("range of a dead owner not reused: got %d", c.Base)
	}
	if r := reservationOf(state, "a"); r != nil {
		t.Errorf("reservation of a dead owner kept: %+v", r)
	}
	if err := b.release(); err != nil {
		t.Fatal(err)
	}
	if r := reservationOf(state, "b"); r != nil {
		t.Errorf("released reservation kept: %+v", r)
	}
}

func TestDescribeUserNS(t *testing.T) {
	if got := describeUserNS(0); got != "host" {
		t.Errorf("describeUserNS(0) = %q", got)
	}
	if got := describeUserNS(524288); got != "0:524288:65536" {
		t.Errorf("describeUserNS(524288) = %q", got)
	}
}

// hostUID returns the owner on the host of path in m's root filesystem.
func hostUID(t *testing.T, m *Machine, path string) int {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat("/proc/"+strconv.Itoa(m.Leader())+"/root"+path, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid)
}

// procUID returns the real uid on the host of pid.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			uid, _ := strconv.Atoi(strings.Fields(v)[0])
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}

func TestUserNS(t *testing.T) {
	executors(t, func(t *testing.T, m *Machine) {
		base := int(m.rec.UIDBase)
		if base < firstIDBase {
			t.Fatalf("UIDBase = %d", base)
		}
		// The mapping inside is not the identity.
		code, out, _ := run(t, m, Process{Args: []string{"cat", "/proc/self/uid_map", "/proc/self/gid_map"}})
		want := strings.Repeat("0 "+strconv.Itoa(base)+" 65536 ", 2)
		if code != 0 || strings.Join(strings.Fields(out), " ") != strings.TrimSpace(want) {
			t.Errorf("uid_map, gid_map inside: %d %q, want %q", code, out, want)
		}
		// The container's init and commands run as its root: an
		// unprivileged host uid.
		if uid := procUID(t, m.Leader()); uid != base {
			t.Errorf("init runs as host uid %d, want %d", uid, base)
		}
		// Every process of the container is a host uid of its range.
		pids := 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || !sameNS(pid, m.Leader(), "pid") {
				continue
			}
			pids++
			if uid := procUID(t, pid); uid < base || uid >= base+IDRangeSize {
				t.Errorf("pid %d of the container runs as host uid %d", pid, uid)
			}
		}
		if pids < 3 {
			t.Errorf("found %d processes of the container", pids)
		}
		// The command's streams can be reopened by name, as scripts do,
		// whether they were readers and writers or files of host root's.
		code, out, errOut := run(t, m, Process{Args: sh("cat /dev/stdin; echo err > /dev/stderr"), Stdin: strings.NewReader("in\n")})
		if code != 0 || out != "in\n" || errOut != "err\n" {
			t.Errorf("reopening stdin and stderr: %d %q %q", code, out, errOut)
		}
		pr, pw, _ := os.Pipe()
		pw.WriteString("piped\n")
		pw.Close()
		outFile, _ := os.Create(filepath.Join(t.TempDir(), "out"))
		code, _, _ = run(t, m, Process{Args: sh("cat /dev/stdin > /dev/stdout"), Stdin: pr, Stdout: outFile})
		pr.Close()
		outFile.Close()
		if b, _ := os.ReadFile(outFile.Name()); code != 0 || string(b) != "piped\n" {
			t.Errorf("reopening a host pipe and file: %d %q", code, b)
		}
		// Files of the stored tree show as root's inside; a file root
		// writes is the container's root's, an unprivileged host uid.
		code, out, _ = run(t, m, Process{Args: sh("stat -c %u:%g /etc/passwd && echo x > /written && stat -c %u /written")})
		if code != 0 || out != "0:0\n0\n" {
			t.Errorf("owners inside: %d %q", code, out)
		}
		if uid := hostUID(t, m, "/written"); uid != base {
			t.Errorf("/written is host uid %d, want %d", uid, base)
		}
		if _, err := os.Stat(filepath.Join(m.opts.RootFS, "written")); err == nil {
			t.Error("a write reached the stored root filesystem")
		}
		// Root inside cannot mount over the host's view of anything: it
		// has no privileges outside its own namespaces.
		if code, _, _ := run(t, m, Process{Args: sh("echo 1 > /proc/sys/kernel/sysrq")}); code == 0 {
			t.Error("the container's root wrote a host sysctl")
		}
		if m.opts.Executor == ExecDBus {
			// Privileged calls on the container's bus work.
			if code, out, errOut := run(t, m, Process{Args: []string{"systemctl", "start", "systemd-hostnamed"}}); code != 0 {
				t.Errorf("systemctl start: %d %q %q", code, out, errOut)
			}
		}
	})
}

func sameNS(a, b int, ns string) bool {
	x, err1 := os.Readlink("/proc/" + strconv.Itoa(a) + "/ns/" + ns)
	y, err2 := os.Readlink("/proc/" + strconv.Itoa(b) + "/ns/" + ns)
	return err1 == nil && err2 == nil && x == y
}

func TestUserNSHost(t *testing.T) {
	m := startMachine(t, Options{HostUserNS: true})
	code, out, _ := run(t, m, Process{Args: []string{"cat", "/proc/self/uid_map"}})
	if code != 0 || strings.Join(strings.Fields(out), " ") != "0 0 4294967295" {
		t.Errorf("uid_map with HostUserNS: %d %q", code, out)
	}
	if m.rec.UIDBase != 0 || reservationOf(m.opts.StateDir, m.Name()) != nil {
		t.Errorf("HostUserNS reserved IDs: %d", m.rec.UIDBase)
	}
	if uid := procUID(t, m.Leader()); uid != 0 {
		t.Errorf("init runs as host uid %d", uid)
	}
}

func TestUserNSBinds(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	if err := os.WriteFile(filepath.Join(dir, "theirs"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(dir, "theirs"), 1234, 1235)
	ro := t.TempDir()
	os.WriteFile(filepath.Join(ro, "file"), []byte("x"), 0o644)
	m := startMachine(t, Options{Binds: []Bind{{Host: dir, Container: "/vol"}, {Host: ro, ReadOnly: true}}})
	// Host files keep their owners inside; what root writes there is
	// the host's root's.
	code, out, errOut := run(t, m, Process{Args: sh("stat -c %u:%g /vol/theirs && echo y > /vol/mine && stat -c %u /vol/mine")})
	if code != 0 || out != "1234:1235\n0\n" {
		t.Errorf("in the volume: %d %q %q", code, out, errOut)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "mine"), &st); err != nil || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("file written by the container's root: %+v, %v; want 0:0", st, err)
	}
	if code, _, _ := run(t, m, Process{Args: sh("echo z > " + ro + "/new")}); code == 0 {
		t.Error("wrote to a read-only bind")
	}
	if code, out, _ := run(t, m, Process{Args: []string{"stat", "-c", "%u", ro + "/file"}}); code != 0 || out != "0\n" {
		t.Errorf("read-only bind owner: %d %q", code, out)
	}
}

func TestUserNSParallel(t *testing.T) {
	state := t.TempDir()
	rootfs := testRootFS(t, false)
	var ms [2]*Machine
	var wg sync.WaitGroup
	for i := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms[i] = startMachine(t, Options{StateDir: state, RootFS: rootfs})
		}()
	}
	wg.Wait()
	if ms[0] == nil || ms[1] == nil {
		t.FailNow()
	}
	a, b := ms[0].rec.UIDBase, ms[1].rec.UIDBase
	if a == b || a < firstIDBase || b < firstIDBase {
		t.Fatalf("two containers of one state directory got bases %d and %d", a, b)
	}
	cs, err := List(state)
	if err != nil || len(cs) != 2 {
		t.Fatalf("List: %v %v", cs, err)
	}
	for _, c := range cs {
		if !strings.HasPrefix(c.UserNS, "0:") || !strings.HasSuffix(c.UserNS, ":65536") {
			t.Errorf("List shows user namespace %q", c.UserNS)
		}
	}
	run(t, ms[0], Process{Args: sh("echo a > /only-a")})
	if code, _, _ := run(t, ms[1], Process{Args: []string{"test", "-e", "/only-a"}}); code == 0 {
		t.Error("one container sees the other's write")
	}
}

func TestUserNSWritable(t *testing.T) {
	// Preparing an image writes the stored tree: as the host's root.
	tree := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", "--reflink=auto", testRootFS(t, false), tree).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	state := t.TempDir()
	name := testName(t)
	var out strings.Builder
	code, err := Run(context.Background(), Options{Name: name, RootFS: tree, StateDir: state, Writable: true},
		Process{Args: sh("echo hi > /dev/stdout"), Stdout: &out})
	if err != nil || code != 0 || out.String() != "hi\n" {
		t.Errorf("Run writing /dev/stdout: %d %v %q", code, err, out.String())
	}
	code, err = Run(context.Background(), Options{Name: name, RootFS: tree, StateDir: state, Writable: true},
		Process{Args: sh("echo x > /prepared && chown 42:43 /prepared && test \"$(cat /proc/self/uid_map)\" != \"$(printf '%10d %10d %10d' 0 0 4294967295)\"")})
	if err != nil || code != 0 {
		t.Fatalf("Run: %d %v", code, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(tree, "prepared"), &st); err != nil || st.Uid != 42 || st.Gid != 43 {
		t.Errorf("file prepared in the tree: %+v %v, want owner 42:43", st, err)
	}
	assertGone(t, state, trace{name: name})
}

func TestUserNSNoIDMap(t *testing.T) {
	// overlayfs cannot be idmapped: a root filesystem on one is refused,
	// with nothing left behind, never booted with the host's IDs.
	requireE2E(t)
	dir := t.TempDir()
	merged := filepath.Join(dir, "merged")
	for _, d := range []string{"upper", "work", "merged"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	opts := "lowerdir=" + testRootFS(t, false) + ",upperdir=" + dir + "/upper,workdir=" + dir + "/work"
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	name := testName(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, Options{Name: name, RootFS: merged, StateDir: state})
	if err == nil {
		m.Kill()
		t.Fatal("Start on a file system without idmapped mounts succeeded")
	}
	t.Logf("Start: %v", err)
	if !errors.Is(err, ErrNoIDMap) || !strings.Contains(err.Error(), merged) {
		t.Errorf("Start: %v, want ErrNoIDMap naming %s", err, merged)
	}
	_, err = Run(ctx, Options{Name: name, RootFS: merged, StateDir: state}, Process{Args: []string{"true"}})
	if !errors.Is(err, ErrNoIDMap) {
		t.Errorf("Run: %v, want ErrNoIDMap", err)
	}
	unix.Unmount(merged, unix.MNT_DETACH)
	assertGone(t, state, trace{name: name})
}

// TestUserNSOwnerKilled kills the starting process with SIGKILL while its
// container runs: the container's mounts were only ever in its own mount
// namespace and are gone with it; the next List prunes the range and
// cgroups.
func TestUserNSOwnerKilled(t *testing.T) {
	rootfs := testRootFS(t, false)
	state := t.TempDir()
	name := testName(t)
	helper, tr := startHelper(t, "attach", name, rootfs, state)
	if r := reservationOf(state, name); r == nil || len(cgroupsOf(name)) == 0 {
		t.Fatalf("no reservation or cgroups while running: %+v %v", r, cgroupsOf(name))
	}
	// Its mounts are in nspawn's mount namespace only, even now.
	if n := countMounts(t, 1, rootfs); n != 0 {
		t.Errorf("%d mounts of the root filesystem in the host's mount namespace", n)
	}
	if n := countMounts(t, tr.nspawnPID, rootfs); n != 1 {
		t.Errorf("%d idmapped mounts of the root filesystem in nspawn's mount namespace, want 1", n)
	}
	nspawn, err := openProc(tr.nspawnPID, tr.nspawnStart)
	if err != nil {
		t.Fatal(err)
	}
	defer nspawn.close()
	helper.Process.Signal(syscall.SIGKILL)
	helper.Wait()
	if !nspawn.wait(context.Background(), 30*time.Second) {
		t.Fatal("nspawn outlived the process that started it")
	}
	if n := countMounts(t, 1, rootfs); n != 0 {
		t.Errorf("%d mounts of the root filesystem in the host's mount namespace", n)
	}
	if cs, err := List(state); err != nil || len(cs) != 0 {
		t.Errorf("List: %+v, %v", cs, err)
	}
	assertGone(t, state, tr)
}

// countMounts counts the mounts of path in the mount namespace of pid.
func countMounts(t *testing.T, pid int, path string) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[3] == path {
			n++
		}
	}
	return n
}
