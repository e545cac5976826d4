package nspawn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/flock"
)

// ErrNameInUse is returned by Start and Run when a running container of the
// same state directory already has the name.
var ErrNameInUse = errors.New("container name is already in use")

// ErrNoSuchContainer is returned by Stop and Open for a name no running
// container has.
var ErrNoSuchContainer = errors.New("no such container")

// Container is a running container as recorded in the state directory.
type Container struct {
	Name      string    `json:"name"`
	Image     string    `json:"image"` // image reference, as given in Options.Image
	RootFS    string    `json:"rootfs"`
	Started   time.Time `json:"started"`
	Booted    bool      `json:"booted"`    // booted with systemd (Start), not a single command (Run)
	Detached  bool      `json:"detached"`  // outlives the process that started it
	Status    string    `json:"status"`    // "starting" until READY=1, then "running"
	LeaderPID int       `json:"leaderPid"` // the container's PID 1 as seen from the host; 0 until known
	NspawnPID int       `json:"nspawnPid"` // the systemd-nspawn process
	// PrivateNetwork is set when the container has its own network
	// namespace (Options.PrivateNetwork) instead of the host's.
	PrivateNetwork bool   `json:"privateNetwork"`
	Console        string `json:"console"` // log of the console of a booted container
	// UserNS is the container's user namespace: "host" for the host's IDs
	// (HostUserNS), or its mapping as "0:HOST:65536" (container IDs from
	// 0 are host IDs from HOST).
	UserNS string `json:"userns"`
}

// record is what StateDir/containers/NAME/state.json holds. Pids go with
// their start times so that a reused pid is not taken for the container.
type record struct {
	Name        string    `json:"name"`
	Image       string    `json:"image,omitempty"`
	RootFS      string    `json:"rootfs"`
	Started     time.Time `json:"started"`
	Booted      bool      `json:"booted"`
	Detached    bool      `json:"detached"`
	Status      string    `json:"status"`
	OwnerPID    int       `json:"owner_pid"` // the process that claimed the name
	OwnerStart  uint64    `json:"owner_start"`
	NspawnPID   int       `json:"nspawn_pid,omitempty"`
	NspawnStart uint64    `json:"nspawn_start,omitempty"`
	LeaderPID   int       `json:"leader_pid,omitempty"`
	LeaderStart uint64    `json:"leader_start,omitempty"`
	PrivateNet  bool      `json:"private_network,omitempty"`
	UIDBase     uint32    `json:"uid_base,omitempty"` // host ID of the container's root; 0: the host's user namespace
}

const (
	statusStarting = "starting"
	statusRunning  = "running"
)

// alive reports whether the container of r still exists: its nspawn runs, or
// before nspawn started, the process that claimed the name runs.
func (r *record) alive() bool {
	if r.NspawnPID != 0 {
		return alive(r.NspawnPID, r.NspawnStart)
	}
	return alive(r.OwnerPID, r.OwnerStart)
}

// same reports whether r and o describe the same container instance.
func (r *record) same(o *record) bool {
	return r.OwnerPID == o.OwnerPID && r.OwnerStart == o.OwnerStart && r.Started.Equal(o.Started)
}

func (s containers) container(r *record) Container {
	c := Container{
		Name: r.Name, Image: r.Image, RootFS: r.RootFS, Started: r.Started,
		Booted: r.Booted, Detached: r.Detached, Status: r.Status,
		LeaderPID: r.LeaderPID, NspawnPID: r.NspawnPID, PrivateNetwork: r.PrivateNet,
		UserNS: describeUserNS(r.UIDBase),
	}
	if r.Booted {
		c.Console = s.console(r.Name)
	}
	return c
}

// containers is the containers directory of a state directory:
//
//	containers/.lock         flock(2) held while names are claimed or pruned
//	containers/NAME/state.json
//	containers/NAME/console.log   console of a booted container
type containers string

func (s containers) dir(name string) string { return filepath.Join(string(s), name) }

func (s containers) console(name string) string { return filepath.Join(s.dir(name), "console.log") }

// lock takes the state directory's lock and returns its release. It waits
// as long as the holder needs: claims and prunes hold it only briefly.
func (s containers) lock() (func(), error) {
	if err := os.MkdirAll(string(s), 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	unlock, err := flock.Lock(context.Background(), filepath.Join(string(s), ".lock"), nil)
	if err != nil {
		return nil, fmt.Errorf("locking state directory: %w", err)
	}
	return unlock, nil
}

func (s containers) read(name string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(s.dir(name), "state.json"))
	if err != nil {
		return nil, err
	}
	r := new(record)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("reading state of %s: %w", name, err)
	}
	return r, nil
}

// write replaces the state file of r.Name atomically.
func (s containers) write(r *record) error {
	if err := fileio.WriteJSON(filepath.Join(s.dir(r.Name), "state.json"), r, 0o600); err != nil {
		return fmt.Errorf("writing state of %s: %w", r.Name, err)
	}
	return nil
}

// claim reserves r.Name for r: it fails with ErrNameInUse if a live
// container has the name, prunes a dead one (see check), and records r.
func (s containers) claim(r *record) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	old, live, err := s.check(r.Name)
	if err != nil {
		return err
	}
	if live {
		return fmt.Errorf("%w: %q (started %s, nspawn pid %d)", ErrNameInUse, r.Name,
			old.Started.Format(time.RFC3339), old.NspawnPID)
	}
	if err := os.Mkdir(s.dir(r.Name), 0o700); err != nil {
		return fmt.Errorf("creating state of %s: %w", r.Name, err)
	}
	return s.write(r)
}

// check returns the state of name and whether it describes a container
// that still runs as a whole (alive and not abandoned). If it does not, the
// container is pruned: what is left of its processes is killed
// (killLeftovers) and its state removed (removeStale), so a container whose
// racker was killed (kill -9) or that powered itself off while detached is
// cleaned up by the next claim, List, Open or Stop. This is the one place
// that decides a container is gone. The caller holds the state lock.
func (s containers) check(name string) (r *record, live bool, err error) {
	r, err = s.read(name)
	if err == nil && r.Name == name && r.alive() && !r.abandoned() && !r.ending() {
		return r, true, nil
	}
	if err == nil {
		r.killLeftovers()
	}
	// Claims write their state before the lock is released, so a directory
	// without a readable state is debris.
	return nil, false, removeStale(s.dir(name), name)
}

// lookup is check for callers that do not hold the state lock.
func (s containers) lookup(name string) (r *record, live bool, err error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	return s.check(name)
}

// release removes the state of r if it still describes r (a later
// container may have claimed the name since).
func (s containers) release(r *record) error {
	// Nothing to release, and nothing to lock: taking the lock would
	// create the containers directory again, even while its owner removes
	// it (a test's temporary state, a store being deleted).
	if _, err := os.Lstat(s.dir(r.Name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := s.read(r.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil && !cur.same(r) {
		return nil
	}
	return removeStale(s.dir(r.Name), r.Name)
}

// removeStale removes the state directory of a container that no longer
// runs, and what nspawn may have left on the host for it.
func removeStale(dir, name string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing state of %s: %w", name, err)
	}
	removePropagateDir(name)
	return nil
}

// removePropagateDir removes /run/systemd/nspawn/propagate/NAME, which
// nspawn creates for every container and refuses to delete itself when /run
// is not a tmpfs ("Attempted to remove disk file system ..."). It is only
// removed when empty: anything else is not ours to delete.
func removePropagateDir(name string) {
	os.Remove(filepath.Join("/run/systemd/nspawn/propagate", name))
}

// List returns the running containers of stateDir, oldest first, and prunes
// those that are gone (see check).
func List(stateDir string) ([]Container, error) {
	s := containersDir(stateDir)
	entries, err := os.ReadDir(string(s))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	var out []Container
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		r, live, err := s.check(e.Name())
		if err != nil {
			return nil, err
		}
		if live {
			out = append(out, s.container(r))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	// What killed racker processes left of user namespaces goes too.
	if err := PruneRanges(context.Background(), stateDir); err != nil {
		return nil, err
	}
	return out, nil
}

// Stop powers off the running container name of stateDir, from any process:
// SIGRTMIN+4 to its init, then after timeout (DefaultStopTimeout if zero)
// SIGTERM to nspawn, which kills the container. It returns when nspawn has
// exited and the state is removed, or with ErrNoSuchContainer.
func Stop(ctx context.Context, stateDir, name string, timeout time.Duration) error {
	return stopByName(ctx, stateDir, name, true, timeout)
}

// Kill ends the running container name of stateDir at once, from any
// process: SIGTERM to nspawn, which SIGKILLs the container (see
// Machine.Kill). Otherwise it is like Stop.
func Kill(ctx context.Context, stateDir, name string) error {
	return stopByName(ctx, stateDir, name, false, 0)
}

func stopByName(ctx context.Context, stateDir, name string, poweroff bool, timeout time.Duration) error {
	if err := ValidName(name); err != nil {
		return err
	}
	s := containersDir(stateDir)
	r, live, err := s.lookup(name)
	if err != nil {
		return fmt.Errorf("stopping %s: %w", name, err)
	}
	if !live {
		return fmt.Errorf("stopping %s: %w", name, ErrNoSuchContainer)
	}
	if r.NspawnPID == 0 {
		return fmt.Errorf("stopping %s: container is still being created", name)
	}
	nspawn, err := openProc(r.NspawnPID, r.NspawnStart)
	if errors.Is(err, errGone) {
		s.lookup(name) // it ended just now: prune it
		return fmt.Errorf("stopping %s: %w", name, ErrNoSuchContainer)
	}
	if err != nil {
		return fmt.Errorf("stopping %s: %w", name, err)
	}
	defer nspawn.close()
	leader, _ := openProc(r.LeaderPID, r.LeaderStart)
	defer leader.close()
	if err := stopProcesses(ctx, nspawn, leader, poweroff, timeout); err != nil {
		return fmt.Errorf("stopping %s: %w", name, err)
	}
	if r.Detached && hostRunsSystemd() {
		// Its own racker-NAME.service: systemd removes the unit's cgroup
		// a moment after nspawn exits; return once it has.
		waitUnitGone(context.WithoutCancel(ctx), containerUnit(name), unitGoneWait)
	}
	if err := s.release(r); err != nil {
		return err
	}
	// The range and cgroups of a container started by another process.
	return PruneRanges(context.WithoutCancel(ctx), stateDir)
}

func containersDir(stateDir string) containers {
	return containers(filepath.Join(stateDir, "containers"))
}

// killGrace is how long nspawn gets to exit after it was told to kill the
// container, before it is killed itself.
const killGrace = 5 * time.Second

// stopProcesses stops a container: an orderly poweroff if asked for and
// leader is known,
// SIGTERM to nspawn (which SIGKILLs the container, see bootArgs) if that
// does not end nspawn within timeout or ctx ends first, SIGKILL to both as
// the last resort. It returns nil once nspawn has exited.
func stopProcesses(ctx context.Context, nspawn, leader *proc, poweroff bool, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	if poweroff && leader != nil {
		if err := leader.signal(sigPoweroff); err == nil && nspawn.wait(ctx, timeout) {
			return nil
		}
	}
	// Killing is quick and must finish even when ctx has ended.
	bg := context.WithoutCancel(ctx)
	if err := nspawn.signal(unix.SIGTERM); err == nil && nspawn.wait(bg, killGrace) {
		return nil
	}
	leader.signal(unix.SIGKILL)
	nspawn.signal(unix.SIGKILL)
	if nspawn.wait(bg, killGrace) {
		return nil
	}
	return fmt.Errorf("systemd-nspawn (pid %d) did not exit after SIGKILL", nspawn.pid)
}
