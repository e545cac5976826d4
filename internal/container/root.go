package container

import "github.com/racker-postroj/racker/internal/rootfs"

// Root opens the running container's root filesystem as its processes see
// it (its overlay), for reading and writing from the host with every path
// resolved inside it (nspawn.Machine.Root).
func (c *Container) Root() (*rootfs.Root, error) { return c.m.Root() }
