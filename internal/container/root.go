package container

import (
	"strconv"

	"github.com/racker-postroj/racker/internal/rootfs"
)

// Root opens the running container's root filesystem as its processes see
// it (its overlay), for reading and writing from the host with every path
// resolved inside it: a symlink in the container never leads to the
// host's files. The caller closes it; it is valid while the container
// runs.
func (c *Container) Root() (*rootfs.Root, error) {
	return rootfs.Open("/proc/" + strconv.Itoa(c.m.Leader()) + "/root")
}
