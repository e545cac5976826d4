package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/distro"
	"github.com/racker-postroj/racker/internal/humanize"

	"golang.org/x/sys/unix"
)

// ErrNotBootable is wrapped by errors about images that cannot be made to
// boot.
var ErrNotBootable = errors.New("image cannot be booted")

// Runner runs a shell command in a root filesystem without booting it,
// with the host's network and resolver, writing to the tree (the
// preparation step's container). It returns the command's exit status.
type Runner func(ctx context.Context, rootfs string, script string, out io.Writer) (int, error)

// PrepareOptions configure Store.Prepare.
type PrepareOptions struct {
	// Run runs the package manager in the tree being prepared (required
	// when the image lacks something).
	Run Runner
	// Output, when set, receives the package manager's output as it runs;
	// otherwise the output is kept and its tail is part of any error.
	Output io.Writer
}

// Prepared is a root filesystem ready for booting.
type Prepared struct {
	RootFS    string
	Installed []string // packages installed by preparation (empty: none needed)
	Manager   string
}

// preparedRecord is what images/sha256/<hex>/prepared/prepared.json holds.
type preparedRecord struct {
	Installed []string  `json:"installed"`
	Manager   string    `json:"manager"`
	Prepared  time.Time `json:"prepared"`
	Took      string    `json:"took"`
}

// detect returns the package manager preparation installs with.
func detect(dir string) (distro.Manager, error) {
	have, err := distro.Detect(dir)
	if err != nil {
		if errors.Is(err, distro.ErrNoManager) {
			return distro.Manager{}, fmt.Errorf("%w: %v", ErrNotBootable, err)
		}
		return distro.Manager{}, err
	}
	return have[0], nil
}

// Prepare returns a root filesystem of img that can boot: img's own when it
// has everything (nothing is copied), otherwise a prepared copy kept in the
// store next to the image, made once by installing what is missing with the
// image's own package manager. A failed preparation leaves nothing behind.
func (s *Store) Prepare(ctx context.Context, img Image, opts PrepareOptions) (Prepared, error) {
	p, err := s.prepare(ctx, img, opts)
	if err != nil {
		return p, &Error{Op: "preparing", Ref: img.Reference, Err: err}
	}
	return p, nil
}

func (s *Store) prepare(ctx context.Context, img Image, opts PrepareOptions) (Prepared, error) {
	dir := filepath.Join(s.imageDir(img.Digest), "prepared")
	if p, ok := s.readPrepared(dir); ok {
		return p, nil
	}
	missing, err := distro.Missing(img.RootFS)
	if err != nil {
		return Prepared{}, err
	}
	if len(missing) == 0 {
		return Prepared{RootFS: img.RootFS}, nil
	}
	unlock, err := s.lock(ctx, img.Digest)
	if err != nil {
		return Prepared{}, err
	}
	defer unlock()
	if p, ok := s.readPrepared(dir); ok {
		return p, nil // prepared by another process while we waited
	}
	pm, err := detect(img.RootFS)
	if err != nil {
		return Prepared{}, err
	}
	if opts.Run == nil {
		return Prepared{}, fmt.Errorf("image lacks %s and no runner was given to install it", strings.Join(missing, ", "))
	}
	pkgs := pm.Packages(missing)
	s.Logger.Info("preparing image for booting", "ref", img.Reference, "manager", pm.Name, "installing", strings.Join(pkgs, " "))
	t0 := time.Now()

	h, _ := digestHex(img.Digest)
	work, err := os.MkdirTemp(filepath.Join(s.Root, "tmp"), h+".prep-")
	if err != nil {
		return Prepared{}, err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	// cp -a never follows the tree's symlinks; reflinks make it nearly free
	// where the filesystem supports them.
	cp := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", img.RootFS, rootfs)
	if out, err := cp.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return Prepared{}, ctx.Err()
		}
		return Prepared{}, fmt.Errorf("copying the image: %v: %s", err, humanize.OneLine(string(out)))
	}
	s.Logger.Info("copied image", "took", time.Since(t0))

	var tail humanize.Tail
	out := io.Writer(&tail)
	if opts.Output != nil {
		out = io.MultiWriter(opts.Output, &tail)
	}
	script := pm.PrepareScript(pkgs)
	code, err := opts.Run(ctx, rootfs, script, out)
	if err != nil {
		if ctx.Err() != nil {
			return Prepared{}, ctx.Err()
		}
		return Prepared{}, fmt.Errorf("running %s: %w", pm.Name, err)
	}
	if code != 0 {
		return Prepared{}, fmt.Errorf("%s install %s failed with status %d: %s", pm.Name, strings.Join(pkgs, " "), code, tail.Last(5))
	}
	if still, err := distro.Missing(rootfs); err != nil || len(still) > 0 {
		return Prepared{}, fmt.Errorf("%s ran but the image still lacks %s", pm.Name, strings.Join(still, ", "))
	}
	// The package manager did not sync file by file (PrepareScript): one
	// sync of the file system before the tree is kept.
	if err := syncFS(rootfs); err != nil {
		return Prepared{}, fmt.Errorf("syncing the prepared image: %w", err)
	}
	rec := preparedRecord{Installed: pkgs, Manager: pm.Name, Prepared: time.Now().UTC(), Took: time.Since(t0).Round(time.Millisecond).String()}
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := os.WriteFile(filepath.Join(work, "prepared.json"), b, 0o600); err != nil {
		return Prepared{}, err
	}
	if err := os.Rename(work, dir); err != nil {
		return Prepared{}, fmt.Errorf("activating prepared image: %w", err)
	}
	s.Logger.Info("prepared image", "ref", img.Reference, "took", time.Since(t0))
	return Prepared{RootFS: filepath.Join(dir, "rootfs"), Installed: pkgs, Manager: pm.Name}, nil
}

func (s *Store) readPrepared(dir string) (Prepared, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "prepared.json"))
	if err != nil {
		return Prepared{}, false
	}
	var rec preparedRecord
	if json.Unmarshal(b, &rec) != nil {
		return Prepared{}, false
	}
	return Prepared{RootFS: filepath.Join(dir, "rootfs"), Installed: rec.Installed, Manager: rec.Manager}, true
}

// Prepared returns the bootable root filesystem of img if there is one
// without preparing anything: img's own tree when it lacks nothing, or the
// copy an earlier Prepare made.
func (s *Store) Prepared(img Image) (Prepared, bool) {
	if p, ok := s.readPrepared(filepath.Join(s.imageDir(img.Digest), "prepared")); ok {
		return p, true
	}
	if missing, err := distro.Missing(img.RootFS); err == nil && len(missing) == 0 {
		return Prepared{RootFS: img.RootFS}, true
	}
	return Prepared{}, false
}

// RunnableRootFS returns a root filesystem of img that systemd-nspawn
// accepts for running a command without booting. nspawn refuses trees
// without a /usr directory, which single-binary images (hello-world)
// lack: those get, once, a hardlinked copy with an empty /usr added, kept
// next to the image. Other images are used as they are.
func (s *Store) RunnableRootFS(ctx context.Context, img Image) (string, error) {
	if fi, err := os.Lstat(filepath.Join(img.RootFS, "usr")); err == nil && fi.IsDir() {
		return img.RootFS, nil
	}
	dir := filepath.Join(s.imageDir(img.Digest), "runnable")
	rootfs := filepath.Join(dir, "rootfs")
	if _, err := os.Stat(rootfs); err == nil {
		return rootfs, nil
	}
	unlock, err := s.lock(ctx, img.Digest)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(rootfs); err == nil {
		return rootfs, nil
	}
	h, _ := digestHex(img.Digest)
	work, err := os.MkdirTemp(filepath.Join(s.Root, "tmp"), h+".run-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	// Hard links share the image's inodes: containers only ever see the
	// tree through a read-only overlay.
	if out, err := exec.CommandContext(ctx, "cp", "-al", img.RootFS, filepath.Join(work, "rootfs")).CombinedOutput(); err != nil {
		return "", &Error{Op: "preparing", Ref: img.Reference, Err: fmt.Errorf("linking the image: %v: %s", err, humanize.OneLine(string(out)))}
	}
	if err := os.Mkdir(filepath.Join(work, "rootfs", "usr"), 0o755); err != nil {
		return "", &Error{Op: "preparing", Ref: img.Reference, Err: err}
	}
	if err := os.Rename(work, dir); err != nil {
		return "", &Error{Op: "preparing", Ref: img.Reference, Err: err}
	}
	return rootfs, nil
}

// syncFS writes out everything cached of the file system holding dir.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
