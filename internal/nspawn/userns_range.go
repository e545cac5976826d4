package nspawn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/flock"
)

// IDRangeSize is how many user and group IDs a container with a private
// user namespace gets: its 0-65535 map to BASE-BASE+65535 on the host.
const IDRangeSize = 65536

// Host ID ranges are handed out from firstIDBase up, well above any real
// user, in the window systemd-nspawn's own --private-users=pick uses
// (0x00080000-0x6FFF0000), so that a container never shares IDs with a
// host account.
const (
	firstIDBase = 0x00080000
	lastIDBase  = 0x6FFF0000
)

// idRange is a host ID range reserved for one container, recorded as
// StateDir/userns/BASE.json while the container (or the process starting
// it) lives:
//
//	userns/.lock        flock(2) held while ranges are reserved or pruned
//	userns/BASE.json    one reservation
//	userns/mnt/         empty; each container's private mount namespace
//	                    mounts its overlay here (see launchPrivate)
//
// A reservation also lists the cgroups made for the container, so that
// whoever removes the reservation removes them too.
type idRange struct {
	Base        uint32   `json:"base"`
	Name        string   `json:"name"` // the container's machine name
	OwnerPID    int      `json:"owner_pid"`
	OwnerStart  uint64   `json:"owner_start"`
	NspawnPID   int      `json:"nspawn_pid,omitempty"`
	NspawnStart uint64   `json:"nspawn_start,omitempty"`
	Cgroups     []string `json:"cgroups,omitempty"`

	dir string // the userns directory it is recorded in
}

// usernsDir is the user namespace part of a state directory.
func usernsDir(stateDir string) string { return filepath.Join(stateDir, "userns") }

// mountDir is the directory a container's private mount namespace mounts
// its root filesystem on; on the host it stays empty.
func mountDir(stateDir string) string { return filepath.Join(usernsDir(stateDir), "mnt") }

// alive reports whether the container of r, or the process starting it,
// still runs.
func (r *idRange) alive() bool {
	if r.NspawnPID != 0 {
		return alive(r.NspawnPID, r.NspawnStart)
	}
	return alive(r.OwnerPID, r.OwnerStart)
}

func (r *idRange) file() string {
	return filepath.Join(r.dir, strconv.FormatUint(uint64(r.Base), 10)+".json")
}

// lockRanges takes the lock of dir, a state directory's userns/ (see
// idRange), creating it.
func lockRanges(ctx context.Context, dir string) (func(), error) {
	if err := os.MkdirAll(filepath.Join(dir, "mnt"), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	return flock.Lock(ctx, filepath.Join(dir, ".lock"), nil)
}

// reserveRange reserves the lowest host ID range no live container of
// stateDir holds, for the container name started by this process, listing
// the cgroups it is going to create (so that they are removed however the
// process ends; see newCgroups). On the way it prunes the reservations (and
// cgroups) of containers that are gone.
func reserveRange(ctx context.Context, stateDir, name string, cgroups []string) (*idRange, error) {
	dir := usernsDir(stateDir)
	unlock, err := lockRanges(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("reserving user IDs for %s: %w", name, err)
	}
	defer unlock()
	held, err := pruneLocked(dir)
	if err != nil {
		return nil, fmt.Errorf("reserving user IDs for %s: %w", name, err)
	}
	owner := &record{}
	if err := ownRecord(owner); err != nil {
		return nil, err
	}
	r := &idRange{Name: name, OwnerPID: owner.OwnerPID, OwnerStart: owner.OwnerStart, Cgroups: cgroups, dir: dir}
	base, ok := freeBase(held)
	if !ok {
		return nil, fmt.Errorf("reserving user IDs for %s: all %d ranges are in use", name, (lastIDBase-firstIDBase)/IDRangeSize)
	}
	r.Base = base
	if err := r.write(); err != nil {
		return nil, err
	}
	return r, nil
}

// freeBase returns the lowest range base not in held.
func freeBase(held map[uint32]bool) (uint32, bool) {
	for b := uint32(firstIDBase); b <= lastIDBase; b += IDRangeSize {
		if !held[b] {
			return b, true
		}
	}
	return 0, false
}

// pruneLocked removes the reservations of dir whose containers are gone,
// with their cgroups, and returns the bases still held. The caller holds
// the lock.
func pruneLocked(dir string) (map[uint32]bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	held := make(map[uint32]bool)
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		r, err := readRange(dir, e.Name())
		if err == nil && strconv.FormatUint(uint64(r.Base), 10) == n && r.alive() {
			held[r.Base] = true
			continue
		}
		if err == nil {
			if err := removeCgroups(r.Cgroups); err != nil {
				// Still populated (a process outlived nspawn): keep
				// the range reserved until it is empty.
				held[r.Base] = true
				continue
			}
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return held, nil
}

// PruneRanges removes what containers of stateDir that died without
// cleaning up (their racker was killed) left of their user namespaces:
// range reservations and cgroups.
func PruneRanges(ctx context.Context, stateDir string) error {
	dir := usernsDir(stateDir)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	unlock, err := lockRanges(ctx, dir)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = pruneLocked(dir)
	return err
}

func readRange(dir, file string) (*idRange, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return nil, err
	}
	r := &idRange{dir: dir}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return r, nil
}

// write records r atomically.
func (r *idRange) write() error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := fileio.WriteFile(r.file(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("recording user IDs of %s: %w", r.Name, err)
	}
	return nil
}

// update records changes to r (its nspawn, its cgroups) under the lock.
func (r *idRange) update() error {
	unlock, err := lockRanges(context.Background(), r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	return r.write()
}

// release removes r's cgroups and then the reservation, once the container
// is gone. A cgroup that is still populated keeps the reservation for the
// next command to prune.
func (r *idRange) release() error {
	unlock, err := lockRanges(context.Background(), r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := readRange(r.dir, filepath.Base(r.file()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil && (cur.OwnerPID != r.OwnerPID || cur.OwnerStart != r.OwnerStart) {
		return nil // pruned and handed out again meanwhile
	}
	if err := removeCgroups(r.Cgroups); err != nil {
		return err
	}
	if err := os.Remove(r.file()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("releasing user IDs of %s: %w", r.Name, err)
	}
	return nil
}
