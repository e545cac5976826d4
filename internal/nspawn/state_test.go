package nspawn

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deadPID returns the pid and start time of a process that has exited.
func deadPID(t *testing.T) (int, uint64) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	st, _ := startTime(pid)
	cmd.Wait()
	return pid, st
}

func TestClaimAndList(t *testing.T) {
	state := t.TempDir()
	s := containersDir(state)
	me := &record{Name: "mine", Started: time.Now().Round(0), Booted: true, Status: statusRunning}
	if err := ownRecord(me); err != nil {
		t.Fatal(err)
	}
	me.NspawnPID, me.NspawnStart = me.OwnerPID, me.OwnerStart // "nspawn" is this live process
	if err := s.claim(me); err != nil {
		t.Fatal(err)
	}
	// A second claim of a live name fails and leaves the first alone.
	again := *me
	again.Started = time.Now()
	if err := s.claim(&again); !errors.Is(err, ErrNameInUse) {
		t.Fatalf("second claim: %v, want ErrNameInUse", err)
	}
	// A dead container's name can be claimed again.
	pid, start := deadPID(t)
	dead := &record{Name: "dead", Started: time.Now(), NspawnPID: pid, NspawnStart: start, OwnerPID: pid, OwnerStart: start}
	os.MkdirAll(s.dir("dead"), 0o700)
	s.write(dead)
	reclaim := &record{Name: "dead", Started: time.Now()}
	ownRecord(reclaim)
	if err := s.claim(reclaim); err != nil {
		t.Fatalf("claiming a dead container's name: %v", err)
	}
	s.release(reclaim)
	// Dead entries and debris are pruned by List.
	os.MkdirAll(s.dir("dead"), 0o700)
	s.write(dead)
	os.MkdirAll(s.dir("debris"), 0o700)
	// A pid that was reused by another process does not count as alive.
	reused := &record{Name: "reused", Started: time.Now(), NspawnPID: me.OwnerPID, NspawnStart: me.OwnerStart + 1}
	os.MkdirAll(s.dir("reused"), 0o700)
	s.write(reused)
	cs, err := List(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Name != "mine" || cs[0].NspawnPID != me.OwnerPID || !cs[0].Started.Equal(me.Started) {
		t.Fatalf("List = %+v", cs)
	}
	for _, n := range []string{"dead", "debris", "reused"} {
		if _, err := os.Stat(s.dir(n)); err == nil {
			t.Errorf("%s not pruned", n)
		}
	}
	// release only removes the state of the record it is given.
	if err := s.release(&again); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.dir("mine")); err != nil {
		t.Error("release of another instance removed the state")
	}
	if err := s.release(me); err != nil {
		t.Fatal(err)
	}
	if cs, _ := List(state); len(cs) != 0 {
		t.Errorf("List after release = %+v", cs)
	}
	if cs, err := List(filepath.Join(state, "nonexistent")); err != nil || cs != nil {
		t.Errorf("List of a missing state dir: %v, %v", cs, err)
	}
}

func TestStopUnknown(t *testing.T) {
	state := t.TempDir()
	if err := Stop(context.Background(), state, "nope", time.Second); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("Stop: %v, want ErrNoSuchContainer", err)
	}
	if err := Stop(context.Background(), state, "../x", time.Second); err == nil {
		t.Error("Stop accepted an invalid name")
	}
	if _, err := Open(context.Background(), state, "nope", nil); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("Open: %v, want ErrNoSuchContainer", err)
	}
	// A record whose processes are gone: pruned, and reported as not there.
	s := containersDir(state)
	pid, start := deadPID(t)
	os.MkdirAll(s.dir("gone"), 0o700)
	s.write(&record{Name: "gone", NspawnPID: pid, NspawnStart: start, OwnerPID: pid, OwnerStart: start})
	if err := Stop(context.Background(), state, "gone", time.Second); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("Stop of a dead container: %v, want ErrNoSuchContainer", err)
	}
	if _, err := os.Stat(s.dir("gone")); err == nil {
		t.Error("state of a dead container not removed by Stop")
	}
	os.MkdirAll(s.dir("gone"), 0o700)
	s.write(&record{Name: "gone", Booted: true, Status: statusRunning, NspawnPID: pid, NspawnStart: start, OwnerPID: pid, OwnerStart: start})
	if _, err := Open(context.Background(), state, "gone", nil); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("Open of a dead container: %v, want ErrNoSuchContainer", err)
	}
	if _, err := os.Stat(s.dir("gone")); err == nil {
		t.Error("state of a dead container not removed by Open")
	}
	// A container still being created (its claimer lives, nspawn has not
	// started) cannot be stopped yet, and its state is left alone.
	creating := &record{Name: "creating", Started: time.Now(), Booted: true, Status: statusStarting}
	ownRecord(creating)
	if err := s.claim(creating); err != nil {
		t.Fatal(err)
	}
	if err := Kill(context.Background(), state, "creating"); err == nil || !strings.Contains(err.Error(), "still being created") {
		t.Errorf("Kill of a container being created: %v", err)
	}
	if _, err := os.Stat(s.dir("creating")); err != nil {
		t.Errorf("state of a container being created removed: %v", err)
	}
}

func TestProcWait(t *testing.T) {
	cmd := exec.Command("sleep", "0.2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	st, _ := startTime(cmd.Process.Pid)
	p, err := openProc(cmd.Process.Pid, st)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	if p.wait(context.Background(), 10*time.Millisecond) {
		t.Error("wait reported exit of a running process")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if p.wait(ctx, time.Minute) {
		t.Error("wait with a cancelled context reported exit")
	}
	start := time.Now()
	if !p.wait(context.Background(), 10*time.Second) {
		t.Fatal("wait did not see the exit")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("exit seen after %s", d)
	}
	if _, err := openProc(cmd.Process.Pid, st); !errors.Is(err, errGone) {
		t.Errorf("openProc of an exited process: %v", err)
	}
}

// A container whose nspawn is gone but whose init still runs (nspawn was
// killed with SIGKILL): Stop reports it gone and kills the init, as List
// and a new claim of the name do; detached or not.
func TestStopKillsLeaderOfDeadNspawn(t *testing.T) {
	for _, detached := range []bool{false, true} {
		state := t.TempDir()
		s := containersDir(state)
		leader := exec.Command("sleep", "60")
		if err := leader.Start(); err != nil {
			t.Fatal(err)
		}
		reaped := make(chan struct{})
		go func() { leader.Wait(); close(reaped) }()
		defer leader.Process.Kill()
		leaderStart, err := startTime(leader.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		pid, start := deadPID(t)
		os.MkdirAll(s.dir("orphan"), 0o700)
		s.write(&record{Name: "orphan", Booted: true, Detached: detached, Status: statusRunning, OwnerPID: pid, OwnerStart: start,
			NspawnPID: pid, NspawnStart: start, LeaderPID: leader.Process.Pid, LeaderStart: leaderStart})
		if err := Stop(context.Background(), state, "orphan", time.Second); !errors.Is(err, ErrNoSuchContainer) {
			t.Errorf("detached %v: Stop: %v, want ErrNoSuchContainer", detached, err)
		}
		select {
		case <-reaped:
		case <-time.After(5 * time.Second):
			t.Errorf("detached %v: the container's init still runs after Stop", detached)
		}
		if _, err := os.Stat(s.dir("orphan")); err == nil {
			t.Errorf("detached %v: state not removed", detached)
		}
	}
}
