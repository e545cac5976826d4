package nspawn_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/nspawn"
	"github.com/racker-postroj/racker/internal/probe"
)

// nsenterStarter boots probe containers whose commands enter with nsenter:
// no D-Bus connection, so units are enabled, started and polled with
// systemctl, as for images whose systemd is too old for the bus.
type nsenterStarter struct{ stateDir string }

type nsenterMachine struct{ *nspawn.Machine }

func (m nsenterMachine) Stop(ctx context.Context, how container.Teardown, timeout time.Duration) error {
	if how == container.Poweroff {
		return m.Shutdown(ctx, timeout)
	}
	return m.Kill()
}

func (s nsenterStarter) Start(ctx context.Context, o container.StartOptions) (probe.Machine, error) {
	m, err := nspawn.Start(ctx, nspawn.Options{Name: o.Name, Hostname: o.Hostname, RootFS: o.RootFS, StateDir: s.stateDir,
		Binds: o.Binds, MaskUnits: o.MaskUnits, Executor: nspawn.ExecNsenter})
	if err != nil {
		return nil, err
	}
	if _, err := m.WatchUnit(ctx, "systemd-journald"); !errors.Is(err, nspawn.ErrNoBus) {
		m.Kill()
		return nil, err
	}
	return nsenterMachine{m}, nil
}

// TestProbeWithoutDBus probes units of a real container through the
// systemctl fallback: journald passes, a unit that does not exist fails.
func TestProbeWithoutDBus(t *testing.T) {
	rootfs := nspawn.TestRootFS(t, true)
	p := &probe.Prober{Containers: nsenterStarter{stateDir: t.TempDir()}}
	spec := probe.Spec{
		Target: probe.Target{Name: nspawn.TestName(t), Acquire: func(context.Context) (probe.Image, error) {
			return probe.Image{Reference: "test", RootFS: rootfs}, nil
		}},
		Units:       []string{"systemd-journald", "nonesuch"},
		UnitTimeout: 20 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := p.Run(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*probe.Step{}
	for _, s := range r.Steps {
		got[s.Name] = s
	}
	if s := got["systemd-journald"]; s == nil || s.Result != probe.Passed || s.Unit.Type != "notify" {
		t.Errorf("journald: %+v", s)
	}
	if s := got["nonesuch"]; s == nil || s.Result != probe.Failed || !strings.HasPrefix(s.Error, "no such unit") || !strings.Contains(s.Error, "systemctl enable") {
		t.Errorf("nonesuch: %+v", s)
	}
}
