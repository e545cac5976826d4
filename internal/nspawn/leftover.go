package nspawn

import (
	"context"

	"golang.org/x/sys/unix"
)

// abandoned reports whether r is a container whose owner is gone while
// its nspawn, a service of its own on a systemd host or a process in its
// own session when detached, still runs: the process that claimed the name
// died (kill -9) before the container was ready (nobody was told its name,
// so nobody will stop it), or it died at all and the container was not
// detached (it lives only as long as its owner; nspawn may still be on its
// way down after the owner's death signal).
func (r *record) abandoned() bool {
	return (r.Status == statusStarting || !r.Detached) && r.NspawnPID != 0 && !alive(r.OwnerPID, r.OwnerStart)
}

// ending reports whether r is a booted container whose init has exited
// while its nspawn is still winding down, as after `machinectl terminate`,
// which returns before nspawn has exited: the container is gone.
func (r *record) ending() bool {
	return r.Status == statusRunning && r.LeaderPID != 0 && !alive(r.LeaderPID, r.LeaderStart)
}

// killLeftovers ends what is left of a container that is no longer
// running as a whole: an abandoned start (see abandoned) is killed, and a
// container init whose nspawn was killed, which would otherwise run on with
// its machined registration, gets SIGKILL (ending its PID namespace). The
// caller holds the state lock and removes the state afterwards.
func (r *record) killLeftovers() {
	if r.abandoned() {
		if nspawn, err := openProc(r.NspawnPID, r.NspawnStart); err == nil {
			leader, _ := openProc(r.LeaderPID, r.LeaderStart)
			stopProcesses(context.Background(), nspawn, leader, false, 0)
			leader.close()
			nspawn.close()
			return
		}
		// nspawn is gone already: its init may not be.
	}
	if r.LeaderPID == 0 || r.LeaderStart == 0 || alive(r.NspawnPID, r.NspawnStart) {
		return
	}
	if leader, err := openProc(r.LeaderPID, r.LeaderStart); err == nil {
		if leader.signal(unix.SIGKILL) == nil {
			leader.wait(context.Background(), killGrace)
		}
		leader.close()
	}
}
