package container

import (
	"context"
	"errors"
	"fmt"
)

// Prune removes what killed racker and postroj processes left behind, under
// the locks that guard each: tmp/ entries of pulls, preparations and builds
// whose lock nobody holds (image.Store.CleanTemp), lock files of images
// that are gone (image.Store.PruneLocks), and containers whose processes
// are gone or whose racker died before they were detached, with what they
// left on the host (List: nspawn's one check of a container's state kills
// what is left of their processes, and nspawn.PruneRanges releases the
// user-namespace ID ranges and cgroups of containers that are gone; their
// mounts lived in a mount namespace of their own and went with them). Every
// racker and postroj command that touches the store or the container list
// calls it first; it is also safe to call at any time from any number of
// processes.
func (r *Runtime) Prune(ctx context.Context) error {
	var errs []error
	if err := r.Store.CleanTemp(); err != nil {
		errs = append(errs, fmt.Errorf("pruning tmp: %w", err))
	}
	if err := r.Store.PruneLocks(); err != nil {
		errs = append(errs, fmt.Errorf("pruning locks: %w", err))
	}
	if _, err := r.List(ctx); err != nil {
		errs = append(errs, fmt.Errorf("pruning containers: %w", err))
	}
	return errors.Join(errs...)
}
