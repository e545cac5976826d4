package container

import (
	"context"

	"github.com/racker-postroj/racker/internal/nspawn"
)

// WatchUnit follows a unit of the container's systemd over the container's
// own D-Bus connection (see nspawn.Machine.WatchUnit): nspawn.ErrNoBus for a
// container that commands enter with nsenter.
func (c *Container) WatchUnit(ctx context.Context, name string) (*nspawn.UnitWatch, error) {
	return c.m.WatchUnit(ctx, name)
}
