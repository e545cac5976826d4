package nspawn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Open returns a Machine for the running booted container name of
// stateDir, which another process may have started (racker run -d), so
// that Exec and OpenPTY work on it. Close releases it and leaves the
// container running; Shutdown stops it. logger may be nil.
func Open(ctx context.Context, stateDir, name string, logger *slog.Logger) (*Machine, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	s := containersDir(stateDir)
	r, live, err := s.lookup(name)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	if !live {
		return nil, fmt.Errorf("opening %s: %w", name, ErrNoSuchContainer)
	}
	if !r.Booted || r.Status != statusRunning {
		return nil, fmt.Errorf("opening %s: container is %s, not a booted running container", name, describe(r))
	}
	m := &Machine{
		opts: Options{Name: r.Name, RootFS: r.RootFS, Image: r.Image, StateDir: stateDir,
			Detach: true, Logger: logger},
		state:  s,
		rec:    r,
		exited: make(chan struct{}),
	}
	m.log = m.opts.logger().With("machine", name)
	if m.nspawn, err = openProc(r.NspawnPID, r.NspawnStart); err == nil {
		m.leader, err = openProc(r.LeaderPID, r.LeaderStart)
	}
	if err != nil {
		m.closeHandles()
		if errors.Is(err, errGone) {
			return nil, fmt.Errorf("opening %s: %w", name, ErrNoSuchContainer)
		}
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	m.watchNspawn()
	if err := m.connect(ctx); err != nil {
		m.Close()
		return nil, fmt.Errorf("opening %s: %w", name, err)
	}
	return m, nil
}

func describe(r *record) string {
	if !r.Booted {
		return "a single command (boot=never)"
	}
	return r.Status
}
