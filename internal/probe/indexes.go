package probe

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/aptlists"
	"github.com/racker-postroj/racker/internal/container"
	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/rootfs"
)

// rooted is what a container offers for putting files into it from the
// host (*container.Container does).
type rooted interface {
	Root() (*rootfs.Root, error)
}

// indexCache is the index cache's part in one install step: apt's lists
// of an earlier container of the image put back before the refresh, and
// the lists after it kept for the next one. Its methods do nothing on nil
// (no index cache for this probe), and its failures never fail the probe:
// without the cache, the refresh fetches everything, as it would anyway.
type indexCache struct {
	cache    *aptlists.Cache
	root     *rootfs.Root
	proxy    networked // whose record says what a refresh got
	key      string
	restored *aptlists.Kept
	log      *slog.Logger
	notes    []string
}

// indexes returns the index cache's part in installing with mgr into m,
// booted from img, or nil: without an index cache, for managers other
// than apt, for containers without a private network (whose index files
// the package cache does not see either), for images without a digest.
func (p *Prober) indexes(m Machine, mgr distro.Manager, img Image, log *slog.Logger) *indexCache {
	r, ok := m.(rooted)
	n, hasProxy := m.(networked)
	if hasProxy {
		_, _, hasProxy = n.Egress()
	}
	if p.Indexes == nil || !ok || !hasProxy || !aptlists.Supports(mgr.Name) || p.networkMode() != container.NetworkPrivate || img.Digest == "" {
		return nil
	}
	key, err := aptlists.NewKey(img.Digest, mgr.RefreshScript(false), img.RootFS)
	if err != nil {
		log.Info("index cache not used", "err", err)
		return nil
	}
	root, err := r.Root()
	if err != nil {
		log.Info("index cache not used", "err", err)
		return nil
	}
	return &indexCache{cache: p.Indexes, root: root, proxy: n, key: key, log: log}
}

func (ic *indexCache) note(format string, args ...any) {
	ic.notes = append(ic.notes, fmt.Sprintf(format, args...))
}

// restore puts the kept lists into the container and reports whether it
// did.
func (ic *indexCache) restore(ctx context.Context) bool {
	if ic == nil {
		return false
	}
	t0 := time.Now()
	k, err := ic.cache.Restore(ctx, ic.root, ic.key)
	switch {
	case err != nil:
		ic.log.Warn("index cache: kept lists not used", "err", err)
		ic.note("kept lists refused: %s", humanize.OneLine(err.Error()))
		return false
	case k == nil:
		return false
	}
	ic.restored = k
	ic.log.Info("index cache: lists put back", "files", len(k.Files), "bytes", k.Bytes(), "took", time.Since(t0))
	ic.note("%d files put back (%s)", len(k.Files), humanize.Bytes(k.Bytes()))
	return true
}

// mark is where the proxy's record stands: what a refresh started now
// gets comes after it.
func (ic *indexCache) mark() int {
	if ic == nil {
		return 0
	}
	_, rec, _ := ic.proxy.Egress()
	return len(rec.Requests)
}

// asked returns the releases the proxy's record says were got since mark.
func (ic *indexCache) asked(mark int) aptlists.Asked {
	_, rec, _ := ic.proxy.Egress()
	if mark > len(rec.Requests) {
		return aptlists.Asked{}
	}
	return aptlists.AskedReleases(rec.Requests[mark:])
}

// revalidated reports whether the refresh that began at mark and exited
// with status code revalidated every release put back: it succeeded, and
// the proxy answered apt for each of them.
func (ic *indexCache) revalidated(code, mark int) bool {
	if ic == nil || ic.restored == nil {
		return code == 0
	}
	if code != 0 {
		ic.note("not revalidated (status %d)", code)
		return false
	}
	if ok, missing := ic.restored.Revalidated(ic.asked(mark)); !ok {
		ic.note("not revalidated (no answer through the proxy for %s)", strings.Join(missing, ", "))
		return false
	}
	return true
}

// undo takes the put-back lists out again after the refresh could not
// revalidate them.
func (ic *indexCache) undo() {
	if ic == nil || ic.restored == nil {
		return
	}
	err := ic.restored.Remove(ic.root)
	ic.log.Info("index cache: lists not revalidated, refreshing without them", "err", err)
	ic.note("refreshed without them")
	ic.restored = nil
}

// keep keeps the container's lists after a refresh, begun at mark, that
// succeeded.
func (ic *indexCache) keep(ctx context.Context, mark int) {
	if ic == nil {
		return
	}
	t0 := time.Now()
	k, changed, err := ic.cache.Keep(ctx, ic.root, ic.key, ic.restored, ic.asked(mark))
	switch {
	case err != nil:
		ic.log.Warn("index cache: lists not kept", "err", err)
		ic.note("not kept: %s", humanize.OneLine(err.Error()))
	case changed:
		ic.log.Info("index cache: lists kept", "files", len(k.Files), "bytes", k.Bytes(), "took", time.Since(t0))
		ic.note("%d files kept", len(k.Files))
	default:
		ic.note("unchanged")
	}
}

// summary is what the step's report says of the index cache.
func (ic *indexCache) summary() string {
	if ic == nil {
		return ""
	}
	return strings.Join(ic.notes, "; ")
}

func (ic *indexCache) close() {
	if ic != nil {
		ic.root.Close()
	}
}
