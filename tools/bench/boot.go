package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/racker-postroj/racker/internal/humanize"
	"github.com/racker-postroj/racker/internal/nspawn"
)

// The run group: `racker run` against bare systemd-nspawn doing the same
// work, on one store that a setup step fills once (pull and prepare, as the
// first `racker run` of an image does).

// Phases of a booted cycle, in the order the report shows them. For the
// floor: until READY=1, nsenter true, poweroff until nspawn exited. For
// racker, from its --verbose log: boot (nspawn until READY=1, then the
// container's D-Bus connected), stop (poweroff until nspawn exited), and
// other: the rest of the wall time (process start, store lookup, true run
// over D-Bus, exit). For postroj pkgprobe, from its JSON report: image
// (finding the prepared image), boot, exec (the unit check), stop
// (teardown) and other (the rest); a cold probe has pull, copy and prepare
// (apt-get in the copy) from its --verbose log instead of image.
var phaseNames = []string{"pull", "copy", "prepare", "image", "boot", "install", "exec", "stop", "other"}

// runStore is the store the run group's cases share.
type runStore struct {
	root     string // --root of racker
	base     string // the image's own root filesystem
	prepared string // images/sha256/<hex>/prepared/rootfs: systemd, dbus, curl added
}

// setupRunStore pulls and prepares the image into e.work/run-store, once
// for all cases of the run group: `racker run --rm REF true` does both.
func setupRunStore(ctx context.Context, e *env) error {
	if e.run != nil {
		return nil
	}
	root := filepath.Join(e.work, "run-store")
	fmt.Fprintf(e.stdout, "Pulling and preparing %s into %s for the run cases (apt-get installs systemd, dbus, curl: about 10-20 s).\n", e.ref, root)
	t0 := time.Now()
	var r runner
	if _, err := r.exec(ctx, e.racker, "--root", root, "run", "--rm", e.ref, "true"); err != nil {
		return err
	}
	out, err := r.exec(ctx, e.racker, "--root", root, "images", "--format", "json")
	if err != nil {
		return err
	}
	var imgs []struct {
		Reference string `json:"reference"`
		Digest    string `json:"digest"`
		RootFS    string `json:"rootfs"`
	}
	if err := json.Unmarshal([]byte(out), &imgs); err != nil {
		return fmt.Errorf("racker images --format json: %w", err)
	}
	if len(imgs) != 1 || imgs[0].Reference != e.ref {
		return fmt.Errorf("store %s holds %+v, want only %s", root, imgs, e.ref)
	}
	hex, ok := strings.CutPrefix(imgs[0].Digest, "sha256:")
	if !ok || len(hex) != 64 {
		return fmt.Errorf("racker images: unexpected digest %q", imgs[0].Digest)
	}
	s := &runStore{
		root:     root,
		base:     imgs[0].RootFS,
		prepared: filepath.Join(root, "images", "sha256", hex, "prepared", "rootfs"),
	}
	if err := checkRootfs(s.base); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(s.prepared, "..", "prepared.json")); err != nil {
		return fmt.Errorf("the image was not prepared for booting: %w", err)
	}
	for _, p := range []string{"usr/lib/systemd/systemd", "usr/bin/dbus-daemon"} {
		if _, err := os.Stat(filepath.Join(s.prepared, p)); err != nil {
			return fmt.Errorf("prepared root filesystem: %w", err)
		}
	}
	fmt.Fprintf(e.stdout, "Prepared in %s: %s\n\n", seconds(time.Since(t0)), s.prepared)
	e.run = s
	return nil
}

// rackerRun runs `racker [--verbose] --root STORE run --rm ARGS... REF true`;
// with verbose, it takes the boot and stop phases from racker's log.
func rackerRun(ctx context.Context, e *env, r *runner, verbose bool, args ...string) error {
	argv := append([]string{"--root", e.run.root, "run", "--rm"}, args...)
	if verbose {
		argv = append([]string{"--verbose"}, argv...)
	}
	argv = append(argv, e.ref, "true")
	t0 := time.Now()
	stdout, stderr, err := r.exec2(ctx, e.racker, argv...)
	wall := time.Since(t0)
	if err != nil {
		return err
	}
	if stdout != "" {
		return fmt.Errorf("racker run %s true printed %q", e.ref, stdout)
	}
	if phases := rackerPhases(stderr); len(phases) > 0 {
		r.phasesOf(wall, phases)
	}
	return nil
}

// rackerPhases reads the durations of the boot and stop records of racker's
// --verbose log (log/slog text: msg=boot ... took=250.8ms). Records it does
// not know are ignored.
func rackerPhases(log string) map[string]time.Duration {
	phases := map[string]time.Duration{}
	for _, rec := range logRecords(log) {
		if msg := rec["msg"]; msg == "boot" || msg == "stop" {
			if d, err := time.ParseDuration(rec["took"]); err == nil {
				phases[msg] += d
			}
		}
	}
	return phases
}

// logRecords parses the lines of a log/slog text log into their attributes
// (msg="copied image" took=2.2s: msg and took), quoted values unquoted.
// Lines without attributes are left out.
func logRecords(log string) []map[string]string {
	var recs []map[string]string
	for _, line := range strings.Split(log, "\n") {
		rec := map[string]string{}
		for rest := strings.TrimSpace(line); rest != ""; rest = strings.TrimLeft(rest, " ") {
			key, after, ok := strings.Cut(rest, "=")
			if !ok || key == "" || strings.ContainsAny(key, " \"") {
				break
			}
			val := after
			if q, err := strconv.QuotedPrefix(after); err == nil {
				val, _ = strconv.Unquote(q)
				rest = after[len(q):]
			} else if i := strings.IndexByte(after, ' '); i >= 0 {
				val, rest = after[:i], after[i:]
			} else {
				rest = ""
			}
			rec[key] = val
		}
		if len(rec) > 0 {
			recs = append(recs, rec)
		}
	}
	return recs
}

// checkRunContainers checks that racker left no container state behind in
// the run group's store.
func checkRunContainers(_ context.Context, e *env, _ string) error {
	return checkNoContainers(e.run.root)
}

// checkNoContainers checks that no container state is left in the store at
// root (containers/NAME directories).
func checkNoContainers(root string) error {
	entries, err := os.ReadDir(filepath.Join(root, "containers"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var names []string
	for _, ent := range entries {
		if !strings.HasPrefix(ent.Name(), ".") { // .lock
			names = append(names, ent.Name())
		}
	}
	if len(names) > 0 {
		return fmt.Errorf("containers left in %s: %s", root, strings.Join(names, " "))
	}
	return nil
}

var machineSeq atomic.Int64

// machineName is a name no other run (of this or another bench) uses.
func machineName() string {
	return fmt.Sprintf("bench%d-%d", os.Getpid(), machineSeq.Add(1))
}

// sigPoweroff is SIGRTMIN+4 as systemd counts (from glibc's SIGRTMIN, 34):
// it makes systemd as PID 1 power off in order.
const sigPoweroff = syscall.Signal(34 + 4)

// floorArgs is the bare nspawn command line that boots rootfs, with the
// units masked on init's command line as racker's --fast-boot does.
func floorArgs(rootfs, name string, mask []string) []string {
	args := []string{"--register=no", "--keep-unit", "--boot", "--volatile=overlay", "--notify-ready=yes",
		"--console=read-only", "--kill-signal=SIGKILL", "-D", rootfs, "--machine=" + name}
	for _, u := range mask {
		args = append(args, "systemd.mask="+u)
	}
	return args
}

// bootFloor is the least a booted `racker run --rm IMAGE true` can cost:
// systemd-nspawn --boot until READY=1 (on a notify socket, not polled),
// nsenter true, poweroff (SIGRTMIN+4 to the container's systemd) until
// nspawn has exited.
// The console goes to dir/console.log, as racker's goes to its state
// directory.
func bootFloor(ctx context.Context, r *runner, dir, rootfs string, mask []string) error {
	name := machineName()
	notify, err := nspawn.ListenNotify()
	if err != nil {
		return err
	}
	defer notify.Close()

	t0 := time.Now()
	cmd := exec.Command("systemd-nspawn", floorArgs(rootfs, name, mask)...)
	cmd.Env = append(environWithout("NOTIFY_SOCKET"), "NOTIFY_SOCKET="+notify.Addr())
	consoleLog := filepath.Join(dir, "console.log")
	console, err := os.Create(consoleLog)
	if err != nil {
		return err
	}
	defer console.Close()
	cmd.Stdout, cmd.Stderr = console, console
	// SIGTERM makes nspawn kill the container (--kill-signal=SIGKILL): if
	// the benchmark dies, no container stays behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{}) // closed once nspawn was reaped
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer os.Remove(filepath.Join("/run/systemd/nspawn/propagate", name))
	fail := func(err error) error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		r.account(cmd.ProcessState)
		return fmt.Errorf("systemd-nspawn %s: %w (%v); output: %s", strings.Join(cmd.Args[1:], " "), err, cmd.ProcessState,
			strings.Join(humanize.ReadTail(consoleLog, 10), " | "))
	}

	leader, err := notify.WaitReady(ctx, cmd.Process.Pid, exited, time.Minute)
	if err != nil {
		return fail(err)
	}
	t1 := time.Now()
	r.phase("boot", t1.Sub(t0))

	if _, err := r.exec(ctx, "nsenter", "-t", strconv.Itoa(leader), "-a", "true"); err != nil {
		return fail(err)
	}
	t2 := time.Now()
	r.phase("exec", t2.Sub(t1))

	if err := syscall.Kill(leader, sigPoweroff); err != nil {
		return fail(fmt.Errorf("poweroff: %w", err))
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		return fail(errors.New("no poweroff within 30 s"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	r.phase("stop", time.Since(t2))
	r.account(cmd.ProcessState)
	if waitErr != nil {
		return fmt.Errorf("systemd-nspawn after poweroff: %w; output: %s", waitErr, strings.Join(humanize.ReadTail(consoleLog, 10), " | "))
	}
	return nil
}

// environWithout returns the environment without the given keys.
func environWithout(keys ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(keys, k) {
			out = append(out, kv)
		}
	}
	return out
}

// maskedUnits is what racker's --fast-boot masks.
func maskedUnits() []string { return nspawn.DefaultMaskedUnits() }
