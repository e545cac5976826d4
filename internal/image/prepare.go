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
	"slices"
	"strings"
	"time"

	"github.com/racker-postroj/racker/internal/rootfs"
)

// bootNeeds is what a container needs from an image to be booted and probed:
// systemd as init, a D-Bus system bus to talk to it, a way to fetch URLs and
// certificates to trust.
var bootNeeds = []need{
	{what: "systemd", paths: []string{"/usr/lib/systemd/systemd", "/lib/systemd/systemd"}},
	// /sbin/init makes systemd the init system in the eyes of packages:
	// without it Debian's invoke-rc.d refuses to start services from
	// maintainer scripts, unlike on a real installation.
	{what: "init", paths: []string{"/sbin/init", "/usr/sbin/init"}},
	{what: "dbus", paths: []string{"/usr/bin/dbus-daemon", "/usr/bin/dbus-broker", "/usr/bin/dbus-broker-launch", "/bin/dbus-daemon"}},
	{what: "curl", paths: []string{"/usr/bin/curl", "/usr/bin/wget", "/bin/curl", "/bin/wget"}},
	{what: "ca-certificates", paths: []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
		"/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem"}},
}

type need struct {
	what  string   // generic package name
	paths []string // any of these present means satisfied
}

// PackageManager describes how to install packages in a distribution.
type PackageManager struct {
	Name    string            // apt-get, dnf, microdnf, yum, zypper, pacman
	Binary  string            // path in the root that proves it is there
	Install string            // shell command; %s is the package list
	Names   map[string]string // generic name -> this distribution's package (default: same)
}

// packageManagers in order of preference when several are present (dnf
// images often carry yum as a compatibility link).
var packageManagers = []PackageManager{
	{Name: "apt-get", Binary: "/usr/bin/apt-get",
		Install: "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q --no-install-recommends %s",
		Names:   map[string]string{"init": "systemd-sysv"}},
	{Name: "dnf", Binary: "/usr/bin/dnf",
		Install: "dnf install -y --setopt=install_weak_deps=False %s && dnf clean all",
		Names:   map[string]string{"init": "systemd"}},
	{Name: "microdnf", Binary: "/usr/bin/microdnf",
		Install: "microdnf install -y %s && microdnf clean all",
		Names:   map[string]string{"init": "systemd"}},
	{Name: "yum", Binary: "/usr/bin/yum",
		Install: "yum install -y %s && yum clean all",
		Names:   map[string]string{"init": "systemd"}},
	{Name: "zypper", Binary: "/usr/bin/zypper",
		Install: "zypper --non-interactive --gpg-auto-import-keys install --no-recommends %s && zypper clean --all",
		Names:   map[string]string{"dbus": "dbus-1", "init": "systemd-sysvinit"}},
	{Name: "pacman", Binary: "/usr/bin/pacman",
		Install: "pacman -Sy --noconfirm --needed %s",
		Names:   map[string]string{"init": "systemd-sysvcompat"}},
}

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

// Missing lists what the root filesystem lacks for booting (generic
// package names), resolving every path inside it.
func Missing(dir string) ([]string, error) {
	root, err := rootfs.Open(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var missing []string
	for _, n := range bootNeeds {
		if !slices.ContainsFunc(n.paths, root.IsRegular) {
			missing = append(missing, n.what)
		}
	}
	return missing, nil
}

// DetectPackageManager finds the package manager of a root filesystem.
func DetectPackageManager(dir string) (PackageManager, error) {
	root, err := rootfs.Open(dir)
	if err != nil {
		return PackageManager{}, err
	}
	defer root.Close()
	for _, pm := range packageManagers {
		if root.IsRegular(pm.Binary) {
			return pm, nil
		}
	}
	if root.IsRegular("/sbin/apk") {
		return PackageManager{}, fmt.Errorf("%w: Alpine has no systemd (use --boot=never)", ErrNotBootable)
	}
	return PackageManager{}, fmt.Errorf("%w: no supported package manager (apt-get, dnf, microdnf, yum, zypper, pacman) to install systemd with", ErrNotBootable)
}

// PackagesFor maps generic package names to pm's, each once.
func (pm PackageManager) PackagesFor(generic []string) []string {
	var out []string
	for _, g := range generic {
		n := g
		if m, ok := pm.Names[g]; ok {
			n = m
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
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
	missing, err := Missing(img.RootFS)
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
	pm, err := DetectPackageManager(img.RootFS)
	if err != nil {
		return Prepared{}, err
	}
	if opts.Run == nil {
		return Prepared{}, fmt.Errorf("image lacks %s and no runner was given to install it", strings.Join(missing, ", "))
	}
	pkgs := pm.PackagesFor(missing)
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
		return Prepared{}, fmt.Errorf("copying the image: %v: %s", err, oneLine(string(out)))
	}
	s.Logger.Info("copied image", "took", time.Since(t0))

	var tail OutputTail
	out := io.Writer(&tail)
	if opts.Output != nil {
		out = io.MultiWriter(opts.Output, &tail)
	}
	script := fmt.Sprintf(pm.Install, strings.Join(pkgs, " "))
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
	if still, err := Missing(rootfs); err != nil || len(still) > 0 {
		return Prepared{}, fmt.Errorf("%s ran but the image still lacks %s", pm.Name, strings.Join(still, ", "))
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
	if missing, err := Missing(img.RootFS); err == nil && len(missing) == 0 {
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
		return "", &Error{Op: "preparing", Ref: img.Reference, Err: fmt.Errorf("linking the image: %v: %s", err, oneLine(string(out)))}
	}
	if err := os.Mkdir(filepath.Join(work, "rootfs", "usr"), 0o755); err != nil {
		return "", &Error{Op: "preparing", Ref: img.Reference, Err: err}
	}
	if err := os.Rename(work, dir); err != nil {
		return "", &Error{Op: "preparing", Ref: img.Reference, Err: err}
	}
	return rootfs, nil
}
