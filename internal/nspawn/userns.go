package nspawn

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
)

// userNS is what a container with a private user namespace holds on the
// host: its ID range, its cgroups and how its root filesystem is mounted.
type userNS struct {
	ids  *idRange
	root *privateRoot // nil when nspawn mounts the root itself
}

// setupUserNS reserves an ID range (and cgroups, when nspawn is not
// registered with machined, which would make a scope) for the container
// of o, and starts making the user namespace its root filesystem is
// idmapped with (pendingUserNS). Nothing is mounted yet: that happens in
// the container's own mount namespace when nspawn starts (see
// privateRoot.launch). On error nothing is left; release gives it all back.
//
// A detached container on a systemd host is a service of that systemd
// (ownUnit), started where racker cannot prepare a mount namespace: there
// nspawn's own user namespace with --volatile=overlay is used, which needs
// systemd-nspawn 257 or newer.
func (o *Options) setupUserNS(ctx context.Context) (*userNS, error) {
	if o.ownUnit() {
		f, err := DetectNspawn(ctx, o.nspawn())
		if err != nil {
			return nil, err
		}
		if !f.UsernsOverlay {
			return nil, fmt.Errorf("%w: a detached container on a systemd host runs as a service of its own, where that needs systemd-nspawn %d or newer (this is %d)",
				ErrNoUserNS, minOwnUsernsOverlayVersion, f.Version)
		}
	}
	var idmap *pendingUserNS
	var cg containerCgroups
	if !o.ownUnit() {
		idmap = startUserNS()
		if !o.registers() {
			var err error
			if cg, err = newCgroups(o.Name); err != nil {
				idmap.close()
				return nil, err
			}
		}
	}
	ids, err := reserveRange(ctx, o.StateDir, o.Name, cg.dirs())
	if err != nil {
		idmap.close()
		return nil, err
	}
	u := &userNS{ids: ids}
	if o.ownUnit() {
		return u, nil
	}
	idmap.mapTo(ids.Base)
	if err := cg.make(); err != nil {
		idmap.close()
		ids.release()
		return nil, err
	}
	u.root = &privateRoot{RootFS: o.RootFS, Base: ids.Base, Mnt: mountDir(o.StateDir), Writable: o.Writable, Cgroups: cg, idmap: idmap}
	return u, nil
}

// start starts cmd, nspawn, with the container's mounts and cgroups (see
// privateRoot.launch), records its pid with the range, and returns a
// channel that receives cmd.Wait's result. If nspawn started, the channel
// is returned even with an error (recording failed): the caller stops it.
func (u *userNS) start(cmd *exec.Cmd) (<-chan error, error) {
	waited, err := u.root.launch(cmd)
	if err != nil {
		return nil, err
	}
	if dir := u.root.Cgroups.primary(); dir != "" {
		warmMoves(filepath.Dir(dir), dir, cmd.Process.Pid)
	}
	// Without nspawn's pid in the reservation a detached container would
	// lose its range when this process exits.
	return waited, u.started(cmd.Process.Pid)
}

// release gives the range and cgroups back once nspawn has exited.
func (u *userNS) release() error {
	if u == nil {
		return nil
	}
	if u.root != nil {
		u.root.idmap.close()
	}
	return u.ids.release()
}

// started records nspawn's pid with the range of a container that racker
// did not start itself (ownUnit), so that the range stays reserved while
// it runs.
func (u *userNS) started(pid int) error {
	if u == nil {
		return nil
	}
	u.ids.NspawnPID = pid
	u.ids.NspawnStart, _ = startTime(pid)
	return u.ids.update()
}

// args are the nspawn arguments for the container's root filesystem and
// user namespace, replacing --directory and --volatile=overlay.
func (u *userNS) args(rootFS string) []string {
	users := "--private-users=" + strconv.FormatUint(uint64(u.ids.Base), 10) + ":" + strconv.Itoa(IDRangeSize)
	if u.root == nil {
		// nspawn >= 257 idmaps the image under its own overlay.
		return []string{"--directory=" + rootFS, "--volatile=overlay", users, "--private-users-ownership=auto"}
	}
	return []string{
		"--directory=" + u.root.Directory(),
		users,
		// The tree is idmapped, not chowned.
		"--private-users-ownership=off",
	}
}

// startNspawn starts cmd, nspawn, and returns a channel that receives
// cmd.Wait's result: in the container's own mount namespace and cgroups
// when it has a private user namespace. If nspawn started, the channel is
// returned even with an error: the caller stops nspawn.
func (o *Options) startNspawn(cmd *exec.Cmd) (<-chan error, error) {
	if o.userns != nil {
		return o.userns.start(cmd)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting systemd-nspawn: %w", err)
	}
	if !o.registers() {
		// nspawn makes payload/ and supervisor/ in our own cgroup.
		if own, err := ownCgroupDirs(); err == nil {
			warmMoves(own.primary(), own.primary(), cmd.Process.Pid)
		}
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	return waited, nil
}

// describeUserNS is how List shows the user namespace of a container with
// host ID base (0: the host's): "host", or its uid_map line as
// "0:BASE:65536".
func describeUserNS(base uint32) string {
	if base == 0 {
		return "host"
	}
	return "0:" + strconv.FormatUint(uint64(base), 10) + ":" + strconv.Itoa(IDRangeSize)
}
