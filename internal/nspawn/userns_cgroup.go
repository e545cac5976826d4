package nspawn

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// containerCgroups are the cgroups a container with a private user
// namespace starts in on a host without systemd: nspawn hands its own
// cgroup to the container's root and creates init.scope below it, which
// it cannot do in the host's root cgroup ("Failed to create /init.scope
// control group: Permission denied").
type containerCgroups struct {
	// unified is the cgroup v2 directory (the whole hierarchy on a
	// cgroup2-only host, /sys/fs/cgroup/unified on a hybrid one); nspawn
	// is cloned into it (CLONE_INTO_CGROUP).
	unified string
	// legacy is the name=systemd v1 directory of a hybrid or legacy host,
	// or "". On a hybrid host nspawn places itself there, mirroring its
	// cgroup v2 path; on a legacy one, with no v2 cgroup to be cloned into,
	// the thread that starts nspawn moves itself in for the fork (v1 places
	// threads), so that nspawn starts there (see enterLegacy).
	legacy string
}

// dirs lists the cgroup directories, for the reservation.
func (c containerCgroups) dirs() []string {
	var out []string
	for _, d := range []string{c.unified, c.legacy} {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// newCgroups names the cgroups of container name, next to this process's
// own cgroup in each hierarchy, with a random suffix (names are only unique
// per state directory); make creates them. They are named first so that
// the range reservation lists them from its first write.
func newCgroups(name string) (containerCgroups, error) {
	own, err := ownCgroupDirs()
	if err != nil {
		return containerCgroups{}, fmt.Errorf("creating the container's cgroup: %w", err)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	leaf := "racker-" + name + "-" + hex.EncodeToString(rnd[:])
	var c containerCgroups
	if own.unified != "" {
		c.unified = filepath.Join(own.unified, leaf)
	}
	if own.legacy != "" {
		c.legacy = filepath.Join(own.legacy, leaf)
	}
	return c, nil
}

// ownCgroupDirs returns the directories of this process's own cgroups in
// the hierarchies a container's cgroups are made in: cgroup v2 (the whole
// tree, or /sys/fs/cgroup/unified on a hybrid host) and name=systemd.
func ownCgroupDirs() (containerCgroups, error) {
	var c containerCgroups
	own, err := ownCgroups()
	if err != nil {
		return c, err
	}
	var st unix.Statfs_t
	if unix.Statfs(cgroupRoot, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		c.unified = filepath.Join(cgroupRoot, own[""])
	} else {
		if p, ok := own[""]; ok && isCgroup2(filepath.Join(cgroupRoot, "unified")) {
			c.unified = filepath.Join(cgroupRoot, "unified", p)
		}
		if p, ok := own["name=systemd"]; ok {
			c.legacy = filepath.Join(cgroupRoot, "systemd", p)
		}
	}
	if c.unified == "" && c.legacy == "" {
		return c, errors.New("no cgroup v2 or name=systemd hierarchy found")
	}
	return c, nil
}

// primary is the hierarchy nspawn follows: v2 if there is one.
func (c containerCgroups) primary() string {
	if c.unified != "" {
		return c.unified
	}
	return c.legacy
}

// make creates c's cgroups. On error none is left.
func (c containerCgroups) make() error {
	for _, d := range c.dirs() {
		if err := os.Mkdir(d, 0o755); err != nil {
			removeCgroups(c.dirs())
			return fmt.Errorf("creating the container's cgroup: %w", err)
		}
	}
	return nil
}

func isCgroup2(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// ownCgroups returns this process's cgroup per hierarchy: "" for cgroup v2,
// "name=systemd" and controller lists for v1.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("reading own cgroup: %w", err)
	}
	defer f.Close()
	out := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID:CONTROLLERS:PATH
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out, sc.Err()
}

// enterLegacy moves the calling thread (locked to its goroutine) into the
// name=systemd cgroup, so that a process it forks starts there, and
// returns how to move it back; on a host with a cgroup v2 hierarchy it
// does nothing. There nspawn, cloned into the v2 cgroup, moves its
// processes to the same path in name=systemd itself, and a move of ours
// before it would be the slowest step of an unbooted run: the first move
// of a task between cgroups after a quiet moment waits for an RCU grace
// period of the kernel (10 ms and more on a small VM), and nspawn's own
// moves, tens of milliseconds later, wait for another (see warmMoves).
func (c containerCgroups) enterLegacy() (leave func(), err error) {
	if c.legacy == "" || c.unified != "" {
		return func() {}, nil
	}
	tid := strconv.Itoa(unix.Gettid())
	if err := os.WriteFile(filepath.Join(c.legacy, "tasks"), []byte(tid), 0); err != nil {
		return nil, fmt.Errorf("entering the container's cgroup: %w", err)
	}
	parent := filepath.Dir(c.legacy)
	return func() { os.WriteFile(filepath.Join(parent, "tasks"), []byte(tid), 0) }, nil
}

// Moving a task between cgroups takes a lock that, when no move happened
// just before, first waits for an RCU grace period of the kernel: 8-20 ms
// on a small VM, whatever the cgroups. nspawn's own moves (of the
// container's init into payload/, of itself into supervisor/) come some
// 20 ms after it starts and would wait so; a grace period that has just
// passed lets them through at once.
const (
	// movesWarmEvery is how often warmMoves moves a task while nspawn has
	// not moved itself: less than a grace period, so that one is always
	// fresh.
	movesWarmEvery = 4 * time.Millisecond
	// movesWarmFor bounds warmMoves, should nspawn never get that far.
	movesWarmFor = time.Second
)

// warmMoves readies the kernel for the moves of nspawn (pid), which runs
// in the cgroup dir and makes payload/ and supervisor/ below it (see
// movesWarmEvery): from the moment nspawn has started until it has moved
// itself into supervisor/, its cgroup is gone or movesWarmFor has passed,
// it moves this process into its own cgroup own (a directory of the same
// hierarchy), which changes nothing but takes the lock.
func warmMoves(own, dir string, pid int) {
	if own == "" || dir == "" {
		return
	}
	procs := filepath.Join(own, "cgroup.procs")
	self := []byte(strconv.Itoa(os.Getpid()))
	supervisor := filepath.Join(dir, "supervisor", "cgroup.procs")
	nspawn := strconv.Itoa(pid)
	go func() {
		deadline := time.Now().Add(movesWarmFor)
		for time.Now().Before(deadline) {
			b, err := os.ReadFile(supervisor)
			if err == nil && slices.Contains(strings.Fields(string(b)), nspawn) {
				return
			}
			if _, err := os.Stat(dir); err != nil {
				return // nspawn is gone, and its cgroups with it
			}
			if err := os.WriteFile(procs, self, 0); err != nil {
				return
			}
			time.Sleep(movesWarmEvery)
		}
	}()
}

// removeCgroups removes cgroup directories and what nspawn created below
// them (payload/, supervisor/, ...), deepest first. Missing ones are
// fine; a populated one is an error.
func removeCgroups(dirs []string) error {
	var errs []error
	for _, top := range dirs {
		if !strings.HasPrefix(top, cgroupRoot+"/") {
			continue // not a cgroup: never remove anything else
		}
		var sub []string
		filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		// Longest paths are the deepest.
		sort.Slice(sub, func(i, j int) bool { return len(sub[i]) > len(sub[j]) })
		for _, d := range sub {
			if err := unix.Rmdir(d); err != nil && err != unix.ENOENT {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}
